"""Where a fresh process's seconds go before infer.py's first answer: imports, weight load, first/second calls.

  python scripts/startup_breakdown.py                  # the numpy engine (numpy_infer.py, teacher/numpy_model.py)
  python scripts/startup_breakdown.py --engine tinygrad

One line per step, in order, each the wall time since the previous line (one process, so the figures are noisy on a
shared CPU: run it a few times).
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXT = "The cat sat on the mat."
_t = [time.perf_counter()]


def lap(name: str) -> None:
  t = time.perf_counter()
  print(f"{name:46s} {1e3 * (t - _t[0]):8.1f} ms", flush=True)
  _t[0] = t


def numpy_engine(ckpt: Path, teacher: str) -> None:
  import numpy  # noqa: F401
  lap("import numpy")
  from studentz_runtime import blas_threads, decoding, numpy_infer  # noqa: F401
  lap("import numpy_infer, decoding, tokenizers")
  models, _, tok = numpy_infer.load_models(ckpt)
  lap("load checkpoint (read, fp16->fp32, build)")
  ids, mask = tok.encode_batch([TEXT], models["encoder"].cfg.max_len)
  for what in ("first", "second"):
    z = numpy_infer.encode_batches(models["encoder"], ids, mask, 1)
    lap(f"{what} encode")
  for what in ("first", "second"):
    with blas_threads.limit(1): decoding.decode(models["decoder"], z, tok)  # as infer.py holds it
    lap(f"{what} greedy decode")
  from teacher.numpy_model import load_teacher
  t = load_teacher(teacher)
  lap("teacher load")
  for what in ("first", "second"):
    t.embed([TEXT])
    lap(f"teacher {what} embed")


def tinygrad_engine(ckpt: Path, teacher: str) -> None:
  import numpy  # noqa: F401
  lap("import numpy")
  import tinygrad  # noqa: F401
  lap("import tinygrad")
  import train
  from studentz_training import evaluate
  from studentz_runtime import generate  # noqa: F401
  lap("import studentz, decoder, generate, train")
  from tinygrad import Device
  Device[Device.DEFAULT]
  lap("open the device")
  models, _, tok = evaluate.load_models(ckpt)
  lap("load checkpoint (build + assign)")
  ids, mask = tok.encode_batch([TEXT], models["encoder"].cfg.max_len)
  for what in ("first (schedule, compile)", "second (JIT capture)", "third (JIT replay)"):
    z = train.encode_ids(models["encoder"], ids, mask, 1)
    lap(f"{what} encode")
  for what in ("first", "second"):
    generate.decode(models["decoder"], z, tok)
    lap(f"{what} greedy decode")
  t = train.heldout.load_teacher(teacher)
  lap("teacher load")
  for what in ("first", "second"):
    t.embed([TEXT])
    lap(f"teacher {what} embed")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--engine", choices=("numpy", "tinygrad"), default="numpy", help="which inference path to time")
  p.add_argument("--ckpt", type=Path, default=ROOT / "models" / "default", help="checkpoint folder")
  p.add_argument("--teacher", default="all-MiniLM-L6-v2", help="teacher name or folder")
  args = p.parse_args()
  t0 = _t[0]
  (numpy_engine if args.engine == "numpy" else tinygrad_engine)(args.ckpt, args.teacher)
  print(f"{'total':46s} {1e3 * (time.perf_counter() - t0):8.1f} ms")
  return 0


if __name__ == "__main__":
  sys.exit(main())
