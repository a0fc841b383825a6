"""Distill a transformer sentence encoder (the teacher) into the attention-free StudentZ encoder.

  python train.py                                  # bundled Wikipedia, default teacher, sized for this machine
  python train.py --config cfg.json --steps 5000 --out runs/big --optimizer.lr 1e-3
  python train.py --resume runs/big                # continue runs/big/last exactly where it stopped
  python train.py --eval runs/big/best --json      # metric table of a checkpoint

Reads top to bottom: arguments -> config -> data -> model -> loop (log, validate, checkpoint) -> the decoder's stage
(a decoder fitted to the distilled encoder, decoder_share of the budget) -> evaluation.
"""
from __future__ import annotations
import argparse, functools, json, signal, sys, time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studentz_kernels import backend
from studentz_runtime.checkpoint import read_checkpoint_info
from studentz_runtime.encode_tinygrad import encode_ids
from studentz_training import heldout
from studentz_training.heldout import (default_corpus, default_source, default_stsb, domain_rows,  # noqa: F401
                                       embed_split, split_rows, vector_metrics)
from studentz_training.run_folder import DECODER_DIR, Checkpointer, publish_decoder, run_lock

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
# both profiles end with a decoder fitted to the best encoder (train.fit_decoder), so a run's best/ also decodes
CPU_PROFILE["decoder_share"] = 0.25
# The full configuration (a GPU) on top of studentz.Config's defaults, which stay as they were so that checkpoints
# saved before these fields existed load unchanged. The pool head, token targets and no dropout each raised val_cos in
# GPU runs of equal wall time (the student sees each sentence many times and still gains from fitting it closer).
# Dotted keys set one entry of a dict field.
FULL_PROFILE = {"pool_head": 1024, "loss_weights.tok": 0.25, "dropout": 0.0, "decoder_share": 0.25}


def parse_args(argv=None):
  """The parser, its known arguments and the --key value config overrides left over."""
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="Any config field can be overridden as --key value (nested: --optimizer.lr 1e-3, --loss_weights.sem 0); "
           "run with --print-config to see them all. Device: DEV=CUDA / CUDA=1 / METAL=1 / CPU=1 before the command. "
           "STUDENTZ_GEMM_BEAM: the training step's large GEMMs take searched schedules already known (default "
           "'cached': tinygrad's cache db and the bundled beam/ files, never a search), 2 searches the unknown ones "
           "(minutes per kernel, once per card kind), 0 turns it off.")
  _add_run_args(p)
  _add_eval_args(p)
  _add_runtime_args(p)
  args, rest = p.parse_known_args(argv)
  return p, args, _config_overrides(p, rest)


def _add_run_args(p: argparse.ArgumentParser) -> None:
  """What to train, on which data, for how long, and from which starting point."""
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
                      "shape, and its decoder's if it holds one, are taken from it unless you set them), e.g. a "
                      "distilled encoder to fit a decoder to: --init-from runs/x/best --loss_weights.ce 1 --freeze "
                      "'[\"encoder\"]'; a deeper model: a "
                      "--dilation_schedule or --dec_dilation_schedule that extends the checkpoint's adds blocks that "
                      "start as the identity (output Linear zero), e.g. --init-from models/default "
                      "--dilation_schedule '[1,2,4,8,16,1,2,4,8,16]'; a wider one: --hidden a multiple of the "
                      "checkpoint's copies each hidden unit of every block, the same function at the start")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
  """--eval and the options that only matter with it."""
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


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
  """Output, devices and where token targets live."""
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


def _config_overrides(p: argparse.ArgumentParser, rest: list[str]) -> list[tuple[str, str]]:
  """The arguments argparse did not know, read as --key value / --key=value config overrides."""
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
  return overrides


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
  from studentz_runtime.config import SCHEDULE_COUNTS
  # a schedule the user gave sets its block count too (Config.override), which no profile or checkpoint then replaces
  set_by_user |= {c for s, c in SCHEDULE_COUNTS.items() if s in set_by_user}
  # --init-from may add blocks to the schedules the user set, and widen the blocks to a --hidden the user set
  args.grow_set = {s for s in [*SCHEDULE_COUNTS, "hidden"] if s in set_by_user}
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
    if key in ("dropout", "decoder_share") and cfg.loss_weights.get("ce", 0) > 0: continue  # measured for
    # distillation: a decoder in training (which writes text, and over-fits sooner) keeps the config's dropout, and
    # needs no decoder stage after it
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


@dataclass
class Run:
  """What the steps of one training run share: built by setup_run, advanced by fit, summed up by report."""
  cfg: Any
  out: Path
  args: Any
  tok: Any
  data_dir: Path
  loader: Any
  val: dict
  models: dict
  trainer: Any
  ck: Any
  best: float = -1.0
  bad_evals: int = 0
  start: int = 0         # the step it starts from (resumed: the checkpoint's)
  minutes: float = 0.0   # its --minutes budget (0: none)
  total: int = 0         # the LR schedule's length: the config's steps, or --minutes' plan
  planned: bool = False
  first_eval: bool = True  # this process's first validation compiles its kernels: StepPlanner.discount leaves it out

  @property
  def joint(self) -> bool: return self.cfg.loss_weights.get("ce", 0) > 0


def train(cfg, teacher_name: str, out: Path, args, device: str, state=None) -> int:
  """One run, fresh or resumed from `state`: set up, fit, report. A run that distils the encoder alone with
  cfg.decoder_share > 0 leaves that share of the steps (and of --minutes) to a decoder fitted to its best encoder."""
  t0 = time.perf_counter()
  staged = wants_decoder_stage(cfg)
  if staged and state is None: cfg = replace(cfg, steps=max(cfg.steps - decoder_steps(cfg.steps, cfg), 1))
  run = setup_run(cfg, teacher_name, out, args, state, minutes_share=1 - cfg.decoder_share if staged else 1)
  finished = fit(run)
  rc = report(run)
  if rc or not finished or not staged: return rc
  return fit_decoder(run, teacher_name, device, time.perf_counter() - t0)


def setup_run(cfg, teacher_name: str, out: Path, args, state, minutes_share: float = 1.0) -> Run:
  """Teacher, data, models, trainer and checkpointer of a run; restored from `state` on --resume."""
  import studentz as sz
  teacher = load_teacher_or_exit(teacher_name)
  cfg = fit_teacher(cfg, teacher, state, args)
  dd, data_dir, took = prepare_data(cfg, teacher, args, args.quiet)
  from studentz_corpus.tokenizer import StudentTokenizer
  tok = StudentTokenizer.load(data_dir / "tokenizer.json")
  if tok.vocab_size > cfg.vocab_size: raise ValueError(f"tokenizer has {tok.vocab_size} ids > vocab_size")
  loader = make_loader(cfg, data_dir, teacher.fingerprint)
  val = domain_rows(data_dir, "val", teacher.fingerprint, 1024)
  print(f"data: {len(loader) * cfg.batch_size} train sentences, teacher {teacher.name} (D={teacher.dim}), "
        f"run folder {out}; " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()), file=sys.stderr)
  models, trainer = build_models(cfg, teacher, tok, data_dir, loader, args, state)
  from tinygrad.nn.state import get_state_dict
  n_params = sum(t.numel() for m in models.values() for t in get_state_dict(m).values())
  n_trained = sum(t.numel() for t in trainer.named.values())
  meta = {"teacher": {"name": teacher.name, "dim": teacher.dim, "fingerprint": teacher.fingerprint},
          "data_dir": str(data_dir), "data_source": str(Path(dd.meta["source"]).resolve()), "n_params": n_params,
          "n_trained": n_trained}
  run = Run(cfg, out, args, tok, data_dir, loader, val, models, trainer, Checkpointer(out, cfg, meta, tok),
            minutes=args.minutes * minutes_share)
  if state is not None:  # resume: weights, optimiser, schedule, loss scale, RNG and data position
    run.best, run.bad_evals = run.ck.restore(state, trainer, loader)
    run.start = trainer.step_count
    trim_log(out / "metrics.jsonl", run.start)
  print(f"model: {n_params / 1e6:.2f}M params" + (f" ({n_trained / 1e6:.2f}M trained)" if cfg.freeze else "") +
        f", receptive field {models['encoder'].receptive_field} tokens, precision {cfg.precision}", file=sys.stderr)
  return run


def fit_teacher(cfg, teacher, state, args):
  """cfg with the teacher's dimension, and without token targets when the teacher has none and only the profile
  asked for them (the user's own request fails instead)."""
  import studentz as sz
  from studentz_corpus import token_targets as corpus_tokens
  if cfg.proj_dim != teacher.dim: cfg = sz.Config.from_dict({**cfg.to_dict(), "proj_dim": teacher.dim})
  if cfg.loss_weights.get("tok", 0) > 0 and (why := corpus_tokens.unsupported(teacher)):
    if state is not None or "loss_weights.tok" not in getattr(args, "profile_set", []): fail(f"loss_weights.tok: {why}")
    print(f"note: {why}; training without them (loss_weights.tok 0)", file=sys.stderr)
    cfg = sz.Config.from_dict({**cfg.to_dict(), "loss_weights": {**cfg.loss_weights, "tok": 0.0}})
  return cfg


def make_loader(cfg, data_dir: Path, teacher_key: str):
  from studentz_corpus import prepare as corpus
  buckets = sorted({b for b in cfg.length_buckets if b < cfg.max_len} | {cfg.max_len}) if cfg.length_buckets else None
  return corpus.Loader(data_dir, "train", cfg.batch_size, teacher_key=teacher_key, seed=cfg.seed,
                       length_buckets=buckets, token_targets=cfg.loss_weights.get("tok", 0) > 0)


def build_models(cfg, teacher, tok, data_dir: Path, loader, args, state):
  """(models, Trainer): the encoder (initialised from the teacher, or --init-from), with a decoder and its mode-B
  projection when the objective has a decoder CE."""
  from tinygrad import Tensor
  import studentz as sz
  Tensor.manual_seed(cfg.seed)
  enc = sz.Encoder(cfg)
  if state is None and cfg.embed_init == "teacher" and args.init_from is None:
    init_from_teacher(enc, tok, teacher, data_dir, args)
  models, loss_fn = {"encoder": enc}, sz.distill_loss_fn
  if cfg.loss_weights.get("ce", 0) > 0:  # the decoder learns z -> text: mode A rows decode z_s (CE reaches the encoder
    from studentz import Decoder, ModeBProjection, joint_loss_fn  # unless it is frozen), mode B rows z_t
    models.update(decoder=Decoder(cfg), proj_b=ModeBProjection(cfg))
    loss_fn = joint_loss_fn
  if state is None and args.init_from is not None:
    init_from_checkpoint(models, args.init_from, tok, getattr(args, "grow_set", frozenset()))
  if cfg.loss_weights.get("tok", 0) > 0 and (table := token_table(loader, args)) is not None:
    loss_fn = functools.partial(loss_fn, tok_table=table)
  from studentz_training.trainer import Trainer
  return models, Trainer(cfg, models, loss_fn, devices=args.devices)


class Stopper:
  """When a run stops early: Ctrl-C (finish the step, write last/, exit cleanly) or a deadline (--time-limit, a pause;
  --minutes, the end of the budget)."""

  def __init__(self, run: Run, planner):
    args = run.args
    self.flag, self.by_budget = False, False
    self.deadline = time.perf_counter() + args.time_limit * 60 if args.time_limit > 0 else float("inf")
    self.budget = args.time_limit
    if planner is not None and planner.deadline < self.deadline:
      self.deadline, self.budget, self.by_budget = planner.deadline, run.minutes, True
    self.old = signal.signal(signal.SIGINT, self.on_signal)

  def on_signal(self, sig, frame):
    self.flag, self.by_budget = True, False

  def check(self, step: int) -> None:
    if time.perf_counter() > self.deadline and not self.flag:
      print(f"\ntime limit of {self.budget:g} min reached at step {step + 1}", file=sys.stderr)
      self.flag = True

  def close(self) -> None: signal.signal(signal.SIGINT, self.old)


class StepLog:
  """Reads queued steps in groups (each read waits for the device), logs their figures to metrics.jsonl and the
  progress bar, and stops a run after cfg.max_bad_steps non-finite steps in a row."""

  def __init__(self, run: Run, bar):
    self.run, self.bar = run, bar
    self.file = open(run.out / "metrics.jsonl", "a")
    self.pending: list = []  # (step, queued result)
    self.t_last, self.tok_count, self.bad_run = time.perf_counter(), 0, 0

  def write(self, rec: dict) -> None:
    self.file.write(json.dumps(rec) + "\n")
    self.file.flush()

  def read_pending(self) -> None:
    run, cfg = self.run, self.run.cfg
    now = time.perf_counter()
    rate = self.tok_count / max(now - self.t_last, 1e-9)
    self.t_last, self.tok_count = now, 0
    for s, queued in self.pending:
      m = run.trainer.read(queued)
      self.bad_run = 0 if m["ok"] > 0.5 else self.bad_run + 1
      if self.bad_run:
        print(f"\nwarning: step {s + 1} had non-finite loss/gradients (loss {m['loss']}): skipped, "
              f"loss scale {m['loss_scale']:g}", file=sys.stderr)
      if (s + 1) % cfg.log_every == 0 or s == run.start or self.bad_run:  # every skipped step leaves a record (ok=0)
        self.write({"step": s + 1, "time": time.time(), **{k: round(v, 6) for k, v in m.items()},
                    "tokens_per_s": rate, "cos_loss": round(m["cos"], 6), "cos": round(1 - m["cos"], 6)})
        self.bar.update(s + 1 - self.bar.n, loss=m["loss"], cos=1 - m["cos"], tok_s=int(rate))
      if self.bad_run >= cfg.max_bad_steps:
        # after the log write, so the last bad step is on record too
        run.ck.save("last", run.trainer, run.loader, run.best, run.bad_evals, {})
        raise SystemExit(f"error: {self.bad_run} non-finite steps in a row; stopped. Lower optimizer.lr or use "
                         f"precision fp32. Last good state is in {run.out / 'last'}")
    self.pending.clear()

  def close(self) -> None: self.file.close()


def step_feed(run: Run, batch: dict, step: int) -> dict:
  """The trainer's inputs of one batch; a decoder's run also draws which rows decode from the teacher vector (mode B):
  from the step number, so a resumed run draws the same; whole batches alternate by default, or rows mix within a
  batch (mode_b_mix "row")."""
  import numpy as np
  feed = {k: batch[k] for k in ("tokens", "mask", "teacher", "tok_target", "tok_index", "tok_mask") if k in batch}
  if run.joint:
    cfg = run.cfg
    rng = np.random.default_rng([cfg.seed, step])
    n = len(batch["tokens"])
    draw = rng.random(n) if cfg.mode_b_mix == "row" else np.full(n, rng.random())
    feed["mode_b"] = (draw < cfg.mode_b_ratio).astype(np.float32)
  return feed


def fit(run: Run) -> bool:
  """The training loop: steps queued and read in groups, validation and checkpoints every eval_every steps, the LR
  schedule re-planned under --minutes. True when the run is complete (steps done, early stop, budget spent); False
  when Ctrl-C or --time-limit paused it."""
  from studentz_corpus.progress import Progress
  args, cfg = run.args, run.cfg
  planner = StepPlanner(run.minutes, run.start) if run.minutes > 0 else None
  stop = Stopper(run, planner)
  bar = Progress(cfg.steps, "train", "step", disable=args.quiet)
  bar.n = run.start
  log = StepLog(run, bar)
  run.total = cfg.steps
  if planner is not None and run.start == 0:  # a fresh run, until its first plan: no end in sight, so the LR stays at
    run.total, bar.total = 10 ** 9, None      # its peak after warmup (a resumed one keeps its saved plan meanwhile)
    run.trainer.set_total_steps(run.total)
  try:
    step = run.start - 1
    while step + 1 < run.total:
      step += 1
      batch = next(run.loader)
      log.pending.append((step, run.trainer.launch(step_feed(run, batch, step))))
      log.tok_count += int(batch["mask"].sum())
      stop.check(step)
      evaluate_now = (step + 1) % cfg.eval_every == 0 or step + 1 == run.total or stop.flag
      if (step + 1) % cfg.log_every == 0 or step == run.start or evaluate_now:
        log.read_pending()
        evaluate_now = replan(run, planner, step, bar, log) or evaluate_now
      if evaluate_now and not validate_and_save(run, step + 1, log, planner): break
      if stop.flag:
        if stop.deadline < float("inf") and time.perf_counter() > stop.deadline: break
        print(f"interrupted: state saved in {run.out / 'last'}; continue with --resume {run.out}", file=sys.stderr)
        break
  finally:
    bar.close()
    log.close()
    stop.close()
  return not stop.flag or stop.by_budget


def replan(run: Run, planner, step: int, bar, log: StepLog) -> bool:
  """--minutes: a new step count from the measured rate, given to the LR schedule and the checkpoints' config (so
  --resume continues it). True when the plan ends the run at this step."""
  if planner is None or (new := planner.plan(step + 1, run.total)) is None: return False
  if not run.planned:
    print(f"\n--minutes {run.minutes:g}: LR schedule set to {new:,} steps from the measured step rate "
          f"(the config said {run.cfg.steps:,}); re-planned as the run goes", file=sys.stderr)
  run.total, run.planned = new, True
  run.cfg = replace(run.cfg, steps=new)
  run.ck.cfg = run.cfg
  run.trainer.set_total_steps(new)
  bar.total = new
  log.write({"step": step + 1, "time": time.time(), "planned_steps": new})
  return step + 1 >= new


def validate_and_save(run: Run, step: int, log: StepLog, planner) -> bool:
  """Validate, write last/ (and best/ when better), print the figures. False when patience ran out (early stop)."""
  cfg, trainer = run.cfg, run.trainer
  t_eval = time.perf_counter()
  ev = trainer.eval_models()  # with several devices: one-device copies of the current weights
  vm = validate(ev["encoder"], run.val, cfg)
  if run.joint: vm.update(decode_watch(ev, run.tok, run.val))
  # a frozen encoder's val_cos never moves: the decoder's held-out perplexity picks the best checkpoint then
  score = 1 / vm["val_perplexity_a"] if "encoder" in cfg.freeze else vm["val_cos_domain_mean"]
  improved = score > run.best
  if improved: run.best, run.bad_evals = score, 0
  else: run.bad_evals += 1
  log.write({"step": step, "time": time.time(), **vm, "best_val_cos": run.best})
  run.ck.save("last", trainer, run.loader, run.best, run.bad_evals, vm, is_best=improved)
  if improved: run.ck.link("best")
  if planner is not None and run.first_eval: planner.discount(time.perf_counter() - t_eval)
  run.first_eval = False
  extra = f" distinct-2 {vm['val_distinct2']:.3f} e.g. {vm['val_decode_example'][:60]!r}" if run.joint else ""
  doms = " ".join(f"{k[8:]} {v:.3f}" for k, v in vm.items() if k.startswith("val_cos_") and k != "val_cos_domain_mean")
  doms = f" (domain mean {vm['val_cos_domain_mean']:.4f}: {doms})" if doms else ""
  print(f"\nstep {step}: val_cos {vm['val_cos']:.4f}{doms} val_mse {vm['val_mse']:.4f}{extra}"
        f"{' (best)' if improved else ''}", file=sys.stderr)
  if run.bad_evals < cfg.patience: return True
  print(f"early stop: no better val_cos in {run.bad_evals} evaluations", file=sys.stderr)
  return False


def report(run: Run) -> int:
  """The run's closing lines: the GEMM schedules it ran on, and its best checkpoint (status 1 when there is none)."""
  gb, out = backend._BEAM, run.out
  if gb["found"] + gb["not_found"] + gb["rejected"]:  # how much of the step ran on searched GEMM schedules
    failed = f" ({gb['rejected']} of them: their searched schedule failed its check)" if gb["rejected"] else ""
    print(f"GEMM kernels of the step: {gb['found']} with a searched schedule, {gb['not_found'] + gb['rejected']} with "
          f"tinygrad's heuristics{failed} (STUDENTZ_GEMM_BEAM={backend.GEMM_BEAM_SETTING})", file=sys.stderr)
  if not (out / "best").exists():  # every validation non-finite (a diverged run): there is no best to name
    print(f"error: no validation gave a finite score, so there is no best checkpoint; the last state is in "
          f"{out / 'last'} (lower optimizer.lr or use precision fp32)", file=sys.stderr)
    return 1
  best = run.best
  what = f"perplexity {1 / best:.2f}" if "encoder" in run.cfg.freeze and best > 0 else \
    f"val_cos (domain mean) {best:.4f}"
  print(f"best {what}; checkpoints in {out / 'best'} and {out / 'last'}", file=sys.stderr)
  return 0


# ----------------------------------------------------------------------------------------------------------------------
# the decoder's stage: a decoder fitted to the distilled encoder, kept frozen (scripts/gpu_decoder.sh by hand)

# what the stage changes in the run's config: the decoder's CE alone (the frozen encoder's losses are only logged;
# token targets train an encoder), and dropout 0.1 for the decoder, as the shipped decoder was fitted with
DECODER_STAGE = {"freeze": ["encoder"], "dropout": 0.1, "loss_weights": {"ce": 1.0, "tok": 0.0}}


def wants_decoder_stage(cfg) -> bool:
  return cfg.decoder_share > 0 and cfg.loss_weights.get("ce", 0) == 0 and "encoder" not in cfg.freeze


def decoder_steps(total: int, cfg) -> int:
  return max(round(total * cfg.decoder_share), 1)


def decoder_config(cfg):
  """The decoder stage's config from the encoder's (whose steps are the 1 - decoder_share part of the run's)."""
  from studentz import Config
  d = cfg.to_dict()
  steps = decoder_steps(round(cfg.steps / (1 - cfg.decoder_share)), cfg)
  return Config.from_dict({**d, **DECODER_STAGE, "steps": steps, "warmup_steps": min(cfg.warmup_steps, steps // 4),
                           "loss_weights": {**d["loss_weights"], **DECODER_STAGE["loss_weights"]}})


def fit_decoder(run: Run, teacher_name: str, device: str, elapsed: float) -> int:
  """Stage 2 in RUN/decoder: a decoder fitted to RUN/best's encoder for decoder_share of the steps and --minutes (what
  --time-limit leaves of its pause), then RUN/best points at its best checkpoint, which holds both models."""
  import copy
  args = copy.copy(run.args)
  args.init_from, args.data_dir = run.out / "best", run.data_dir
  args.minutes = run.args.minutes * run.cfg.decoder_share
  if args.time_limit > 0:
    args.time_limit -= elapsed / 60
    if args.time_limit <= 0:
      print(f"time limit reached before the decoder's stage: continue with --resume {run.out}", file=sys.stderr)
      return 0
  cfg = decoder_config(run.cfg)
  out = run.out / DECODER_DIR
  print(f"decoder stage: {cfg.steps} steps on the frozen encoder of {args.init_from}, run folder {out}",
        file=sys.stderr)
  with run_lock(out):  # a stage begun earlier (its folder has a last/) continues where it stopped
    rc = resume_in(out, args, device) if (out / "last").exists() else train(cfg, teacher_name, out, args, device)
  if rc == 0: publish_decoder(run.out)
  return rc


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


def init_from_checkpoint(models: dict, ckpt: Path, tok, grow=frozenset()) -> None:
  """Load the models `ckpt` holds into `models` (the others keep their fresh init); same tokenizer required. What the
  user set (grow) may grow the checkpoint's models: a block schedule that extends the checkpoint's adds blocks that
  start as the identity, a --hidden that is a multiple of its width copies each hidden unit (widen.py)."""
  from studentz_runtime.checkpoint import CheckpointError, assign_state
  from studentz_runtime.quantize import load_float32
  from studentz_training import deepen, widen
  try:
    theirs = read_checkpoint_info(ckpt)["config"]
    if json.loads((Path(ckpt) / "tokenizer.json").read_text()) != json.loads(tok.to_json_str()):
      raise CheckpointError(f"{ckpt} was trained with another tokenizer than this run's data; use the same corpus, "
                            "data_limit, vocab_size and max_len")
    arrays = load_float32(Path(ckpt) / "model.safetensors")  # an int8 checkpoint is read back as float
    mine = next(iter(models.values())).cfg.to_dict()
    if (r := widen.factor(theirs, mine, "hidden" in grow)) > 1:
      arrays, theirs = widen.widen(arrays, theirs["hidden"], r), {**theirs, "hidden": mine["hidden"]}
      print(f"--init-from: widened: {widen.describe(mine['hidden'] // r, r)}", file=sys.stderr)
    loaded = [k for k in models if any(a.startswith(f"{k}.") for a in arrays)]
    if not loaded: raise CheckpointError(f"{ckpt} holds none of the models {sorted(models)}")
    # every model is checked before any is written, so a refusal names its field and loads nothing
    kept = {k: deepen.blocks_kept(theirs, models[k].cfg.to_dict(), k, deepen.SCHEDULE[k] in grow)
            for k in loaded if k in deepen.SCHEDULE}
    added = [deepen.load(models[k], k, arrays, f"{k}.", kept[k]) if k in kept else
             assign_state(models[k], arrays, prefix=f"{k}.") for k in loaded]
  except (CheckpointError, OSError) as e:
    fail(f"--init-from: {e}")
  print(f"init from {ckpt}: {', '.join(loaded)}", file=sys.stderr)
  if added := [a for a in added if a]: print(f"--init-from: added as identity: {'; '.join(added)}", file=sys.stderr)


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
  """--resume RUN: the decoder's stage where it had begun (the encoder's is complete then), else the run itself."""
  run = Path(args.resume)
  if overrides or args.config:  # they were silently ignored: the run's own config is what resumes exactly
    what = ", ".join(f"--{k}" for k, _ in overrides) or "--config"
    raise ValueError(f"--resume continues {run} with its own config; {what} cannot change it (only --steps, "
                     "--minutes and --time-limit can): start a new run with --init-from to change the model")
  read_checkpoint_info(run / "last")  # a folder without a run fails here, in one line
  stage = run / DECODER_DIR
  if not (stage / "last").exists() or args.print_config:
    with run_lock(run): return resume_in(run, args, backend.device_name())
  with run_lock(run), run_lock(stage):
    rc = resume_in(stage, args, backend.device_name())
  if rc == 0: publish_decoder(run)
  return rc


def resume_in(run: Path, args, device: str) -> int:
  """Continue the run in folder `run` from its last checkpoint, with that checkpoint's config and corpus."""
  from studentz import Config
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
  return train(cfg, info["teacher"]["name"], run, args, device, state={"dir": last.resolve(), "info": info})


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
