"""Host arrays into fixed device buffers that a JIT'd function reads, without tinygrad's scheduler.

tinygrad 0.14 turns every `Tensor(numpy_array)` into a copy that passes through its graph rewriter and scheduler when it
is realized: milliseconds of Python a tensor, whatever its size, more than a small batch's kernels take on a GPU
(`scripts/encode_overhead.py`). A JIT reads its inputs from whichever realized buffers it is handed, so each input
shape gets buffers of its own, allocated once, and every batch is copied straight into them through the device's
allocator.

Order: a batch may be queued behind an earlier one that still reads the same buffers. CPU and METAL wait for queued
kernels before they copy; CUDA and CL copy asynchronously on the queue that runs the kernels, so the copy lands after
them. Other backends (NV/AMD, whose copies may take their own queue) are synchronized first.
"""

import numpy as np
from tinygrad import Device, Tensor
from tinygrad.dtype import _from_np_dtype

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
    if len(arrays) != len(self.specs): raise ValueError(f"expected {len(self.specs)} arrays, got {len(arrays)}")
    if not self.ordered: Device[self.device].synchronize()
    for buf, a, (shape, dtype) in zip(self.buffers, arrays, self.specs):
      if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"input slot holds {shape} {dtype}, got {a.shape} {a.dtype}")
      # contiguous and writable: the copy reads through ctypes, which refuses read-only pages (a memmap's)
      buf.allocator._copyin(buf._buf, memoryview(np.require(a, requirements=["C", "W"])).cast("B"))
    return self.tensors
