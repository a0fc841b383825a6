"""cpu_gemm: the C GEMM kernel against numpy (full and tail panels, row remainders, threads, both vector widths), its
gradient, its fallbacks, rows sharded over two CPU devices, and the student's forward with and without it."""
import numpy as np
import pytest

from studentz_kernels import cpu_gemm
from tinygrad import Tensor, dtypes

pytestmark = pytest.mark.skipif(cpu_gemm.isa() is None, reason="no AVX2/AVX-512 on this CPU: tinygrad's matmul is used")
RNG = np.random.default_rng(0)


def _arrays(*shapes):
  return [RNG.standard_normal(s).astype(np.float32) for s in shapes]


def _close(x, ref, tol=2e-6):
  assert np.abs(x - ref).max() <= tol * max(1.0, np.abs(ref).max()), np.abs(x - ref).max()


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("M,K,N,threads", [(203, 37, 80, 2), (31, 130, 64, 1), (16, 5, 16, 1), (97, 64, 272, 3)])
def test_forward_matches_numpy(monkeypatch, isa, M, K, N, threads):
  # 80 = one 64-wide panel + a 16-wide tail (AVX2: five 16-wide panels); 203 = 33 micro-tiles of 6 rows + 5; three
  # threads on 97 rows leave the last one 25
  if isa == "avx512" and cpu_gemm.isa() != (16, 4): pytest.skip("no AVX-512 here")
  widths = {"avx512": (16, 4), "avx2": (8, 2)}[isa]
  monkeypatch.setattr(cpu_gemm, "isa", lambda: widths)
  monkeypatch.setattr(cpu_gemm, "ROWS_PER_THREAD", 1)
  monkeypatch.setattr(cpu_gemm.NUM_CPU_THREADS, "value", threads)
  assert cpu_gemm.threads(M) == threads
  a, b = _arrays((M, K), (K, N))
  ta, tb = Tensor(a), Tensor(b)
  assert cpu_gemm.usable(ta, tb)
  _close(cpu_gemm.matmul(ta, tb).numpy(), a.astype(np.float64) @ b)
  assert np.array_equal(cpu_gemm.unpack(cpu_gemm.pack(tb), K, N).numpy(), b)


def test_gradient_matches_numpy():
  M, K, N = 40, 48, 80
  a, b, g = _arrays((M, K), (K, N), (M, N))
  ta, tb = Tensor(a), Tensor(b)
  assert cpu_gemm.usable(ta, tb) and cpu_gemm.usable(Tensor(g), tb.T) and cpu_gemm.usable(ta.T, Tensor(g))
  da, db = (cpu_gemm.matmul(ta, tb) * Tensor(g)).sum().gradient(ta, tb)
  _close(da.numpy(), g.astype(np.float64) @ b.T)
  _close(db.numpy(), a.T.astype(np.float64) @ g)


def test_fallbacks_compute_the_same():
  a, b = _arrays((20, 8), (8, 24))
  assert not cpu_gemm.usable(Tensor(a), Tensor(b))                                  # N not a multiple of 16
  assert not cpu_gemm.usable(Tensor(a[:8]), Tensor(b[:, :16]))                       # M below MIN_M
  assert not cpu_gemm.usable(Tensor(a).cast(dtypes.float16), Tensor(b[:, :16]).cast(dtypes.float16))
  _close(cpu_gemm.matmul(Tensor(a), Tensor(b)).numpy(), a.astype(np.float64) @ b)


def test_rows_sharded_over_two_cpu_devices(monkeypatch):
  # the forward and dA with their rows split like the batch's; dB = A^T @ dC a partial product on each device,
  # summed across them
  layouts, run = [], cpu_gemm._run
  monkeypatch.setattr(cpu_gemm, "_run", lambda a, p, N, layout: layouts.append(layout) or run(a, p, N, layout))
  devs = ("CPU:0", "CPU:1")
  M, K, N = 64, 48, 80
  a, b, g = _arrays((M, K), (K, N), (M, N))
  ta, tb = Tensor(a).shard(devs, axis=0), Tensor(b).shard(devs)
  assert cpu_gemm.usable(ta, tb)
  out = cpu_gemm.matmul(ta, tb)
  da, db = (out * Tensor(g).shard(devs, axis=0)).sum().gradient(ta, tb)
  _close(out.numpy(), a.astype(np.float64) @ b)
  _close(da.numpy(), g.astype(np.float64) @ b.T)
  _close(db.numpy(), a.T.astype(np.float64) @ g)
  assert layouts == ["rows", "rows", "k"] and da.uop.axis == 0 and db.uop.axis is None


def test_contraction_split_over_two_cpu_devices_is_summed():
  # K = 40 rows a device, N = 80 = one full panel and a tail: each device packs its own rows
  a, b = _arrays((32, 80), (80, 80))
  ta, tb = Tensor(a.T.copy()).shard(("CPU:0", "CPU:1"), axis=0).T, Tensor(b).shard(("CPU:0", "CPU:1"), axis=0)
  assert cpu_gemm.usable(ta, tb)
  _close(cpu_gemm.matmul(ta, tb).numpy(), a.astype(np.float64) @ b)


def test_student_forward_and_gradient_same_with_and_without(monkeypatch):
  import studentz as sz
  cfg = sz.Config.from_dict({**sz.Config().to_dict(), "d_model": 32, "hidden": 64, "n_blocks": 2, "vocab_size": 100,
                             "dilation_schedule": [1, 2], "proj_dim": 48, "max_len": 16})
  Tensor.manual_seed(0)
  enc = sz.Encoder(cfg)
  ids = Tensor(RNG.integers(1, 100, (4, 16)).astype(np.int32))
  mask = Tensor((np.arange(16)[None] < np.array([[16], [9], [5], [12]])).astype(np.float32))
  w = enc.blocks[0].conv.weight

  def run():
    z = enc(ids, mask)
    return z.numpy(), (z * z).sum().gradient(w)[0].numpy()

  z_on, g_on = run()
  monkeypatch.setattr(cpu_gemm, "ENABLED", 0)
  z_off, g_off = run()
  _close(z_on, z_off, 1e-5)
  _close(g_on, g_off, 1e-5)


def test_gelu_kernel_matches_tinygrads_gelu_and_gradient():
  from studentz_kernels import cpu_gelu
  x_np = np.concatenate([RNG.standard_normal(1000) * 4, [0.0, -30.0, 30.0, -9.0, 9.0, 1e-7, -1e-7]]).astype(np.float32)
  x, g = Tensor(x_np), Tensor(RNG.standard_normal(len(x_np)).astype(np.float32))  # 1007: a 16-wide tail of 15
  assert cpu_gelu.usable(x)
  _close(cpu_gelu.gelu(x).numpy(), x.gelu().numpy(), 1e-6)
  _close((cpu_gelu.gelu(x) * g).sum().gradient(x)[0].numpy(), (x.gelu() * g).sum().gradient(x)[0].numpy(), 1e-6)


def test_rows_of_a_thread_that_cannot_start_are_still_computed(monkeypatch):
  import ctypes, ctypes.util
  lib = ctypes.CDLL(ctypes.util.find_library("c") or None)
  # getpid in pthread_create's place: it returns non-zero without starting anything, as a failed create does
  failing = [ctypes.cast(getattr(lib, f), ctypes.c_void_p).value for f in ("getpid", "pthread_join")]
  monkeypatch.setattr(cpu_gemm, "_libc_table", lambda device: Tensor(failing, dtype=dtypes.uint64).realize())
  monkeypatch.setattr(cpu_gemm, "ROWS_PER_THREAD", 1)
  monkeypatch.setattr(cpu_gemm.NUM_CPU_THREADS, "value", 3)
  a, b = _arrays((50, 24), (24, 32))
  _close(cpu_gemm.matmul(Tensor(a), Tensor(b)).numpy(), a.astype(np.float64) @ b)


def test_a_reshaped_kernel_output_goes_into_the_next_kernel_without_a_copy():
  # backend.kernel_out: custom kernels take their inputs as they are; .contiguous() of a reshaped kernel output would
  # copy it (the conv taps into their GEMM on CUDA), while a transposed one tinygrad copies itself
  from tinygrad.helpers import GlobalCounters
  a, a2, b, b2, w = (Tensor(x).realize() for x in _arrays((96, 48), (64, 48), (48, 64), (48, 96), (64, 80)))
  pb, pb2, pw = (cpu_gemm.pack(t).realize() for t in (b, b2, w))
  cpu_gemm._libc_table(a.device)  # built (a copy) once, before counting
  cases = ((lambda: cpu_gemm._run(a, pb, 64, "one"), lambda o: o.reshape(2, 48, 64).reshape(96, 64), 2),
           (lambda: cpu_gemm._run(a2, pb2, 96, "one"), lambda o: o.T, 3))
  for first, view, kernels in cases:
    GlobalCounters.reset()
    cpu_gemm._run(view(first()), pw, 80, "one").realize()
    assert GlobalCounters.kernel_count == kernels
