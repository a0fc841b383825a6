"""Host arrays into fixed device buffers that a JIT'd function reads, without tinygrad's scheduler.

tinygrad 0.14 turns every `Tensor(numpy_array)` into a copy that passes through its graph rewriter and scheduler when it
is realized: about 2 ms of Python a tensor, whatever its size. An encode batch hands the JIT two (ids, mask): on an
H100 that was 4 of the 5.3 ms a bf16 student batch of 128 x 32 tokens took, more than its kernels (1.6 ms;
`scripts/encode_overhead.py`, results/h100_encode_overhead_before.txt). A JIT reads its inputs from whichever realized
buffers it is handed, so each input shape gets buffers of its own, allocated once, and every batch is copied straight
into them through the device's allocator (~0.01 ms).

Order: a batch may be queued behind an earlier one that still reads the same buffers. CPU and METAL wait for queued
kernels before they copy; CUDA and CL copy asynchronously on the queue that runs the kernels, so the copy lands after
them. Other backends (NV/AMD, whose copies may take their own queue) are synchronized first.
`STUDENTZ_INPUT_SLOTS=0` goes back to a new Tensor per batch.
"""
import os

import numpy as np
from tinygrad import Device, Tensor
from tinygrad.dtype import _from_np_dtype

ENABLED = os.environ.get("STUDENTZ_INPUT_SLOTS", "1").strip() != "0"
ORDERED = ("CPU", "CUDA", "METAL", "CL")  # their _copyin waits for, or queues behind, the kernels before it


class InputSlots:
  """One realized device buffer per input of a fixed shape and dtype; `fill(*arrays)` copies a batch in and returns
  the tensors to hand the JIT (the same tensors every call)."""

  def __init__(self, arrays, device: str | None = None):
    self.device = Device.canonicalize(device) if device else Device.DEFAULT
    self.specs = [(a.shape, a.dtype) for a in arrays]
    self.tensors = [Tensor.empty(*a.shape, dtype=_from_np_dtype(a.dtype), device=self.device) for a in arrays]
    self.buffers = [t.uop.buffer.ensure_allocated() for t in self.tensors]
    self.ordered = self.device.split(":")[0] in ORDERED

  def fill(self, *arrays) -> list[Tensor]:
    if not ENABLED: return [Tensor(np.ascontiguousarray(a), device=self.device).realize() for a in arrays]
    if len(arrays) != len(self.specs): raise ValueError(f"expected {len(self.specs)} arrays, got {len(arrays)}")
    if not self.ordered: Device[self.device].synchronize()
    for buf, a, (shape, dtype) in zip(self.buffers, arrays, self.specs):
      if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"input slot holds {shape} {dtype}, got {a.shape} {a.dtype}")
      # contiguous and writable: the copy reads through ctypes, which refuses read-only pages (a memmap's)
      buf.allocator._copyin(buf._buf, memoryview(np.require(a, requirements=["C", "W"])).cast("B"))
    return self.tensors
