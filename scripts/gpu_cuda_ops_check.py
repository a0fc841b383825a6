"""cuda_ops on a CUDA GPU: the fused cross-entropy and the conv taps against tinygrad's kernels for the same math
(cuda_ops switched off), values, gradients and time.

  DEV=CUDA python scripts/gpu_cuda_ops_check.py [--json OUT] [--reps 20]

Cross-entropy: loss per position and the gradient of sum(loss * w) (w: random weights with a quarter of the rows 0,
as the decoder's padding; with bias also the bias's), bf16 logits of the joint step's shape (32768 x 16000, vector
loads) and fp32/bf16 logits over MiniLM's 30522 tokens (scalar loads: 30522 is no multiple of 8), with and without
label smoothing. Taps: the encoder's centred and the decoder's causal views at the training step's shape, forward
(copies: bit-identical) and the gradient of sum(taps * g). Error: max |ours - ref| / max |ref|; PASS below 1e-2
(bf16 gradients are rounded once on each side). Times as in gpu_cuda_gemm_check.py: medians of JIT'd calls launched
back to back."""
from __future__ import annotations
import os, sys, time, traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from studentz_kernels import backend  # noqa: E402
from studentz_kernels import cuda_ops  # noqa: E402
from studentz import token_ce  # noqa: E402
from gpu_cuda_gemm_check import base_parser, finish, realize_all, rel_err, timed  # noqa: E402
from studentz import shifted_views  # noqa: E402
from tinygrad import Tensor, Device, dtypes  # noqa: E402

TOL = 1e-2


def with_ops(on: bool, fn):
  def run(*args):
    old, cuda_ops.ENABLED = cuda_ops.ENABLED, on
    try: return fn(*args)
    finally: cuda_ops.ENABLED = old
  return run


def ce_case(label, R, V, dtype, eps, bias=False):
  """With bias: a head's product and its float32 bias, as decoder.head_ce passes them; tinygrad's side adds them in
  float32 as the kernel does (the first GPU run of this case rounded the sum to bf16 first, as Decoder.logits does:
  errors 2.7e-3 / 1.1e-2 / 9.4e-3 at the bf16 shape, FAIL, while the fp32 case agreed to 7e-5; the bf16 rounding of
  logits of magnitude ~10 moves them by ~0.04, which is that size: that rounding alone, simulated in numpy over 1024
  rows of the same distributions, gives 1.0e-3 / 6.8e-3 / 6.8e-3)."""
  x = (Tensor.randn(R, V) * 3).cast(dtype).contiguous().realize()
  t = Tensor.randint(R, low=0, high=V, dtype=dtypes.int32).realize()
  w = (Tensor.rand(R) * (Tensor.rand(R) > 0.25)).contiguous().realize()
  b = Tensor.randn(V).realize()

  def step(xx, tt):
    if not bias: loss = token_ce(xx, tt, eps)
    elif cuda_ops.ce_usable(xx, tt): loss = cuda_ops.token_ce(xx, tt, eps, bias=b)
    else: loss = token_ce(xx.float() + b, tt, eps)
    return realize_all(loss, *(loss * w).sum().gradient(*((xx, b) if bias else (xx,))))
  return dict(label=label, shape=f"{R}x{V}", args=(x, t), fn=step, bytes=4 * R * V * dtype.itemsize)


def taps_case(label, B, L, C, k, dil, causal, dtype=dtypes.bfloat16):
  x = Tensor.randn(B, L, C).cast(dtype).contiguous().realize()
  g = Tensor.randn(B, L, k * C).cast(dtype).contiguous().realize()
  span = (k - 1) * dil
  left = span if causal else span // 2

  def step(xx, gg):
    if cuda_ops.taps_usable(xx): out = cuda_ops.taps(xx, k, dil, left)
    else: out = shifted_views(xx, k, dil, left).contiguous()  # studentz.DilatedConv's tinygrad form
    return realize_all(out, *(out * gg).sum().gradient(xx))
  return dict(label=label, shape=f"{B}x{L}x{C} k{k} d{dil}", args=(x, g), fn=step,
              bytes=(2 * k + 2) * B * L * C * dtype.itemsize)


def cases(s: int):
  """s divides the rows/batch (--scale, for a quick run)."""
  yield lambda: taps_case("taps centred (encoder)", 512 // s, 64, 256, 5, 2, False)
  yield lambda: taps_case("taps causal (decoder)", 512 // s, 64, 256, 5, 16, True)
  yield lambda: taps_case("taps causal fp32", 128 // s, 64, 256, 5, 4, True, dtypes.float32)
  yield lambda: taps_case("taps C 250 (scalar)", 64 // s, 64, 250, 3, 1, False)
  yield lambda: ce_case("ce fp32 V 16000 (vec 4)", 4096 // s, 16000, dtypes.float32, 0.1)
  yield lambda: ce_case("ce fp32 V 30522 (scalar)", 4096 // s, 30522, dtypes.float32, 0.1)
  yield lambda: ce_case("ce bf16 V 30522 (scalar)", 8192 // s, 30522, dtypes.bfloat16, 0.1)
  yield lambda: ce_case("ce bf16 eps 0", 32768 // s, 16000, dtypes.bfloat16, 0.0)
  yield lambda: ce_case("ce bf16 eps 0.1 (joint step)", 32768 // s, 16000, dtypes.bfloat16, 0.1)
  yield lambda: ce_case("ce bf16 + bias (head_ce)", 32768 // s, 16000, dtypes.bfloat16, 0.1, bias=True)
  yield lambda: ce_case("ce fp32 + bias, V 30522", 4096 // s, 30522, dtypes.float32, 0.1, bias=True)


def main():
  ap = base_parser(__doc__)
  ap.add_argument("--scale", type=int, default=1, help="divide rows and batches by this (a quick run)")
  args = ap.parse_args()
  backend.check_device()  # and the tinygrad settings the training step runs with (TC_OPT, split-K)
  print(f"device {Device.DEFAULT}, STUDENTZ_CUDA_OPS={cuda_ops.ENABLED}")
  Tensor.manual_seed(0)
  rows, t0 = [], time.perf_counter()
  print(f"{'case':32s} {'shape':22s} {'ms ours':>8s} {'GB/s':>7s} {'ms tg':>8s} {'errors (outputs)':>28s}  result")
  for make in cases(args.scale):
    row: dict = {}
    try:
      st = time.perf_counter()
      c = make()
      row = dict(case=c["label"], shape=c["shape"])
      ours, ref = with_ops(True, c["fn"])(*c["args"]), with_ops(False, c["fn"])(*c["args"])
      errs = [rel_err(o, r.float()) for o, r in zip(ours, ref)]
      used = cuda_ops.ce_usable(*c["args"]) if c["label"].startswith("ce") else cuda_ops.taps_usable(c["args"][0])
      ms, _ = timed(with_ops(True, c["fn"]), c["args"], args.reps, args.inner)
      ms_tg, _ = timed(with_ops(False, c["fn"]), c["args"], args.reps, args.inner)
      ok = used and max(errs) < TOL
      row.update(ms_ours=ms, ms_tinygrad=ms_tg, gbps_ours=c["bytes"] / ms / 1e6, rel_errs=errs,
                 result="PASS" if ok else "FAIL")
      print(f"{c['label']:32s} {c['shape']:22s} {ms:8.3f} {row['gbps_ours']:7.0f} {ms_tg:8.3f} "
            f"{' '.join(f'{e:.2e}' for e in errs):>28s}  {row['result']}  ({time.perf_counter() - st:.0f} s)",
            flush=True)
    except Exception as e:  # noqa: BLE001
      traceback.print_exc()
      row.update(result="FAIL", error=f"{type(e).__name__}: {e}")
    rows.append(row)
  finish(rows, t0, args.json, dict(device=Device.DEFAULT, card=backend.card_name(Device.DEFAULT), rows=rows))


if __name__ == "__main__":
  main()
