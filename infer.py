"""Run a trained StudentZ checkpoint on sentences: z, its decode (if the checkpoint has a decoder), cos to the teacher.

  python infer.py "A man is playing a guitar." --ckpt runs/NAME/best          # human view: decode, cos, z heatmap
  python infer.py "one" "two" --ckpt runs/NAME/best --json                     # one JSON object per text
  python infer.py --file sentences.txt --ckpt runs/NAME/best > out.jsonl        # one text per line (- = stdin)
  STUDENTZ_CKPT=runs/NAME/best python infer.py "text" --png z.png --strategy beam --beam 4
  python infer.py "text" --int8                          # weights through int8 (python -m studentz_runtime.quantize)
  python -m teacher embed --out v.npy < sents.txt && python infer.py --decode v.npy     # teacher vectors -> text
  python infer.py --decode z.npy --decode-mode a --json  # the student's own z (StudentZ.encode) -> text, JSON lines

On a CPU the models run in plain numpy (studentz_runtime/numpy_infer.py, teacher/numpy_model.py: nothing to
compile); on a GPU, or with --engine tinygrad, through tinygrad (backend.inference_engine decides).
JSON lines carry `input`, `z` (D floats), `text` (the decode, or null without a decoder), `cos_teacher` (or null).
"""
from __future__ import annotations
import argparse, json, os, sys
from pathlib import Path

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from studentz_runtime.metrics import cosine
from studentz_runtime.plot_png import as_grid, vector_heatmap

NO_CKPT = "no checkpoint: pass --ckpt DIR (a folder written by train.py, e.g. runs/NAME/best) or set STUDENTZ_CKPT"
NO_TEXTS = "no texts: pass sentences as arguments, or --file PATH (one per line, - = stdin)"
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
  p.add_argument("--png", help="save the first text's z as a PNG: a heatmap titled with the text, with index "
                 "labels, a colour bar and its norm")
  p.add_argument("--no-teacher", action="store_true", help="skip loading the teacher (no cos_teacher)")
  p.add_argument("--decode", metavar="FILE.npy", help="decode the vectors of a .npy file ([N, D] or [D] float32) "
                 "instead of encoding texts: one line (or JSON object with --json) per row")
  p.add_argument("--decode-mode", choices=("a", "b"), default="b", help="what --decode's vectors are: b = the "
                 "teacher's (python -m teacher embed; default), a = the student's own z (StudentZ.encode)")
  p.add_argument("--strategy", choices=("greedy", "sample", "beam", "rerank"), default="greedy", help="how the decode "
                 "picks tokens (default greedy); rerank: --rerank candidates re-encoded by the --judge, the closest "
                 "to the vector wins")
  p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for --strategy sample")
  p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
  p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
  p.add_argument("--beam", type=int, default=4, help="beam width for --strategy beam")
  p.add_argument("--seed", type=int, default=0, help="random seed for --strategy sample (and rerank's samples)")
  p.add_argument("--rerank", type=int, default=16, metavar="K", help="candidates per text for --strategy rerank "
                 "(greedy, beam and samples; default 16)")
  p.add_argument("--rounds", type=int, default=1, metavar="R", help="--strategy rerank's correction rounds: each "
                 "later one decodes again from the target pushed against the best text's error and searches "
                 "around the best text: one-word edits, the decoder's rewrites after each word (default 1)")
  p.add_argument("--judge", choices=("student", "teacher"), default="student", help="what re-embeds --strategy "
                 "rerank's candidates: the student (default, fast) or the checkpoint's teacher (the embedder that "
                 "defines the space: closer decodes, slower)")
  p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram of tokens "
                 "within a decode (0 = off; 3 stops loops like 'of the printing of the printing')")
  p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="P", help="make tokens already generated "
                 "less likely: positive logits divided by P, negative multiplied (1 = off; 1.2 is typical)")
  p.add_argument("--engine", choices=backend.ENGINES, default=None,
                 help="numpy (CPU, nothing to compile), tinygrad (GPU or CPU kernels) or auto (numpy where tinygrad "
                 "would use the CPU); default $STUDENTZ_ENGINE, else auto")
  p.add_argument("--int8", action="store_true", help="int8 weights with per-channel scales; a "
                 "checkpoint written by python -m studentz_runtime.quantize is int8 without it")
  return p.parse_args(argv)


CHUNK = 256  # texts encoded, decoded and written per step of a stream: memory stays bounded, output flows
MAX_LINE = 1 << 20  # bytes of one input line kept; the rest of a longer one is skipped (the model keeps max_len tokens)


def open_source(args):
  """A binary stream of the texts (--file PATH, --file - or a lone '-'), or None when they are the arguments.
  Opened before any model loads, so a missing file costs no wait."""
  src = args.file if args.file is not None else ("-" if args.texts == ["-"] else None)
  if src is None: return None
  if args.file is not None and args.texts: raise UsageError("give texts either as arguments or with --file, not both")
  if src == "-": return sys.stdin.buffer
  try: return open(src, "rb")
  except OSError as e: raise UsageError(f"cannot read {src}: {e}")


def read_lines(f):
  """Lines split on \\n (and \\r\\n) only, as `python -m teacher embed` does: str.splitlines also splits on \\x0b,
  \\x1c, U+2028 ..., so outputs would stop lining up with inputs. Invalid UTF-8 becomes U+FFFD."""
  while raw := f.readline(MAX_LINE):
    if not raw.endswith(b"\n") and len(raw) == MAX_LINE:
      while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"): pass  # the cut-off rest of an over-long line
    yield raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "replace")


def chunks(items, size: int | None = None):
  """(index of the first item, list of up to `size` (default CHUNK) items) from any iterable, without holding more."""
  buf, first, size = [], 0, size or CHUNK
  for x in items:
    buf.append(x)
    if len(buf) == size:
      yield first, buf
      first, buf = first + size, []
  if buf: yield first, buf


def load_model(ckpt: str | None, engine: str, int8: bool = False):
  """The StudentZ of --ckpt (default: $STUDENTZ_CKPT, then the shipped model); any unusable checkpoint is a usage
  error of one line."""
  from studentz_runtime.checkpoint import CheckpointError, resolve_path
  if engine == "numpy": from studentz_runtime.api import StudentZ  # the numpy engine: tinygrad is never imported
  else: from studentz import StudentZ
  try: path = resolve_path(ckpt or None)
  except FileNotFoundError: raise UsageError(NO_CKPT)
  try:
    return StudentZ.load(path, engine=engine, int8=int8)
  except CheckpointError as e:
    raise UsageError(str(e))
  except Exception as e:  # bad config, shape mismatch, broken tokenizer.json: all mean an unusable checkpoint
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"cannot load checkpoint {path}: {msg}")


def load_teacher(name: str, engine: str):
  """The teacher named by the checkpoint: numpy's (a few sentences, nothing to compile) or tinygrad's."""
  if engine == "numpy":
    from teacher.numpy_model import load_teacher as load
    return load(name)
  from teacher import load_teacher as load
  return load(name)


class TeacherCos:
  """The checkpoint's teacher, loaded once on first use: cos(z_s, z_t) per text, or None with the reason why."""

  def __init__(self, info: dict, dim: int, skip: bool, engine: str):
    self.name, self.dim, self.teacher, self.reason = (info.get("teacher") or {}).get("name"), dim, None, ""
    self.engine = engine
    if skip: self.reason = "skipped: --no-teacher"
    elif not self.name: self._off("the checkpoint names no teacher")

  def __call__(self, texts: list[str], z: np.ndarray) -> list:
    zt = self._vectors(texts)
    return [None] * len(texts) if zt is None else [float(c) for c in cosine(z, zt)]

  def _vectors(self, texts):
    if self.reason: return None
    try:
      self.teacher = self.teacher or load_teacher(self.name, self.engine)
      zt = np.asarray(self.teacher.embed(texts, batch_size=32), np.float32)
    except Exception as e:  # not cached, offline hub id, no such folder: the student still works without it
      return self._off(f"teacher {self.name!r} unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if zt.shape != (len(texts), self.dim):
      return self._off(f"teacher {self.name!r} gives vectors of shape {zt.shape}, not (N, {self.dim})")
    return zt

  def _off(self, reason: str):
    self.reason = reason
    print(f"note: {reason}; cos_teacher is null", file=sys.stderr)




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


def heatmap_figure(z: np.ndarray, text: str = "", cell: int = 16):
  """z's display grid as a labelled figure (plot_png.Canvas, layout): the text as title, the same colours as the
  terminal heatmap (rgb of _scaled), a colour bar whose ends are -max|z| and +max|z| (what _scaled maps to -1 and
  +1), and a footer with the dimension and norm."""
  z = np.asarray(z, np.float32)
  vmax = float(np.abs(z).max())
  r, c = as_grid(z).shape
  footer = f"{z.size}-d ({r}x{c}: z[row + column])   norm {np.linalg.norm(z):.4g}   max|z| {vmax:.3g}"
  return vector_heatmap(_scaled(z), vmax, rgb, text, footer, cell)


def png_bytes(z: np.ndarray, text: str = "", cell: int = 16) -> bytes:
  return heatmap_figure(z, text, cell)[0].to_png()


# ---- main -----------------------------------------------------------------------------------------------------------

def check_sampling(args) -> None:
  """Reject sampling options that cannot mean anything, before any model is loaded."""
  from studentz_runtime.decoding import check_options
  try: check_options(args.strategy, args.temperature, args.top_k, args.top_p, args.beam, args.seed, None,
                    args.no_repeat_ngram, args.repetition_penalty, args.rerank, args.rounds)
  except ValueError as e:  # the message starts with the option's Python name: name it as its flag
    name, rest = str(e).split(" ", 1)
    raise UsageError(f"--{name.replace('_', '-')} {rest}")


def run(args) -> int:
  check_sampling(args)
  if args.judge == "teacher" and args.no_teacher:
    raise UsageError("--judge teacher loads the teacher to re-embed the candidates: drop --no-teacher")
  if args.decode is not None: return run_decode(args)
  source = open_source(args)
  from studentz_corpus.tokenizer import without_surrogates  # invalid UTF-8 in argv arrives as surrogate escapes
  texts = read_lines(source) if source is not None else [without_surrogates(t) for t in args.texts]
  if source is None and not texts: raise UsageError(NO_TEXTS)
  json_out = args.json or source is not None
  try: engine = backend.inference_engine(args.engine)
  except backend.DeviceError as e: raise UsageError(str(e))
  device = "CPU (numpy)" if engine == "numpy" else backend.check_device()
  print(f"device: {device}", file=sys.stderr if json_out else sys.stdout)
  m = load_model(args.ckpt, engine, args.int8)
  cos_of = TeacherCos(m.info, m.dim, args.no_teacher, engine)
  first_z, first_text, bs = None, None, None
  for first, batch in chunks(texts):
    bs = bs or min(m.config.batch_size, len(batch))  # one JIT batch shape for the whole stream
    z, decoded = infer_batch(m, batch, first, bs, args)
    if first_z is None: first_z, first_text = z[0], batch[0]
    write_rows(batch, z, decoded, cos_of(batch, z), json_out,
               "skipped: --no-teacher" if args.no_teacher else "see the note on stderr")
  if first_z is None: raise UsageError(NO_TEXTS)
  if args.png:  # after the results: a bad --png path must not drop them
    sys.stdout.flush()
    try: Path(args.png).write_bytes(png_bytes(first_z, first_text))
    except OSError as e: raise UsageError(f"cannot write {args.png}: {e}")
    print(f"wrote {args.png}", file=sys.stderr)
  return 0


def load_vectors(path: str) -> np.ndarray:
  """The vectors of a .npy file, memory-mapped (a large file streams), as [N, D]; pickled object arrays are refused
  (unpickling runs code), as are .npz archives and anything not 1-D or 2-D."""
  try:
    with open(path, "rb") as f: magic = f.read(6)
    if magic[:2] == b"PK": raise UsageError(f"{path} is an .npz archive: pass one array saved with np.save")
    if magic != b"\x93NUMPY": raise UsageError(f"{path} is not a .npy file (np.save writes one)")
    v = np.load(path, mmap_mode="r", allow_pickle=False)
  except OSError as e: raise UsageError(f"cannot read {path}: {e.strerror or e}")
  except ValueError as e:  # object arrays: numpy refuses them without allow_pickle (or memory-mapping)
    why = "it holds Python objects, which are never unpickled" if "object" in str(e).lower() or "pickle" in str(e) \
      else str(e).splitlines()[0]
    raise UsageError(f"{path} is not a usable .npy array ({why}): save vectors with np.save(path, float32 array)")
  if not isinstance(v, np.ndarray): raise UsageError(f"{path} is an .npz archive: pass one array saved with np.save")
  if v.ndim not in (1, 2): raise UsageError(f"{path} holds shape {v.shape}: expected [N, D] or [D] vectors")
  if v.dtype == object or not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
    raise UsageError(f"{path} holds {v.dtype} values: expected float vectors")
  return v[None] if v.ndim == 1 else v


def run_decode(args) -> int:
  """--decode FILE.npy: vectors -> text, CHUNK rows at a time (the file is memory-mapped), written as they come."""
  if args.texts or args.file is not None: raise UsageError("give either texts or --decode FILE.npy, not both")
  if args.png: raise UsageError("--png draws an encoded text's z: it does not apply to --decode")
  vecs = load_vectors(args.decode)
  try: engine = backend.inference_engine(args.engine)
  except backend.DeviceError as e: raise UsageError(str(e))
  print(f"device: {'CPU (numpy)' if engine == 'numpy' else backend.check_device()}", file=sys.stderr)
  m = load_model(args.ckpt, engine, args.int8)
  if not m.has_decoder: raise UsageError(f"checkpoint {m.path} has no decoder: train one with --loss_weights.ce 1")
  for first in range(0, len(vecs), CHUNK):
    texts, cos = decode_vectors(m, vecs[first:first + CHUNK], first, args)
    for i, (t, c) in enumerate(zip(texts, cos), first):
      line = json.dumps({"row": i, "text": t, "cos_student": c}) if args.json else " ".join(t.splitlines())
      print(line, flush=True)
  return 0


def decode_vectors(m, v, first: int, args) -> tuple[list[str], list[float]]:
  """Texts of one chunk of vectors and cos(student z of each text, its vector): how close the decode came, as the
  student sees it (the vectors live in the teacher's space in both modes)."""
  from studentz_runtime.decoding import check_z
  try: target = check_z(np.asarray(v), m.dim)
  except ValueError as e:  # rows are counted within the chunk: say where the chunk starts
    raise UsageError(f"{args.decode} (rows {first} to {first + len(v) - 1}): {e}")
  bs = min(m.config.batch_size, len(target))
  decode = m.decode_from_teacher if args.decode_mode == "b" else m.decode
  texts = decode(target, **decode_options(args))
  return texts, [round(float(c), 4) for c in cosine(m.encode(texts, batch_size=bs), target)]


def infer_batch(m, texts: list[str], first: int, bs: int, args):
  """(z, decodes or Nones) of one batch of texts; `first` numbers them in the notes."""
  L = m.max_len
  for i, t in enumerate(texts, first + 1):
    if not t.strip(): print(f"note: text {i} is empty: encoded as an empty sentence", file=sys.stderr)
  ids, mask, cut = m.tokenizer.encode_batch(texts, L, return_truncated=True)
  for i in np.flatnonzero(cut):
    print(f"note: text {first + i + 1} is longer than max_len={L} tokens: truncated", file=sys.stderr)
  z = m.encode(ids, batch_size=bs)  # the rows as tokenized (truncation noted above)
  if not np.isfinite(z).all():  # NaN weights (a diverged run): nothing below could mean anything, and NaN is not JSON
    raise UsageError(f"checkpoint {m.path} gives NaN/Inf vectors: its weights are not finite (a run that diverged?)")
  if not m.has_decoder: return z, [None] * len(texts)
  return z, m.decode(z, **decode_options(args))


def decode_options(args) -> dict:
  return {"strategy": args.strategy, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
          "beam": args.beam, "seed": args.seed, "rerank": args.rerank, "rounds": args.rounds,
          "no_repeat_ngram": args.no_repeat_ngram, "repetition_penalty": args.repetition_penalty, "judge": args.judge}


def write_rows(texts, z, decoded, cos, json_out: bool, why: str) -> None:
  """One JSON line (flushed: a reader sees each result as it comes) or the human view per text."""
  color = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
  for i, text in enumerate(texts):
    if json_out:
      row = {"input": text, "text": decoded[i], "cos_teacher": cos[i], "z": [float(v) for v in z[i]]}
      print(json.dumps(row, allow_nan=False), flush=True)  # allow_nan=False: never a NaN token, which is not JSON
      continue
    print(f"\n> {text}")
    print(f"  decode:         {decoded[i]!r}" if decoded[i] is not None else "  decode:         (no decoder)")
    print(f"  cos(z_s, z_t):  {cos[i]:.4f}" if cos[i] is not None else f"  cos(z_s, z_t):  unavailable ({why})")
    r, c = _scaled(z[i]).shape
    print(f"  z: {z.shape[1]}-d as {r}x{c}, |z|max {np.abs(z[i]).max():.3g}, norm {np.linalg.norm(z[i]):.3g}")
    for line in heatmap_lines(z[i], color): print("  " + line)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    return run(args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def cli() -> None:
  from studentz_runtime.cli_guard import guarded
  sys.exit(guarded(main))


if __name__ == "__main__":
  cli()
