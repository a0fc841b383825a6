"""The numpy engine's int8 kernel (int8_gemm.py): exact int32 products at odd sizes, its float layers against numpy
references, the int8 encoder close to the float one, and the float fallback where the kernel cannot run."""
import numpy as np
import pytest

from studentz_runtime import int8_gemm, numpy_infer, quantize
import studentz as sz
from test_numpy_infer import arrays_of, batch, perturbed, tiny_cfg

needs_kernel = pytest.mark.skipif(int8_gemm.lib() is None, reason="no int8 kernel here (clang or AVX-512 VNNI missing)")


def quantized_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The kernel's activation quantization in numpy: per row q = rint(x * 127 / absmax), scale absmax / 127."""
  am = np.abs(x).max(1).astype(np.float32)
  f = np.where(am > 0, np.float32(127) / np.where(am > 0, am, 1), 0).astype(np.float32)
  return np.rint(x * f[:, None]).astype(np.int64), am / np.float32(127)


@needs_kernel
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 3, 17), (7, 13, 65), (13, 130, 130), (97, 64, 16)])
def test_int32_product_exact(M, K, N):
  rng = np.random.default_rng(M * K * N)
  a = rng.integers(-128, 128, (M, K)).astype(np.int8)                             # -128 too: the +128 offset's edge
  w = rng.integers(-127, 128, (K, N)).astype(np.int8)
  a[0, 0], w[0, 0] = -128, -127
  got = int8_gemm.PackedWeight(w, np.ones(N)).int_matmul(a)
  assert got.dtype == np.int32 and np.array_equal(got, a.astype(np.int64) @ w.astype(np.int64))


@needs_kernel
@pytest.mark.parametrize("M,K,N", [(1, 8, 3), (11, 37, 70), (200, 64, 20)])
def test_linear_matches_reference(M, K, N):
  rng = np.random.default_rng(K)
  x = rng.normal(0, 1, (M, K)).astype(np.float32)
  x[-1] = 0                                                                       # an all-zero row: scale 0
  w = rng.integers(-127, 128, (K, N)).astype(np.int8)
  scale, bias = rng.uniform(0.001, 0.01, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32)
  q, s = quantized_rows(x)
  want = (q @ w.astype(np.int64)) * s[:, None] * scale + bias
  got = int8_gemm.PackedWeight(w, scale, bias).linear(x)
  assert np.allclose(got, want, rtol=1e-5, atol=1e-5), np.abs(got - want).max()
  assert np.array_equal(got[-1], bias)


@needs_kernel
@pytest.mark.parametrize("k,dilation,causal,Ln", [(3, 2, False, 7), (5, 4, True, 7), (2, 1, False, 45)])
def test_conv_equals_linear_over_taps(k, dilation, causal, Ln):
  """The conv quantizes its taps straight from the input: the same numbers as `linear` over taps built in numpy
  (masked inputs and positions outside the sequence zero), bit for bit."""
  rng = np.random.default_rng(k)
  Bn, C, N = 3, 6, 21                                                             # Ln=45: several row blocks
  x = rng.normal(0, 1, (Bn, Ln, C)).astype(np.float32)
  mask = (np.arange(Ln)[None] < np.array([[Ln], [4], [1]])).astype(np.float32)[..., None]
  w = rng.integers(-127, 128, (k * C, N)).astype(np.int8)
  pw = int8_gemm.PackedWeight(w, rng.uniform(0.001, 0.01, N), rng.normal(0, 1, N))
  span = (k - 1) * dilation
  left = span if causal else span // 2
  for m in (None, mask):
    xm = x if m is None else x * m
    pad = np.zeros((Bn, Ln + 2 * span, C), np.float32)
    pad[:, span:span + Ln] = xm
    taps = np.concatenate([pad[:, span + j * dilation - left:][:, :Ln] for j in range(k)], -1)
    got = pw.conv(x, m, k, dilation, left)
    assert got.shape == (Bn, Ln, N) and np.array_equal(got, pw.linear(taps.reshape(Bn * Ln, -1)).reshape(got.shape))


def encoders():
  """(float, int8-as-float32, int8 kernel) encoders of one tiny random model whose matrices are all quantised."""
  cfg = tiny_cfg(d_model=64, hidden=128, pool_head=32)
  arrays = arrays_of({"encoder": perturbed(sz.Encoder(cfg), 11)})
  raw = quantize.quantize_arrays(arrays)
  return (cfg, numpy_infer.Encoder(cfg, arrays), numpy_infer.Encoder(cfg, quantize.dequantize(raw)),
          numpy_infer.Encoder(cfg, numpy_infer.with_int8(raw)))


def cos(a, b):
  return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_kernel
def test_int8_encoder_close_to_float():
  cfg, fp, deq, q8 = encoders()
  assert q8.blocks[0].conv.q is not None and q8.blocks[0].out.q is not None and q8.head_up.q is not None
  assert deq.blocks[0].conv.q is None
  ids, mask = batch()
  z, zq = fp(ids, mask), q8(ids, mask)
  assert cos(zq, z).min() > 0.99 and cos(zq, deq(ids, mask)).min() > 0.995
  assert np.abs(zq - deq(ids, mask)).max() > 0                                     # activations really int8
  assert np.abs(q8(ids[2:], mask[2:]) - zq[2:]).max() < 1e-5                       # a row alone: as in the batch


BREAKS = {"switched off": lambda m, tmp: m.setenv("STUDENTZ_INT8_GEMM", "0"),
          "no clang": lambda m, tmp: m.setattr(int8_gemm.shutil, "which", lambda name: None),
          "build fails": lambda m, tmp: m.setattr(int8_gemm, "SOURCE", tmp / "broken.c"),
          "no VNNI": lambda m, tmp: m.setattr(int8_gemm, "cpu_flags", lambda: {"avx2", "avx512f"})}


@pytest.mark.parametrize("why", BREAKS)
def test_fallback_without_kernel(monkeypatch, tmp_path, why):
  """No kernel: lib() is None and int8 weights run as float32, giving exactly the dequantised encoder's z."""
  monkeypatch.setenv("STUDENTZ_CACHE", str(tmp_path))
  (tmp_path / "broken.c").write_text("this is not C;")
  monkeypatch.setattr(int8_gemm, "lib", int8_gemm.lib.__wrapped__)                # uncached: sees the break
  BREAKS[why](monkeypatch, tmp_path)
  assert int8_gemm.lib() is None
  cfg, fp, deq, q8 = encoders()
  assert all(b.conv.q is None and b.out.q is None for b in q8.blocks) and q8.head_up.q is None
  ids, mask = batch()
  assert np.array_equal(q8(ids, mask), deq(ids, mask))
