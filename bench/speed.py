"""Benchmarks: tinygrad StudentZ against its PyTorch twin and against the teacher, on the same device in one process.

  DEV=CUDA python -m bench train --precision fp32 tf32 bf16    # train-step time, tinygrad vs torch eager
  DEV=CUDA python -m bench train --devices 2 --no-torch        # + the step data-parallel on 2 GPUs, speed-up vs 1
  DEV=CUDA python -m bench train --joint                       # + the joint encoder+decoder step, vs its torch twin
  DEV=CUDA python -m bench teacher --lens 32 128               # teacher sentences/s: our tinygrad port vs HF torch
  DEV=CPU python -m bench gemm --batch 32 --len 32             # the conv's GEMM alone: tinygrad vs numpy's BLAS
  python -m bench all --json results.json                       # everything, one JSON row per measurement
  python -m bench                                               # on a CPU: the CPU-sized set (CPU_SET); GPU: all
  DEV=CUDA python -m bench fidelity --ckpt runs/a/best --eval a_eval.json --len 128 --batch 128 --json fid.json
  python -m bench plot --from fid.json --png speed_vs_fidelity.png   # sentences/s (log) vs STS-B or val_cos

Every number is a median over repetitions after warm-up; each row names the device and card, and each ratio is
against a baseline measured in the same process.
"""
from __future__ import annotations
import argparse, contextlib, functools, json, os, platform, sys, time
from pathlib import Path

from bench.timing import timed
from studentz_kernels import backend

ROOT = Path(__file__).resolve().parent.parent  # the repository


class UsageError(Exception):
  """Bad input from the user: one `error:` line, exit 2."""


def card_name(device: str) -> str:
  if device.startswith("CUDA"):
    try:
      import torch
      return torch.cuda.get_device_name(0)
    except Exception: return "CUDA GPU"
  return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def bench_config(args):
  import studentz as sz
  return sz.Config(vocab_size=args.vocab, d_model=args.d, hidden=args.h, n_blocks=len(args.dilations),
                   dilation_schedule=list(args.dilations), kernel_size=args.k, proj_dim=args.D, max_len=args.len,
                   batch_size=args.batch, dropout=args.dropout, steps=10_000, warmup_steps=100,
                   pool_head=args.pool_head, block_context=args.block_context,
                   loss_weights={**sz.Config().loss_weights, "tok": args.tok}).validate()


QUEUED = 10  # steps between reads of the figures in the queued timing


def train_batch(cfg, rng) -> dict:
  """A random distillation batch of cfg's shape: lengths L/2..L, tokens past a row's length PAD, unit teacher rows."""
  import numpy as np
  B, L = cfg.batch_size, cfg.max_len
  mask = (np.arange(L)[None] < rng.integers(L // 2, L + 1, B)[:, None]).astype(np.float32)
  tokens = (rng.integers(4, cfg.vocab_size, (B, L)) * mask).astype(np.int32)
  teacher = rng.standard_normal((B, cfg.proj_dim)).astype(np.float32)
  teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
  return {"tokens": tokens, "mask": mask, "teacher": teacher}


def bench_train(args, device: str) -> list[dict]:
  """One optimiser step (forward, backward, clip, AdamW) of the student: tinygrad vs PyTorch eager, same weights."""
  import numpy as np
  import studentz as sz
  rows = []
  rng = np.random.default_rng(0)
  cfg0 = bench_config(args)
  B, L = cfg0.batch_size, cfg0.max_len
  batch = train_batch(cfg0, rng)
  mask = batch["mask"]
  loss_fn, table = sz.distill_loss_fn, None
  if args.tok:  # token targets as train.py feeds them (--tok-table), and their mask
    if args.devices > 1: raise SystemExit("error: --tok times the one-device step; leave out --devices")
    batch["tok_mask"] = mask.copy()
    if args.tok_table == "host":  # float16 (B, L, D), zero at padding
      batch["tok_target"] = (rng.standard_normal((B, L, cfg0.proj_dim)) * mask[..., None]).astype(np.float16)
    else:  # a row per token of a table on the device (train.py's holds the corpus's; the size does not matter here)
      from studentz_training.trainer import device_table
      table = rng.standard_normal((B * L, cfg0.proj_dim)).astype(np.float16)
      batch["tok_index"] = rng.permutation(B * L).reshape(B, L).astype(np.int32)
      loss_fn = functools.partial(sz.distill_loss_fn, tok_table=device_table(table))
  for prec in args.precision:
    cfg = sz.Config.from_dict({**cfg0.to_dict(), "precision": "mixed" if prec == "bf16" else "fp32"})
    ctx = {"ALLOW_TF32": 1} if prec == "tf32" else {}
    row = time_step("train_step", cfg, lambda: {"encoder": sz.Encoder(cfg)}, loss_fn, batch, prec, ctx, args, device,
                    torch_table=table, **({"tok_table": args.tok_table} if args.tok else {}))
    rows.append(row)
    print_row(row)
    if args.devices > 1:
      rows.append(train_parallel(row, cfg, lambda: {"encoder": sz.Encoder(cfg)}, loss_fn, batch, ctx, args, device))
      print_row(rows[-1])
    if args.joint:
      rows.append(train_joint(cfg, batch, prec, ctx, args, device))
      print_row(rows[-1])
      if args.devices > 1:
        rows.append(train_parallel(rows[-1], *joint_setup(cfg, batch), ctx, args, device))
        print_row(rows[-1])
  return rows


def time_step(name: str, cfg, make_models, loss_fn, batch, prec, ctx, args, device, torch_table=None, **extra) -> dict:
  """One row: the optimiser step of make_models()'s models under loss_fn, timed with its figures read every step and
  queued as train.py runs them, and (unless --no-torch) its PyTorch twin on the same weights."""
  from tinygrad import Tensor
  from tinygrad.helpers import Context
  from tinygrad.nn.state import get_state_dict
  from studentz_training.trainer import Trainer
  B, L = cfg.batch_size, cfg.max_len
  with Context(**ctx):
    Tensor.manual_seed(0)
    models = make_models()
    weights = {f"{k}.{n}": v.numpy() for k, m in models.items() for n, v in get_state_dict(m).items()}
    # the loss check: --check-steps steps that draw no dropout masks (torch's differ); beyond the first, the losses
    # depend on the gradients and the optimiser too (the second captures the JIT, the rest replay it)
    set_dropout(models.values(), 0.0)
    check = Trainer(cfg, models, loss_fn)
    figs = [check.step(batch) for _ in range(max(args.check_steps, 1))]
    losses, first = [f["loss"] for f in figs], figs[0]["loss"]
    set_dropout(models.values(), cfg.dropout)  # then timed as train.py trains: its dropout changes the GEMM kernels
    tr = Trainer(cfg, models, loss_fn)
    tr.step(batch)  # its first call runs eagerly (the JIT captures on the second): not part of the warm-up count
    t_tg = timed(lambda: tr.step(batch), args.warmup, args.reps)
    # as train.py runs it: steps queued back to back, figures read once per QUEUED steps (one device sync)
    t_q = timed(lambda: tr.read([tr.launch(batch) for _ in range(QUEUED)][-1]), 1, max(args.reps // 4, 3)) / QUEUED
  row = {"bench": name, "precision": prec, "B": B, "L": L, "d": cfg.d_model, "h": cfg.hidden, "blocks": cfg.n_blocks,
         **extra, "dropout": cfg.dropout, "vocab": cfg.vocab_size,
         **({"pool_head": cfg.pool_head} if cfg.pool_head else {}),
         **({"block_context": True} if cfg.block_context else {}),
         **({"tok": cfg.loss_weights["tok"]} if cfg.loss_weights.get("tok") else {}),
         "device": device, "card": card_name(device),
         "tinygrad_ms": t_tg * 1e3, "tinygrad_queued_ms": t_q * 1e3, "tinygrad_tokens_per_s": B * L / t_q,
         "tinygrad_first_loss": first, **({"tinygrad_losses": losses} if len(losses) > 1 else {}),
         "tinygrad_grad_norms": [f["grad_norm"] for f in figs]}
  if not args.no_torch:
    with torch_side(device): row.update(torch_train(cfg, weights, batch, prec, device, args, losses, torch_table))
  if row.get("torch_queued_ms"): row["ratio_vs_torch"] = row["tinygrad_queued_ms"] / row["torch_queued_ms"]
  return row


def set_dropout(models, p: float) -> None:
  """Dropout of every TCN block of these models (tinygrad's, or the PyTorch twin's modules)."""
  for m in models:
    if hasattr(m, "modules"):  # a PyTorch twin: its TorchBlocks, the encoder's and the decoder's
      from bench import torch_twin as bt
      for blk in m.modules():
        if isinstance(blk, bt.TorchBlock): blk.p = p
    else:
      for blk in getattr(m, "blocks", []): blk.dropout = p


def joint_setup(cfg, batch) -> tuple:
  """The joint step's config, models, loss and batch: encoder distillation + the decoder's teacher-forced
  cross-entropy (decoder.joint_loss_fn, weight 1, the config's default decoder), half the rows decoding the teacher's
  vector (mode B)."""
  import numpy as np
  import studentz as sz
  from studentz import Decoder, ModeBProjection, joint_loss_fn
  cfg = sz.Config.from_dict({**cfg.to_dict(), "loss_weights": {**cfg.loss_weights, "ce": 1.0, "tok": 0.0},
                             "mode_b_mix": "row"})
  batch = {**{k: v for k, v in batch.items() if not k.startswith("tok_")},
           "mode_b": (np.arange(cfg.batch_size) % 2).astype(np.float32)}
  def models(): return {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  return cfg, models, joint_loss_fn, batch


def train_joint(cfg, batch, prec, ctx, args, device) -> dict:
  """The joint step (joint_setup) against its PyTorch twin."""
  cfg, models, loss_fn, batch = joint_setup(cfg, batch)
  return time_step("train_step_joint", cfg, models, loss_fn, batch, prec, ctx, args, device,
                   dec_blocks=cfg.dec_blocks, dec_output=cfg.dec_output)


def train_parallel(one: dict, cfg, make_models, loss_fn, batch, ctx, args, device) -> dict:
  """The step of the one-device row `one` (measured just before in this process, same models, loss and global batch
  --batch) data-parallel over --devices N: its losses and gradient norms over the same check steps against one's, its
  time and speed-up."""
  from tinygrad import Tensor
  from tinygrad.helpers import Context
  from studentz_training.trainer import Trainer
  n, B, L, prec = args.devices, cfg.batch_size, cfg.max_len, one["precision"]
  with Context(**ctx):
    def models(p: float) -> dict:  # the one-device row's weights; a Trainer shards them, so each gets its own
      Tensor.manual_seed(0)
      m = make_models()
      set_dropout(m.values(), p)
      return m
    check = Trainer(cfg, models(0.0), loss_fn, devices=n)  # the loss check: no dropout masks
    figs = [check.step(batch) for _ in range(max(args.check_steps, 1))]
    tr = Trainer(cfg, models(cfg.dropout), loss_fn, devices=n)
    tr.step(batch)
    t = timed(lambda: tr.step(batch), args.warmup, args.reps)
    t_q = timed(lambda: tr.read([tr.launch(batch) for _ in range(QUEUED)][-1]), 1, max(args.reps // 4, 3)) / QUEUED
  def rel(a: list, b: list) -> float: return max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b))
  losses, norms = [f["loss"] for f in figs], [f["grad_norm"] for f in figs]
  loss_rel = rel(losses, one.get("tinygrad_losses", [one["tinygrad_first_loss"]]))
  norm_rel = rel(norms, one["tinygrad_grad_norms"])
  same = max(loss_rel, norm_rel) <= (1e-4 if prec != "bf16" else 3e-2)
  if not same: print(f"WARNING: {n}-device and one-device steps differ: losses {losses} vs "
                     f"{one.get('tinygrad_losses')}, gradient norms {norms} vs {one['tinygrad_grad_norms']}",
                     file=sys.stderr)
  return {"bench": one["bench"] + "_data_parallel", "precision": prec, "devices": n, "B": B, "B_per_device": B // n,
          "L": L, "dropout": cfg.dropout, "d": cfg.d_model, "h": cfg.hidden, "blocks": cfg.n_blocks,
          "vocab": cfg.vocab_size, "device": ",".join(tr.devices), "card": card_name(device),
          "tinygrad_ms": t * 1e3, "tinygrad_queued_ms": t_q * 1e3, "tinygrad_tokens_per_s": B * L / t_q,
          "one_device_queued_ms": one["tinygrad_queued_ms"], "one_device_tokens_per_s": one["tinygrad_tokens_per_s"],
          "speedup_vs_1": one["tinygrad_queued_ms"] / (t_q * 1e3),
          "scaling_efficiency": one["tinygrad_queued_ms"] / (t_q * 1e3) / n,
          "losses": losses, "grad_norms": norms, "loss_rel_diff": loss_rel, "grad_norm_rel_diff": norm_rel,
          "same_loss": same}


def torch_train(cfg, weights, batch, prec, device, args, tg_losses: list[float], table=None) -> dict:
  """The PyTorch twin's step on the same weights ("encoder.*" alone: TorchEncoder; with a decoder: TorchJoint); with
  `table` (token targets as row indices), the table on the device and the rows gathered inside the step."""
  try:
    import torch
    from bench import torch_twin as bt
  except ImportError:
    return {"torch_ms": None, "note": "torch not installed"}
  dev = "cuda" if device.startswith("CUDA") else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = prec == "tf32"
  torch.manual_seed(0)
  joint = any(k.startswith("decoder.") for k in weights)
  model = bt.TorchJoint(cfg) if joint else bt.TorchEncoder(cfg)
  bt.load_from_tinygrad(model, weights if joint else {k.removeprefix("encoder."): v for k, v in weights.items()})
  model.to(dev).train()
  opt, sched = bt.make_optimizer(model, cfg)
  tb = (torch.from_numpy(batch["tokens"]).long().to(dev), torch.from_numpy(batch["mask"]).to(dev),
        torch.from_numpy(batch["teacher"]).to(dev))
  if joint: tb = (*tb, torch.from_numpy(batch["mode_b"]).to(dev))
  elif "tok_target" in batch: tb = (*tb, *(torch.from_numpy(batch[k]).to(dev) for k in ("tok_target", "tok_mask")))
  elif "tok_index" in batch:
    tb = (*tb, torch.from_numpy(batch["tok_index"]).long().to(dev), torch.from_numpy(batch["tok_mask"]).to(dev),
          torch.from_numpy(table).to(dev))
  ac = torch.bfloat16 if prec == "bf16" else None
  set_dropout([model], 0.0)
  losses = [float(bt.train_step(model, opt, sched, tb, cfg, ac).detach()) for _ in range(len(tg_losses))]
  first = losses[0]
  set_dropout([model], cfg.dropout)
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  t = timed(lambda: bt.train_step(model, opt, sched, tb, cfg, ac).item(), args.warmup, args.reps, sync)
  t_q = timed(lambda: [bt.train_step(model, opt, sched, tb, cfg, ac) for _ in range(QUEUED)][-1].item(), 1,
              max(args.reps // 4, 3), sync) / QUEUED
  rel = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(losses, tg_losses))
  tol = 1e-3 if prec == "fp32" else 3e-2
  if rel > tol:
    print(f"WARNING: torch and tinygrad losses differ (max relative {rel:.3g} over {len(losses)} steps): torch "
          f"{[round(x, 4) for x in losses]} vs tinygrad {[round(x, 4) for x in tg_losses]}", file=sys.stderr)
  return {"torch_ms": t * 1e3, "torch_queued_ms": t_q * 1e3, "torch_first_loss": first, "same_loss": rel <= tol,
          **({"torch_losses": losses, "max_rel_loss_diff": rel} if len(losses) > 1 else {})}


def teacher_texts(L: int, n: int) -> list[str]:
  """n sentences that tokenize to about L tokens, so the teacher and its baselines do the same work."""
  return [("word " * (L - 2)).strip()] * n


def teacher_rate(t, texts: list[str], batch: int, reps: int) -> float:
  """Teacher sentences/s (our tinygrad port), median of `reps` passes after one warm-up pass."""
  emb = lambda: t.embed(texts, batch_size=batch)
  emb()
  return len(texts) / timed(emb, 1, reps)


def student_inputs(n: int, L: int, vocab: int):
  """n random id rows of exactly L real tokens (speed does not depend on the ids, only on the shape)."""
  import numpy as np
  return np.random.default_rng(0).integers(4, vocab, (n, L)).astype(np.int32), np.ones((n, L), np.float32)


def stsb_file() -> Path | None:
  """STS-B sentences for the bench's tokenizer: the train split where found, else the test split (the one the GPU
  machines carry, under $STUDENTZ_DATA)."""
  for base in (os.environ.get("STUDENTZ_DATA"), ROOT.parent / "shared" / "data", ROOT / "data"):
    for name in ("sts-train.csv", "sts-test.csv"):
      if base and (p := Path(base) / "stsb" / name).is_file(): return p
  return None


@functools.lru_cache(maxsize=4)
def bench_tokenizer(vocab: int):
  """A student tokenizer of at most min(vocab, 4000) tokens fitted on STS-B sentences: tokenizing costs about the same
  whatever the vocabulary it was fitted to, as long as it knows common words (one fitted on a fixed filler text, the
  fallback without STS-B, splits the bench's texts into several times the tokens: rows say student_text_tokens)."""
  from studentz_runtime import metrics
  from studentz_corpus.tokenizer import StudentTokenizer
  stsb = stsb_file()
  s1, s2, _ = metrics.load_stsb(stsb) if stsb else (["a small corpus for the tokenizer"] * 50, [], None)
  return StudentTokenizer.fit(list(s1[:3000]) + list(s2[:3000]), vocab_size=min(vocab, 4000))


def student_text_rates(enc, texts: list[str], L: int, args) -> dict:
  """Student sentences/s from text, as StudentZ.encode runs it on a GPU: the student's tokenizer (padded to L) a batch
  ahead in a background thread while the encoder runs (encode_texts), on the texts the teacher rows use, so both sides
  of a ratio start from the same strings; and serially (all texts tokenized, then encoded) for comparison."""
  from studentz_runtime.encode_tinygrad import encode_ids, encode_texts
  tok = bench_tokenizer(enc.cfg.vocab_size)
  out = {"student_text_tokens": float(tok.token_counts(texts[:64]).mean())}  # content tokens per text, before the cut
  runs = {"student_text_sent_per_s": lambda: encode_texts(enc, tok, texts, args.batch),
          "student_text_serial_sent_per_s": lambda: encode_ids(enc, *tok.encode_batch(texts, L), args.batch)}
  for key, run in runs.items():
    run()
    out[key] = len(texts) / timed(run, 1, args.reps_teacher)
  return out


def student_rate(enc, ids, mask, batch: int, reps: int) -> float:
  """Student encode sentences/s through train.encode_ids (one JIT per shape), median of `reps` after a warm-up."""
  from train import encode_ids
  run = lambda: encode_ids(enc, ids, mask, batch)
  run()
  return len(ids) / timed(run, 1, reps)


def bench_teacher(args, device: str) -> list[dict]:
  """Teacher sentences/s at several lengths: our tinygrad port against HF transformers on the same device."""
  from teacher import load_teacher
  t = load_teacher(args.teacher)
  tuned = t.max_seq_length  # the length its sentence-transformers config was tuned at
  if args.teacher_max_len is not None:
    try: t.max_seq_length = args.teacher_max_len
    except ValueError as e: raise UsageError(f"--teacher-max-len: {e}") from None
  rows, real = [], real_sentences(512)
  # what a faster precision costs in fidelity, on real sentences: their fp32 vectors once, before any switch (each
  # switch drops the teacher's captured kernels)
  ref = t.embed(real, batch_size=args.batch) if real and set(args.teacher_precision) - {"fp32"} else None
  for prec in args.teacher_precision:
    t.precision = prec
    fid = {}
    if prec != "fp32" and ref is not None:
      cos = (t.embed(real, batch_size=args.batch) * ref).sum(1)
      fid = {"cos_to_fp32_min": float(cos.min()), "cos_to_fp32_mean": float(cos.mean()), "cos_n": len(real)}
    for L in args.lens:
      L = min(L, t.max_seq_length)
      texts = teacher_texts(L, args.teacher_n)
      row = {"bench": "teacher_encode", "teacher": t.name, "precision": prec, "L": L, "B": args.batch,
             "n": len(texts), "device": device, "card": card_name(device), "past_tuned_length": L > tuned,
             "tinygrad_sent_per_s": teacher_rate(t, texts, args.batch, args.reps_teacher), **fid}
      if not args.no_torch:
        with torch_side(device): row.update(hf_teacher(t, texts, L, prec, args, device))
      rows.append(row)
      print_row(row)
  return rows


@contextlib.contextmanager
def torch_side(device: str):
  """Where PyTorch works in this process, between tinygrad's calls. tinygrad's CUDA backend creates a context of its
  own and makes it current on the thread before each allocation, free, copy and launch; PyTorch's runtime calls use
  whichever context is current. The joint step's twin, once a tinygrad buffer freed by the garbage collector had left
  tinygrad's context current in the middle of its step, launched kernels there on addresses from the other context
  (CUDA illegal memory access). So PyTorch works in the device's primary context, made current here, with the
  collector paused (no tinygrad free in between); tinygrad makes its own current again at its next call."""
  try:
    import torch
  except ImportError:  # the callers report that torch is missing
    torch = None
  if torch is None or not device.startswith("CUDA"):
    yield
    return
  import ctypes, gc
  from tinygrad.runtime.autogen import cuda
  def check(status):
    if status != 0: raise RuntimeError(f"CUDA driver call failed ({status})")
  dev, ctx = cuda.CUdevice(), cuda.CUcontext()
  check(cuda.cuInit(0))
  check(cuda.cuDeviceGet(ctypes.byref(dev), torch.cuda.current_device()))
  check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev))
  collecting = gc.isenabled()
  gc.disable()
  try:
    check(cuda.cuCtxSetCurrent(ctx))
    yield
  finally:
    if collecting: gc.enable()
    check(cuda.cuDevicePrimaryCtxRelease_v2(dev))


def real_sentences(n: int) -> list[str]:
  """Up to n STS-B test sentences (where the data is found), for fidelity checks; [] without them."""
  from train import default_stsb
  from studentz_runtime.metrics import load_stsb
  if (path := default_stsb()) is None: return []
  s1, s2, _ = load_stsb(path)
  return [s for pair in zip(s1[:n // 2], s2[:n // 2]) for s in pair]


def hf_teacher(t, texts, L, prec, args, device) -> dict:
  """HF transformers' sentences/s for the same texts, batch and length: fp32 (whatever the file holds), or with
  prec fp16 the whole model in half precision on CUDA (no CPU row: PyTorch's CPU half matmuls are no baseline)."""
  try:
    import torch
    from transformers import AutoModel, AutoTokenizer
  except ImportError:
    return {"hf_sent_per_s": None}
  dev = "cuda" if device.startswith("CUDA") else "cpu"
  if prec == "fp16" and dev == "cpu": return {"hf_sent_per_s": None}
  from teacher.hub import resolve
  path = resolve(args.teacher)
  tok = AutoTokenizer.from_pretrained(path)
  model = AutoModel.from_pretrained(path).float()
  model = (model.half() if prec == "fp16" else model).to(dev).eval()

  def run():
    with torch.inference_mode():
      for i in range(0, len(texts), args.batch):
        enc = tok(texts[i:i + args.batch], padding=True, truncation=True, max_length=L, return_tensors="pt").to(dev)
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        z = torch.nn.functional.normalize((h.float() * m).sum(1) / m.sum(1), dim=-1)
        z.cpu()
  run()
  secs = timed(run, 1, args.reps_teacher)
  return {"hf_sent_per_s": len(texts) / secs}


def bench_encode(args, device: str) -> list[dict]:
  """Student encode sentences/s at several lengths (random weights: speed does not depend on them), next to the
  teacher rows of `bench_teacher` measured in the same process."""
  from tinygrad import Tensor
  import studentz as sz
  from studentz_training.trainer import half_dtype
  rows = []
  for L, prec in ((L, p) for p in args.student_precision for L in args.student_lens):
    cfg = sz.Config.from_dict({**bench_config(args).to_dict(), "max_len": L, "batch_size": args.batch})
    Tensor.manual_seed(0)
    enc = sz.Encoder(cfg)
    if prec == "half": enc.act_dtype = half_dtype(device)  # bf16 on CUDA, fp16 elsewhere; weights stay fp32
    n = max(args.teacher_n, args.batch)
    ids, mask = student_inputs(n, L, cfg.vocab_size)
    row = {"bench": "student_encode", "L": L, "B": args.batch, "n": n, "d": cfg.d_model, "blocks": cfg.n_blocks,
           "precision": prec if prec == "fp32" else str(enc.act_dtype.name), "device": device,
           "card": card_name(device), "student_sent_per_s": student_rate(enc, ids, mask, args.batch, args.reps_teacher),
           **student_text_rates(enc, teacher_texts(L, n), L, args)}
    if not args.no_torch and prec == "fp32":
      row.update(torch_encode(enc, ids, mask, args.batch, device, args.reps_teacher, n))
    rows.append(row)
    print_row(row)
  return rows


def add_encode_ratios(rows: list[dict]) -> list[dict]:
  """Each student encode row's sentences/s against the teacher rows of the same L and batch from this process:
  ratio_vs_teacher / ratio_vs_hf (our tinygrad port / HF transformers, fp32), ratio_vs_teacher_fp16 / ratio_vs_hf_fp16
  (both in half precision). The teachers' rates include their tokenizers, so the student's from text does too where
  the row has it (ratio_basis "text"; "ids": pre-tokenized ids, older rows). The summary lines they print are the
  issue-6 encode targets, L by L."""
  teachers = {(r["L"], r["B"], r["precision"]): r for r in rows if r.get("bench") == "teacher_encode"}
  out = []
  for r in rows:
    if r.get("bench") != "student_encode": continue
    basis = "text" if r.get("student_text_sent_per_s") else "ids"
    rate = r["student_text_sent_per_s"] if basis == "text" else r["student_sent_per_s"]
    for prec, tag in (("fp32", ""), ("fp16", "_fp16")):
      if (t := teachers.get((r["L"], r["B"], prec))) is None: continue
      r["ratio_basis"] = basis
      for base, key in (("tinygrad_sent_per_s", "teacher"), ("hf_sent_per_s", "hf")):
        if t.get(base): r[f"ratio_vs_{key}{tag}"] = rate / t[base]
    if ratios := {k: round(v, 2) for k, v in r.items() if k.startswith("ratio_vs_") and k != "ratio_vs_torch"}:
      print(f"student {r['precision']} L={r['L']} B={r['B']} (from {basis}): "
            + " ".join(f"{k}={v}" for k, v in ratios.items()))
      out.append(r)
  return out


def torch_encode(enc, ids, mask, batch: int, device: str, reps: int, n: int) -> dict:
  """The PyTorch twin of the same student (same weights), eager fp32, on the same device."""
  try:
    import torch
    from bench import torch_twin as bt
  except ImportError:
    return {}
  from tinygrad.nn.state import get_state_dict
  dev = "cuda" if device.startswith("CUDA") else "cpu"
  model = bt.TorchEncoder(enc.cfg)
  model.load_from_tinygrad({k: v.numpy() for k, v in get_state_dict(enc).items()})
  with torch_side(device):
    model = model.to(dev).eval()
    ti, tm = torch.from_numpy(ids).long().to(dev), torch.from_numpy(mask).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def run():
      with torch.inference_mode():
        for i in range(0, len(ti), batch): model(ti[i:i + batch], tm[i:i + batch]).cpu()
    run()
    return {"torch_sent_per_s": n / timed(run, 1, reps, sync)}


def _random_checkpoint(args, out: Path, padding: str = "centred") -> Path:
  """An untrained encoder + decoder checkpoint of the benchmark config (speed does not depend on the weights)."""
  import json
  import studentz as sz
  from studentz import Decoder, ModeBProjection
  from tinygrad.nn.state import get_state_dict
  tok = bench_tokenizer(args.vocab)
  cfg = sz.Config.from_dict({**bench_config(args).to_dict(), "vocab_size": tok.vocab_size, "padding": padding,
                             "max_len": 64, "loss_weights": {"cos": 1, "mse": 1, "ce": 1, "sem": 0.1}})
  models = {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  out.mkdir(parents=True, exist_ok=True)
  sz.save_tensors(out / "model.safetensors", {f"{k}.{n}": t for k, m in models.items()
                                              for n, t in get_state_dict(m).items()}, dtype=sz.dtypes.float16)
  (out / "config.json").write_text(json.dumps({"format_version": 1, "step": 0, "config": cfg.to_dict(),
                                               "teacher": {"name": "none", "dim": cfg.proj_dim, "fingerprint": "x"},
                                               "data_dir": str(out), "metrics": {}}))
  tok.save(out / "tokenizer.json")
  return out


def bench_stream_decode(args, device: str) -> list[dict]:
  """Streaming encoder: cost of one incoming token; cached incremental decoder: tokens/s at batch 1 and B. Per
  inference engine: numpy (the CPU's default, one BLAS thread as StudentZ.decode holds it) and tinygrad."""
  import tempfile
  import numpy as np
  from studentz_runtime import blas_threads
  from studentz import StudentZ
  from studentz_runtime.decoding import greedy
  rows = []
  engines = ("numpy", "tinygrad") if device.split(":")[0] == "CPU" else ("tinygrad",)
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = _random_checkpoint(args, Path(tmp) / "causal", padding="causal")
    for engine in engines:
      m = StudentZ.load(ckpt, engine=engine)
      st = m.stream_state()
      ids = np.random.default_rng(0).integers(4, m.config.vocab_size, 256)
      for t in ids[:8]: st.push(int(t))                                          # capture + warm up the JIT
      it = iter(ids[8:])
      secs = timed(lambda: st.push(int(next(it))), 2, 100)
      base = {"engine": engine, "device": device, "card": card_name(device)}
      row = {"bench": "stream_push", "d": m.config.d_model, "blocks": m.config.n_blocks, **base,
             "ms_per_token": secs * 1e3}
      rows.append(row)
      print_row(row)
      dec = m.models["decoder"]
      for B in sorted({1, args.batch}):
        z = np.random.default_rng(1).standard_normal((B, m.dim)).astype(np.float32)
        T = 63
        def run():
          with blas_threads.limit(1 if engine == "numpy" else None): greedy(dec, z, max_len=T)
        run()
        secs = timed(run, 1, 3)
        row = {"bench": "decode_greedy", "B": B, "T": T, **base, "tokens_per_s": B * T / secs,
               "note": "untrained weights: no row stops early"}
        rows.append(row)
        print_row(row)
  return rows


def bench_gemm(args, device: str) -> list[dict]:
  """One fp32 GEMM of the conv's shape (B*L tokens x k*d -> h) in tinygrad, both weight layouts, against numpy's BLAS
  on the same host (CPU only): the kernel the student's encode time rests on, without the model around it."""
  from tinygrad import Tensor, TinyJit
  M, K, N = args.batch * args.len, args.k * args.d, args.h
  a, w = Tensor.randn(M, K).realize(), Tensor.randn(N, K).realize()
  wt = w.T.contiguous().realize()
  rows = []
  variants = (("rows (N, K) read transposed", lambda: (a @ w.T).realize()), ("(K, N)", lambda: (a @ wt).realize()))
  for name, fn in variants:
    jit = TinyJit(fn)
    t = timed(jit, args.warmup, args.reps, lambda: Tensor.empty(1).realize())
    rows.append({"bench": "gemm", "impl": f"tinygrad {name}", "M": M, "K": K, "N": N, "device": device,
                 "card": card_name(device), "ms": t * 1e3, "gflops": 2 * M * K * N / t / 1e9})
  if device.startswith("CPU"):
    an, wn = a.numpy(), w.numpy()
    t = timed(lambda: an @ wn.T, args.warmup, args.reps)
    rows.append({"bench": "gemm", "impl": "numpy", "M": M, "K": K, "N": N, "device": device, "card": card_name(device),
                 "ms": t * 1e3, "gflops": 2 * M * K * N / t / 1e9})
    for r in rows[:-1]: r["ratio_vs_numpy"] = r["ms"] / rows[-1]["ms"]
  for r in rows: print_row(r)
  return rows


def bench_infer(args, device: str) -> list[dict]:
  """`python infer.py "text" --no-teacher` wall time per inference engine (numpy: nothing to compile; tinygrad: with
  an empty kernel cache (cold) and again (warm)), and peak memory."""
  import resource, subprocess, tempfile
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = _random_checkpoint(args, Path(tmp) / "ckpt")
    env = {**os.environ, "CACHEDB": str(Path(tmp) / "cache.db")}
    for engine, kind in (("numpy", "cold"), ("numpy", "warm"), ("tinygrad", "cold"), ("tinygrad", "warm")):
      t0 = time.perf_counter()
      p = subprocess.run([sys.executable, str(ROOT / "infer.py"), "The cat sat on the mat.", "--ckpt", str(ckpt),
                          "--no-teacher", "--engine", engine], env=env, capture_output=True, text=True)
      secs = time.perf_counter() - t0
      if p.returncode != 0: raise RuntimeError(p.stderr[-2000:])
      peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MB (Linux reports KB)
      row = {"bench": "infer_wall", "engine": engine, "kind": kind, "device": device, "card": card_name(device),
             "seconds": secs, "peak_rss_mb_so_far": peak}
      rows.append(row)
      print_row(row)
  return rows


def print_row(row: dict) -> None:
  print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


# What `python -m bench` runs on a CPU: a few minutes of student encode, streaming and infer.py wall times at small
# sizes, instead of "all" (the GPU-sized training step at B=64, L=128 and teacher passes of 512 sentences take an hour
# on 2 cores). Each size applies only where the option was left at its default.
CPU_SET = {"what": ["encode", "stream", "infer"], "batch": 16, "len": 32, "student_lens": [32, 128], "teacher_n": 64,
           "lens": [32], "reps": 5, "warmup": 2, "reps_teacher": 1, "precision": ["fp32"]}


def default_set(args, p: argparse.ArgumentParser, device: str) -> None:
  """Fill args.what when no benchmark was named: CPU_SET (its sizes too) on the CPU, else everything."""
  if args.what: return
  if device.split(":")[0] != "CPU":
    args.what = ["all"]
    return
  args.what = CPU_SET["what"]
  for k, v in CPU_SET.items():
    if k != "what" and getattr(args, k) == p.get_default(k): setattr(args, k, v)


BENCHES = ("all", "train", "teacher", "encode", "stream", "infer", "fidelity", "gemm")


def _bench_name(s: str) -> str:
  if s not in BENCHES: raise argparse.ArgumentTypeError(f"invalid choice: {s!r} (choose from {', '.join(BENCHES)})")
  return s


def parser() -> argparse.ArgumentParser:
  """bench/'s options (scripts/gpu_step_graphs.py takes its shapes from them)."""
  p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  # checked by type=, not choices=: argparse checks an empty or list default against choices as one value and fails
  p.add_argument("what", nargs="*", type=_bench_name, metavar="{" + ",".join(BENCHES) + "}",
                 help="which benchmarks (none named: the CPU-sized set on a CPU, all elsewhere; 'all' leaves out gemm "
                      "and fidelity, which needs --ckpt; 'plot' is described above)")
  p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
  p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "tf32", "bf16"],
                 help="train: one set of rows per precision (tf32: fp32 with TF32 matmuls on CUDA)")
  p.add_argument("--batch", type=int, default=64, help="sentences per batch (train, encode, gemm)")
  p.add_argument("--len", type=int, default=128, help="tokens per sentence (train, stream, gemm)")
  p.add_argument("--d", type=int, default=256, help="the student's d_model (residual channels)")
  p.add_argument("--h", type=int, default=512, help="the student's hidden (channels inside a block)")
  p.add_argument("--k", type=int, default=5, help="the student's kernel_size (taps per conv)")
  p.add_argument("--D", type=int, default=384, help="z's dimension (the teacher's: 384 for MiniLM)")
  p.add_argument("--vocab", type=int, default=16000, help="the student's vocab_size")
  p.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 4, 8, 16, 1, 2, 4],
                 help="the student's dilation_schedule (one per block)")
  p.add_argument("--pool-head", type=int, default=0, help="the student's pool_head width (studentz.Config)")
  p.add_argument("--block-context", action="store_true", help="the student with block_context (studentz.Config)")
  p.add_argument("--tok", type=float, default=0.0,
                 help="train: loss_weights.tok, the token targets' weight (random targets of train.py's shape; the GPU "
                      "default trains with 0.25)")
  p.add_argument("--tok-table", choices=["device", "host"], default="device",
                 help="train, with --tok: the targets as train.py feeds them on a GPU (device: row indices into a "
                      "table held on the device, both sides gathering there; the default) or on the CPU (host: the "
                      "(B, L, D) float16 targets copied every step, as PyTorch's would be from a loader)")
  p.add_argument("--dropout", type=float, default=0.1,
                 help="train: dropout in the blocks while timing (default: studentz.Config's 0.1; train.py's GPU "
                      "profile trains with 0, the CPU profile with 0.1); the "
                      "loss check against PyTorch runs its steps without it, where neither side draws masks")
  p.add_argument("--check-steps", type=int, default=3,
                 help="train: optimiser steps (without dropout, same batch) whose losses must match PyTorch's (default "
                      "3: the second captures tinygrad's JIT, the third replays it, so the gradients, the optimiser "
                      "and the JIT's kernels are checked, not only the first, eager forward)")
  p.add_argument("--warmup", type=int, default=5, help="untimed calls before each measurement")
  p.add_argument("--reps", type=int, default=30, help="timed calls per measurement (the median is reported)")
  p.add_argument("--teacher", default="all-MiniLM-L6-v2", help="teacher name or folder (teacher, encode ratios)")
  p.add_argument("--lens", type=int, nargs="+", default=[32, 128],
                 help="teacher: text lengths in tokens (each cut at the teacher's max_seq_length: see "
                      "--teacher-max-len)")
  p.add_argument("--teacher-max-len", type=int, default=None, metavar="N",
                 help="teacher: cut at N tokens instead of its sentence-transformers max_seq_length (256 for "
                      "all-MiniLM-L6-v2), at most its position table (512), so --lens 512 is timed at 512 tokens; such "
                      "rows say past_tuned_length (the model was tuned on shorter texts: the speed is what they show)")
  p.add_argument("--teacher-n", type=int, default=512, help="teacher/encode: sentences per timed pass")
  p.add_argument("--student-lens", type=int, nargs="+", default=[32, 128, 256, 512, 2048],
                 help="encode: student sequence lengths to time")
  p.add_argument("--reps-teacher", type=int, default=3, help="teacher: timed passes per row")
  p.add_argument("--teacher-precision", nargs="+", default=["fp32"], choices=["fp32", "fp16"],
                 help="teacher: one set of rows per precision (fp16 rows give their vectors' cosine to fp32's on real "
                      "sentences); HF transformers runs in the same precision (fp16 on CUDA only)")
  p.add_argument("--student-precision", nargs="+", default=["fp32"], choices=["fp32", "half"],
                 help="student encode activations: fp32, or half (bf16 on CUDA, fp16 elsewhere)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
  p.add_argument("--joint", action="store_true",
                 help="train: also time the joint encoder+decoder step (distillation + decoder cross-entropy)")
  p.add_argument("--devices", type=int, default=None, metavar="N",
                 help="train: also time the step data-parallel over N devices (global batch --batch) against one "
                      "device, in the same process (default: $GPUS, else 1)")
  p.add_argument("--ckpt", type=Path, nargs="+", help="fidelity: trained checkpoint folders (runs/NAME/best)")
  p.add_argument("--eval", type=Path, nargs="+", help="fidelity: `train.py --eval --json` output, one per --ckpt")
  p.add_argument("--skip-teacher", action="store_true", help="fidelity: no teacher row")
  return p
