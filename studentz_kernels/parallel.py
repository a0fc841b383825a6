"""Data-parallel training over several devices of one host, with tinygrad's multi-device tensors.

Parameters, optimiser moments, the step counter and the loss scale are replicated (`shard(devices)`, axis None);
each batch is split on axis 0. tinygrad turns every reduction over the batch (the losses, each weight gradient) into
an all-reduce, so a step computes the one-device math: same loss, same update, up to float summation order.
trainer.Trainer(devices=N) uses these helpers; N=1 never comes here and keeps the plain single-device path.
"""
from __future__ import annotations
import copy, os

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from tinygrad import Tensor, Device
from tinygrad.nn.state import get_state_dict


def device_count(flag: int | None) -> int:
  """--devices if given, else $GPUS (the name tinygrad's own multi-GPU examples read), else 1."""
  env = os.environ.get("GPUS", "").strip()
  if flag is None and env:
    try: flag = int(env)
    except ValueError: raise ValueError(f"GPUS must be a device count, got {env!r}") from None
  n = 1 if flag is None else flag
  if n < 1: raise ValueError(f"the device count (--devices or GPUS) must be at least 1, got {n}")
  return n


def device_names(n: int, device: str | None = None) -> tuple[str, ...]:
  """The first n devices of `device`'s backend in tinygrad's spelling: ("CUDA", "CUDA:1") for CUDA:0 and CUDA:1. On
  the CPU backend "CPU:0".."CPU:N-1" are devices of their own (own buffers), which is how the tests run on one host."""
  base = (device or Device.DEFAULT).split(":")[0]
  names = tuple(Device.canonicalize(f"{base}:{i}") for i in range(n))
  for name in names:
    try: Device[name]
    except Exception as e:  # tinygrad raises plain exceptions for a card that is not there
      raise ValueError(f"cannot open device {name} of {n} requested: {str(e).splitlines()[0] if str(e) else e}")
  return names


def check_batch(batch_size: int, grad_accum: int, n: int) -> None:
  """Every device gets the same number of rows of every (micro-)batch."""
  if batch_size % n:
    raise ValueError(f"invalid config: batch_size {batch_size} is not divisible by devices {n}")
  if (batch_size // grad_accum) % n:
    raise ValueError(f"invalid config: the micro-batch batch_size / grad_accum = {batch_size // grad_accum} is not "
                     f"divisible by devices {n}")


def replicate(devices: tuple[str, ...], tensors) -> None:
  """Copy each tensor to every device, in place (the Tensor objects stay, so models and optimiser see the copies)."""
  tensors = list({id(t): t for t in tensors}.values())  # a tensor shared by two models is sharded once
  for t in tensors: t.shard_(devices)
  Tensor.realize(*tensors)


def split(devices: tuple[str, ...], x: np.ndarray) -> Tensor:
  """One batch array, its rows split evenly over the devices (axis 0)."""
  return Tensor(x).shard(devices, axis=0)


class FirstDevice:
  """Single-device twins of replicated models for validation and decoding, which build their own one-device tensors.

  The twins are deep copies whose weights are persistent buffers on the first device; `sync()` copies the current
  weights into them, so JITs captured on a twin (train.encode_ids keeps one per encoder) see every update."""

  def __init__(self, models: dict, device: str):
    memo, self.pairs = {}, []
    for m in models.values():
      for t in get_state_dict(m).values():
        if id(t) in memo: continue
        memo[id(t)] = t.to(device).contiguous()
        self.pairs.append((t, memo[id(t)]))
    Tensor.realize(*[t for _, t in self.pairs])
    self.models = copy.deepcopy(models, memo)  # the memo maps every weight to its twin; the rest is copied

  def sync(self) -> dict:
    for src, dst in self.pairs: dst.assign(src.to(dst.device))
    Tensor.realize(*[t for _, t in self.pairs])
    return self.models
