"""Text from z on tinygrad: the incremental decoder state; the strategies (greedy, sampling, beam search) and the
re-embedding rerank with its correction rounds are decoding.py's, re-exported here.

Decoding is incremental: `DecoderState` keeps, per decoder block, the last (k-1)*dilation + 1 inputs of its causal
conv, so each new token costs one step through the blocks (`Decoder.step`, one TinyJit per batch size), not a pass
over the whole prefix. Token choice happens on the host from the step's logits (numpy; seeded Generator), which is
cheap for the small batches generation runs at; rerank's candidates, k rows per sentence, choose from a shortlist of
each row's best tokens that the device computes (`DecoderState.step_top`), so only that crosses to the host.
"""
from __future__ import annotations
import functools
import weakref
from typing import TYPE_CHECKING

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from studentz_kernels.device_inputs import InputSlots
from studentz_runtime.logits import SPECIALS
from studentz_runtime.decoding import (MAX_BEAM, MAX_TOKENS, NEG, _draw, _log_softmax, _mask_specials,  # noqa: F401
                                       _prepare, _run, beam_search, check_options, check_z, decode, filter_logits,
                                       generate, greedy, rerank_decode, sample)
from tinygrad import Tensor, TinyJit, dtypes

if TYPE_CHECKING: from studentz import Decoder  # the model imports this package, never the reverse


# ----------------------------------------------------------------------------------------------------------------------
# incremental state

def _host(a, dtype) -> np.ndarray:
  """C-contiguous and writable: tinygrad's CUDA copy-in refuses read-only buffers (broadcast views, .numpy() output)."""
  return np.require(a, dtype=dtype, requirements=["C", "W"])


class DecoderState:
  """Per-row conv caches and z-conditioning of one decoder at a fixed batch size, updated in place by `step`.

  The step is a TinyJit over persistent buffers, so it reads the decoder's weights as they are at call time (weights
  updated by assign, as the optimiser and checkpoint loading do, are seen)."""

  def __init__(self, decoder: Decoder, batch_size: int, _weak: bool = False):
    kinds = {blk.norm.kind for blk in decoder.blocks} | {decoder.norm.kind}
    if kinds != {"layer"}:
      raise ValueError("incremental decoding needs per-token (layer) norms in the decoder: GroupNorm statistics span "
                       "the whole sequence, so one step cannot reproduce them (build the Decoder with norm='layer')")
    # get_state's cache holds states under a weak key: a strong reference back would keep the decoder alive forever
    self.decoder, self.batch_size = (weakref.proxy(decoder) if _weak else decoder), batch_size
    B = batch_size
    cfg, act = decoder.cfg, decoder.act_dtype
    self.bufs = [Tensor.zeros(B, blk.conv.span + 1, cfg.d_model, dtype=act).contiguous().realize()
                 for blk in decoder.blocks]
    self.zb = Tensor.zeros(B, cfg.d_model, dtype=act).contiguous().realize()
    self.films = [(Tensor.zeros(B, cfg.hidden, dtype=act).contiguous().realize(),
                   Tensor.zeros(B, cfg.hidden, dtype=act).contiguous().realize()) for _ in decoder.blocks]
    self.mode = Tensor.zeros(B, dtype=dtypes.int32).contiguous().realize()
    # the draft's rows still to come (Decoder.draft), a zero row last: each step adds the first and moves on by one
    self.draft = (Tensor.zeros(B, cfg.max_len + 1, cfg.d_model, dtype=act).contiguous().realize()
                  if cfg.dec_draft else None)
    self._jit = TinyJit(self._step_impl)
    self._top_jits: dict[int, TinyJit] = {}  # step_top's, per shortlist size
    self._slots = InputSlots([np.zeros(B, np.int32), np.zeros(B, np.int32)])  # tokens, parents: no scheduler work
    self._identity = np.arange(B, dtype=np.int32)

  @property
  def shortlist_on_device(self) -> bool:
    """Whether rerank's pass chooses from step_top's shortlist: not on a CPU device, where tinygrad's m reductions
    over the logits cost more than numpy's partition of them, and there is no copy to save."""
    return str(self.zb.device).split(":")[0] != "CPU"

  def reset(self, z, mode) -> "DecoderState":
    """Start every row afresh from z (B, D) numpy or Tensor in `mode` (int or (B,) ints)."""
    B = self.batch_size
    z = z if isinstance(z, Tensor) else Tensor(_host(z, np.float32))
    if z.shape[0] != B: raise ValueError(f"z has {z.shape[0]} rows but this state was built for {B}")
    zb, films = self.decoder.condition(z)
    mode = _host(np.broadcast_to(np.asarray(mode, dtype=np.int32), (B,)), np.int32)
    outs = [self.zb.assign(zb), self.mode.assign(Tensor(mode))]
    for (g, b), (g_new, b_new) in zip(self.films, films): outs += [g.assign(g_new), b.assign(b_new)]
    outs += [buf.assign(buf.zeros_like()) for buf in self.bufs]
    if self.draft is not None: outs.append(self.draft.assign(self.decoder.draft(z, self.draft.shape[1])))
    Tensor.realize(*outs)
    return self

  def _advance(self, tok: Tensor, parent: Tensor) -> tuple[Tensor, list[Tensor]]:
    """(logits (B, V), the state's updates to realize with them)."""
    # rows first take over their parent's cache (beam search reorders; otherwise parent is the identity)
    bufs = [buf[parent] for buf in self.bufs]
    zb, mode = self.zb[parent], self.mode[parent]
    films = [(g[parent], b[parent]) for g, b in self.films]
    draft = None if self.draft is None else self.draft[parent]
    bias = zb if draft is None else zb + draft[:, 0]                              # (B, d) this position's
    logits, new_bufs = self.decoder.step(tok, bufs, bias, films, mode)
    outs = [buf.assign(nb) for buf, nb in zip(self.bufs, new_bufs)]
    outs += [self.zb.assign(zb), self.mode.assign(mode)]
    if draft is not None: outs.append(self.draft.assign(draft[:, 1:].cat(draft[:, -1:], dim=1)))
    for (g, b), (g_new, b_new) in zip(self.films, films): outs += [g.assign(g_new), b.assign(b_new)]
    return logits, outs

  def _step_impl(self, tok: Tensor, parent: Tensor) -> Tensor:
    logits, outs = self._advance(tok, parent)
    logits = logits.contiguous()
    Tensor.realize(logits, *outs)
    return logits

  def _top_impl(self, tok: Tensor, parent: Tensor, m: int) -> Tensor:
    logits, outs = self._advance(tok, parent)
    top = shortlist_tensor(logits, m).contiguous()
    Tensor.realize(top, *outs)
    return top

  def step(self, tokens, parents=None) -> np.ndarray:
    """tokens (B,) ints fed at the next position; parents (B,) row each row continues from (None: itself).
    Returns logits (B, V) float32 for the position after."""
    return self._jit(*self._inputs(tokens, parents)).numpy()

  def step_top(self, tokens, parents, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As step, but returns logits.shortlist(specials masked, m) of every row, computed on the device: (B, 2m+1)
    numbers come back instead of (B, V). One TinyJit per m."""
    if m not in self._top_jits: self._top_jits[m] = TinyJit(functools.partial(self._top_impl, m=m))
    out = self._top_jits[m](*self._inputs(tokens, parents)).numpy()
    return out[:, :m], out[:, m:2 * m].astype(np.int32), out[:, 2 * m]

  def _inputs(self, tokens, parents) -> list[Tensor]:
    tok = _host(np.asarray(tokens).reshape(self.batch_size), np.int32)
    par = self._identity if parents is None else _host(parents, np.int32)
    return self._slots.fill(tok, par)


def shortlist_tensor(logits: Tensor, m: int) -> Tensor:
  """logits.shortlist on the device: (B, V) -> (B, 2m+1) float32: the m best values with SPECIALS masked (value
  descending, ties by lower id), their ids, then log(sum(exp(logits))). Each next token is the best one after the
  last in that order, so all m reductions read the logits alike (one compiled kernel, no copies of the logits)."""
  B, V = logits.shape
  if not 1 <= m <= V: raise ValueError(f"shortlist size must be in [1, {V}], got {m}")
  ar = Tensor.arange(V).to(logits.device).reshape(1, V)
  special = functools.reduce(lambda a, b: a | b, [ar == s for s in SPECIALS])
  x = special.where(NEG, logits.float())
  vals, ids = [x.max(-1, keepdim=True)], [x.argmax(-1, keepdim=True)]
  for _ in range(m - 1):
    after = (x < vals[-1]) | ((x == vals[-1]) & (ar > ids[-1]))
    y = after.where(x, float("-inf"))
    vals.append(y.max(-1, keepdim=True))
    ids.append(y.argmax(-1, keepdim=True))
  return Tensor.cat(*vals, *[i.float() for i in ids], x.logsumexp(-1).reshape(B, 1), dim=-1)


_STATES: "weakref.WeakKeyDictionary[Decoder, dict]" = weakref.WeakKeyDictionary()


def get_state(decoder: Decoder, batch_size: int) -> DecoderState:
  """A DecoderState per (decoder, batch size), kept so repeated calls reuse the captured JIT. Not stored on the
  decoder itself: get_state_dict would then find the caches and save or train them as weights."""
  per = _STATES.setdefault(decoder, {})
  if batch_size not in per: per[batch_size] = DecoderState(decoder, batch_size, _weak=True)
  return per[batch_size]


def step(token_ids, state: DecoderState, parents=None) -> tuple[np.ndarray, DecoderState]:
  """Functional spelling of DecoderState.step: (B,) tokens -> (logits (B, V), the same state, advanced)."""
  return state.step(token_ids, parents), state


# ----------------------------------------------------------------------------------------------------------------------
# re-embedding correction

def student_embed_fn(encoder, tokenizer, max_len: int | None = None):
  """texts -> the student encoder's z (N, D) numpy: a judge for rerank_decode."""
  L = encoder.cfg.max_len if max_len is None else max_len

  def embed(texts: list[str]) -> np.ndarray:
    ids, mask = tokenizer.encode_batch(texts, L)
    return encoder(Tensor(ids), Tensor(mask)).numpy()
  return embed
