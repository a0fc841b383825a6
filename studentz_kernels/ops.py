"""The model's compute primitives: each runs on this repository's kernel where the device and shapes allow it, else on
tinygrad's own ops. studentz.py calls these and never names a kernel file, so a new backend plugs in here."""
from __future__ import annotations

from studentz_kernels import cpu_gelu, cpu_gemm, cuda_gemm
from studentz_kernels.cuda_ops import ce_usable, taps, taps_usable, token_ce  # noqa: F401  (CUDA only: check usable)
from studentz_kernels.embedding import TokenEmbedding, gather_rows  # noqa: F401
from tinygrad import Tensor


def matmul(a: Tensor, b: Tensor) -> Tensor:
  """2-D a @ b: bf16/fp16 tensor cores on CUDA (cuda_gemm), float32 vector GEMM on the CPU (cpu_gemm)."""
  return cuda_gemm.matmul(a, b) if cuda_gemm.usable(a, b) else cpu_gemm.matmul(a, b)


def gelu(x: Tensor) -> Tensor:
  """tanh-GELU: one kernel with its own gradient on the CPU (cpu_gelu), tinygrad's elsewhere."""
  return cpu_gelu.gelu(x)
