"""StudentZ's configuration: every hyperparameter of the encoder, decoder, objective and run, validated.

Its own module (re-exported by studentz) so the numpy inference path (numpy_infer.py) reads a checkpoint's config
without importing tinygrad.
"""
from __future__ import annotations
import json, math
from dataclasses import dataclass, field, asdict, fields

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object",
               bool: "true or false"}
# upper bounds of the sizes a config file or checkpoint can set (far above any trained model: max_len 64, vocab 16k)
SIZE_LIMITS = {"max_len": 8192, "vocab_size": 1 << 20, "d_model": 1 << 14, "hidden": 1 << 16, "n_blocks": 256,
               "dec_blocks": 256, "dec_draft": 1024, "kernel_size": 255, "proj_dim": 1 << 14, "pool_head": 1 << 16,
               "batch_size": 1 << 20}


def _nonfinite(name: str, v) -> list[str]:
  """Dotted names of the non-finite floats in a config value (nested dicts and lists included)."""
  if isinstance(v, float): return [] if math.isfinite(v) else [name]
  if isinstance(v, dict): return [k for key, x in v.items() for k in _nonfinite(f"{name}.{key}", x)]
  if isinstance(v, (list, tuple)): return [k for x in v for k in _nonfinite(name, x)]
  return []


@dataclass
class Config:
  # --- encoder ---
  vocab_size: int = 16000          # student BPE vocabulary (PAD=0 BOS=1 EOS=2 UNK=3)
  d_model: int = 256               # channels of the residual stream
  hidden: int = 512                # channels inside each TCN block
  n_blocks: int = 8                # residual TCN blocks; len(dilation_schedule) must equal this
  kernel_size: int = 5             # taps of each dilated convolution (odd, so centred padding is symmetric)
  dilation_schedule: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 1, 2, 4])  # receptive field grows ~2x/block
  dropout: float = 0.1             # inside blocks, training only
  norm: str = "layer"              # "layer" (per token over channels) or "group" (masked stats over tokens)
  padding: str = "centred"         # "centred" sees both sides; "causal" sees only the past (streaming)
  pool: str = "gated"              # "mean" (masked mean) or "gated" (learned per-token weights, no token mixing)
  pool_head: int = 0               # P > 0 adds a second pooled path: per token P GELU features, each with its own
                                   # sigmoid gate over tokens, pooled, then Linear(P -> D) added to z (starts at zero)
  block_context: bool = False      # add Linear(masked mean of a block's input) to its conv output, before the norm:
                                   # every token sees a summary of the sentence at each depth, O(L), no token-to-token
                                   # weights (centred padding only)
  proj_dim: int = 384              # D: the teacher's dimension (set from the teacher at train time)
  max_len: int = 64                # tokens per sentence including BOS/EOS; longer text is truncated
  embed_init: str = "teacher"      # "teacher": embedding from the teacher's token vectors + a ridge-fitted projection
                                   # (student_init.py); "random": glorot noise
  # --- decoder (z -> tokens) ---
  dec_blocks: int = 6              # causal TCN blocks of the decoder
  dec_dilation_schedule: list = field(default_factory=lambda: [1, 2, 4, 8, 1, 2])
  dec_draft: int = 0               # rank of z's per-position draft: each input position p also gets its own vector
                                   # from z (a rank-r code, up to d), so z can say what goes where (0: none)
  dec_output: str = "separate"     # decoder logits: "separate" head, or "tied" to its input embedding (V*d fewer)
  mode_b_proj: str = "mlp"         # how the teacher vector enters the decoder in mode B: "mlp" or "identity"
  mode_b_ratio: float = 0.5        # share of decoder batches fed from the teacher vector (mode B)
  mode_b_mix: str = "batch"        # "batch": whole batches alternate between modes; "row": modes mixed inside a batch
  label_smoothing: float = 0.1     # decoder cross-entropy smoothing
  decoder_share: float = 0.0      # a distillation run (ce 0) leaves this share of its steps and --minutes to a
                                   # second stage that fits the decoder to its best encoder, frozen (train.py)
  freeze: list = field(default_factory=list)  # models left untrained, e.g. ["encoder"] to fit a decoder to a
                                   # distilled encoder (train.py --init-from CKPT); the frozen encoder runs in eval mode
  # --- objective ---
  loss_weights: dict = field(default_factory=lambda: {"cos": 1.0, "mse": 1.0, "ce": 0.0, "sem": 0.1, "tok": 0.0,
                                                      "cycle": 0.0})
                                   # sem: in-batch InfoNCE; rel: the student's in-batch neighbour softmax against
                                   # the teacher's (studentz.similarity_kd);
                                   # tok: the teacher's token vectors as per-token targets (token_targets.py);
                                   # cycle: 1 - cos(z, encoder(soft decode of z)), the decoder's softmax times the
                                   # encoder's embedding table read back by the frozen encoder (studentz.cycle_loss);
                                   # bow: the decoder's input bias from z, read by its output head, must name the
                                   # sentence's tokens wherever they stand (studentz.bow_loss; with ce > 0)
  temperature: float = 0.05        # InfoNCE temperature ("sem" term): sharper than 1 so in-batch negatives matter
  # --- optimisation ---
  optimizer: dict = field(default_factory=lambda: {"type": "adamw", "lr": 6e-3, "weight_decay": 0.01})
                                   # lr for batch 512 (results/h100_lr_batch_short_runs.json)
  batch_size: int = 512            # sentences per optimiser step (split into grad_accum micro-batches)
  grad_accum: int = 1              # micro-batches per step; memory scales with batch_size / grad_accum
  warmup_steps: int = 200          # linear warmup, then cosine decay to lr * min_lr_ratio
  min_lr_ratio: float = 0.05
  clip_norm: float = 1.0           # global gradient-norm clip (0 disables)
  precision: str = "fp32"          # "fp32" or "mixed" (half activations, fp32 master weights, dynamic loss scale)
  # --- run ---
  steps: int = 15000               # optimiser steps (about a quarter of an hour on one GPU in mixed precision)
  eval_every: int = 1500           # validate (and checkpoint) every N steps
  patience: int = 8                # early stop after this many evaluations without a better val_cos
  log_every: int = 25
  max_bad_steps: int = 50          # stop after this many consecutive non-finite steps
  seed: int = 0
  data_limit: int = 0              # use only the first N corpus sentences (0 = all)
  data_crops: int = 0              # experimental (CPU: +0.039 held-out cos at 29 passes; GPU untested at 15 minutes,
                                   # README): add up to N word spans of each training sentence as
                                   # training texts with their own teacher vectors (more distinct pairs; 0 = off);
                                   # data_limit counts them too: with 1, a limit holds about half as many sentences
  length_buckets: list = field(default_factory=lambda: [32, 64])  # batches cut to the shortest bucket that fits:
                                   # short sentences stop paying for max_len; one JIT capture per bucket ([] = off)

  def validate(self) -> "Config":
    """Check every field, raising one ValueError that names all the problems found; returns self."""
    # types first: every value check below compares or measures, which on a wrong type (a string from --key value, a
    # JSON list where a number belongs) would raise TypeError deep inside instead of naming the field
    self._check_types()
    errs = []
    def need(ok, msg):
      if not ok: errs.append(msg)
    for check in (self._check_sizes, self._check_shape, self._check_choices, self._check_optimizer,
                  self._check_losses, self._check_schedule):
      check(need)
    if errs: raise ValueError("invalid config: " + "; ".join(errs))
    return self

  def _check_types(self) -> None:
    """Types and finiteness first, so the value checks never meet a value they cannot compare."""
    default = type(self)()
    wrong = []
    for f in fields(self):
      v, want = getattr(self, f.name), type(getattr(default, f.name))
      num = isinstance(v, (int, float)) and not isinstance(v, bool)
      if want is float: ok = num
      else: ok = isinstance(v, bool) if want is bool else isinstance(v, want) and not isinstance(v, bool)
      if not ok:
        wrong.append(f"{f.name} must be {_TYPE_WORDS[want]}, got {json.dumps(v, default=str)[:40]}")
    if wrong: raise ValueError("invalid config: " + "; ".join(wrong))
    # JSON's Infinity/NaN (a --config file, a checkpoint's config.json) pass every comparison below as a "number"
    if bad := [k for f in fields(self) for k in _nonfinite(f.name, getattr(self, f.name))]:
      raise ValueError(f"invalid config: {', '.join(bad)} must be finite numbers (not Infinity or NaN)")

  def _check_sizes(self, need) -> None:
    """Counts and sizes: positive, within the limits a file may set."""
    for k in ("vocab_size", "d_model", "hidden", "n_blocks", "kernel_size", "proj_dim", "batch_size", "grad_accum",
              "steps", "eval_every", "log_every", "dec_blocks"):
      need(isinstance(getattr(self, k), int) and getattr(self, k) > 0, f"{k} must be a positive integer")
    need(self.vocab_size >= 64, "vocab_size must be at least 64")
    need(self.max_len >= 3, "max_len must be at least 3 (BOS, a token, EOS)")
    for k, top in SIZE_LIMITS.items():  # sizes a file can set: each bounded, so memory and time stay finite
      need(getattr(self, k) <= top, f"{k} must be at most {top}, got {getattr(self, k)}")
    need(isinstance(self.dec_draft, int) and self.dec_draft >= 0, "dec_draft must be 0 (none) or a positive rank")
    need(0 <= self.seed < 2 ** 32, "seed must be in [0, 2**32)")

  def _check_shape(self, need) -> None:
    """Convolution shape: odd kernels, one dilation per block."""
    need(self.kernel_size % 2 == 1, "kernel_size must be odd so centred padding is symmetric")
    need(len(self.dilation_schedule) == self.n_blocks,
         f"dilation_schedule has {len(self.dilation_schedule)} entries but n_blocks is {self.n_blocks}")
    need(len(self.dec_dilation_schedule) == self.dec_blocks,
         f"dec_dilation_schedule has {len(self.dec_dilation_schedule)} entries but dec_blocks is {self.dec_blocks}")
    need(all(isinstance(x, int) and x > 0 for x in self.dilation_schedule + self.dec_dilation_schedule),
         "dilations must be positive integers")

  def _check_choices(self, need) -> None:
    """Ratios in range and named options among the known ones."""
    need(0 <= self.dropout < 1, "dropout must be in [0, 1)")
    need(self.data_crops >= 0, "data_crops must be 0 or more")
    need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
    need(0 <= self.mode_b_ratio <= 1, "mode_b_ratio must be in [0, 1]")
    need(0 <= self.decoder_share < 1, "decoder_share must be in [0, 1)")
    need(self.mode_b_mix in ("batch", "row"), "mode_b_mix must be 'batch' or 'row'")
    need(self.norm in ("layer", "group"), "norm must be 'layer' or 'group'")
    need(self.padding in ("centred", "causal"), "padding must be 'centred' or 'causal'")
    need(self.pool in ("mean", "gated"), "pool must be 'mean' or 'gated'")
    need(self.pool_head >= 0, "pool_head must be 0 (off) or a positive width")
    need(not (self.block_context and self.padding == "causal"),
         "block_context needs padding 'centred': a sentence-wide mean would let a causal encoder see the future")
    need(self.embed_init in ("teacher", "random"), "embed_init must be 'teacher' or 'random'")
    need(isinstance(self.freeze, list) and set(self.freeze) <= {"encoder", "decoder", "proj_b"},
         "freeze must be a list of model names: encoder, decoder, proj_b")
    need(self.mode_b_proj in ("mlp", "identity"), "mode_b_proj must be 'mlp' or 'identity'")
    need(self.dec_output in ("separate", "tied"), "dec_output must be 'separate' or 'tied'")
    need(self.precision in ("fp32", "mixed"), "precision must be 'fp32' or 'mixed'")
    need(self.temperature > 0, "temperature must be positive")
    need(self.grad_accum > 0 and self.batch_size % self.grad_accum == 0, "batch_size must be divisible by grad_accum")

  def _check_optimizer(self, need) -> None:
    """The optimizer object: AdamW with known keys and sane hyperparameters."""
    opt = self.optimizer
    need(isinstance(opt, dict) and opt.get("type", "adamw") == "adamw", "optimizer.type must be 'adamw'")
    if isinstance(opt, dict):
      unknown = set(opt) - {"type", "lr", "weight_decay", "betas", "eps"}
      need(not unknown, f"unknown optimizer keys: {sorted(unknown)}")
      need(isinstance(opt.get("lr", 0), (int, float)) and opt.get("lr", 0) > 0, "optimizer.lr must be positive")
      def number(x): return isinstance(x, (int, float)) and not isinstance(x, bool)
      wd = opt.get("weight_decay", 0)
      need(number(wd) and wd >= 0, "optimizer.weight_decay must be >= 0")
      need(number(opt.get("eps", 1e-8)) and opt.get("eps", 1e-8) > 0, "optimizer.eps must be positive")
      betas = opt.get("betas", [0.9, 0.999])
      need(isinstance(betas, (list, tuple)) and len(betas) == 2 and all(number(b) and 0 <= b < 1 for b in betas),
           "optimizer.betas must be two numbers in [0, 1)")

  def _check_losses(self, need) -> None:
    """loss_weights: known keys, non-negative, and combinations that train something coherent."""
    lw = self.loss_weights
    unknown = set(lw) - {"cos", "mse", "ce", "sem", "rel", "tok", "cycle", "bow"}
    need(not unknown, f"unknown loss_weights keys: {sorted(unknown)} (known: cos, mse, ce, sem, rel, tok, cycle, bow)")
    need(all(isinstance(v, (int, float)) and v >= 0 for v in lw.values()), "loss_weights must be >= 0")
    need(not (lw.get("tok", 0) > 0 and lw.get("ce", 0) > 0),
         "loss_weights.tok (token targets) trains the encoder alone: use it with ce 0, then fit a decoder")
    decoder_vs_frozen = lw.get("ce", 0) > 0 and "encoder" in self.freeze
    need(lw.get("cycle", 0) == 0 or decoder_vs_frozen or lw.get("ce", 0) == 0 and self.decoder_share > 0,
         "loss_weights.cycle trains a decoder against a frozen encoder: use it with ce > 0 and freeze [\"encoder\"], "
         "or in the decoder's stage (decoder_share > 0)")

    need(lw.get("bow", 0) == 0 or lw.get("ce", 0) > 0 or self.decoder_share > 0,
         "loss_weights.bow trains the decoder: use it with ce > 0 or in the decoder's stage (decoder_share > 0)")

  def _check_schedule(self, need) -> None:
    """Learning-rate schedule, clipping and length buckets."""
    need(self.warmup_steps >= 0 and 0 <= self.min_lr_ratio <= 1, "warmup_steps >= 0 and min_lr_ratio in [0, 1]")
    need(self.clip_norm >= 0, "clip_norm must be >= 0")
    need(isinstance(self.length_buckets, list) and all(isinstance(b, int) and 3 <= b for b in self.length_buckets),
         "length_buckets must be a list of integers >= 3")

  @classmethod
  def from_dict(cls, d: dict) -> "Config":
    if not isinstance(d, dict): raise ValueError(f"invalid config: expected a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown: raise ValueError(f"invalid config: unknown keys {unknown}")
    base = cls()
    d = counts_follow_schedules(d, set(d))
    for k, v in d.items():  # merge nested dicts so a config may name only the keys it changes
      if isinstance(getattr(base, k), dict) and isinstance(v, dict): v = {**getattr(base, k), **v}
      setattr(base, k, v)
    return base.validate()

  def to_dict(self) -> dict: return asdict(self)

  def override(self, *pairs: tuple[str, str]) -> "Config":
    """Apply `--key value` overrides (all at once, then validate); nested keys use dots (optimizer.lr). Values parse
    as JSON (numbers, lists, true/false), else stay strings. Values are data: nothing is ever evaluated as code."""
    d = self.to_dict()
    for key, value in pairs:
      try: parsed = json.loads(value)
      except json.JSONDecodeError: parsed = value
      head, _, sub = key.replace("-", "_").partition(".")
      if head not in d: raise ValueError(f"invalid config: unknown key {key!r}")
      if sub:
        if not isinstance(d[head], dict): raise ValueError(f"invalid config: {head} has no sub-keys")
        d[head] = {**d[head], sub: parsed}
      else:
        d[head] = parsed
    return Config.from_dict(counts_follow_schedules(d, {k.replace("-", "_").partition(".")[0] for k, _ in pairs}))


# each block schedule and the count that must equal its length
SCHEDULE_COUNTS = {"dilation_schedule": "n_blocks", "dec_dilation_schedule": "dec_blocks"}


def counts_follow_schedules(d: dict, named: set) -> dict:
  """d with n_blocks / dec_blocks set to the length of a schedule that `named` holds and its count is not in: a
  schedule alone says how many blocks there are (so a deeper one needs no second flag)."""
  take = {c: len(d[s]) for s, c in SCHEDULE_COUNTS.items()
          if s in named and c not in named and isinstance(d.get(s), list)}
  return {**d, **take}


def check_streamable(cfg) -> None:
  if cfg.padding != "causal":
    raise ValueError(f"streaming needs a causal encoder but this checkpoint has padding={cfg.padding!r}: the "
                     "checkpoint must be trained with --padding causal")
  if cfg.norm != "layer":
    raise ValueError(f"streaming needs per-token norms but this checkpoint has norm={cfg.norm!r}: GroupNorm "
                     "statistics span the whole sequence, so one new token changes every earlier position "
                     "(train with --norm layer)")
