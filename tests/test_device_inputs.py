"""device_inputs.InputSlots: batches copied into a JIT's own input buffers reach the JIT, in order, without tinygrad's
scheduler (a Tensor per batch cost ~2 ms of it each)."""
import numpy as np
import pytest
from tinygrad import Tensor, TinyJit

from studentz_kernels import device_inputs
from studentz_kernels.device_inputs import InputSlots


def batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.integers(0, 100, (4, 6)).astype(np.int32), rng.standard_normal((4, 6)).astype(np.float32))
          for _ in range(n)]


def test_jit_sees_every_batch_and_queued_results_keep_their_own_inputs():
  fn = TinyJit(lambda i, x: (i.float() * 2 + x).sum(1).realize())
  slots = InputSlots([np.zeros((4, 6), np.int32), np.zeros((4, 6), np.float32)])
  data = batches(6)
  # queued: no result is read before the last batch is copied in, so a copy that overwrote inputs still to be read by
  # an earlier call would show up in that call's result
  outs = [fn(*slots.fill(i, x)).clone().realize() for i, x in data]
  for (i, x), o in zip(data, outs):
    np.testing.assert_allclose(o.numpy(), (i * 2 + x).sum(1), rtol=1e-6)


def test_unordered_backend_path_synchronizes_and_stays_correct():
  slots = InputSlots([np.zeros((4, 6), np.int32), np.zeros((4, 6), np.float32)])
  slots.ordered = False  # as on NV/AMD: wait for queued kernels before each copy
  fn = TinyJit(lambda i, x: (i.float() - x).realize())
  for i, x in batches(4, seed=1):
    np.testing.assert_allclose(fn(*slots.fill(i, x)).numpy(), i - x, rtol=1e-6)


def test_fill_schedules_nothing_and_returns_the_same_tensors(monkeypatch):
  slots = InputSlots([np.zeros((4, 6), np.int32), np.zeros((4, 6), np.float32)])
  calls = []
  real = Tensor.realize
  monkeypatch.setattr(Tensor, "realize", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
  first = slots.fill(*batches(1)[0])
  i, x = batches(1, seed=2)[0]
  ro = i.copy()
  ro.flags.writeable = False  # a memmap's read-only rows are copied, not refused
  again = slots.fill(ro, x[:, ::-1])  # a strided view too
  assert calls == [] and all(a is b for a, b in zip(first, again))
  monkeypatch.undo()
  np.testing.assert_array_equal(again[0].numpy(), i)
  np.testing.assert_array_equal(again[1].numpy(), x[:, ::-1])


def test_wrong_shape_dtype_or_count_is_refused():
  slots = InputSlots([np.zeros((4, 6), np.int32)])
  with pytest.raises(ValueError, match=r"holds \(4, 6\) int32"):
    slots.fill(np.zeros((4, 7), np.int32))
  with pytest.raises(ValueError, match="int32"):
    slots.fill(np.zeros((4, 6), np.int64))
  with pytest.raises(ValueError, match="expected 1 arrays"):
    slots.fill(np.zeros((4, 6), np.int32), np.zeros((4, 6), np.int32))
