"""cuda_ops without a GPU: where its kernels are used (CUDA only: one device, or a batch's rows split over several),
the vector width rule, the generated sources, the per-device graph of a data-parallel batch (CPU devices posing as
CUDA ones, built, not run), and the decoder's head_ce (which hands the head's product and bias to the kernel on CUDA)
against the loss of Decoder's float32 logits. Values, gradients and speed are checked on a GPU by
scripts/gpu_cuda_ops_check.py (results/h200_cuda_ops_check.json) and the joint step's losses against PyTorch's by
`python -m bench train --joint`."""
import os, subprocess, sys

import numpy as np
import pytest

from studentz_kernels import cuda_ops
from studentz import Decoder, head_ce, token_ce
from studentz import Config
from tinygrad import Tensor, dtypes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_not_used_off_cuda():
  x, t = Tensor.randn(4, 8, 32), Tensor.zeros(4, 8, dtype=dtypes.int32)
  assert not cuda_ops.ce_usable(x, t) and not cuda_ops.taps_usable(x)


@pytest.mark.parametrize("dtype,n,want", [(dtypes.bfloat16, 16000, 8), (dtypes.bfloat16, 30522, 1),
                                          (dtypes.float32, 16000, 4), (dtypes.float32, 30522, 1),
                                          (dtypes.float16, 256, 8)])
def test_vectors_only_where_every_row_stays_16_byte_aligned(dtype, n, want):
  assert cuda_ops._vec(dtype, n) == want


@pytest.mark.parametrize("ct,vec", [("bf16", 8), ("f16", 1), ("f32", 4)])
def test_sources_name_their_entry_points_and_are_deterministic(ct, vec):
  for backward in (False, True):
    src = cuda_ops._ce_source("ce_k", ct, 16000, vec, 0.1, backward)
    assert 'extern "C" __global__ void __launch_bounds__(THREADS) ce_k(' in src and "#define EPS 0.1f" in src
    assert "load_row(x, bv, i, f)" in src and src == cuda_ops._ce_source("ce_k", ct, 16000, vec, 0.1, backward)
    tsrc = cuda_ops._taps_source("taps_k", ct, 2, 16, 64, 5, 2, 4, vec, backward)
    assert f'extern "C" __global__ void __launch_bounds__({cuda_ops.THREADS}) taps_k(' in tsrc
  # the backward of the cross-entropy skips the reads of padding rows (g = 0)
  assert "if (g == 0.0f)" in cuda_ops._ce_source("ce_k", ct, 16000, vec, 0.1, True)


def test_a_bad_switch_value_is_refused():
  r = subprocess.run([sys.executable, "-c", "from studentz_kernels import cuda_ops"], cwd=ROOT, capture_output=True,
                     text=True, env={**os.environ, "STUDENTZ_CUDA_OPS": "yes"})
  assert r.returncode != 0 and "STUDENTZ_CUDA_OPS must be 0 or 1, got 'yes'" in r.stderr


@pytest.mark.parametrize("tie", [False, True])
def test_head_ce_is_the_cross_entropy_of_the_decoder_logits(tie):
  cfg = Config(vocab_size=64, d_model=16, hidden=32, proj_dim=24, dec_dilation_schedule=[1, 2], label_smoothing=0.1)
  dec = Decoder(cfg, tie_output=tie)
  bias = dec.head_bias if tie else dec.head.bias
  bias.assign(Tensor.randn(64)).realize()  # a zero bias would hide a head that drops it
  Tensor.manual_seed(1)
  tokens = Tensor.randint(3, 10, low=0, high=64)
  targets = Tensor.randint(3, 10, low=0, high=64)
  z = Tensor.randn(3, 24)
  feats = dec.hidden(tokens, z)
  ours = head_ce(dec, feats, targets, 0.1).numpy()
  ref = token_ce(dec(tokens, z), targets, 0.1).numpy()
  assert ours.shape == (3, 10) and np.allclose(ours, ref, rtol=1e-5, atol=1e-5)
  # and the bias gets the gradient of the logits summed over positions
  g_ours = head_ce(dec, dec.hidden(tokens, z), targets, 0.1).sum().gradient(bias)[0].numpy()
  g_ref = token_ce(dec(tokens, z), targets, 0.1).sum().gradient(bias)[0].numpy()
  assert np.abs(g_ours).max() > 0 and np.allclose(g_ours, g_ref, rtol=1e-4, atol=1e-5)


def test_a_batch_split_over_devices_runs_the_kernels_per_device(monkeypatch):
  monkeypatch.setattr(cuda_ops, "backend_of", lambda d: "CUDA")
  monkeypatch.setattr(cuda_ops, "_arch_ok", lambda d: True)
  monkeypatch.setattr(cuda_ops.cuda_gemm, "MULTI", 1)                             # STUDENTZ_CUDA_MULTI=1
  devs, outs, kernel_out = ("CPU:0", "CPU:1"), [], cuda_ops.kernel_out
  monkeypatch.setattr(cuda_ops, "kernel_out", lambda shape, *a: outs.append(shape) or kernel_out(shape, *a))
  def split(*shape, dtype=dtypes.bfloat16, axis=0):
    return Tensor.ones(*shape, dtype=dtype).contiguous().shard(devs, axis=axis)
  x, logits, targets = split(8, 16, 64), split(8, 16, 256), split(8, 16, dtype=dtypes.int32)
  bias = Tensor.zeros(256).contiguous().shard(devs)
  assert cuda_ops.taps_usable(x) and cuda_ops.ce_usable(logits, targets)
  monkeypatch.setattr(cuda_ops.cuda_gemm, "MULTI", 0)
  assert not cuda_ops.taps_usable(x) and not cuda_ops.ce_usable(logits, targets)  # unset: tinygrad's kernels
  monkeypatch.setattr(cuda_ops.cuda_gemm, "MULTI", 1)
  assert not cuda_ops.taps_usable(split(8, 16, 64, axis=1))                       # split along the sequence
  assert not cuda_ops.ce_usable(logits, Tensor.zeros(8, 16, dtype=dtypes.int32).contiguous().shard(devs))
  taps = cuda_ops.taps(x, 5, 2, 4)
  (dx,) = (taps.float() * split(8, 16, 320, dtype=dtypes.float32)).sum().gradient(x)
  assert taps.shape == (8, 16, 320) and taps.uop.axis == 0 and dx.shape == (8, 16, 64) and dx.uop.axis == 0
  loss = cuda_ops.token_ce(logits, targets, 0.1, bias=bias)
  dl, db = (loss * split(8, 16, dtype=dtypes.float32)).sum().gradient(logits, bias)
  assert loss.shape == (8, 16) and loss.uop.axis == 0 and dl.uop.axis == 0
  assert db.shape == (256,) and db.uop.axis is None                               # summed across the devices
  # every kernel's output is sized for one device's rows: 4 of the 8 sequences, 64 of the 128 positions
  assert outs == [(4, 16, 320), (4, 16, 64), (64,), (64, 256)]
