"""The numpy engine's int8 kernel (studentz_runtime/int8_gemm.py) against numpy float32 matmul at the encoder's shapes.

  python scripts/int8_gemm_bench.py          # writes results/cpu_int8_gemm.json and prints each figure

Rows are B*L = 32*128 token positions. Shapes: the conv's GEMM over its 5 taps (rows, 5*d) @ (5*d, h), the blocks'
1x1 output (rows, h) @ (h, d) and the pool head's (rows, d) @ (d, 2*P), d, h, P those of --ckpt's config. The int8
figure is the whole call from float32 in to float32 out: each row quantized (absmax / 127), the int8 GEMM, the
scales and bias applied. "conv" rows time the layer itself: float builds the shifted taps and runs BLAS, int8
quantizes the taps straight from the input. One thread: BLAS on one thread, the kernel as is; two threads: BLAS on two,
and the rows split in halves over two Python threads (the engine's way: each GEMM on one BLAS thread) for both.
Rounds run the variants in turns; a figure is the median over rounds of each round's median.
"""
from __future__ import annotations
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, "2")

import argparse, json, platform, statistics, sys  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timing import timed  # noqa: E402


def halves(fn, pool: ThreadPoolExecutor, x: np.ndarray):
  """fn over x's two halves of rows (first axis) on two threads."""
  return lambda: list(pool.map(fn, np.array_split(x, 2)))


def variants(shape, taps: tuple[int, int] | None, pool: ThreadPoolExecutor) -> dict:
  """{name: callable} for one GEMM shape (rows, K, N); taps (k, d): the conv layer of k taps of d channels instead."""
  from studentz_runtime import blas_threads, int8_gemm, numpy_infer
  rng = np.random.default_rng(0)
  rows, K, N = shape
  w = rng.normal(0, 0.05, (K, N)).astype(np.float32)
  q, s = (w / (np.abs(w).max(0) / 127)).round().astype(np.int8), (np.abs(w).max(0) / 127).astype(np.float32)
  packed = int8_gemm.PackedWeight(q, s, np.zeros(N, np.float32))
  one = lambda f: lambda: _limited(blas_threads, 1, f)  # noqa: E731
  if taps is None:
    x = rng.normal(0, 1, (rows, K)).astype(np.float32)
    mm = lambda a: a @ w  # noqa: E731
    return {"float32_1_thread": one(lambda: mm(x)), "int8_1_thread": lambda: packed.linear(x),
            "float32_2_blas_threads": lambda: mm(x), "float32_2_row_threads": one(halves(mm, pool, x)),
            "int8_2_row_threads": halves(packed.linear, pool, x)}
  k, d = taps
  x = rng.normal(0, 1, (32, rows // 32, d)).astype(np.float32)
  conv = numpy_infer.Conv({"c.weight": w.T.reshape(N, k, d).transpose(0, 2, 1), "c.bias": np.zeros(N, np.float32)},
                          "c", 4, False)
  q8 = lambda a: packed.conv(a, None, k, 4, conv.span // 2)  # noqa: E731
  return {"float32_1_thread": one(lambda: conv(x)), "int8_1_thread": lambda: q8(x),
          "float32_2_blas_threads": lambda: conv(x), "float32_2_row_threads": one(halves(conv, pool, x)),
          "int8_2_row_threads": halves(q8, pool, x)}


def _limited(blas_threads, n, f):
  with blas_threads.limit(n): return f()


def main() -> int:
  from studentz_runtime import int8_gemm
  from studentz_runtime.checkpoint import read_checkpoint_info
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ckpt", type=Path, default=ROOT / "models" / "default", help="checkpoint whose shapes are used")
  p.add_argument("--rows", type=int, default=32 * 128, help="token rows (B*L)")
  p.add_argument("--reps", type=int, default=7, help="timed calls per variant per round")
  p.add_argument("--rounds", type=int, default=3, help="rounds of turns")
  p.add_argument("--json", type=Path, default=ROOT / "results" / "cpu_int8_gemm.json", help="results file")
  args = p.parse_args()
  if int8_gemm.lib() is None:
    print("error: the int8 kernel does not run here (needs clang and AVX-512 VNNI)", file=sys.stderr)
    return 2
  cfg = read_checkpoint_info(args.ckpt)["config"]
  d, h, k, P = cfg["d_model"], cfg["hidden"], cfg["kernel_size"], cfg["pool_head"]
  shapes = {"conv_taps": (args.rows, k * d, h), "conv_layer": (args.rows, k * d, h), "block_out": (args.rows, h, d)}
  if P: shapes["pool_head_up"] = (args.rows, d, 2 * P)
  out = {"command": " ".join(["python scripts/int8_gemm_bench.py", *sys.argv[1:]]),
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
         "load_average_1min_start": os.getloadavg()[0], "shapes": {}}
  with ThreadPoolExecutor(2) as pool:
    for name, shape in shapes.items():
      fns = variants(shape, (k, d) if name == "conv_layer" else None, pool)
      ts = {v: [] for v in fns}
      for _ in range(args.rounds):
        for v, f in fns.items(): ts[v].append(timed(f, reps=args.reps))
      ms = {v: 1e3 * statistics.median(t) for v, t in ts.items()}
      gops = {v: 2 * np.prod(shape) / (t / 1e3) / 1e9 for v, t in ms.items()}
      row = {"shape": list(shape), "ms": ms, "gops": gops,
             "int8_speedup_1_thread": ms["float32_1_thread"] / ms["int8_1_thread"],
             "int8_speedup_2_threads": min(ms["float32_2_blas_threads"], ms["float32_2_row_threads"])
             / ms["int8_2_row_threads"]}
      out["shapes"][name] = row
      print(f"{name} {shape}: " + ", ".join(f"{v} {t:.1f} ms" for v, t in ms.items())
            + f"; int8 speed-up {row['int8_speedup_1_thread']:.2f}x / {row['int8_speedup_2_threads']:.2f}x")
  out["load_average_1min_end"] = os.getloadavg()[0]
  args.json.write_text(json.dumps(out, indent=1) + "\n")
  print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
