"""Token embedding whose backward costs O(tokens x d), not O(tokens x vocab x d).

tinygrad 0.14's `nn.Embedding` differentiates through a one-hot over the whole vocabulary: at B=64, L=128, a 30k
vocabulary and d=256 its weight gradient is 64 G multiply-adds, more than the rest of the step. Here the forward is
the same gather, and the backward is a scatter-add written as a custom kernel with atomic adds (CUDA, CPU/clang,
AMD), or a one-hot matmul on the tensor cores where the backend has no atomics (METAL, ...).
"""
from __future__ import annotations

from studentz_kernels import backend
from tinygrad import Tensor, dtypes
from tinygrad.function import function
from tinygrad.uop.ops import UOp, KernelInfo, AxisType, Ops

ATOMIC_ADD = {  # how each backend spells a relaxed float atomic add; {0} is the address, {1} the value
  "CPU": "__atomic_fetch_add({0}, {1}, __ATOMIC_RELAXED);",
  "CUDA": "atomicAdd({0}, {1});",
  "AMD": "__hip_atomic_fetch_add({0}, {1}, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);",
}


def gather_rows(weight: Tensor, idx: Tensor) -> Tensor:
  """weight[idx]: rows of a (N, d) table for int ids of any shape, (*idx.shape, d); no gradient to the table needed.
  tinygrad folds this compare-and-sum over an arange into an indexed load: a gather, not a reduction, whatever N
  (a 6M x 384 float16 table, past 2^31 elements, gathered exactly on the CPU backend in a check by hand; too large
  for a test, so trainer.device_table reads rows at both ends back after every copy)."""
  arange = Tensor.arange(weight.shape[0])
  return (arange == idx.unsqueeze(-1)).unsqueeze(-1).where(weight, 0).sum(-2, dtype=weight.dtype)


def _scatter_add_kernel(device: str):
  atomic = ATOMIC_ADD[device]

  def kernel(grad_weight: UOp, grad_emb: UOp, idx: UOp) -> UOp:
    V, d = grad_weight.shape
    idx_flat, g = idx.flatten(), grad_emb.reshape((idx.numel(), d))
    block = min(256, d)
    i = UOp.range(g.shape[0], 0)                                                  # one token per workgroup
    j_in = UOp.range(block, 2, AxisType.WEAK if device == "CPU" else AxisType.LOCAL)
    j_out = UOp.range((d + block - 1) // block, 1)
    j = j_out * block + j_in
    ok = j < d
    jj = j.clip(0, d - 1)
    tok = idx_flat[i].clip(0, V - 1).cast(dtypes.weakint)
    val = ok.where(g[i, jj].load().cast(dtypes.float), 0.0)
    add = UOp(Ops.CUSTOM, src=(grad_weight.index(tok, jj), val), arg=atomic)
    return add.end(i, j_out, j_in).sink(arg=KernelInfo(name="embedding_scatter_add", opts_to_apply=()))
  return kernel


def _zero_kernel(out: UOp) -> UOp:
  i = UOp.range(out.numel(), 0)
  return out.flatten()[i].store(0).end(i).sink(arg=KernelInfo(name="zero"))


def _atomic_backward(grad_emb: UOp, call: UOp) -> tuple:
  weight, idx = call.src[1:]
  dev = weight.device
  split = isinstance(dev, tuple) and idx.axis is not None
  if split:  # data parallel (parallel.py): the tokens are split over the devices, the weight is replicated
    if grad_emb.axis != idx.axis: raise RuntimeError(f"embedding gradient on axis {grad_emb.axis}, ids on {idx.axis}")
    # custom kernels run once per shard: each device scatter-adds its own tokens into its own (V, d) partial, and
    # summing the partials over the device axis is tinygrad's all-reduce
    parts = [Tensor.empty(weight.shape, dtype=dtypes.float, device=d).uop for d in dev]
    gw = UOp.mstack(*parts).unshard(0)                                             # (N * V, d), one (V, d) per device
  else:
    gw = Tensor.empty(weight.shape, dtype=dtypes.float, device=dev).uop
  gw = gw.custom_kernel(fxn=_zero_kernel)[0]
  gw = gw.custom_kernel(grad_emb, idx, fxn=_scatter_add_kernel(backend.backend_of(dev)))[0]
  if split: gw = Tensor(gw).reshape(len(dev), *weight.shape).sum(0).uop
  return (gw.cast(weight.dtype), None)


@function(grad_fxn=_atomic_backward)
def _embed_atomic(weight: Tensor, idx: Tensor) -> Tensor:
  return gather_rows(weight, idx)


def embed_mode(device: str) -> str:
  return "atomic" if device.split(":")[0] in ATOMIC_ADD else "matmul"


class TokenEmbedding:
  def __init__(self, vocab_size: int, dim: int):
    self.weight = Tensor.glorot_uniform(vocab_size, dim)

  def __call__(self, idx: Tensor) -> Tensor:  # idx (B, L) int -> (B, L, d)
    mode = embed_mode(backend.backend_of(self.weight.device))
    if mode == "atomic": return _embed_atomic(self.weight, idx.cast(dtypes.int32))
    # the gradient becomes one_hot^T @ grad: a dense matmul the tensor cores eat quickly
    onehot = (idx.unsqueeze(-1) == Tensor.arange(self.weight.shape[0])).cast(self.weight.dtype)
    return onehot.matmul(self.weight)
