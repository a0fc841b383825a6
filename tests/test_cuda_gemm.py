"""cuda_gemm without a GPU: where it is used (a CUDA device only), how it splits K, and its generated source for every
operand layout. Its results and speed are checked on a GPU by scripts/gpu_cuda_gemm_check.py (every layout, the
split gradients and the vocab head against tinygrad's matmul: results/h200_cuda_gemm_check.json), and the training
step's losses against PyTorch's over 20 steps by `bench.py train --check-steps 20`."""
import numpy as np
import pytest

import cuda_gemm
from tinygrad import Tensor, dtypes


def test_not_used_off_cuda_and_falls_back_to_the_same_product():
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal(s).astype(np.float32) for s in ((128, 32), (32, 128)))
  ta, tb = Tensor(a).cast(dtypes.bfloat16), Tensor(b).cast(dtypes.bfloat16)
  assert not cuda_gemm.usable(ta, tb)  # the CPU device, though the shapes are whole tiles
  ref = ta.float().numpy() @ tb.float().numpy()
  assert np.abs(cuda_gemm.matmul(ta, tb).float().numpy() - ref).max() <= 2e-2 * np.abs(ref).max()


@pytest.mark.parametrize("M,K,N,want", [(1280, 32768, 512, 16), (512, 32768, 256, 16), (256, 32768, 16000, 1),
                                        (1280, 2048, 512, 8), (32768, 1280, 512, 1), (128, 256, 128, 1)])
def test_k_is_split_only_for_few_output_tiles_and_deep_slices(M, K, N, want):
  # 250 output tiles of the vocab head's weight gradient fill the SMs unsplit; K = 2048 allows 8 slices of 256
  got = cuda_gemm.splits(M, K, N)
  assert got == want and K % (got * cuda_gemm.BK) == 0 and (got == 1 or K // got >= cuda_gemm.MIN_SLICE)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_source_names_its_entry_point_for_every_layout(trans_a, trans_b):
  name = cuda_gemm._name(256, 64, 256, trans_a, trans_b, False, 2)
  src = cuda_gemm._source(name, 256, 64, 256, trans_a, trans_b, False, 2)
  assert f"void __launch_bounds__(256, 2) {name}(" in src and 'extern "C" __global__' in src
  assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in src and "cp.async" in src
  assert src == cuda_gemm._source(name, 256, 64, 256, trans_a, trans_b, False, 2)  # deterministic: one compile a shape
