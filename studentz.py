"""StudentZ: an attention-free student encoder (dilated TCN) distilled into a teacher's sentence-embedding space.

Read top to bottom: config -> building blocks -> encoder -> losses -> optimiser. The JIT'd train step is trainer.py,
checkpoint I/O checkpoint.py.
Shapes: B batch, L tokens, d residual channels, h block channels, D teacher dimension.
"""
from __future__ import annotations
import json, math, os
from dataclasses import dataclass, field, asdict, fields

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import cpu_gemm, cpu_gelu, cuda_gemm, cuda_ops
import numpy as np
from embedding import TokenEmbedding, gather_rows
from tinygrad import Tensor, dtypes
from tinygrad.helpers import TRAINING
from tinygrad.nn.optim import Optimizer

# Block outputs are materialised in the forward (contiguous) and their gradients in the backward
# (contiguous_backward), so no kernel recomputes a whole block: 130 -> 116 ms (fp32), 111 -> 92 ms (bf16) per step on
# an H100 at B=64, L=128. STUDENTZ_CONTIG_ACT=0/1 keeps the other variants for benchmarks.
CONTIG_ACT = int(os.environ.get("STUDENTZ_CONTIG_ACT", "2"))
# GEMMs run on (B*L, C) views: a weight gradient then reduces over one axis, which tinygrad's tensor-core matcher
# needs (with (B, L, C) it reduces over two and falls back to scalar FMA). STUDENTZ_GEMM2D=0 keeps the 3-D form.
GEMM2D = int(os.environ.get("STUDENTZ_GEMM2D", "1"))
# Materialise the k shifted views (im2col) before the conv GEMM, so the GEMM reads two plain buffers. Measured on an
# H100 (README): training 52.6 -> 44.4 ms bf16, 118 -> 88 ms fp32; fp32 encoding 1,303 -> 2,939 sentences/s; but bf16
# encoding 6,206 -> 5,255. 1 (default): in training and in fp32; 2: always; 0: never.
TAPS_CONTIG = int(os.environ.get("STUDENTZ_TAPS_CONTIG", "1"))
# Materialise the gradient of the taps in training, so the input-gradient GEMM is a plain GEMM and the sum over the
# shifted taps a separate elementwise kernel: measured on an H100 (bf16, B=512, L=64) 73.3 -> 69.3 ms per step.
TAPS_GRAD_CONTIG = int(os.environ.get("STUDENTZ_TAPS_GRAD_CONTIG", "1"))
# Give the conv GEMM its weight already cast and in (k*C_in, C_out) order: read through the permute of PyTorch's
# (C_out, C_in, k) layout, every load of the GEMM's second operand strides by k. Measured on an H100 (bf16 step,
# B=512, L=64): 68.9 -> 50.1 ms per step (results/h100_train_step_sweep.json). The CPU prefers the layout of Linear's
# weight, (C_out, k*C_in) rows read transposed: encoding 33.8 -> 67.2 sentences/s at L=32, 8.6 -> 17.0 at L=128 (2
# cores; the (k*C_in, C_out) copy made it slower, 21), training 3.47 -> 2.89 s per step (B=16, L=32, vocab 4000).
# The copy costs as much as a GEMM of one row, so one-token steps (streaming, batch-1 decoding) skip it: 26.1 -> 18.2
# ms per streamed token. GPU encoding keeps the permuted view it was measured with.
W_CONTIG = int(os.environ.get("STUDENTZ_W_CONTIG", "1"))
# Materialise the dropped activation in training, so the 1x1 conv's GEMM (and its weight gradient) reads a plain
# buffer instead of recomputing GELU and the mask inside its loads. H100, bf16, B=512, L=64, dropout 0.1: 69.3 ms fused
# -> 46.7 materialised with heuristic GEMM schedules (42.4 without dropout), 64.3 -> 36.8 with searched ones
# (results/h100_dropout_step.json, h100_profile_*.txt); CPU step 2.83 -> 1.70 s. 0 keeps the fused form.
DROPOUT_CONTIG = int(os.environ.get("STUDENTZ_DROPOUT_CONTIG", "1"))


def matmul2d(x: Tensor, w: Tensor) -> Tensor:
  """(..., C_in) @ (C_in, C_out) with the leading axes flattened into one (see GEMM2D), on our own GEMM kernels where
  they apply (cuda_gemm: bf16/fp16 tensor cores on CUDA; cpu_gemm: float32 on the CPU), else tinygrad's matmul."""
  if not GEMM2D: return x.matmul(w)
  x2 = x.reshape(-1, x.shape[-1])
  y = cuda_gemm.matmul(x2, w) if cuda_gemm.usable(x2, w) else cpu_gemm.matmul(x2, w)
  return y.reshape(*x.shape[:-1], w.shape[-1])


# ----------------------------------------------------------------------------------------------------------------------
# config

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object",
               bool: "true or false"}

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
  dec_output: str = "separate"     # decoder logits: "separate" head, or "tied" to its input embedding (V*d fewer)
  mode_b_proj: str = "mlp"         # how the teacher vector enters the decoder in mode B: "mlp" or "identity"
  mode_b_ratio: float = 0.5        # share of decoder batches fed from the teacher vector (mode B)
  mode_b_mix: str = "batch"        # "batch": whole batches alternate between modes; "row": modes mixed inside a batch
  label_smoothing: float = 0.1     # decoder cross-entropy smoothing
  freeze: list = field(default_factory=list)  # models left untrained, e.g. ["encoder"] to fit a decoder to a
                                   # distilled encoder (train.py --init-from CKPT); the frozen encoder runs in eval mode
  # --- objective ---
  loss_weights: dict = field(default_factory=lambda: {"cos": 1.0, "mse": 1.0, "ce": 0.0, "sem": 0.1, "tok": 0.0})
                                   # tok: the teacher's token vectors as per-token targets (corpus_tokens.py)
  temperature: float = 0.05        # InfoNCE temperature ("sem" term): sharper than 1 so in-batch negatives matter
  # --- optimisation ---
  optimizer: dict = field(default_factory=lambda: {"type": "adamw", "lr": 6e-3, "weight_decay": 0.01})
                                   # lr for batch 512; on an H100 2.4-min runs ranked 8e-3 > 4e-3 > 2e-3 (README)
  batch_size: int = 512            # sentences per optimiser step (split into grad_accum micro-batches); a GPU step
                                   # of 512 costs ~2.3x one of 128 (results/h100_train_step_sweep.json)
  grad_accum: int = 1              # micro-batches per step; memory scales with batch_size / grad_accum
  warmup_steps: int = 200          # linear warmup, then cosine decay to lr * min_lr_ratio
  min_lr_ratio: float = 0.05
  clip_norm: float = 1.0           # global gradient-norm clip (0 disables)
  precision: str = "fp32"          # "fp32" or "mixed" (half activations, fp32 master weights, dynamic loss scale)
  # --- run ---
  steps: int = 15000               # optimiser steps (14.2 min on one H100 in mixed precision, validations included)
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
    # types first: every value check below compares or measures, which on a wrong type (a string from --key value, a
    # JSON list where a number belongs) would raise TypeError deep inside instead of naming the field
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
    errs = []
    def need(ok, msg):
      if not ok: errs.append(msg)
    for k in ("vocab_size", "d_model", "hidden", "n_blocks", "kernel_size", "proj_dim", "batch_size", "grad_accum",
              "steps", "eval_every", "log_every", "dec_blocks"):
      need(isinstance(getattr(self, k), int) and getattr(self, k) > 0, f"{k} must be a positive integer")
    need(self.vocab_size >= 64, "vocab_size must be at least 64")
    need(self.max_len >= 3, "max_len must be at least 3 (BOS, a token, EOS)")
    for k, top in SIZE_LIMITS.items():  # sizes a file can set: each bounded, so memory and time stay finite
      need(getattr(self, k) <= top, f"{k} must be at most {top}, got {getattr(self, k)}")
    need(0 <= self.seed < 2 ** 32, "seed must be in [0, 2**32)")
    need(self.kernel_size % 2 == 1, "kernel_size must be odd so centred padding is symmetric")
    need(len(self.dilation_schedule) == self.n_blocks,
         f"dilation_schedule has {len(self.dilation_schedule)} entries but n_blocks is {self.n_blocks}")
    need(len(self.dec_dilation_schedule) == self.dec_blocks,
         f"dec_dilation_schedule has {len(self.dec_dilation_schedule)} entries but dec_blocks is {self.dec_blocks}")
    need(all(isinstance(x, int) and x > 0 for x in self.dilation_schedule + self.dec_dilation_schedule),
         "dilations must be positive integers")
    need(0 <= self.dropout < 1, "dropout must be in [0, 1)")
    need(self.data_crops >= 0, "data_crops must be 0 or more")
    need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
    need(0 <= self.mode_b_ratio <= 1, "mode_b_ratio must be in [0, 1]")
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
    lw = self.loss_weights
    unknown = set(lw) - {"cos", "mse", "ce", "sem", "tok"}
    need(not unknown, f"unknown loss_weights keys: {sorted(unknown)} (known: cos, mse, ce, sem, tok)")
    need(all(isinstance(v, (int, float)) and v >= 0 for v in lw.values()), "loss_weights must be >= 0")
    need(not (lw.get("tok", 0) > 0 and lw.get("ce", 0) > 0),
         "loss_weights.tok (token targets) trains the encoder alone: use it with ce 0, then fit a decoder")
    need(self.warmup_steps >= 0 and 0 <= self.min_lr_ratio <= 1, "warmup_steps >= 0 and min_lr_ratio in [0, 1]")
    need(self.clip_norm >= 0, "clip_norm must be >= 0")
    need(isinstance(self.length_buckets, list) and all(isinstance(b, int) and 3 <= b for b in self.length_buckets),
         "length_buckets must be a list of integers >= 3")
    if errs: raise ValueError("invalid config: " + "; ".join(errs))
    return self

  @classmethod
  def from_dict(cls, d: dict) -> "Config":
    if not isinstance(d, dict): raise ValueError(f"invalid config: expected a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown: raise ValueError(f"invalid config: unknown keys {unknown}")
    base = cls()
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
    return Config.from_dict(d)


# ----------------------------------------------------------------------------------------------------------------------
# building blocks (channels-last: activations are (B, L, C) so Linear, norms and pooling need no transposes)

# upper bounds of the sizes a config file or checkpoint can set (far above any trained model: max_len 64, vocab 16k)
SIZE_LIMITS = {"max_len": 8192, "vocab_size": 1 << 20, "d_model": 1 << 14, "hidden": 1 << 16, "n_blocks": 256,
               "dec_blocks": 256, "kernel_size": 255, "proj_dim": 1 << 14, "pool_head": 1 << 16, "batch_size": 1 << 20}


def _nonfinite(name: str, v) -> list[str]:
  """Dotted names of the non-finite floats in a config value (nested dicts and lists included)."""
  if isinstance(v, float): return [] if math.isfinite(v) else [name]
  if isinstance(v, dict): return [k for key, x in v.items() for k in _nonfinite(f"{name}.{key}", x)]
  if isinstance(v, (list, tuple)): return [k for x in v for k in _nonfinite(name, x)]
  return []


def _uniform(*shape, fan_in: int) -> Tensor:
  bound = 1 / math.sqrt(fan_in)
  return Tensor.uniform(*shape, low=-bound, high=bound)


class Linear:
  def __init__(self, n_in: int, n_out: int, bias: bool = True):
    self.weight = _uniform(n_out, n_in, fan_in=n_in)  # PyTorch layout, so a torch reference can load it as is
    self.bias = Tensor.zeros(n_out) if bias else None

  def __call__(self, x: Tensor) -> Tensor:
    y = matmul2d(x, self.weight.cast(x.dtype).T)
    return y if self.bias is None else y + self.bias.cast(x.dtype)


def zero_linear(n_in: int, n_out: int) -> Linear:
  """A Linear whose output starts at its zero bias: a new path that leaves the network's function unchanged at init."""
  lin = Linear(n_in, n_out)
  lin.weight = Tensor.zeros(n_out, n_in).contiguous()
  return lin


def weighted_mean(x: Tensor, w: Tensor) -> Tensor:
  """(B, L, C) averaged over L with weights w (B, L, 1) or (B, L, C), zero at padding: (B, C)."""
  return (x * w).sum(1) / w.sum(1).maximum(1e-6)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
  """(B, L, C), (B, L) -> (B, C) in float32, over valid tokens only."""
  m = mask.float().unsqueeze(-1)                                                   # (B, L, 1)
  return (x.float() * m).sum(1) / m.sum(1).maximum(1.0)


def shifted_views(x: Tensor, k: int, dilation: int, left: int) -> Tensor:
  """(B, L, C) -> (B, L, k*C): [x[t + j*dilation - left] for j < k] side by side, zero outside the sequence, in
  tinygrad's ops (cuda_ops.taps is the CUDA kernel of the same)."""
  L, span = x.shape[1], (k - 1) * dilation
  xp = x.pad(((0, 0), (left, span - left), (0, 0)))                                # (B, L + span, C)
  return Tensor.cat(*[xp[:, j * dilation: j * dilation + L] for j in range(k)], dim=-1)


class DilatedConv:
  """Conv1d over tokens as one matmul over k shifted views: (B, L, C_in) -> (B, L, C_out).

  `causal` pads only on the left, so position t sees t - (k-1)*dilation .. t; otherwise the window is centred.
  Weight layout is PyTorch's Conv1d (C_out, C_in, k)."""

  def __init__(self, n_in: int, n_out: int, k: int, dilation: int, causal: bool):
    self.k, self.dilation, self.causal = k, dilation, causal
    self.weight = _uniform(n_out, n_in, k, fan_in=n_in * k)
    self.bias = Tensor.zeros(n_out)

  @property
  def span(self) -> int: return (self.k - 1) * self.dilation

  def __call__(self, x: Tensor) -> Tensor:  # x (B, L, C_in), zero at padding positions
    # k shifted views side by side, then one GEMM. (Measured on an H100: one GEMM to (B, L, k*C_out) followed by a
    # shifted sum of its slices was 15-20% slower in tinygrad 0.14.)
    left = self.span if self.causal else self.span // 2
    if cuda_ops.taps_usable(x): return self.gemm(cuda_ops.taps(x, self.k, self.dilation, left))  # (B, L, k*C) on CUDA
    taps = shifted_views(x, self.k, self.dilation, left)                            # (B, L, k*C_in)
    if TAPS_CONTIG == 2 or (TAPS_CONTIG == 1 and (TRAINING or x.dtype == dtypes.float32)): taps = taps.contiguous()
    if TAPS_GRAD_CONTIG and TRAINING: taps = taps.contiguous_backward()
    return self.gemm(taps)

  def gemm(self, taps: Tensor) -> Tensor:
    """(..., k*C_in) shifted views side by side -> (..., C_out); also the incremental decoder's one-position conv."""
    c_out, c_in = self.weight.shape[0], self.weight.shape[1]
    w = self.weight.cast(taps.dtype)
    if W_CONTIG and str(w.device).split(":")[0] == "CPU" and math.prod(taps.shape[:-1]) >= 16:
      w = w.permute(0, 2, 1).reshape(c_out, self.k * c_in).contiguous().T  # rows (C_out, k*C_in), as Linear's
    else:
      w = w.permute(2, 1, 0).reshape(self.k * c_in, c_out)                   # (k*C_in, C_out), the GEMM's order
      if W_CONTIG and TRAINING: w = w.contiguous()
    return matmul2d(taps, w) + self.bias.cast(taps.dtype)


class CondNorm:
  """LayerNorm (per token) or masked GroupNorm, with a per-mode scale and shift (conditional norm / FiLM).

  The mode (0 = tokens, 1 = teacher vector) lets one network serve both input modes; extra FiLM (gamma, beta) from a
  vector z can be added by the caller."""

  def __init__(self, dim: int, kind: str = "layer", n_modes: int = 2, groups: int = 8, eps: float = 1e-5):
    self.kind, self.groups, self.eps = kind, groups, eps
    self.weight, self.bias = Tensor.ones(n_modes, dim), Tensor.zeros(n_modes, dim)

  def __call__(self, x: Tensor, mask: Tensor, mode: Tensor) -> Tensor:  # x (B, L, C) mask (B, L) mode (B,) int
    xf = x.float()
    if self.kind == "layer":
      y = xf.layernorm(axis=-1, eps=self.eps)
    else:  # masked GroupNorm: statistics over valid tokens only, so padding never changes the result
      B, L, C = xf.shape
      g = xf.reshape(B, L, self.groups, C // self.groups)
      m = mask.reshape(B, L, 1, 1)
      n = (m.sum(axis=(1, 3), keepdim=True) * (C // self.groups)).maximum(1)
      mu = (g * m).sum(axis=(1, 3), keepdim=True) / n
      var = (((g - mu) * m) ** 2).sum(axis=(1, 3), keepdim=True) / n
      y = ((g - mu) * (var + self.eps).rsqrt()).reshape(B, L, C)
    w, b = self.weight[mode].unsqueeze(1), self.bias[mode].unsqueeze(1)           # (B, 1, C)
    return (y * w + b).cast(x.dtype)


def dropout(x: Tensor, p: float) -> Tensor:
  """Tensor.dropout (training only), its output materialised (DROPOUT_CONTIG)."""
  if not TRAINING or p == 0: return x
  return x.dropout(p).contiguous() if DROPOUT_CONTIG else x.dropout(p)


class TCNBlock:
  """x + Conv1x1(Dropout(GELU(Norm(DilatedConv(x))))) with optional FiLM (gamma, beta) after the norm."""

  def __init__(self, d: int, h: int, k: int, dilation: int, causal: bool, norm: str, dropout: float):
    self.conv = DilatedConv(d, h, k, dilation, causal)
    self.norm = CondNorm(h, norm)
    self.out = Linear(h, d)
    self.dropout = dropout

  def __call__(self, x: Tensor, mask: Tensor, mode: Tensor, film: tuple[Tensor, Tensor] | None = None,
               shift: Tensor | None = None) -> Tensor:
    """shift (B, h): added to the conv's output at every position, before the norm (Encoder's block_context)."""
    m = mask.unsqueeze(-1).cast(x.dtype)                                           # (B, L, 1)
    conv_out = self.conv(x * m)                                                    # (B, L, h)
    if shift is not None: conv_out = conv_out + shift.unsqueeze(1)
    out = self.residual(x, conv_out, mask, mode, film)                             # (B, L, d)
    if CONTIG_ACT >= 2: out = out.contiguous_backward()
    return out.contiguous() if CONTIG_ACT else out

  def residual(self, x: Tensor, conv_out: Tensor, mask: Tensor, mode: Tensor,
               film: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x + the block's branch after its conv; the incremental decoder (decoder.Decoder.step) shares it."""
    y = self.norm(conv_out, mask, mode)                                            # (B, L, h)
    if film is not None: y = y * (1 + film[0].unsqueeze(1)) + film[1].unsqueeze(1)
    return x + self.out(dropout(cpu_gelu.gelu(y), self.dropout))                   # (B, L, d)


# ----------------------------------------------------------------------------------------------------------------------
# encoder: tokens -> z in the teacher's space

class Encoder:
  def __init__(self, cfg: Config):
    self.cfg = cfg
    causal = cfg.padding == "causal"
    self.embed = TokenEmbedding(cfg.vocab_size, cfg.d_model)
    self.blocks = [TCNBlock(cfg.d_model, cfg.hidden, cfg.kernel_size, dl, causal, cfg.norm, cfg.dropout)
                   for dl in cfg.dilation_schedule]
    self.norm = CondNorm(cfg.d_model, "layer")
    self.gate = Linear(cfg.d_model, 1) if cfg.pool == "gated" else None
    self.proj = Linear(cfg.d_model, cfg.proj_dim)
    # both extras start as zero paths, so the teacher initialisation (student_init.py) still holds at step 0
    # the context enters before each block's norm, which bounds it; a first version scaled the normed activations
    # by (1 + gamma) after it, as the decoder's FiLM does, and a run with it and the pool head collapsed on an H200
    self.ctx_in = [zero_linear(cfg.d_model, cfg.hidden) for _ in self.blocks] if cfg.block_context else None
    if cfg.pool_head:
      self.head_up = Linear(cfg.d_model, 2 * cfg.pool_head)                       # values and their gate logits
      self.head_down = zero_linear(cfg.pool_head, cfg.proj_dim)
    self.act_dtype = dtypes.float32

  @property
  def receptive_field(self) -> int:
    return 1 + sum((self.cfg.kernel_size - 1) * d for d in self.cfg.dilation_schedule)

  def features(self, tokens: Tensor, mask: Tensor, mode: Tensor | None = None) -> Tensor:
    """Per-token features (B, L, d) after the TCN stack and final norm."""
    if mode is None: mode = Tensor.zeros(tokens.shape[0], dtype=dtypes.int32, device=tokens.device)
    x = self.embed(tokens).cast(self.act_dtype)                                    # (B, L, d)
    for i, blk in enumerate(self.blocks):
      # block_context: the sentence's mean input, seen by every position of the block
      shift = None if self.ctx_in is None else self.ctx_in[i](masked_mean(x, mask).cast(x.dtype))  # (B, h)
      x = blk(x, mask, mode, shift=shift)
    return self.norm(x, mask, mode)

  def pool(self, x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) -> (B, d); weights are normalised over valid tokens only, so padding never changes the result."""
    xf, m = x.float(), mask.float()
    if self.gate is None:
      w = m
    else:  # a sigmoid gate per token: a soft choice of which tokens matter, with no interaction between tokens
      w = self.gate(x).float().squeeze(-1).sigmoid() * m + 1e-6 * m                # (B, L)
    return weighted_mean(xf, w.unsqueeze(-1))

  def head_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
    """The pool head's per-token values and gates (B, L, P) each, float32; gates > 0 so every sum is positive."""
    u = self.head_up(x).float()                                                    # (B, L, 2P)
    P = self.cfg.pool_head
    return u[..., :P].gelu(), u[..., P:].sigmoid() + 1e-6

  def head(self, x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) -> (B, D): each of P features pooled with its own weights over valid tokens, like P one-feature
    attention heads whose scores come from the token alone (no query, no token-to-token weights)."""
    v, g = self.head_terms(x)
    g = g * mask.float().unsqueeze(-1)                                             # (B, L, P)
    return self.head_down(weighted_mean(v, g).cast(self.act_dtype)).float()       # (B, P) pooled -> (B, D)

  def z(self, x: Tensor, mask: Tensor) -> Tensor:
    """Per-token features (B, L, d) -> the sentence vector z (B, D)."""
    z = self.proj(self.pool(x, mask).cast(self.act_dtype)).float()                 # (B, D)
    return z + self.head(x, mask) if self.cfg.pool_head else z

  def __call__(self, tokens: Tensor, mask: Tensor) -> Tensor:  # tokens (B, L) int, mask (B, L) float -> z (B, D)
    return self.z(self.features(tokens, mask), mask)


def display_grid(dim: int) -> tuple[int, int]:
  """The grid z is shown on: 768 -> 32x24, 384 -> 16x24; other sizes get the squarest factorisation."""
  if dim % 24 == 0: return dim // 24, 24
  best = max(r for r in range(1, int(math.isqrt(dim)) + 1) if dim % r == 0)
  return dim // best, best


def as_grid(z: np.ndarray) -> np.ndarray:
  """z (..., D) -> (..., rows, cols) for display."""
  r, c = display_grid(z.shape[-1])
  return z.reshape(*z.shape[:-1], r, c)


# ----------------------------------------------------------------------------------------------------------------------
# losses (z_s student, z_t teacher; both (B, D))

# Each loss reduces per row first into a materialised (B,) vector: otherwise tinygrad fuses every term's full
# reduction into the one kernel that produces the scalar loss, which then runs with little parallelism (profiled on an
# H100 at B=512: 5.7 ms of a 69 ms step; results/h100_profile_bf16_step_b512.txt, r_8_16_32_512_384_512_512).

def cosine_loss(zs: Tensor, zt: Tensor) -> Tensor:
  return 1 - _cos(zs, zt).contiguous().mean()


def _cos(a: Tensor, b: Tensor) -> Tensor:
  return (a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1) + 1e-12).sqrt()


def mse_loss(zs: Tensor, zt: Tensor) -> Tensor:
  """Mean squared error per coordinate, scaled by D so it is the squared distance: independent of the dimension."""
  return ((zs - zt) ** 2).sum(-1).contiguous().mean()


def info_nce(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
  """Symmetric in-batch InfoNCE: each student vector must pick its own teacher vector among the batch's."""
  a = zs / ((zs * zs).sum(-1, keepdim=True) + 1e-12).sqrt()
  b = zt / ((zt * zt).sum(-1, keepdim=True) + 1e-12).sqrt()
  logits = (a.matmul(b.T) / temperature).contiguous()                              # (B, B)
  labels = Tensor.arange(zs.shape[0]).to(zs.device)
  rows = logits.sparse_categorical_crossentropy(labels, reduction="none").contiguous()     # (B,)
  cols = logits.T.sparse_categorical_crossentropy(labels, reduction="none").contiguous()   # (B,)
  return (rows.mean() + cols.mean()) / 2


def token_loss(y: Tensor, target: Tensor, mask: Tensor) -> Tensor:
  """Squared distance between per-token predictions y (B, L, D) and the teacher's token targets (corpus_tokens.py),
  averaged over the positions that have one (mask (B, L))."""
  m = mask.float()
  d = ((y.float() - target.float()) ** 2).sum(-1)                                  # (B, L)
  return (d * m).sum(-1).contiguous().sum() / m.sum().maximum(1)


def distill_losses(zs: Tensor, zt: Tensor, cfg: Config, extra: dict | None = None) -> dict[str, Tensor]:
  """The weighted objective; `extra` holds terms computed elsewhere (token_loss as "tok")."""
  w = cfg.loss_weights
  parts = {"cos": cosine_loss(zs, zt), "mse": mse_loss(zs, zt), **(extra or {})}
  if w.get("sem", 0) > 0: parts["sem"] = info_nce(zs, zt, cfg.temperature)
  parts["loss"] = sum(w.get(k, 0) * v for k, v in parts.items())
  return parts


# ----------------------------------------------------------------------------------------------------------------------
# optimiser: AdamW on tinygrad's Optimizer base, with the LR schedule, clipping and overflow skip inside the graph

def lr_at(step: Tensor, cfg: Config, total: Tensor) -> Tensor:
  """Linear warmup then cosine decay, computed on device from a step counter so the JIT sees no Python scalars; the
  schedule's length `total` is a (1,) float tensor too (Trainer.total_t: train.py --minutes re-plans it in a run)."""
  base, warm = float(cfg.optimizer["lr"]), max(cfg.warmup_steps, 1)
  s = step.float() + 1
  warm_lr = base * s / warm
  prog = ((s - warm) / (total.reshape(()) - warm).maximum(1)).clip(0, 1)
  cos_lr = base * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + (prog * math.pi).cos()))
  return (s < warm).where(warm_lr, cos_lr)


def decays(name: str, t: Tensor) -> bool:
  """Weight decay on matrices only: biases, norm scales/shifts and gates are left alone."""
  return len(t.shape) >= 2 and ".norm" not in name and not name.startswith("norm") and "film" not in name


class AdamW(Optimizer):
  """Decoupled AdamW (Loshchilov & Hutter). A step whose gradients are not finite leaves params and moments as they
  were, so mixed precision can skip it and back off the loss scale; the caller passes `ok` (a 0/1 tensor)."""

  def __init__(self, named: dict[str, Tensor], lr: float, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01):
    super().__init__(list(named.values()), lr, fused=False)
    self.names = list(named)
    self.b1, self.b2, self.eps, self.wd = b1, b2, eps, weight_decay
    self.decay = [decays(n, t) for n, t in named.items()]
    self.m = [Tensor.zeros(*t.shape, dtype=dtypes.float32, device=t.device).contiguous() for t in self.params]
    self.v = [Tensor.zeros(*t.shape, dtype=dtypes.float32, device=t.device).contiguous() for t in self.params]
    self.t = Tensor.zeros(1, dtype=dtypes.float32, device=self.device).contiguous()

  def update(self, grads: list[Tensor], lr: Tensor, ok: Tensor) -> list[Tensor]:
    """Schedule one update with these gradients; returns the tensors to realize."""
    t_new = self.t + ok
    self.t.assign(t_new)
    keep = ok > 0.5
    bc1, bc2 = 1 - self.b1 ** t_new.maximum(1), 1 - self.b2 ** t_new.maximum(1)
    for i, (p, g) in enumerate(zip(self.params, grads)):
      g = g.float()
      m_new = self.b1 * self.m[i] + (1 - self.b1) * g
      v_new = self.b2 * self.v[i] + (1 - self.b2) * g * g
      step = (m_new / bc1) / ((v_new / bc2).sqrt() + self.eps)
      if self.decay[i]: step = step + self.wd * p.detach()
      p_new = p.detach() - lr * step
      self.m[i].assign(keep.where(m_new, self.m[i]))
      self.v[i].assign(keep.where(v_new, self.v[i]))
      p.assign(keep.where(p_new, p.detach()).cast(p.dtype))
    return [self.t, *self.m, *self.v, *self.params]

  def state(self) -> dict[str, Tensor]:
    return {"t": self.t, **{f"m.{n}": m for n, m in zip(self.names, self.m)},
            **{f"v.{n}": v for n, v in zip(self.names, self.v)}}


def distill_loss_fn(models: dict, batch: dict[str, Tensor], tok_table: Tensor | None = None) -> dict[str, Tensor]:
  """The encoder's objective on a batch {tokens, mask, teacher}, plus the token targets either as tok_target (B, L, D)
  or as tok_index (B, L) rows of tok_table, the whole table held on the device (trainer.device_table)."""
  enc: Encoder = models["encoder"]
  if "tok_mask" not in batch: return distill_losses(enc(batch["tokens"], batch["mask"]), batch["teacher"], enc.cfg)
  x = enc.features(batch["tokens"], batch["mask"])                                 # (B, L, d)
  target = batch["tok_target"] if "tok_target" in batch else gather_rows(tok_table, batch["tok_index"])  # (B, L, D)
  # token targets: each token's own projection (the one z pools through) against the teacher's vector of that token
  tok = token_loss(enc.proj(x).float(), target, batch["tok_mask"])
  return distill_losses(enc.z(x, batch["mask"]), batch["teacher"], enc.cfg, {"tok": tok})


# checkpoint I/O lives in checkpoint.py; re-exported because callers know it as studentz.save_tensors etc.
from checkpoint import (FORMAT_VERSION, CheckpointError, assign_state, atomic_write_bytes,  # noqa: E402,F401
                        host, load_tensors, save_tensors)


def __getattr__(name):  # `studentz.StudentZ` / `.Trainer` without importing those modules (and their deps) eagerly
  if name == "StudentZ":
    from studentz_api import StudentZ
    return StudentZ
  if name in ("Trainer", "half_dtype"):
    import trainer
    return getattr(trainer, name)
  raise AttributeError(name)
