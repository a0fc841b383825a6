"""Streaming on tinygrad: z after every token of a causal encoder, one position through the blocks per token (a
TinyJit over persistent buffers). numpy_infer.StreamState is the same on the numpy path; StudentZ picks one."""
from __future__ import annotations

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from studentz_kernels.device_inputs import InputSlots
from studentz_kernels.backend import TINYGRAD_LOCK
from studentz_runtime.config import check_streamable
from tinygrad import Tensor, TinyJit, dtypes


class StreamState:
  """One causal encoder fed one token at a time: `push(token_id)` returns z of everything pushed since `reset()`.

  Per block it keeps the last (k-1)*dilation + 1 inputs of its causal conv (zeros before the start, as the causal pad),
  so a token costs one position through the blocks; pooling keeps running sums (sum of w*x and of w, with w = 1 for
  the masked mean, sigmoid(gate) + 1e-6 for the gated pool, as Encoder.pool; per feature for the pool head). z after
  the t-th push equals the full encoder's z on those t tokens. No max_len applies: the stream may run longer than the
  training length.
  Token ids are pushed as given: start with BOS, as every training sentence did."""

  def __init__(self, encoder, lock=None):
    check_streamable(encoder.cfg)
    self.encoder, self.lock = encoder, lock if lock is not None else TINYGRAD_LOCK
    cfg, act = encoder.cfg, encoder.act_dtype
    with self.lock:
      self.bufs = [Tensor.zeros(1, blk.conv.span + 1, cfg.d_model, dtype=act).contiguous().realize()
                   for blk in encoder.blocks]
      self.wx = Tensor.zeros(1, cfg.d_model, dtype=dtypes.float32).contiguous().realize()
      self.w = Tensor.zeros(1, 1, dtype=dtypes.float32).contiguous().realize()
      P = max(cfg.pool_head, 1)  # the pool head's running sums (unused, one wide, without a head)
      self.hv = Tensor.zeros(1, P, dtype=dtypes.float32).contiguous().realize()
      self.hg = Tensor.zeros(1, P, dtype=dtypes.float32).contiguous().realize()
      self._slots = InputSlots([np.zeros(1, np.int32)])  # the token, copied in without scheduler work
    # a TinyJit over the persistent buffers above: it reads the encoder's weights as they are at call time
    self._jit = TinyJit(self._step_impl)
    self.n = 0  # tokens pushed since reset

  def _step_impl(self, tok: Tensor) -> Tensor:
    enc = self.encoder
    ones, mode = Tensor.ones(1, 1), Tensor.zeros(1, dtype=dtypes.int32)
    x = enc.embed(tok.reshape(1, 1)).cast(enc.act_dtype)                           # (1, 1, d)
    new_bufs = []
    for blk, buf in zip(enc.blocks, self.bufs):
      win = buf[:, 1:].cat(x, dim=1)                                               # (1, span + 1, d)
      new_bufs.append(win)
      # mirrors TCNBlock.__call__ at the last position (no FiLM, no dropout at inference); test_api checks they agree
      y = blk.norm(blk.conv.last(win), ones, mode)                                  # (1, 1, h)
      x = x + blk.out(y.gelu())                                                    # (1, 1, d)
    x = enc.norm(x, ones, mode)[:, 0]                                              # (1, d)
    w = Tensor.ones(1, 1) if enc.gate is None else enc.gate(x).float().sigmoid() + 1e-6  # (1, 1)
    wx, ws = self.wx + x.float() * w, self.w + w
    z = enc.proj((wx / ws.maximum(1e-6)).cast(enc.act_dtype)).float()              # (1, D)
    sums = [self.wx.assign(wx), self.w.assign(ws)]
    if enc.cfg.pool_head:  # the same running sums per head feature (Encoder.head)
      v, g = enc.head_terms(x.unsqueeze(1))                                        # (1, 1, P) each
      hv, hg = self.hv + (v * g)[:, 0], self.hg + g[:, 0]
      z = z + enc.head_down((hv / hg.maximum(1e-6)).cast(enc.act_dtype)).float()
      sums += [self.hv.assign(hv), self.hg.assign(hg)]
    z = z.contiguous()
    Tensor.realize(z, *[b.assign(nb) for b, nb in zip(self.bufs, new_bufs)], *sums)
    return z

  def push(self, token_id: int) -> np.ndarray:
    """Feed one token; returns z (D,) float32 of all tokens pushed since reset."""
    V = self.encoder.cfg.vocab_size
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not 0 <= token_id < V:
      raise ValueError(f"token ids must be ints in [0, {V}), got {token_id!r}")
    with self.lock:
      z = self._jit(*self._slots.fill(np.array([token_id], np.int32))).numpy()[0]
    self.n += 1
    return z

  def reset(self) -> "StreamState":
    """Forget every pushed token (the next push starts a new sequence)."""
    with self.lock:
      Tensor.realize(*[b.assign(b.zeros_like()) for b in self.bufs + [self.wx, self.w, self.hv, self.hg]])
    self.n = 0
    return self
