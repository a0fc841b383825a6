"""INT8 against the float checkpoint on held-out Wikipedia sentences: cos(z_int8, z_fp16), file sizes, CPU speed.

  python scripts/int8_fidelity.py > results/cpu_int8_fidelity.json    # models/default, 500 sentences

The sentences are the corpus's test split (the hash split training held out), up to max_len tokens. Speeds are the
numpy engine's (numpy_infer.py), one process, medians: encode of one sentence, and of the 500 in batches of 32. The
int8 encoder runs its GEMMs on int8_gemm.py's kernel where the CPU has one (`int8_kernel`; else float32 arithmetic on
the int8 weights); the file records that kernel's rate beside numpy's float32, int8 and int32 matmuls on the conv's
shape, and the seconds each checkpoint takes to load (the int8 one inflates its deflated matrices).
"""
from __future__ import annotations
import argparse, json, os, statistics, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timing import timed  # noqa: E402


def matmul_rates(rows: int, k: int, n: int) -> dict:
  """Billions of operations a second (a multiply-add is two) of numpy's float32 GEMM (BLAS) and its int8 and int32
  matmuls (no BLAS: a plain loop; int8 sums wrap, timed only) on one shape, one thread; and of the int8 kernel where
  it runs, float32 in and out (rows quantized inside)."""
  from studentz_runtime import blas_threads, int8_gemm
  import numpy as np
  rng = np.random.default_rng(0)
  a, b = rng.integers(-127, 128, (rows, k)), rng.integers(-127, 128, (k, n))
  ops = 2 * rows * k * n / 1e9
  out = {}
  with blas_threads.limit(1):
    for name, dt in (("float32", np.float32), ("int8", np.int8), ("int32", np.int32)):
      x, y = a.astype(dt), b.astype(dt)
      out[f"numpy_{name}_matmul_gops"] = ops / timed(lambda: x @ y, reps=1 if name != "float32" else 5)
  if int8_gemm.lib() is not None:
    w = int8_gemm.PackedWeight(b.astype(np.int8), np.full(n, 1e-3))
    x = a.astype(np.float32)
    out["int8_kernel_gops"] = ops / timed(lambda: w.linear(x), reps=5)
  return out


def main() -> int:
  import numpy as np
  from studentz_training import evaluate
  from studentz_runtime import int8_gemm, numpy_infer, quantize
  from train import default_corpus
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ckpt", type=Path, default=ROOT / "models" / "default", help="float checkpoint folder")
  p.add_argument("--n", type=int, default=500, help="held-out sentences")
  p.add_argument("--reps", type=int, default=5, help="timed repetitions per speed (median)")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    sizes = quantize.quantize_checkpoint(args.ckpt, Path(tmp) / "q8")
    fp, info, tok = numpy_infer.load_models(args.ckpt)
    q8 = numpy_infer.load_models(Path(tmp) / "q8")[0]
    load_s = {k: timed(lambda: numpy_infer.load_models(d), reps=3) for k, d in (("fp16", args.ckpt),
                                                                           ("int8", Path(tmp) / "q8"))}
  L = fp["encoder"].cfg.max_len
  texts = evaluate.held_out_sentences(default_corpus(), None, args.n, tok, L, max_tokens=L - 2)
  ids, mask = tok.encode_batch(texts, L)
  out = {"command": " ".join(["python scripts/int8_fidelity.py", *sys.argv[1:]]), "checkpoint": str(args.ckpt),
         "n": len(texts), "mean_tokens": float(mask.sum(1).mean()),
         "fp16_file_mb": sizes["fp_bytes"] / 1e6, "int8_file_mb": sizes["int8_bytes"] / 1e6,
         "int8_size_ratio": sizes["int8_bytes"] / sizes["fp_bytes"], "load_average_1min": os.getloadavg()[0],
         "int8_kernel": int8_gemm.lib() is not None,
         "fp16_load_s": load_s["fp16"], "int8_load_s": load_s["int8"]}
  z = {k: numpy_infer.encode_batches(m["encoder"], ids, mask, 32) for k, m in (("fp16", fp), ("int8", q8))}
  cos = (z["fp16"] * z["int8"]).sum(1) / np.linalg.norm(z["fp16"], axis=1) / np.linalg.norm(z["int8"], axis=1)
  out.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()), cos_p01=float(np.quantile(cos, 0.01)))
  # the decoder too: how many greedy decodes are unchanged by int8 (first 100 sentences)
  from studentz_runtime import blas_threads, decoding
  with blas_threads.limit(1):  # as StudentZ.decode holds it
    a = decoding.decode(fp["decoder"], z["fp16"][:100], tok)
    b = decoding.decode(q8["decoder"], z["fp16"][:100], tok)
  out["decode_same_text_of_100"] = sum(x == y for x, y in zip(a, b))
  # the two are timed in turns, so load on this shared CPU falls on both alike
  one, many = {"fp16": [], "int8": []}, {"fp16": [], "int8": []}
  for _ in range(args.reps):
    for k, m in (("fp16", fp), ("int8", q8)):
      one[k].append(timed(lambda: numpy_infer.encode_batches(m["encoder"], ids[:1], mask[:1], 1), reps=5))
      many[k].append(timed(lambda: numpy_infer.encode_batches(m["encoder"], ids, mask, 32), reps=1))
  for k in one:
    out[f"{k}_encode_one_ms"] = 1e3 * statistics.median(one[k])
    out[f"{k}_encode_sentences_per_s"] = len(texts) / statistics.median(many[k])
  # the encoder conv's GEMM at 512 token rows: (512, k * d) @ (k * d, hidden)
  cfg = fp["encoder"].cfg
  out["gemm_shape"] = [512, cfg.kernel_size * cfg.d_model, cfg.hidden]
  out.update(matmul_rates(*out["gemm_shape"]))
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
