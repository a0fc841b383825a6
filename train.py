"""Distill a transformer sentence encoder (the teacher) into the attention-free StudentZ encoder.

  python train.py                                  # bundled Wikipedia, default teacher, sized for this machine
  python train.py --config cfg.json --steps 5000 --out runs/big --optimizer.lr 1e-3
  python train.py --resume runs/big                # continue runs/big/last exactly where it stopped
  python train.py --eval runs/big/best --json      # metric table of a checkpoint

Reads top to bottom: arguments -> config -> data -> model -> loop (log, validate, checkpoint) -> evaluation.
"""
from __future__ import annotations
import argparse, functools, json, signal, sys, time
from dataclasses import replace
from pathlib import Path

from studentz_kernels import backend
from studentz_runtime.checkpoint import read_checkpoint_info
from studentz_runtime.encode_tinygrad import encode_ids
from studentz_training import heldout
from studentz_training.heldout import (default_corpus, default_source, default_stsb, domain_rows,  # noqa: F401
                                       embed_split, split_rows, vector_metrics)
from studentz_training.run_folder import Checkpointer, run_lock

# runs/ goes beside train.py in a checkout; an installed studentz-train writes it in the working folder
ROOT = Path(__file__).resolve().parent if (Path(__file__).resolve().parent / "setup.py").is_file() else Path.cwd()
DEFAULT_TEACHER = "all-MiniLM-L6-v2"

# A 2-core CPU cannot train the full model in minutes: this profile keeps the default run short there. Values the
# user sets (config file or --key) always win; the run prints which profile it took.
CPU_PROFILE = dict(vocab_size=4000, d_model=96, hidden=192, n_blocks=4, kernel_size=3, dilation_schedule=[1, 2, 4, 8],
                   dec_blocks=3, dec_dilation_schedule=[1, 2, 4], batch_size=32, steps=200, eval_every=100,
                   warmup_steps=20, data_limit=2000, max_len=48, length_buckets=[],
                   optimizer={"type": "adamw", "lr": 2e-3, "weight_decay": 0.01},
                   # the pool head: +0.038 val_cos and +7.6 STS-B points at 600 CPU steps, each step 37% longer
                   # (results/cpu_extras_600_steps.json)
                   pool_head=384)
# token targets: +0.022 val_cos at 600 CPU steps (results/cpu_token_targets_600_steps.json); their teacher pass
# also gives the sentence vectors, so the slice still goes through the teacher once
CPU_PROFILE["loss_weights.tok"] = 0.25
# The full configuration (a GPU) on top of studentz.Config's defaults, which stay as they were so that checkpoints
# saved before these fields existed load unchanged. The pool head, token targets and no dropout each raised val_cos in
# GPU runs of equal wall time (the student sees each sentence many times and still gains from fitting it closer).
# Dotted keys set one entry of a dict field.
FULL_PROFILE = {"pool_head": 1024, "loss_weights.tok": 0.25, "dropout": 0.0}


def parse_args(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="Any config field can be overridden as --key value (nested: --optimizer.lr 1e-3, --loss_weights.sem 0); "
           "run with --print-config to see them all. Device: DEV=CUDA / CUDA=1 / METAL=1 / CPU=1 before the command. "
           "STUDENTZ_GEMM_BEAM: the training step's large GEMMs take searched schedules already known (default "
           "'cached': tinygrad's cache db and the bundled beam/ files, never a search), 2 searches the unknown ones "
           "(minutes per kernel, once per card kind), 0 turns it off.")
  p.add_argument("--config", type=Path, help="JSON config file (fields of studentz.Config); unset fields keep defaults")
  p.add_argument("--teacher", default=None, help=f"teacher name, local HF folder or hub id (default {DEFAULT_TEACHER})")
  p.add_argument("--steps", type=int, help="optimiser steps (overrides the config)")
  p.add_argument("--out", type=Path, default=None,
                 help="run folder for metrics.jsonl and checkpoints (default runs/NAME)")
  p.add_argument("--data-source", type=Path, default=None,
                 help="corpus: text (one per line), JSONL with a 'text' field, .gz of either, or a mix file (.json: "
                      "several sources, each a domain with a weight; see data/everyday-mix.json, the default)")
  p.add_argument("--data-dir", type=Path, default=None,
                 help="where prepared data is cached (default runs/data/...); with --eval, the folder whose test split "
                      "(and teacher vectors) to evaluate on instead of the checkpoint's own (a shipped model names "
                      "none): it must use the checkpoint's tokenizer")
  p.add_argument("--profile", choices=["auto", "full", "cpu"], default="auto",
                 help="auto: small model + corpus slice on CPU, full config on a GPU (default auto)")
  p.add_argument("--time-limit", type=float, default=0, metavar="MIN",
                 help="stop training after this many minutes (validates and checkpoints first); 0 = no limit")
  p.add_argument("--minutes", type=float, default=0, metavar="MIN",
                 help="train for this many minutes with a complete LR schedule: the step count (--steps) is planned "
                      "from the step rate measured once the JIT has compiled, and re-planned as the run goes "
                      "(validations included), so the cosine decay ends at the budget; with --resume, the minutes "
                      "left for the rest of it; --time-limit may stop this process earlier (a pause); 0 = off")
  p.add_argument("--teacher-batch-size", type=int, default=0, help="teacher batch (default 256 on GPU, 32 on CPU)")
  p.add_argument("--teacher-precision", default="auto", choices=["auto", "fp32", "fp16"],
                 help="the teacher's matmuls in the pass over the corpus (vectors, token targets): auto = fp16 on a "
                      "GPU (float32 sums; vectors within cosine 0.99999 of fp32), fp32 on a CPU; evaluation uses fp32")
  p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last checkpoint")
  p.add_argument("--init-from", type=Path, default=None, metavar="CKPT_DIR",
                 help="start from the weights of the models this checkpoint holds (same tokenizer; the encoder's "
                      "shape is taken from it unless you set it), e.g. a distilled encoder to fit a decoder to: "
                      "--init-from runs/x/best --loss_weights.ce 1 --freeze '[\"encoder\"]'")
  p.add_argument("--eval", type=Path, default=None, metavar="CKPT_DIR", help="evaluate a checkpoint and exit")
  p.add_argument("--json", action="store_true", help="with --eval: print one JSON object")
  p.add_argument("--decode-limit", type=int, default=512,
                 help="with --eval: decode this many held-out sentences (<= 32 tokens) in modes A and B (0 = skip)")
  p.add_argument("--eval-split", choices=["test", "val"], default="test",
                 help="with --eval: the held-out split whose first 4,096 sentences of each domain give val_cos, "
                      "val_cos_<domain>, val_mse and P@10 (on the first domain) "
                      "(test: never seen in training; val: the split training validates on, so it chose the best "
                      "checkpoint)")
  p.add_argument("--stsb-limit", type=int, default=0,
                 help="with --eval: use only the first N STS-B test pairs (0 = all 1379; the teacher's side is cached)")
  p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("--devices", type=int, default=None, metavar="N",
                 help="data-parallel training over N devices of the backend (e.g. CUDA:0..N-1); batch_size must be "
                      "divisible by N (default: $GPUS, else 1)")
  p.add_argument("--tok-table", choices=["auto", "device", "host"], default="auto",
                 help="with token targets (loss_weights.tok > 0): 'device' copies their whole table (2 bytes x D per "
                      "corpus token: ~10 GB for the bundled corpus at D=384) onto each training device once and "
                      "gathers each batch's rows there; 'host' gathers them on the CPU and copies them every step "
                      "(B x L x D x 2 bytes: 25 MB at B=512, L=64); auto: device on a GPU backend, falling back to "
                      "host with a note if it does not fit, host on the CPU backend (default auto)")
  args, rest = p.parse_known_args(argv)
  overrides = []
  i = 0
  while i < len(rest):  # the remaining --key value pairs are config overrides
    tok = rest[i]
    key, eq, val = tok[2:].partition("=")
    # --key=value carries its value; --key takes the next argument (so a final --key=value is complete on its own)
    if not tok.startswith("--") or not eq and i + 1 >= len(rest):
      p.error(f"unexpected argument {tok!r}: config overrides take the form --key value")
    if not eq:
      val = rest[i + 1]
      i += 1
    overrides.append((key, val))
    i += 1
  return p, args, overrides


def resolve_config(args, overrides, device: str):
  from studentz import Config
  user: dict = {}
  if args.config:
    # ValueError, not SystemExit(msg): main turns it into one line and exit status 2 like every other bad input
    if not args.config.is_file(): raise ValueError(f"config file not found: {args.config}")
    try: user = json.loads(args.config.read_text(), parse_constant=no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e: raise ValueError(f"{args.config} is not valid JSON: {e}")
    except RecursionError: raise ValueError(f"{args.config} is nested too deeply to be a config") from None
    except ValueError as e: raise ValueError(f"{args.config}: {e}") from None  # Infinity / NaN
    if not isinstance(user, dict): raise ValueError(f"{args.config} must hold a JSON object")
  if args.steps is not None: overrides = [*overrides, ("steps", str(args.steps))]
  cfg = Config.from_dict(user).override(*overrides)
  set_by_user = set(user) | {k.split(".")[0].replace("-", "_") for k, _ in overrides}
  # what the user named exactly: a whole field, or one entry of a dict field (a config file's dict names its entries)
  named = {k.replace("-", "_") for k, _ in overrides}
  for k, v in user.items(): named |= {f"{k}.{e}" for e in v} if isinstance(v, dict) else {k}
  profile = args.profile
  if profile == "auto": profile = "cpu" if device.split(":")[0] == "CPU" else "full"
  cfg, args.profile_set = apply_profile(cfg, CPU_PROFILE if profile == "cpu" else FULL_PROFILE, named, set_by_user)
  if profile == "full" and device.split(":")[0] != "CPU" and "precision" not in set_by_user:
    # accelerators: half activations on the tensor cores (bf16 on CUDA), fp32 master weights; ~2x faster steps
    cfg = Config.from_dict({**cfg.to_dict(), "precision": "mixed"})
  if args.init_from is not None:  # the encoder's shape comes with its weights, unless the user set it
    from studentz_runtime.checkpoint import CheckpointError
    from studentz_training.run_folder import with_encoder_shape
    try: cfg = with_encoder_shape(cfg, args.init_from, keep=set_by_user)
    except CheckpointError as e: raise ValueError(f"--init-from: {e}") from None
  return cfg.validate(), profile


def no_constant(name: str):
  """json.loads' parse_constant: Infinity / NaN are not JSON numbers, and an infinite lr makes every tensor NaN."""
  raise ValueError(f"{name} is not a valid config value: numbers must be finite")


def apply_profile(cfg, prof: dict, named: set, set_by_user: set):
  """(cfg with the profile's entries the user left unset, the keys it set). An entry "field.key" is skipped when the
  user named it or the whole field, a plain one when the user set the field in any way."""
  from studentz import Config
  entries = {}
  for key, v in prof.items():
    head, _, sub = key.partition(".")
    if key == "dropout" and cfg.loss_weights.get("ce", 0) > 0: continue  # measured for distillation: a decoder in
    # training (which writes text, and over-fits sooner) keeps the config's dropout
    if not (key in named or (sub and head in named) or (not sub and head in set_by_user)): entries[key] = v
  def with_entries(keys) -> Config:
    d = cfg.to_dict()
    for key in keys:
      head, _, sub = key.partition(".")
      d[head] = {**d[head], sub: entries[key]} if sub else entries[key]
    return Config.from_dict(d)
  # all together (n_blocks and dilation_schedule only fit as a pair); if that clashes with the user's choices (token
  # targets with a decoder's ce), without the one entry that does; if nothing fits, the error is the user's to see
  for keys in [list(entries)] + [[k for k in entries if k != drop] for drop in entries]:
    try: return with_entries(keys), keys
    except ValueError: continue
  return with_entries(list(entries)), list(entries)


def main(argv=None) -> int:
  parser, args, overrides = parse_args(argv)
  device = backend.check_device()
  if args.eval is not None:
    from studentz_training.eval_checkpoint import run_eval
    return run_eval(args.eval, json_out=args.json, stsb_limit=args.stsb_limit, decode_limit=args.decode_limit,
                    data_dir=args.data_dir, split=args.eval_split)
  from studentz import CheckpointError
  from studentz_kernels import parallel
  try:
    if args.minutes < 0 or args.time_limit < 0: raise ValueError("--minutes and --time-limit must be 0 or more")
    args.devices = parallel.device_count(args.devices)
    if args.devices > 1: parallel.device_names(args.devices)  # a missing card fails here, before any data work
    if args.resume is not None: return resume(args, overrides)
    cfg, profile = resolve_config(args, overrides, device)
    parallel.check_batch(cfg.batch_size, cfg.grad_accum, args.devices)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.print_config:
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0
  out = args.out or ROOT / "runs" / time.strftime("run-%Y%m%d-%H%M%S")
  try:
    with run_lock(out):  # owned before any data work: a second run on this folder fails here, at once
      return start_run(cfg, profile, out, args, device)
  except (CheckpointError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def start_run(cfg, profile: str, out: Path, args, device: str) -> int:
  if (out / "last").exists():
    raise ValueError(f"{out} already holds a run; use --resume {out} to continue it or pick another --out")
  dp = f" x {args.devices} (data parallel)" if args.devices > 1 else ""
  print(f"device {device}{dp} · profile {profile}" + (" (small model + corpus slice so a CPU run takes minutes; "
        "--profile full for the full config)" if profile == "cpu" else ""), file=sys.stderr)
  return train(cfg, args.teacher or DEFAULT_TEACHER, out, args, device)


def load_teacher_or_exit(name: str):
  try:
    return heldout.load_teacher(name)
  except Exception as e:  # missing folder, offline hub id, corrupt weights: one line, no traceback
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    fail(f"cannot load teacher {name!r}: {msg}")


def fail(msg: str):
  """One line on stderr and exit status 2 (bad input), the same contract main() keeps for config errors."""
  print(f"error: {msg}", file=sys.stderr)
  raise SystemExit(2)


def teacher_batch_size(args) -> int:
  return args.teacher_batch_size or (32 if backend.device_name().split(":")[0] == "CPU" else 256)


class StepPlanner:
  """--minutes: the step count that ends training inside the budget. The step rate is measured after the first steps
  (JIT capture, the length buckets' first batches), over the later half of the time since, so it follows the run as
  validations and checkpoints come in without the early transients; it is re-measured at every device sync. A plan
  moves only when it changes by more than 2%, keeps a 3% margin, and the budget is also a hard stop."""
  SETTLE_STEPS, MIN_STEPS, MARGIN = 20, 200, 0.97

  def __init__(self, minutes: float, start_step: int, clock=time.perf_counter):
    self.clock, self.deadline = clock, clock() + minutes * 60
    self.settle, self.seen = start_step + self.SETTLE_STEPS, []  # (steps done, time) from the settled step on
    self.min_seconds = min(20.0, minutes * 3)  # 5% of the budget, at most 20 s

  def plan(self, done: int, total: int) -> int | None:
    """After a device sync with `done` steps finished: a new total step count, or None to keep `total`."""
    now = self.clock()
    if not self.seen and done < self.settle: return None
    self.seen.append((done, now))
    (d0, t0) = self.seen[0]
    if now - t0 < self.min_seconds and done - d0 < self.MIN_STEPS: return None  # too little seen to trust a rate
    ref_done, ref_t = max((p for p in self.seen[:-1] if p[1] <= (t0 + now) / 2), key=lambda p: p[1])
    rate = (done - ref_done) / max(now - ref_t, 1e-9)
    new = max(done + int(max(self.deadline - now, 0) * rate * self.MARGIN), done + 1)
    return new if abs(new - total) > 0.02 * total else None

  def discount(self, seconds: float) -> None:
    """Leave a one-off pause out of the measured rate (the first validation, which compiles its kernels, would cut the
    plan short until later syncs outweighed it); the budget still pays for it."""
    self.seen = [(d, t + seconds) for d, t in self.seen]


def default_data_dir(cfg, source, tokenizer=None) -> Path:
  """runs/data/<corpus>-<limit>-v<vocab>-l<max_len>[-c<crops>]-<content hash>: one folder per corpus content, slice
  and tokenizer (two corpora of the same file name never share one)."""
  import hashlib
  from studentz_corpus import prepare as corpus, mix as corpus_mix
  crops = f"-c{cfg.data_crops}" if cfg.data_crops else ""
  name = f"{Path(source).name.split('.')[0]}-{cfg.data_limit or 'all'}-v{cfg.vocab_size}-l{cfg.max_len}{crops}"
  content = (corpus_mix.fingerprint(corpus_mix.load_mix(source), corpus.source_fingerprint)
             if corpus_mix.is_mix(source) else corpus.source_fingerprint(source))
  key = json.dumps([content, tokenizer.fingerprint if tokenizer is not None else None], sort_keys=True)
  return ROOT / "runs" / "data" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def prepare_data(cfg, teacher, args, quiet: bool):
  """Sentences, student tokenizer, token ids and teacher vectors: each computed once and cached on disk. Also returns
  the seconds each phase took, for the `data:` line: a GPU run's ~6 minutes before step 1 were not broken down."""
  from studentz_corpus import prepare as corpus
  t0 = time.perf_counter()
  source = args.data_source or default_source()
  if source is None:
    fail("no corpus found: pass --data-source PATH (text, JSONL or .gz) or set STUDENTZ_DATA "
         "to a folder holding wikipedia/enwiki-docs.jsonl.gz")
  if not Path(source).is_file(): fail(f"corpus file not found: {source}")
  # a warm start keeps its checkpoint's tokenizer: a user's own corpus is tokenized as the model was trained
  tok = None
  if getattr(args, "init_from", None) is not None:
    from studentz_corpus.tokenizer import StudentTokenizer
    try: tok = StudentTokenizer.load(Path(args.init_from) / "tokenizer.json")
    except (OSError, ValueError) as e: fail(f"--init-from: cannot read {args.init_from}/tokenizer.json: {e}")
  data_dir = args.data_dir or default_data_dir(cfg, source, tok)
  if tok is not None and (meta := corpus.read_json(Path(data_dir) / "meta.json")) is not None and \
     meta.get("tokenizer_fingerprint", tok.fingerprint) != tok.fingerprint:  # never re-tokenize a user's folder
    fail(f"--init-from: {args.init_from} was trained with another tokenizer than the data in {data_dir}; give "
         "another --data-dir (or none) to prepare the corpus with the checkpoint's tokenizer")
  dd = corpus.prepare(source, data_dir, tokenizer=tok, vocab_size=cfg.vocab_size, max_len=cfg.max_len,
                      limit=cfg.data_limit or None, progress=not quiet, crops=cfg.data_crops)
  t1 = time.perf_counter()
  from teacher.embedder import bulk_precision
  before = getattr(teacher, "precision", None)  # test doubles have none
  if before is not None: teacher.precision = bulk_precision(args.teacher_precision, backend.device_name())
  try:
    if cfg.loss_weights.get("tok", 0) > 0:  # first: one teacher pass gives the sentence vectors too, if still missing
      from studentz_corpus import token_targets as corpus_tokens
      corpus_tokens.compute_token_targets(data_dir, teacher, batch_size=teacher_batch_size(args), progress=not quiet)
    corpus.compute_teacher_vectors(data_dir, teacher, batch_size=teacher_batch_size(args), progress=not quiet)
  finally:
    if before is not None: teacher.precision = before
  return dd, Path(data_dir), {"sentences and tokens": t1 - t0, "teacher pass": time.perf_counter() - t1}


def train(cfg, teacher_name: str, out: Path, args, device: str, state=None) -> int:
  import numpy as np
  from studentz_corpus import prepare as corpus
  from tinygrad import Tensor
  from studentz_corpus.progress import Progress
  import studentz as sz
  from studentz_training.trainer import Trainer

  teacher = load_teacher_or_exit(teacher_name)
  if cfg.proj_dim != teacher.dim:
    cfg = sz.Config.from_dict({**cfg.to_dict(), "proj_dim": teacher.dim})
  from studentz_corpus import token_targets as corpus_tokens
  if cfg.loss_weights.get("tok", 0) > 0 and (why := corpus_tokens.unsupported(teacher)):
    if state is not None or "loss_weights.tok" not in getattr(args, "profile_set", []): fail(f"loss_weights.tok: {why}")
    print(f"note: {why}; training without them (loss_weights.tok 0)", file=sys.stderr)
    cfg = sz.Config.from_dict({**cfg.to_dict(), "loss_weights": {**cfg.loss_weights, "tok": 0.0}})
  dd, data_dir, took = prepare_data(cfg, teacher, args, args.quiet)
  from studentz_corpus.tokenizer import StudentTokenizer
  tok = StudentTokenizer.load(data_dir / "tokenizer.json")
  if tok.vocab_size > cfg.vocab_size: raise ValueError(f"tokenizer has {tok.vocab_size} ids > vocab_size")
  tkey = teacher.fingerprint
  buckets = sorted({b for b in cfg.length_buckets if b < cfg.max_len} | {cfg.max_len}) if cfg.length_buckets else None
  with_tok = cfg.loss_weights.get("tok", 0) > 0
  train_loader = corpus.Loader(data_dir, "train", cfg.batch_size, teacher_key=tkey, seed=cfg.seed,
                               length_buckets=buckets, token_targets=with_tok)
  val = domain_rows(data_dir, "val", tkey, 1024)
  print(f"data: {len(train_loader) * cfg.batch_size} train sentences, teacher {teacher.name} (D={teacher.dim}), "
        f"run folder {out}; " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()), file=sys.stderr)

  Tensor.manual_seed(cfg.seed)
  enc = sz.Encoder(cfg)
  if state is None and cfg.embed_init == "teacher" and args.init_from is None:
    init_from_teacher(enc, tok, teacher, data_dir, args)
  models, loss_fn = {"encoder": enc}, sz.distill_loss_fn
  joint = cfg.loss_weights.get("ce", 0) > 0
  if joint:  # the decoder learns z -> text alongside: mode A rows decode z_s (CE reaches the encoder), mode B z_t
    from studentz import Decoder, ModeBProjection, joint_loss_fn
    models.update(decoder=Decoder(cfg), proj_b=ModeBProjection(cfg))
    loss_fn = joint_loss_fn
  if state is None and args.init_from is not None: init_from_checkpoint(models, args.init_from, tok)
  if with_tok and (table := token_table(train_loader, args)) is not None:
    loss_fn = functools.partial(loss_fn, tok_table=table)
  trainer = Trainer(cfg, models, loss_fn, devices=args.devices)
  from tinygrad.nn.state import get_state_dict
  n_params = sum(int(np.prod(t.shape)) for m in models.values() for t in get_state_dict(m).values())
  n_trained = sum(int(np.prod(t.shape)) for t in trainer.named.values())
  meta = {"teacher": {"name": teacher.name, "dim": teacher.dim, "fingerprint": teacher.fingerprint},
          "data_dir": str(data_dir), "data_source": str(Path(dd.meta["source"]).resolve()), "n_params": n_params,
          "n_trained": n_trained}
  ck = Checkpointer(out, cfg, meta, tok)
  best, bad_evals, start = -1.0, 0, 0
  if state is not None:  # resume: weights, optimiser, schedule, loss scale, RNG and data position
    best, bad_evals = ck.restore(state, trainer, train_loader)
    start = trainer.step_count
    trim_log(out / "metrics.jsonl", start)
  print(f"model: {n_params / 1e6:.2f}M params" + (f" ({n_trained / 1e6:.2f}M trained)" if cfg.freeze else "") +
        f", receptive field {enc.receptive_field} tokens, "
        f"precision {cfg.precision}", file=sys.stderr)

  stop = {"flag": False}
  def on_signal(sig, frame):  # Ctrl-C: finish the step, write last/, exit cleanly
    stop["flag"] = True
  old = signal.signal(signal.SIGINT, on_signal)
  bar = Progress(cfg.steps, "train", "step", disable=args.quiet)
  bar.n = start
  t_last, tok_count, bad_run = time.perf_counter(), 0, 0
  deadline = time.perf_counter() + args.time_limit * 60 if args.time_limit > 0 else float("inf")
  planner = StepPlanner(args.minutes, start) if args.minutes > 0 else None
  budget = args.time_limit
  if planner is not None and planner.deadline < deadline: deadline, budget = planner.deadline, args.minutes
  total, planned = cfg.steps, False  # the LR schedule's length: the config's, or --minutes' plan
  first_eval = True  # this process's first validation compiles its kernels: StepPlanner.discount leaves it out
  if planner is not None and state is None:  # a fresh run, until its first plan: no end in sight, so the LR stays at
    total, bar.total = 10 ** 9, None        # its peak after warmup (a resumed one keeps its saved plan meanwhile)
    trainer.set_total_steps(total)
  log = open(out / "metrics.jsonl", "a")
  pending = []  # (step, queued result): steps are read in groups, since each read waits for the device

  def read_pending():
    nonlocal t_last, tok_count, bad_run
    now = time.perf_counter()
    rate = tok_count / max(now - t_last, 1e-9)
    t_last, tok_count = now, 0
    for s, queued in pending:
      m = trainer.read(queued)
      bad_run = 0 if m["ok"] > 0.5 else bad_run + 1
      if bad_run:
        print(f"\nwarning: step {s + 1} had non-finite loss/gradients (loss {m['loss']}): skipped, "
              f"loss scale {m['loss_scale']:g}", file=sys.stderr)
      if (s + 1) % cfg.log_every == 0 or s == start or bad_run:  # every skipped step leaves a record (ok=0)
        rec = {"step": s + 1, "time": time.time(), **{k: round(v, 6) for k, v in m.items()}, "tokens_per_s": rate,
               "cos_loss": round(m["cos"], 6), "cos": round(1 - m["cos"], 6)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        bar.update(s + 1 - bar.n, loss=m["loss"], cos=1 - m["cos"], tok_s=int(rate))
      if bad_run >= cfg.max_bad_steps:
        # after the log write, so the last bad step is on record too
        ck.save("last", trainer, train_loader, best, bad_evals, {})
        raise SystemExit(f"error: {bad_run} non-finite steps in a row; stopped. Lower optimizer.lr or use "
                         f"precision fp32. Last good state is in {out / 'last'}")
    pending.clear()

  try:
    step = start - 1
    while step + 1 < total:
      step += 1
      batch = next(train_loader)
      feed = {k: batch[k] for k in ("tokens", "mask", "teacher", "tok_target", "tok_index", "tok_mask") if k in batch}
      if joint:  # which rows decode from the teacher vector (mode B): drawn from the step number, so a resumed run
        # draws the same; whole batches alternate by default, or rows mix within a batch (mode_b_mix "row")
        rng = np.random.default_rng([cfg.seed, step])
        n = len(batch["tokens"])
        draw = rng.random(n) if cfg.mode_b_mix == "row" else np.full(n, rng.random())
        feed["mode_b"] = (draw < cfg.mode_b_ratio).astype(np.float32)
      pending.append((step, trainer.launch(feed)))
      tok_count += int(batch["mask"].sum())
      if time.perf_counter() > deadline and not stop["flag"]:
        print(f"\ntime limit of {budget:g} min reached at step {step + 1}", file=sys.stderr)
        stop["flag"] = True
      evaluate_now = (step + 1) % cfg.eval_every == 0 or step + 1 == total or stop["flag"]
      if (step + 1) % cfg.log_every == 0 or step == start or evaluate_now:
        read_pending()
        if planner is not None and (new := planner.plan(step + 1, total)) is not None:
          if not planned:
            print(f"\n--minutes {args.minutes:g}: LR schedule set to {new:,} steps from the measured step rate "
                  f"(the config said {cfg.steps:,}); re-planned as the run goes", file=sys.stderr)
          total, planned = new, True
          cfg = replace(cfg, steps=total)  # what checkpoints record, so --resume continues this schedule
          ck.cfg = cfg
          trainer.set_total_steps(total)
          bar.total = total
          log.write(json.dumps({"step": step + 1, "time": time.time(), "planned_steps": total}) + "\n")
          evaluate_now = evaluate_now or step + 1 >= total
      if evaluate_now:
        t_eval = time.perf_counter()
        ev = trainer.eval_models()  # with several devices: one-device copies of the current weights
        vm = validate(ev["encoder"], val, cfg)
        if joint: vm.update(decode_watch(ev, tok, val))
        # a frozen encoder's val_cos never moves: the decoder's held-out perplexity picks the best checkpoint then
        score = 1 / vm["val_perplexity_a"] if "encoder" in cfg.freeze else vm["val_cos_domain_mean"]
        improved = score > best
        if improved: best, bad_evals = score, 0
        else: bad_evals += 1
        log.write(json.dumps({"step": step + 1, "time": time.time(), **vm, "best_val_cos": best}) + "\n")
        log.flush()
        ck.save("last", trainer, train_loader, best, bad_evals, vm)
        if improved: ck.link("best")
        if planner is not None and first_eval: planner.discount(time.perf_counter() - t_eval)
        first_eval = False
        extra = f" distinct-2 {vm['val_distinct2']:.3f} e.g. {vm['val_decode_example'][:60]!r}" if joint else ""
        doms = " ".join(f"{k[8:]} {v:.3f}" for k, v in vm.items()
                        if k.startswith("val_cos_") and k != "val_cos_domain_mean")
        doms = f" (domain mean {vm['val_cos_domain_mean']:.4f}: {doms})" if doms else ""
        print(f"\nstep {step + 1}: val_cos {vm['val_cos']:.4f}{doms} val_mse {vm['val_mse']:.4f}{extra}"
              f"{' (best)' if improved else ''}", file=sys.stderr)
        if bad_evals >= cfg.patience:
          print(f"early stop: no better val_cos in {bad_evals} evaluations", file=sys.stderr)
          break
      if stop["flag"]:
        if time.perf_counter() > deadline: break
        print(f"interrupted: state saved in {out / 'last'}; continue with --resume {out}", file=sys.stderr)
        break
  finally:
    bar.close()
    log.close()
    signal.signal(signal.SIGINT, old)
  gb = backend._BEAM
  if gb["found"] + gb["not_found"] + gb["rejected"]:  # how much of the step ran on searched GEMM schedules
    failed = f" ({gb['rejected']} of them: their searched schedule failed its check)" if gb["rejected"] else ""
    print(f"GEMM kernels of the step: {gb['found']} with a searched schedule, {gb['not_found'] + gb['rejected']} with "
          f"tinygrad's heuristics{failed} (STUDENTZ_GEMM_BEAM={backend.GEMM_BEAM_SETTING})", file=sys.stderr)
  if not (out / "best").exists():  # every validation non-finite (a diverged run): there is no best to name
    print(f"error: no validation gave a finite score, so there is no best checkpoint; the last state is in "
          f"{out / 'last'} (lower optimizer.lr or use precision fp32)", file=sys.stderr)
    return 1
  what = f"perplexity {1 / best:.2f}" if "encoder" in cfg.freeze and best > 0 else f"val_cos (domain mean) {best:.4f}"
  print(f"best {what}; checkpoints in {out / 'best'} and {out / 'last'}", file=sys.stderr)
  return 0


def token_table(loader, args):
  """The token targets' table on the training device(s) (--tok-table), switching the loader to give row indices; None
  keeps the host path (the loader's tok_target)."""
  from tinygrad import Device
  from studentz_kernels import parallel
  from studentz_training.trainer import device_table
  if args.tok_table == "host" or args.tok_table == "auto" and Device.DEFAULT.split(":")[0] == "CPU": return None
  arr = loader.token_table
  devices = parallel.device_names(args.devices) if args.devices > 1 else None
  t0 = time.perf_counter()
  try: table = device_table(arr, devices=devices)
  except Exception as e:  # out of memory above all; anything else the backend raises leaves the host path working
    why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if args.tok_table == "device": fail(f"--tok-table device: the token targets ({arr.nbytes / 2**30:.1f} GiB) could "
                                        f"not be placed on {Device.DEFAULT} ({why})")
    print(f"note: the token targets ({arr.nbytes / 2**30:.1f} GiB) could not be placed on {Device.DEFAULT} ({why}); "
          "gathering them on the host instead (--tok-table host)", file=sys.stderr)
    return None
  loader.give_token_index()
  print(f"token targets: {arr.nbytes / 2**30:.2f} GiB on {Device.DEFAULT}{f' x {args.devices}' if devices else ''} "
        f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
  return table


def trim_log(path: Path, step: int) -> None:
  """Drop the records after `step` (and a line torn by a kill): steps logged after the last checkpoint are run again
  on resume, and each step should appear once in metrics.jsonl."""
  if not path.is_file(): return
  keep = []
  for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
    try: rec = json.loads(line)
    except json.JSONDecodeError: continue
    if isinstance(rec, dict) and rec.get("step", 0) <= step: keep.append(line)
  from studentz_runtime.checkpoint import atomic_write_bytes
  atomic_write_bytes(path, "".join(k + "\n" for k in keep).encode())


def init_from_checkpoint(models: dict, ckpt: Path, tok) -> None:
  """Load the models `ckpt` holds into `models` (the others keep their fresh init); same tokenizer required."""
  from studentz_runtime.checkpoint import CheckpointError, assign_state, load_tensors
  try:
    read_checkpoint_info(ckpt)
    if json.loads((Path(ckpt) / "tokenizer.json").read_text()) != json.loads(tok.to_json_str()):
      raise CheckpointError(f"{ckpt} was trained with another tokenizer than this run's data; use the same corpus, "
                            "data_limit, vocab_size and max_len")
    arrays = load_tensors(Path(ckpt) / "model.safetensors")
    loaded = [k for k in models if any(a.startswith(f"{k}.") for a in arrays)]
    if not loaded: raise CheckpointError(f"{ckpt} holds none of the models {sorted(models)}")
    for k in loaded: assign_state(models[k], arrays, prefix=f"{k}.")
  except (CheckpointError, OSError) as e:
    fail(f"--init-from: {e}")
  print(f"init from {ckpt}: {', '.join(loaded)}", file=sys.stderr)


def init_from_teacher(enc, tok, teacher, data_dir: Path, args, n_fit: int = 20000) -> None:
  """Embedding from the teacher's token vectors, projection fitted to training sentences (student_init.py)."""
  from studentz_training import student_init
  t0 = time.perf_counter()
  cache = data_dir / f"token_vectors-{teacher.fingerprint[:16]}.npy"
  tv = student_init.token_vectors(tok, teacher, cache, batch_size=teacher_batch_size(args), progress=not args.quiet)
  rows = split_rows(data_dir, "train", teacher.fingerprint, n_fit)
  fit = student_init.init_from_teacher(enc, tv, rows["tokens"], rows["mask"], rows["teacher"])
  print(f"init from the teacher: token vectors + ridge projection on {fit['n_fit']} sentences, static fit cos "
        f"{fit['static_fit_cos']:.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def validate(enc, rows: dict, cfg) -> dict:
  """Mean cosine and squared distance between student and teacher vectors on held-out sentences, overall and per
  domain (val_cos_<domain>); val_cos_domain_mean, the mean over domains, is what picks the best checkpoint."""
  zs, zt = embed_split(enc, rows, cfg)
  return {**vector_metrics(zs, zt, rows, "val"), "val_n": len(zs)}


def decode_watch(models: dict, tok, rows: dict, n: int = 64) -> dict:
  """Collapse alarm: distinct-1/2 of greedy decodes of a few held-out sentences (mode A) during training."""
  from studentz_runtime import metrics
  from studentz_runtime.generate import decode
  zs = encode_ids(models["encoder"], rows["tokens"][:n], rows["mask"][:n], models["encoder"].cfg.batch_size)
  hyps = decode(models["decoder"], zs, tok, strategy="greedy", mode=0)
  out = {"val_distinct1": metrics.distinct_n(hyps, 1), "val_distinct2": metrics.distinct_n(hyps, 2),
         "val_decode_example": hyps[0] if hyps else ""}
  if "encoder" in models["encoder"].cfg.freeze:
    from studentz_training.evaluate import teacher_forced_scores
    bs = models["encoder"].cfg.batch_size
    n = len(rows["tokens"])  # a quarter of the rows in whole batches: every call reuses the training shapes
    k = max(1, n // bs // 4) * bs if n >= bs else n
    sub = {"tokens": rows["tokens"][:k], "mask": rows["mask"][:k]}
    z = encode_ids(models["encoder"], sub["tokens"], sub["mask"], bs)
    out["val_perplexity_a"] = teacher_forced_scores(models["decoder"], sub, z, "a", bs)["perplexity_a"]
  return out


def resume(args, overrides=()) -> int:
  from studentz import Config
  run = Path(args.resume)
  if overrides or args.config:  # they were silently ignored: the run's own config is what resumes exactly
    what = ", ".join(f"--{k}" for k, _ in overrides) or "--config"
    raise ValueError(f"--resume continues {run} with its own config; {what} cannot change it (only --steps, "
                     "--minutes and --time-limit can): start a new run with --init-from to change the model")
  last = run / "last"
  info = read_checkpoint_info(last)
  cfg = Config.from_dict(info["config"])
  if args.steps is not None: cfg = cfg.override(("steps", str(args.steps)))
  from studentz_kernels import parallel
  parallel.check_batch(cfg.batch_size, cfg.grad_accum, args.devices)
  if args.print_config:  # the config the run resumes with; it used to start training instead
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0
  args.data_dir = args.data_dir or Path(info["data_dir"])
  # the run's own corpus: prepare() would rebuild data_dir from the default corpus and resume on other sentences
  if args.data_source is None and info.get("data_source"): args.data_source = Path(info["data_source"])
  print(f"resuming {run} at step {info['step']}", file=sys.stderr)
  with run_lock(run):
    return train(cfg, info["teacher"]["name"], run, args, backend.device_name(),
                 state={"dir": last.resolve(), "info": info})


def load_encoder(ckpt: Path):
  """(encoder, info, tokenizer) from a checkpoint folder."""
  from studentz import load_models
  models, info, tok = load_models(ckpt, decoder=False)
  return models["encoder"], info, tok


def cli() -> None:
  from studentz_runtime.cli_guard import guarded
  sys.exit(guarded(main))


if __name__ == "__main__":
  cli()
