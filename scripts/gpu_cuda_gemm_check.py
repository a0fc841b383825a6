"""cuda_gemm on a CUDA GPU: correctness against tinygrad's float32 matmul and speed against tinygrad's bf16 matmul.

  DEV=CUDA python scripts/gpu_cuda_gemm_check.py [--json OUT] [--reps 20]

The training step's shapes: the four operand layouts, the conv GEMMs, their input and weight (split-K) gradients, the
vocab head and its gradients through Tensor.gradient, fp16 once, a split-K sweep of the weight gradient, and a shape
that falls back to tinygrad. A case's time is the median of --reps samples, each --inner calls of the TinyJit'd
computation launched back to back and then one synchronize, divided by --inner (the launches queue behind the GPU,
so the time is the kernels', not Python's). The error is max |ours - ref| / max |ref|, ref being tinygrad's float32
matmul of the same bf16 inputs; PASS below 2e-2. A case that raises is printed and the rest still run."""
from __future__ import annotations
import argparse, json, os, statistics, sys, time, traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from studentz_kernels import backend  # noqa: E402
from studentz_kernels import cuda_gemm  # noqa: E402
from tinygrad import Tensor, Device, TinyJit, dtypes  # noqa: E402

TOL = 2e-2

# the kernels each case built, to flag a case that silently fell back to tinygrad's matmul
_built: list[str] = []
_source = cuda_gemm._source
def _recording_source(name, *args):
  _built.append(name)
  return _source(name, *args)
cuda_gemm._source = _recording_source


def rel_err(x: Tensor, ref: Tensor) -> float:
  return (x.float() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def timed(fn, args: tuple[Tensor, ...], reps: int, inner: int) -> tuple[float, bool]:
  """Median ms of one call of fn(*args), and whether TinyJit ran it (else plain realizes, Python overhead included)."""
  dev = args[0].device
  jitted = True
  try:
    jf = TinyJit(fn)
    for _ in range(3): jf(*args)  # run, capture, first replay
  except Exception as e:  # noqa: BLE001
    print(f"  (TinyJit failed: {type(e).__name__}: {e}; timing without it)")
    jf, jitted = fn, False
    fn(*args)
  Device[dev].synchronize()
  samples = []
  for _ in range(reps):
    st = time.perf_counter()
    for _ in range(inner): jf(*args)
    Device[dev].synchronize()
    samples.append((time.perf_counter() - st) / inner * 1e3)
  return statistics.median(samples), jitted


def realize_all(*ts: Tensor) -> tuple[Tensor, ...]:
  Tensor.realize(*ts)
  return ts


def rand(*shape: int, dtype=dtypes.bfloat16) -> Tensor:
  return Tensor.randn(*shape, dtype=dtypes.float32).cast(dtype).contiguous().realize()


def forward_case(label, M, K, N, trans_a=False, trans_b=False, dtype=dtypes.bfloat16, split=0):
  a = rand(K, M, dtype=dtype) if trans_a else rand(M, K, dtype=dtype)
  b = rand(N, K, dtype=dtype) if trans_b else rand(K, N, dtype=dtype)
  op = lambda x, t: x.T if t else x  # noqa: E731
  ref = (op(a, trans_a).float() @ op(b, trans_b).float()).realize()

  def ours(x, y):
    cuda_gemm.FORCE_SPLIT = split
    try: return cuda_gemm.gemm(x, y, trans_a, trans_b).realize()
    finally: cuda_gemm.FORCE_SPLIT = 0

  def theirs(x, y): return (op(x, trans_a) @ op(y, trans_b)).realize()
  return dict(label=label, M=M, K=K, N=N, flops=2 * M * K * N, ours=ours, theirs=theirs, args=(a, b),
              check=lambda: (rel_err(ours(a, b), ref), rel_err(theirs(a, b), ref)))


def grad_case(label, M, K, N):
  """d/da, d/db of sum(matmul(a, b) * g): dA = g @ b^T (M, N, K), dB = a^T @ g (K, M, N, split-K where few tiles)."""
  a, b, g = rand(M, K), rand(K, N), rand(M, N)
  ga, gb = g.float() @ b.float().T, a.float().T @ g.float()
  Tensor.realize(ga, gb)

  def ours(x, y): return realize_all(*(cuda_gemm.matmul(x, y) * g).sum().gradient(x, y))
  def theirs(x, y): return realize_all(*(x.matmul(y) * g).sum().gradient(x, y))

  def check():
    (da, db), (ta, tb) = ours(a, b), theirs(a, b)
    return max(rel_err(da, ga), rel_err(db, gb)), max(rel_err(ta, ga), rel_err(tb, gb))
  return dict(label=label, M=M, K=K, N=N, flops=4 * M * K * N, ours=ours, theirs=theirs, args=(a, b), check=check)


def base_parser(doc: str) -> argparse.ArgumentParser:
  """The options every GPU kernel check takes."""
  ap = argparse.ArgumentParser(description=doc.split("\n")[0])
  ap.add_argument("--json", help="write the rows here")
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--inner", type=int, default=5)
  return ap


def finish(rows: list[dict], t0: float, json_path: str | None, doc=None) -> None:
  """The PASS count, the rows (or doc) to json_path, exit status 1 unless every row passed."""
  n_pass = sum(r.get("result") == "PASS" for r in rows)
  print(f"{n_pass}/{len(rows)} PASS in {time.perf_counter() - t0:.1f} s")
  if json_path:
    with open(json_path, "w") as f: json.dump(rows if doc is None else doc, f, indent=1)
  sys.exit(0 if n_pass == len(rows) else 1)


def cases(big: int):
  yield lambda: forward_case("fwd nn", big, 1280, 512)
  yield lambda: forward_case("fwd nt (b as rows)", big, 1280, 512, trans_b=True)
  yield lambda: forward_case("fwd tn (a stored K x M)", big, 1280, 512, trans_a=True)
  yield lambda: forward_case("fwd tt", big, 1280, 512, trans_a=True, trans_b=True)
  yield lambda: forward_case("fwd nn fp16", big, 1280, 512, dtype=dtypes.float16)
  yield lambda: forward_case("fwd nn", big, 512, 256)
  yield lambda: forward_case("input grad g @ W^T (nt)", big, 512, 1280, trans_b=True)
  yield lambda: forward_case("weight grad A^T @ B (tn)", 1280, big, 512, trans_a=True)
  for s in (1, 4, 8, 16, 32):
    yield lambda s=s: forward_case(f"weight grad tn split={s}", 1280, big, 512, trans_a=True, split=s)
  yield lambda: forward_case("weight grad A^T @ B (tn)", 512, big, 256, trans_a=True)
  for s in (16, 32, 64):
    yield lambda s=s: forward_case(f"weight grad tn split={s}", 512, big, 256, trans_a=True, split=s)
  yield lambda: grad_case("grads via Tensor.gradient", big, 1280, 512)
  yield lambda: forward_case("vocab head", big, 256, 16000)
  yield lambda: grad_case("vocab head grads", big, 256, 16000)
  yield lambda: forward_case("fallback (N=1000)", big, 256, 1000)


def main():
  ap = base_parser(__doc__)
  ap.add_argument("--tokens", type=int, default=32768, help="M of the training step's GEMMs (32768 or 16384)")
  args = ap.parse_args()
  backend.check_device()  # and the tinygrad settings the training step runs with (TC_OPT, split-K)
  print(f"device {Device.DEFAULT}, arch {getattr(Device[Device.DEFAULT].renderer.target, 'arch', '?')}, "
        f"STUDENTZ_CUDA_GEMM={cuda_gemm.ENABLED}")
  if not Device.DEFAULT.startswith("CUDA"): print("warning: not a CUDA device: every case falls back to tinygrad")
  Tensor.manual_seed(0)
  rows, t0 = [], time.perf_counter()
  hdr = f"{'case':30s} {'M':>6s} {'K':>6s} {'N':>6s} {'ms ours':>8s} {'TF ours':>8s} {'ms tg':>8s} {'TF tg':>8s} " \
        f"{'rel err':>9s} {'tg err':>9s}  result  kernels"
  print(hdr)
  for make in cases(args.tokens):
    row: dict = {}
    try:
      c = make()
      row = dict(case=c["label"], M=c["M"], K=c["K"], N=c["N"])
      _built.clear()
      err, tg_err = c["check"]()
      kernels = sorted(set(_built))
      ms, jit_ours = timed(c["ours"], c["args"], args.reps, args.inner)
      ms_tg, jit_tg = timed(c["theirs"], c["args"], args.reps, args.inner)
      expect_kernel = not c["label"].startswith("fallback")
      ok = err < TOL and (bool(kernels) == expect_kernel)
      row.update(ms_ours=ms, tflops_ours=c["flops"] / ms / 1e9, ms_tinygrad=ms_tg,
                 tflops_tinygrad=c["flops"] / ms_tg / 1e9, max_rel_err=err, tinygrad_rel_err=tg_err,
                 result="PASS" if ok else "FAIL", kernels=kernels, jit=jit_ours and jit_tg)
      print(f"{row['case']:30s} {c['M']:6d} {c['K']:6d} {c['N']:6d} {ms:8.3f} {row['tflops_ours']:8.1f} {ms_tg:8.3f} "
            f"{row['tflops_tinygrad']:8.1f} {err:9.2e} {tg_err:9.2e}  {row['result']:6s}  {','.join(kernels) or '-'}",
            flush=True)
    except Exception as e:  # noqa: BLE001
      traceback.print_exc()
      row.update(result="FAIL", error=f"{type(e).__name__}: {e}")
      print(f"{row.get('case', '?'):30s} FAIL {row['error'][:200]}", flush=True)
    rows.append(row)
  finish(rows, t0, args.json)


if __name__ == "__main__":
  main()
