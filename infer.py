"""Run a trained StudentZ checkpoint on sentences: z, its decode (if the checkpoint has a decoder), cos to the teacher.

  python infer.py "A man is playing a guitar." --ckpt runs/NAME/best          # human view: decode, cos, z heatmap
  python infer.py "one" "two" --ckpt runs/NAME/best --json                     # one JSON object per text
  python infer.py --file sentences.txt --ckpt runs/NAME/best > out.jsonl        # one text per line (- = stdin)
  STUDENTZ_CKPT=runs/NAME/best python infer.py "text" --png z.png --strategy beam --beam 4
  python infer.py "text" --int8                          # weights through int8 (quantize.py writes such a checkpoint)

On a CPU the models run in plain numpy (numpy_infer.py, teacher/numpy_model.py: nothing to compile); on a GPU, or
with --engine tinygrad, through tinygrad (backend.inference_engine decides).
JSON lines carry `input`, `z` (D floats), `text` (the decode, or null without a decoder), `cos_teacher` (or null).
"""
from __future__ import annotations
import argparse, json, os, sys
from pathlib import Path

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from plot_png import as_grid, encode_png

NO_CKPT = "no checkpoint: pass --ckpt DIR (a folder written by train.py, e.g. runs/NAME/best) or set STUDENTZ_CKPT"
SHADES = " ░▒▓█"
# diverging map (ColorBrewer RdBu ends): blue for negative, near-white at 0, red for positive
COLD, MID, HOT = np.array([33, 102, 172]), np.array([247, 247, 247]), np.array([178, 24, 43])


class UsageError(Exception):
  """Bad input from the user: reported as one `error:` line, exit 2."""


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="infer.py", description=__doc__.split("\n")[0])
  p.add_argument("texts", nargs="*", help="sentences to encode ('-' alone reads stdin, one per line)")
  p.add_argument("--ckpt", help="checkpoint folder written by train.py (runs/NAME/best); default $STUDENTZ_CKPT, "
                 "else the shipped model in models/default")
  p.add_argument("--file", help="read one text per line from PATH ('-' = stdin); implies --json")
  p.add_argument("--json", action="store_true", help="one JSON object per text on stdout")
  p.add_argument("--png", help="save the first text's z heatmap as a PNG")
  p.add_argument("--no-teacher", action="store_true", help="skip loading the teacher (no cos_teacher)")
  p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="greedy", help="how the decode picks "
                 "tokens (default greedy)")
  p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for --strategy sample")
  p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
  p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
  p.add_argument("--beam", type=int, default=4, help="beam width for --strategy beam")
  p.add_argument("--seed", type=int, default=0, help="random seed for --strategy sample")
  p.add_argument("--engine", choices=backend.ENGINES, default=None,
                 help="numpy (CPU, nothing to compile), tinygrad (GPU or CPU kernels) or auto (numpy where tinygrad "
                 "would use the CPU); default $STUDENTZ_ENGINE, else auto")
  p.add_argument("--int8", action="store_true", help="int8 weights with per-channel scales (quantize.py); a "
                 "checkpoint written by quantize.py is int8 without it")
  return p.parse_args(argv)


def read_texts(args) -> list[str]:
  src = args.file if args.file is not None else ("-" if args.texts == ["-"] else None)
  if src is None: return list(args.texts)
  if args.file is not None and args.texts: raise UsageError("give texts either as arguments or with --file, not both")
  try:
    raw = sys.stdin.read() if src == "-" else Path(src).read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f"cannot read {'stdin' if src == '-' else src}: {e}")
  return raw.splitlines()


def resolve_ckpt(arg: str | None) -> Path:
  ckpt = arg or os.environ.get("STUDENTZ_CKPT", "").strip()
  if not ckpt:  # the shipped default model (models/default), when this install has it
    from studentz_api import DEFAULT_MODEL_DIR
    if not (DEFAULT_MODEL_DIR / "config.json").is_file(): raise UsageError(NO_CKPT)
    ckpt = str(DEFAULT_MODEL_DIR)
  path = Path(ckpt).expanduser()
  # a run folder (runs/NAME) is an easy slip for runs/NAME/best: accept it rather than fail
  if not (path / "config.json").exists() and (path / "best" / "config.json").exists(): path = path / "best"
  return path


def load_checkpoint(ckpt: Path, engine: str, int8: bool = False):
  import numpy_infer
  from checkpoint import CheckpointError
  try:
    if engine == "numpy": return numpy_infer.load_models(ckpt, int8=int8)
    import evaluate
    return evaluate.load_models(ckpt, int8=int8)
  except CheckpointError as e:
    raise UsageError(str(e))
  except Exception as e:  # bad config, shape mismatch, broken tokenizer.json: all mean an unusable checkpoint
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"cannot load checkpoint {ckpt}: {msg}")


def load_teacher(name: str, engine: str):
  """The teacher named by the checkpoint: numpy's (a few sentences, nothing to compile) or tinygrad's."""
  if engine == "numpy":
    from teacher.numpy_model import load_teacher as load
    return load(name)
  import train
  return train.load_teacher(name)


def teacher_vectors(info: dict, texts: list[str], dim: int, engine: str):
  """(vectors or None, reason it is None)."""
  name = (info.get("teacher") or {}).get("name")
  if not name: return None, "the checkpoint names no teacher"
  try:
    t = load_teacher(name, engine)
    zt = np.asarray(t.embed(texts, batch_size=32), np.float32)
  except Exception as e:  # not cached, offline hub id, no such folder: the student still works without it
    return None, f"teacher {name!r} unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
  if zt.shape != (len(texts), dim): return None, f"teacher {name!r} gives vectors of shape {zt.shape}, not (N, {dim})"
  return zt, ""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1) + 1e-12)


# ---- rendering ------------------------------------------------------------------------------------------------------

def _scaled(z: np.ndarray) -> np.ndarray:
  """The display grid of z in [-1, 1], symmetric about 0 so the colour of 0 means 0."""
  g = as_grid(np.asarray(z, np.float32))
  m = float(np.abs(g).max())
  return g / m if m > 0 else g


def rgb(v: np.ndarray) -> np.ndarray:
  """v in [-1, 1] (any shape) -> uint8 RGB (..., 3) on the diverging map."""
  v = np.clip(v, -1, 1)[..., None]
  out = np.where(v < 0, MID + (COLD - MID) * -v, MID + (HOT - MID) * v)
  return np.rint(out).astype(np.uint8)


def heatmap_lines(z: np.ndarray, color: bool) -> list[str]:
  """Two terminal columns per cell: 256-colour backgrounds on a tty, else sign + shade of |z| (readable in a log)."""
  g = _scaled(z)
  lines = []
  for row in g:
    if color:
      c = np.rint(rgb(row) / 255 * 5).astype(int)  # the xterm 6x6x6 colour cube
      lines.append("".join(f"\x1b[48;5;{16 + 36 * r + 6 * gg + b}m  " for r, gg, b in c) + "\x1b[0m")
    else:
      lines.append("".join(("-" if v < 0 else "+") + SHADES[min(int(abs(v) * len(SHADES)), len(SHADES) - 1)]
                           for v in row))
  return lines


def png_bytes(z: np.ndarray, cell: int = 8) -> bytes:
  """A truecolour PNG of z's display grid, `cell` x `cell` pixels per value."""
  return encode_png(np.repeat(np.repeat(rgb(_scaled(z)), cell, axis=0), cell, axis=1))


# ---- main -----------------------------------------------------------------------------------------------------------

def encode(enc, ids: np.ndarray, mask: np.ndarray, engine: str, batch_size: int) -> np.ndarray:
  if engine == "numpy":
    import numpy_infer
    return numpy_infer.encode_batches(enc, ids, mask, batch_size)
  import train
  # one JIT batch shape for the whole call; a lone sentence need not pay for cfg.batch_size rows
  return train.encode_ids(enc, ids, mask, batch_size)


def check_sampling(args) -> None:
  """Reject sampling options that cannot mean anything, before any model is loaded."""
  if not (args.temperature > 0 and np.isfinite(args.temperature)):
    raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
  if args.top_k < 0: raise UsageError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
  if not 0 < args.top_p <= 1: raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
  if args.beam < 1: raise UsageError(f"--beam must be >= 1, got {args.beam}")


def run(args) -> int:
  import blas_threads
  from decoding import decode
  check_sampling(args)
  texts = read_texts(args)
  if not texts: raise UsageError("no texts: pass sentences as arguments, or --file PATH (one per line, - = stdin)")
  json_out = args.json or args.file is not None or args.texts == ["-"]
  ckpt = resolve_ckpt(args.ckpt)
  try: engine = backend.inference_engine(args.engine)
  except backend.DeviceError as e: raise UsageError(str(e))
  device = "CPU (numpy)" if engine == "numpy" else backend.check_device()
  print(f"device: {device}", file=sys.stderr if json_out else sys.stdout)
  models, info, tok = load_checkpoint(ckpt, engine, args.int8)
  enc = models["encoder"]
  cfg = enc.cfg

  for i, t in enumerate(texts):
    if not t.strip(): print(f"note: text {i + 1} is empty: encoded as an empty sentence", file=sys.stderr)
  ids, mask, cut = tok.encode_batch(texts, cfg.max_len, return_truncated=True)
  for i in np.flatnonzero(cut):
    print(f"note: text {i + 1} is longer than max_len={cfg.max_len} tokens: truncated", file=sys.stderr)
  z = encode(enc, ids, mask, engine, min(cfg.batch_size, len(texts)))

  decoded: list = [None] * len(texts)
  if "decoder" in models:
    # one BLAS thread across all of numpy's steps (numpy_infer.SMALL_TOKENS says why)
    with blas_threads.limit(1 if engine == "numpy" else None):
      decoded = decode(models["decoder"], z, tok, strategy=args.strategy, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, beam=args.beam if args.strategy == "beam" else 1,
                       seed=args.seed)
  cos, why = [None] * len(texts), "skipped: --no-teacher"
  if not args.no_teacher:
    zt, reason = teacher_vectors(info, texts, z.shape[1], engine)
    if zt is not None: cos = [float(c) for c in cosines(z, zt)]
    else: print(f"note: {reason}; cos_teacher is null", file=sys.stderr)
    why = "see the note on stderr"  # the reason can be long; say it once, not per text

  if args.png:
    try: Path(args.png).write_bytes(png_bytes(z[0]))
    except OSError as e: raise UsageError(f"cannot write {args.png}: {e}")

  color = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
  for i, text in enumerate(texts):
    if json_out:
      print(json.dumps({"input": text, "text": decoded[i], "cos_teacher": cos[i],
                        "z": [float(v) for v in z[i]]}), flush=True)
      continue
    print(f"\n> {text}")
    print(f"  decode:         {decoded[i]!r}" if decoded[i] is not None else "  decode:         (no decoder)")
    print(f"  cos(z_s, z_t):  {cos[i]:.4f}" if cos[i] is not None else f"  cos(z_s, z_t):  unavailable ({why})")
    r, c = _scaled(z[i]).shape
    print(f"  z: {z.shape[1]}-d as {r}x{c}, |z|max {np.abs(z[i]).max():.3g}, norm {np.linalg.norm(z[i]):.3g}")
    for line in heatmap_lines(z[i], color): print("  " + line)
  if args.png: print(f"wrote {args.png}", file=sys.stderr)
  return 0


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    return run(args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def cli() -> None:
  sys.exit(main())


if __name__ == "__main__":
  cli()
