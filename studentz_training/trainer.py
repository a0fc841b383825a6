"""The training step: one JIT'd optimiser step (forward, backward, clip, overflow check, AdamW update, loss-scale
bookkeeping) over the models of studentz.py, for any objective `loss_fn(models, batch)`. train.py drives it.
Shapes: B batch, L tokens, D teacher dimension.
"""
from __future__ import annotations

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from studentz_kernels.device_inputs import InputSlots
from studentz_kernels import parallel
from studentz_runtime.checkpoint import host
from studentz_kernels.embedding import gather_rows
from studentz import AdamW, Config, lr_at
from tinygrad import Tensor, TinyJit, dtypes, Device
from tinygrad.device import Buffer
from tinygrad.dtype import _from_np_dtype
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict


# The step's JIT captures one graph (tinygrad's JIT_BATCH_SIZE=0): its default split into graphs of 32, 64, ...
# kernels made queued steps wait on the last graph (docs/RESULTS.md).
STEP_GRAPH_BATCH = 0


def half_dtype(device: str):
  """bf16 where the backend has it natively (CUDA), else fp16 (which needs the dynamic loss scale)."""
  return dtypes.bfloat16 if device.split(":")[0] in ("CUDA", "NV", "AMD") else dtypes.float16


def device_table(arr: np.ndarray, device: str | None = None, devices: tuple[str, ...] | None = None,
                 chunk_bytes: int = 256 << 20) -> Tensor:
  """A large read-only array (the token targets' memmap, ~10 GB for the whole corpus) copied onto the device once,
  chunk by chunk: host memory holds one chunk at a time, the device the array (with `devices`, a copy on each, via the
  first). Raises MemoryError when it does not fit. The rows it serves are checked against the array."""
  dev = Device.canonicalize(devices[0] if devices else device or Device.DEFAULT)
  dt = _from_np_dtype(arr.dtype)
  t = Tensor.empty(*arr.shape, dtype=dt, device=dev)
  buf = t.uop.buffer.ensure_allocated()
  row = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize
  step = max(chunk_bytes // max(row, 1), 1)
  for i in range(0, arr.shape[0], step):
    c = np.array(arr[i:i + step], order="C")  # a writable copy: CUDA's copy-in reads through ctypes, which refuses the
                                              # read-only pages of a memmap ("underlying buffer is not writable")
    buf.view(c.size, dt, i * row).ensure_allocated().copy_from(
      Buffer("PYTHON", c.size, dt, opaque=memoryview(c.reshape(-1).view(np.uint8))))
    Device[dev].synchronize()  # the backend stages each chunk in pinned host memory, freed at a sync
  if devices: t = t.shard(devices).realize()
  # a gather past 2^31 elements must index in 64 bits: check rows at both ends and the middle before training on them
  probe = np.unique(np.array([0, arr.shape[0] // 2, arr.shape[0] - 1], np.int32))
  got = gather_rows(t, Tensor(probe).shard(devices) if devices else Tensor(probe, device=dev)).numpy()
  if not np.array_equal(got, np.asarray(arr[probe])):
    raise RuntimeError(f"the {dev} copy of a {arr.shape} table reads back other values (a 64-bit indexing bug?)")
  return t


class Trainer:
  """Owns the model(s), optimiser and step counter; `step(batch)` runs one JIT'd optimiser step.

  `loss_fn(models, batch) -> dict of scalar Tensors` (with key "loss") defines the objective, so the decoder and
  joint A/B training reuse this machinery. `devices` > 1 trains data-parallel over that many devices of the backend
  (parallel.py): all state replicated, each batch split on axis 0; `eval_models()` gives one-device copies."""

  def __init__(self, cfg: Config, models: dict, loss_fn, device: str | None = None, devices: int = 1):
    self.cfg, self.models, self.loss_fn = cfg, models, loss_fn
    self.device = device or Device.DEFAULT
    named = {f"{k}.{n}": t for k, m in models.items() if k not in cfg.freeze for n, t in get_state_dict(m).items()}
    if not named: raise ValueError("invalid config: every model is frozen, nothing to train")
    self.named = named
    opt = cfg.optimizer
    self.opt = AdamW(named, float(opt["lr"]), *opt.get("betas", (0.9, 0.999)), eps=opt.get("eps", 1e-8),
                     weight_decay=opt.get("weight_decay", 0.01))
    # weights (frozen ones too) and moments must be buffers before any JIT captures: the micro-batch JIT only reads
    # the weights, so lazily initialised ones would be recomputed inside its capture and reset on every replay
    Tensor.realize(*{id(t): t for m in models.values() for t in get_state_dict(m).values()}.values(),
                   *self.opt.m, *self.opt.v, self.opt.t)
    self.mixed = cfg.precision == "mixed"
    act = half_dtype(self.device) if self.mixed else dtypes.float32
    for m in models.values(): m.act_dtype = act
    # fp16 needs a large loss scale to keep small gradients representable; bf16 has fp32's range, scale 1 is fine
    init_scale = 2.0 ** 15 if act == dtypes.float16 else 1.0
    self.step_t = Tensor.zeros(1, dtype=dtypes.int32).contiguous().realize()
    self.scale = Tensor([init_scale], dtype=dtypes.float32).contiguous().realize()
    self.good = Tensor.zeros(1, dtype=dtypes.int32).contiguous().realize()       # good steps since last scale change
    # the LR schedule's length, read on device: set_total_steps changes it between (JIT-replayed) steps
    self.total_t = Tensor([float(max(cfg.steps, 1))], dtype=dtypes.float32).contiguous().realize()
    self.dynamic_scale = act == dtypes.float16
    self.micro_bs = cfg.batch_size // cfg.grad_accum
    self.grad_acc = None
    if cfg.grad_accum > 1:
      self.grad_acc = [Tensor.zeros(*p.shape, dtype=dtypes.float32).contiguous().realize() for p in self.opt.params]
    self.devices, self._first = None, None  # None: one device, the plain path
    if devices > 1:
      parallel.check_batch(cfg.batch_size, cfg.grad_accum, devices)
      self.devices = parallel.device_names(devices, self.device)
      weights = [t for m in models.values() for t in get_state_dict(m).values()]  # frozen models' too
      parallel.replicate(self.devices, [*weights, *self.opt.m, *self.opt.v, self.opt.t, self.step_t, self.scale,
                                        self.good, self.total_t, *(self.grad_acc or [])])
    self._jits: dict = {}  # one (TinyJit, InputSlots) per (function, batch shapes): a JIT replays fixed shapes only
    self._apply = TinyJit(self._apply_impl)

  def _jit(self, name: str, batch: dict[str, np.ndarray]):
    """The JIT of `name` for this batch's shapes, called on the batch. On one device the batch is copied into input
    buffers the JIT keeps (device_inputs: a new Tensor per input passes through tinygrad's scheduler every step); over
    several devices it is split across them."""
    key = (name, tuple((k, v.shape, v.dtype.str) for k, v in batch.items()))
    if key not in self._jits:
      slots = InputSlots(list(batch.values()), self.device) if self.devices is None else None
      self._jits[key] = (TinyJit(getattr(self, f"_{name}_impl")), slots)
    jit, slots = self._jits[key]
    if slots is None: return jit(**{k: parallel.split(self.devices, v) for k, v in batch.items()})
    return jit(**dict(zip(batch, slots.fill(*batch.values()))))

  # -- the graph pieces
  def _grads(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
    parts = self.loss_fn(self.models, batch)
    self._keys = self.metric_keys(parts)  # runs while the JIT captures, so step() knows the figure names
    # gradient() of the params only: backward() would also differentiate w.r.t. inputs such as the mask
    grads = (parts["loss"] * self.scale.reshape(())).gradient(*self.opt.params)
    # materialise each gradient once: it feeds the norm, both moments and the update, and tinygrad would otherwise
    # fuse (and so recompute) the whole backward chain into each of those consumers
    return parts, [g.contiguous() for g in grads]

  def _update(self, grads: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
    inv = 1 / self.scale
    grads = [g.float() * inv for g in grads]
    # contiguous: one scalar kernel, instead of the norm being re-derived inside every parameter's update kernel
    sq = Tensor.stack(*[(g * g).sum() for g in grads]).sum().contiguous()
    gnorm = sq.sqrt()
    ok = (sq == sq) & (sq < float("inf"))                                          # no NaN, no Inf anywhere
    okf = ok.cast(dtypes.float32).reshape(1)
    if self.cfg.clip_norm > 0:
      coef = (self.cfg.clip_norm / (gnorm + 1e-6)).minimum(1.0).contiguous()
      grads = [ok.where(g * coef, 0) for g in grads]
    else:
      grads = [ok.where(g, 0) for g in grads]
    lr = lr_at(self.step_t, self.cfg, self.total_t)
    outs = self.opt.update(grads, lr, okf)
    self.step_t.assign(self.step_t + ok.cast(dtypes.int32).reshape(1))
    if self.dynamic_scale:  # overflow: halve the scale; 1000 good steps in a row: double it
      good = ok.where(self.good + 1, 0)
      grow = good >= 1000
      self.scale.assign(ok.where(grow.where(self.scale * 2, self.scale), (self.scale / 2).maximum(1.0)))
      self.good.assign(grow.where(0, good))
    outs += [self.step_t, self.scale, self.good]
    return gnorm, outs, okf

  def _pack(self, parts: dict[str, Tensor], gnorm: Tensor, okf: Tensor, lr: Tensor) -> Tensor:
    keys = self.metric_keys(parts)
    return Tensor.stack(*[parts[k].float().reshape(()) for k in keys],
                        gnorm.reshape(()), okf.reshape(()), lr.reshape(()), self.scale.reshape(()))

  def _step_impl(self, **batch) -> Tensor:
    lr = lr_at(self.step_t, self.cfg, self.total_t)
    parts, grads = self._grads(batch)
    gnorm, outs, okf = self._update(grads)
    packed = self._pack(parts, gnorm, okf, lr)
    Tensor.realize(packed, *outs)
    return packed

  def _micro_impl(self, **batch) -> Tensor:
    parts, grads = self._grads(batch)
    for a, g in zip(self.grad_acc, grads): a.assign(a + g.float() / self.cfg.grad_accum)
    packed = Tensor.stack(*[parts[k].float().reshape(()) for k in self.metric_keys(parts)])
    Tensor.realize(packed, *self.grad_acc)
    return packed

  def _apply_impl(self) -> Tensor:
    lr = lr_at(self.step_t, self.cfg, self.total_t)
    gnorm, outs, okf = self._update(list(self.grad_acc))
    for a in self.grad_acc: a.assign(a.zeros_like())
    out = Tensor.stack(gnorm.reshape(()), okf.reshape(()), lr.reshape(()), self.scale.reshape(()))
    Tensor.realize(out, *outs, *self.grad_acc)
    return out

  @staticmethod
  def metric_keys(parts: dict) -> list[str]:
    return ["loss"] + sorted(k for k in parts if k != "loss")

  # -- public
  def step(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
    """One optimiser step on a numpy batch (B = cfg.batch_size). Returns the step's figures as floats."""
    return self.read(self.launch(batch))

  def launch(self, batch: dict[str, np.ndarray]) -> list[Tensor]:
    """Queue one optimiser step without waiting for the device; `read()` turns the result into figures later.
    Reading syncs the device, so a loop that reads every few steps lets the host prepare (and the device queue)
    the next steps meanwhile. Each result is a copy: a JIT reuses its output buffer on the next replay."""
    with Context(TRAINING=1, JIT_BATCH_SIZE=STEP_GRAPH_BATCH), backend.gemm_beam_scope():
      if self.grad_acc is None:
        return [self._jit("step", batch).clone().realize()]
      out = []
      for i in range(self.cfg.grad_accum):
        sl = slice(i * self.micro_bs, (i + 1) * self.micro_bs)
        micro = {k: np.ascontiguousarray(x[sl]) for k, x in batch.items()}
        out.append(self._jit("micro", micro).clone().realize())
      return out + [self._apply().clone().realize()]

  def read(self, pending: list[Tensor]) -> dict[str, float]:
    """The figures of a step queued by `launch()` (waits for the device)."""
    if len(pending) == 1: vals = host(pending[0])
    else: vals = np.concatenate([sum(host(p) for p in pending[:-1]) / self.cfg.grad_accum, host(pending[-1])])
    return dict(zip(self._keys + ["grad_norm", "ok", "lr", "loss_scale"], vals.tolist()))

  def eval_models(self) -> dict:
    """The models with their current weights on one device, for validation and decoding (which build one-device
    tensors): the models themselves, or with several devices twins on the first one, refreshed on every call."""
    if self.devices is None: return self.models
    if self._first is None: self._first = parallel.FirstDevice(self.models, self.devices[0])
    return self._first.sync()

  @property
  def step_count(self) -> int: return int(host(self.step_t)[0])

  def set_total_steps(self, n: int) -> None:
    """Give the LR schedule n steps in all from the next step on (train.py --minutes), without a new JIT capture."""
    new = Tensor([float(max(n, 1))], dtype=dtypes.float32)
    self.total_t.assign(new.shard(self.devices) if self.devices else new).realize()

  def state(self) -> dict[str, Tensor]:
    """Everything needed to resume bit-for-bit: optimiser moments, step, loss scale."""
    return {**{f"opt.{k}": v for k, v in self.opt.state().items()},
            "trainer.step": self.step_t, "trainer.scale": self.scale, "trainer.good": self.good}
