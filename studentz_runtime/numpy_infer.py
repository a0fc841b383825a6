"""StudentZ inference in plain numpy: the encoder, the decoder's incremental step and the mode-B projection.

Why: on a CPU, tinygrad schedules and compiles every new shape's kernels on first use (seconds for the first encode
and again for the first decode), while a forward of one sentence is a few small GEMMs. numpy's
BLAS runs them at once, with nothing to compile. This module never imports tinygrad; it mirrors studentz.Encoder,
decoder.Decoder (its `step`) and decoder.ModeBProjection operation for operation (tests/test_numpy_infer.py compares
them). Weights are float32 in memory whatever the file holds (fp16, or int8 with scales: quantize.py); with int8
weights the encoder's GEMMs run on int8_gemm.py's kernel where the CPU has one (`name.qint8` arrays: load_models).
Shapes: B batch, L tokens, d residual channels, h block channels, D z dimension, V vocabulary.
"""
from __future__ import annotations
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from studentz_runtime import blas_threads, int8_gemm
import numpy as np

EPS = 1e-5  # CondNorm's eps (studentz.CondNorm)
# Calls with fewer token rows than this run on one BLAS thread (blas_threads: OpenBLAS's spin-waiting second thread
# slows small calls many times over on a busy CPU); the decoder's and the stream's one-token steps always do. Callers
# that make many steps should hold blas_threads.limit(1) around all of them, as StudentZ.decode does: switching back
# to two threads between steps wakes the spinning thread each time.
SMALL_TOKENS = 2048
# encoder calls of at least this many token positions, over 2 rows or more, share their rows out among threads
SPLIT_TOKENS = 256
# a big call's rows go to the threads in chunks of about this many tokens: a chunk's activations (the conv's taps:
# 5 KB a token) then stay near a core's cache between the GEMM and the elementwise passes over them
CHUNK_TOKENS = 1024
QINT8 = ".qint8"  # an int8 matrix beside its float32 copy: `name.qint8` with scales `name.qscale` (load_models)


# ----------------------------------------------------------------------------------------------------------------------
# elementwise pieces, as tinygrad computes them

def gelu(x: np.ndarray) -> np.ndarray:
  """tinygrad's Tensor.gelu (the tanh approximation), which the student was trained with."""
  return gelu_(np.array(x, np.float32))


def gelu_(x: np.ndarray) -> np.ndarray:
  """gelu over x in place (float32): 0.5 x (1 + tanh(c x (1 + 0.044715 x^2))), one temporary instead of six."""
  u = x * x
  u *= np.float32(0.7978845608028654 * 0.044715)
  u += np.float32(0.7978845608028654)
  u *= x
  np.tanh(u, out=u)
  u += np.float32(1)
  x *= np.float32(0.5)
  x *= u
  return x


def sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-x))


def sigmoid_(x: np.ndarray) -> np.ndarray:
  """sigmoid over x in place (float32)."""
  np.negative(x, out=x)
  np.exp(x, out=x)
  x += np.float32(1)
  return np.reciprocal(x, out=x)


def layer_norm(x: np.ndarray, eps: float = EPS) -> np.ndarray:
  """Per token over channels, biased variance (Tensor.layernorm), no affine."""
  return layer_norm_(np.array(x, np.float32), eps)


def layer_norm_(y: np.ndarray, eps: float = EPS) -> np.ndarray:
  """layer_norm over y in place (float32, contiguous)."""
  y -= y.mean(-1, keepdims=True)
  flat = y.reshape(-1, y.shape[-1])
  var = np.einsum("ij,ij->i", flat, flat) / np.float32(y.shape[-1])    # no y*y temporary
  var += np.float32(eps)
  y *= (1 / np.sqrt(var)).reshape(*y.shape[:-1], 1)
  return y


def group_norm(x: np.ndarray, mask: np.ndarray, groups: int = 8, eps: float = EPS) -> np.ndarray:
  """studentz.CondNorm's masked GroupNorm: statistics over valid tokens only, no affine."""
  B, L, C = x.shape
  g = x.reshape(B, L, groups, C // groups)
  m = mask.reshape(B, L, 1, 1)
  n = np.maximum(m.sum(axis=(1, 3), keepdims=True) * (C // groups), 1)
  mu = (g * m).sum(axis=(1, 3), keepdims=True) / n
  var = (((g - mu) * m) ** 2).sum(axis=(1, 3), keepdims=True) / n
  return ((g - mu) / np.sqrt(var + np.float32(eps))).reshape(B, L, C)


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(B, L, C) averaged over L with weights (B, L, 1) or (B, L, C) (studentz.weighted_mean)."""
  return (x * w).sum(1) / np.maximum(w.sum(1), np.float32(1e-6))


# ----------------------------------------------------------------------------------------------------------------------
# layers over a dict of float32 arrays (a checkpoint's tensors under one prefix)

def packed(w: dict, key: str, bias, as_kn) -> int8_gemm.PackedWeight | None:
  """w[key]'s int8 copy packed for the int8 kernel (as_kn: it as (K, N)), or None where w has none."""
  q = w.get(key + QINT8)
  return None if q is None else int8_gemm.PackedWeight(as_kn(q), w[key + ".qscale"], bias)


class Linear:
  def __init__(self, w: dict, name: str = "", copy: bool = False, int8: bool = False):
    pre = f"{name}." if name else ""
    # (in, out): a transposed view, which BLAS reads as is; `copy` lays it out so: a one-row product (the decoder's
    # step, e.g. the tied vocabulary-sized head) then runs faster
    self.wt = np.ascontiguousarray(w[f"{pre}weight"].T) if copy else w[f"{pre}weight"].T
    self.b = w.get(f"{pre}bias")
    self.q = packed(w, f"{pre}weight", self.b, lambda q: q.T) if int8 else None  # int8: the kernel where given

  def __call__(self, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])
    if self.q is not None: y = self.q.linear(flat)
    else:
      y = flat @ self.wt
      if self.b is not None: y += self.b
    return y.reshape(*x.shape[:-1], y.shape[-1])


class Conv:
  """studentz.DilatedConv: one GEMM over the k shifted views side by side, weight laid out once as (k*C_in, C_out)."""

  def __init__(self, w: dict, name: str, dilation: int, causal: bool, int8: bool = False):
    cw = w[f"{name}.weight"]                                # (C_out, C_in, k), PyTorch's layout
    self.k, self.dilation, self.causal = cw.shape[2], dilation, causal
    as_kn = lambda a: a.transpose(2, 1, 0).reshape(-1, a.shape[0])  # noqa: E731
    self.w = np.ascontiguousarray(as_kn(cw))
    self.b = w[f"{name}.bias"]
    self.q = packed(w, f"{name}.weight", self.b, as_kn) if int8 else None  # int8: the kernel where given

  @property
  def span(self) -> int: return (self.k - 1) * self.dilation

  def __call__(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(B, L, C_in) -> (B, L, C_out); inputs where mask (B, L, 1) is 0, and outside the sequence, read as zero."""
    B, L, C = x.shape
    left = self.span if self.causal else self.span // 2
    if self.q is not None: return self.q.conv(x, mask, self.k, self.dilation, left)
    taps = np.empty((B, L, self.k * C), np.float32)  # the k shifted copies side by side, filled in place
    for j in range(self.k):
      off = j * self.dilation - left                 # tap j at position t reads x at t + off
      lo, hi = min(max(0, -off), L), max(min(L, L - off), 0)
      dst = taps[:, :, j * C:(j + 1) * C]
      dst[:, :lo], dst[:, hi:] = 0, 0
      if lo >= hi: continue
      if mask is None: dst[:, lo:hi] = x[:, lo + off:hi + off]
      else: np.multiply(x[:, lo + off:hi + off], mask[:, lo + off:hi + off], out=dst[:, lo:hi])
    y = taps.reshape(B * L, -1) @ self.w
    y += self.b
    return y.reshape(B, L, -1)

  def last(self, win: np.ndarray) -> np.ndarray:           # (B, span + 1, C_in) -> (B, C_out): the causal conv's
    taps = win[:, ::self.dilation].reshape(win.shape[0], -1)  # output at the window's last position
    return taps @ self.w + self.b


class Norm:
  """studentz.CondNorm: layer or masked group norm, then a per-mode scale and shift."""

  def __init__(self, w: dict, name: str, kind: str = "layer"):
    self.kind, self.w, self.b = kind, w[f"{name}.weight"], w[f"{name}.bias"]   # (modes, C) each

  def __call__(self, x: np.ndarray, mask: np.ndarray | None = None, mode=0, inplace: bool = False) -> np.ndarray:
    """inplace: x (float32, contiguous) is overwritten with the result, saving the temporaries."""
    if self.kind == "layer": y = layer_norm_(x if inplace else np.array(x, np.float32))
    else: y = group_norm(x, mask)
    mode = np.asarray(mode)
    if mode.ndim == 0: w, b = self.w[mode], self.b[mode]
    else:
      shape = (len(mode),) + (1,) * (y.ndim - 2) + (y.shape[-1],)                # per row: (B, [1,] C)
      w, b = self.w[mode].reshape(shape), self.b[mode].reshape(shape)
    y *= w
    y += b
    return y


class Block:
  """studentz.TCNBlock: x + Conv1x1(GELU(Norm(DilatedConv(x)))), FiLM (gamma, beta) after the norm where given."""

  def __init__(self, w: dict, name: str, dilation: int, causal: bool, norm: str, copy: bool = False,
               int8: bool = False):
    self.conv = Conv(w, f"{name}.conv", dilation, causal, int8)
    self.norm, self.out = Norm(w, f"{name}.norm", norm), Linear(w, f"{name}.out", copy, int8)

  def residual(self, x, conv_out, mask=None, mode=0, film=None) -> np.ndarray:
    """conv_out is overwritten (the norm and GELU run in place on it)."""
    y = self.norm(conv_out, mask, mode, inplace=True)
    if film is not None:
      g, b = (f if y.ndim == 2 else f[:, None] for f in film)                    # (B, h) over (B, [L,] h)
      y *= 1 + g
      y += b
    out = self.out(gelu_(y))
    out += x
    return out


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
  return ThreadPoolExecutor(workers, thread_name_prefix="numpy_infer")


def _sub(arrays: dict, prefix: str) -> dict:
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------------------------------
# encoder: tokens -> z

class Encoder:
  """studentz.Encoder at inference (no dropout): __call__(ids (B, L) int, mask (B, L)) -> z (B, D) float32. Its
  matrices with an int8 copy in `arrays` (QINT8) run on the int8 kernel."""

  def __init__(self, cfg, arrays: dict):
    self.cfg = cfg
    w = _sub(arrays, "encoder.")
    causal = cfg.padding == "causal"
    self.embed = w["embed.weight"]                                                 # (V, d)
    self.blocks = [Block(w, f"blocks.{i}", dl, causal, cfg.norm, int8=True)
                   for i, dl in enumerate(cfg.dilation_schedule)]
    lin = functools.partial(Linear, w, int8=True)
    self.ctx_in = [lin(f"ctx_in.{i}") for i in range(cfg.n_blocks)] if cfg.block_context else None
    self.norm, self.proj = Norm(w, "norm"), lin("proj")
    self.gate = lin("gate") if cfg.pool == "gated" else None
    if cfg.pool_head: self.head_up, self.head_down = lin("head_up"), lin("head_down")

  def features(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, L, d) after the blocks and the final norm."""
    x = self.embed[ids]
    m = None if mask.all() else mask[..., None]  # all valid: the masking multiplies are no-ops
    for i, blk in enumerate(self.blocks):
      conv_out = blk.conv(x, m)
      if self.ctx_in is not None:  # block_context: the sentence's masked mean input, seen at every position
        mm = mask[..., None]
        mean = (x * mm).sum(1) / np.maximum(mm.sum(1), np.float32(1))
        conv_out += self.ctx_in[i](mean)[:, None]
      x = blk.residual(x, conv_out, mask)
    return self.norm(x, mask, inplace=True)

  def head_terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = self.head_up(x)                                                            # fresh: both halves in place
    P = self.cfg.pool_head
    g = sigmoid_(u[..., P:])
    g += np.float32(1e-6)
    return gelu_(u[..., :P]), g

  def z(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    w = m if self.gate is None else sigmoid(self.gate(x)) * m + np.float32(1e-6) * m
    z = self.proj(weighted_mean(x, w))
    if self.cfg.pool_head:
      v, g = self.head_terms(x)
      z = z + self.head_down(weighted_mean(v, g * m))
    return z

  def __call__(self, ids, mask) -> np.ndarray:
    mask = np.asarray(mask, np.float32)
    # positions after the last valid one of every row are zero conv input and out of every pool: dropping them is
    # exact, and a lone short sentence then costs its own length, not max_len
    n = int(np.flatnonzero(mask.any(0))[-1]) + 1 if mask.any() else 1
    ids, mask = np.asarray(ids)[:, :n], mask[:, :n]
    encode = lambda rows: self.z(self.features(ids[rows], mask[rows]), mask[rows]).astype(np.float32)  # noqa: E731
    workers = min(blas_threads.get() or 1, len(ids))
    if mask.size < SPLIT_TOKENS or workers < 2:
      with blas_threads.limit(1 if mask.size < SMALL_TOKENS else None): return encode(slice(None))
    # batches: rows split over as many Python threads as BLAS would use, each GEMM on one BLAS thread (no spinning
    # BLAS workers), so the elementwise work (norms, GELU: single-threaded in numpy, GIL released) runs in parallel
    chunks = min(len(ids), max(workers, -(-mask.size // CHUNK_TOKENS)))
    with blas_threads.limit(1):
      return np.concatenate(list(_pool(workers).map(encode, np.array_split(np.arange(len(ids)), chunks))))

  def stream(self) -> "StreamState":
    return StreamState(self)


class StreamState:
  """The tinygrad StreamState (stream_tinygrad.py) in numpy: z of everything pushed since reset, one position through
  the blocks a token."""

  def __init__(self, encoder: Encoder):
    from studentz_runtime.config import check_streamable
    check_streamable(encoder.cfg)
    self.encoder = encoder
    self.reset()

  def reset(self) -> "StreamState":
    enc, d = self.encoder, self.encoder.cfg.d_model
    self.bufs = [np.zeros((1, blk.conv.span + 1, d), np.float32) for blk in enc.blocks]
    P = max(enc.cfg.pool_head, 1)
    self.wx, self.w = np.zeros((1, d), np.float32), np.zeros((1, 1), np.float32)
    self.hv, self.hg = np.zeros((1, P), np.float32), np.zeros((1, P), np.float32)
    self.n = 0
    return self

  def push(self, token_id: int) -> np.ndarray:
    with blas_threads.limit(1): return self._push(token_id)

  def _push(self, token_id: int) -> np.ndarray:
    enc = self.encoder
    V = enc.cfg.vocab_size
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not 0 <= token_id < V:
      raise ValueError(f"token ids must be ints in [0, {V}), got {token_id!r}")
    x = enc.embed[[token_id]]                                                      # (1, d)
    for i, blk in enumerate(enc.blocks):
      self.bufs[i] = np.concatenate([self.bufs[i][:, 1:], x[:, None]], 1)
      x = blk.residual(x, blk.conv.last(self.bufs[i]))
    x = enc.norm(x)
    w = np.ones((1, 1), np.float32) if enc.gate is None else sigmoid(enc.gate(x)) + np.float32(1e-6)
    self.wx, self.w = self.wx + x * w, self.w + w
    z = enc.proj(self.wx / np.maximum(self.w, np.float32(1e-6)))
    if enc.cfg.pool_head:  # the pool head's running sums per feature
      v, g = enc.head_terms(x)
      self.hv, self.hg = self.hv + v * g, self.hg + g
      z = z + enc.head_down(self.hv / np.maximum(self.hg, np.float32(1e-6)))
    self.n += 1
    return z[0].astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# decoder: z -> logits, one token at a time

class Decoder:
  """decoder.Decoder at inference: `condition`, `hidden` (teacher forcing, for tests), `new_state` (generation)."""

  def __init__(self, cfg, arrays: dict):
    self.cfg = cfg
    w = _sub(arrays, "decoder.")
    self.embed = w["embed.weight"]                                                 # (V, d)
    # weights laid out for one-row products (Linear's copy): generation runs one token at a time
    self.blocks = [Block(w, f"blocks.{i}", dl, True, "layer", copy=True)
                   for i, dl in enumerate(cfg.dec_dilation_schedule)]
    # z_in and every FiLM as one GEMM, as Decoder.condition computes them
    names = ["z_in"] + [f"films.{i}" for i in range(len(self.blocks))]
    self.cond = Linear({"weight": np.concatenate([w[f"{n}.weight"] for n in names]),
                        "bias": np.concatenate([w[f"{n}.bias"] for n in names])})
    self.draft_in = Linear(w, "draft_in") if cfg.dec_draft else None
    self.draft_out = Linear(w, "draft_out") if cfg.dec_draft else None
    self.norm = Norm(w, "norm")
    tied = "embed.weight" in w and "head.weight" not in w
    self.head = Linear({"weight": self.embed, "bias": w["head_bias"]} if tied else _sub(w, "head."), copy=True)

  def condition(self, z: np.ndarray):
    """z (B, D) -> input bias (B, d) and one FiLM (gamma, beta) pair (B, h) each per block."""
    d, h = self.cfg.d_model, self.cfg.hidden
    out = self.cond(np.asarray(z, np.float32))
    films = [(out[:, d + 2 * h * i: d + 2 * h * i + h], out[:, d + 2 * h * i + h: d + 2 * h * (i + 1)])
             for i in range(len(self.blocks))]
    return out[:, :d], films

  def draft(self, z: np.ndarray, L: int) -> np.ndarray | None:
    """z (B, D) -> the input draft of positions 0..L-1 (B, L, d), zero from max_len on; None without one."""
    if self.draft_in is None: return None
    M = self.cfg.max_len
    out = self.draft_out(self.draft_in(np.asarray(z, np.float32)).reshape(len(z), M, self.cfg.dec_draft))
    return out[:, :L] if L <= M else np.pad(out, ((0, 0), (0, L - M), (0, 0)))

  def hidden(self, tokens: np.ndarray, z: np.ndarray, mode=0) -> np.ndarray:
    """Teacher forcing over whole sequences (B, L) -> (B, L, d), as Decoder.hidden."""
    zb, films = self.condition(z)
    x = self.embed[tokens] + zb[:, None]
    if (draft := self.draft(z, tokens.shape[1])) is not None: x = x + draft
    for blk, film in zip(self.blocks, films): x = blk.residual(x, blk.conv(x), None, mode, film)
    return self.norm(x, None, mode)

  def new_state(self, batch_size: int) -> "DecoderState":
    return DecoderState(self, batch_size)


class DecoderState:
  """generate.DecoderState in numpy: per block the last (k-1)*dilation + 1 inputs of its causal conv; `reset(z,
  mode)` then `step(tokens, parents)` -> logits (B, V) float32 of the position after."""

  def __init__(self, decoder: Decoder, batch_size: int):
    self.decoder, self.batch_size = decoder, batch_size

  def reset(self, z, mode) -> "DecoderState":
    dec, B = self.decoder, self.batch_size
    z = np.asarray(z, np.float32)
    if z.shape[0] != B: raise ValueError(f"z has {z.shape[0]} rows but this state was built for {B}")
    self.zb, self.films = dec.condition(z)
    self.mode = np.broadcast_to(np.asarray(mode, np.int64), (B,)).copy()
    self.bufs = [np.zeros((B, blk.conv.span + 1, dec.cfg.d_model), np.float32) for blk in dec.blocks]
    # the draft of every position, a zero row last (positions past max_len), and each row's next position
    self.draft, self.pos = dec.draft(z, dec.cfg.max_len + 1), np.zeros(B, np.int64)
    return self

  def _input_bias(self, rows=None) -> np.ndarray:
    """z's input bias of each row's next position (zb plus the draft's row there); those rows move on by one."""
    if self.draft is None: return self.zb if rows is None else self.zb[rows]
    r = np.arange(self.batch_size) if rows is None else rows
    p = self.pos[r]
    self.pos[r] = np.minimum(p + 1, self.decoder.cfg.max_len)
    return self.zb[r] + self.draft[r, p]

  takes_live = True  # step's `live`: candidates.one_pass skips the rows that have ended

  def step(self, tokens, parents=None, live=None) -> np.ndarray:
    """live (B,) bool: the rows whose logits are wanted; the others come back as zeros and their caches stand still
    (rows that have ended, whose logits nobody reads), so they cost nothing."""
    with blas_threads.limit(1 if self.batch_size < SMALL_TOKENS else None): return self._step(tokens, parents, live)

  def _step(self, tokens, parents=None, live=None) -> np.ndarray:
    dec = self.decoder
    if parents is not None:  # beam search: rows take over their parent's cache and conditioning
      p = np.asarray(parents)
      moved = np.flatnonzero(p != np.arange(len(p)))  # only those rows are copied (rerank's pass: its beam rows)
      src = p[moved]
      for a in [*self.bufs, self.zb, self.mode, *(f for film in self.films for f in film)]: a[moved] = a[src]
      if self.draft is not None: self.draft[moved], self.pos[moved] = self.draft[src], self.pos[src]
    tok = np.asarray(tokens).reshape(self.batch_size)
    if live is not None and not np.all(live): return self._step_rows(tok, np.flatnonzero(live))
    x = dec.embed[tok] + self._input_bias()                                        # (B, d)
    for i, (blk, film) in enumerate(zip(dec.blocks, self.films)):
      self.bufs[i] = np.concatenate([self.bufs[i][:, 1:], x[:, None]], 1)
      x = blk.residual(x, blk.conv.last(self.bufs[i]), None, self.mode, film)
    return dec.head(dec.norm(x, None, self.mode)).astype(np.float32)

  def _step_rows(self, tok: np.ndarray, rows: np.ndarray) -> np.ndarray:
    dec, mode = self.decoder, self.mode[rows]
    x = dec.embed[tok[rows]] + self._input_bias(rows)
    for buf, blk, (g, b) in zip(self.bufs, dec.blocks, self.films):
      win = np.concatenate([buf[rows, 1:], x[:, None]], 1)
      buf[rows] = win
      x = blk.residual(x, blk.conv.last(win), None, mode, (g[rows], b[rows]))
    out = np.zeros((self.batch_size, dec.cfg.vocab_size), np.float32)  # calloc: the skipped rows' pages stay untouched
    out[rows] = dec.head(dec.norm(x, None, mode))
    return out


class ModeBProjection:
  """decoder.ModeBProjection: teacher vector -> the decoder's z space ("mlp": t + fc2(GELU(fc1(t))))."""

  def __init__(self, cfg, arrays: dict):
    w = _sub(arrays, "proj_b.")
    self.mlp = (Linear(w, "fc1"), Linear(w, "fc2")) if cfg.mode_b_proj == "mlp" else None

  def __call__(self, t) -> np.ndarray:
    t = np.asarray(t, np.float32)
    return t if self.mlp is None else t + self.mlp[1](gelu(self.mlp[0](t)))


# ----------------------------------------------------------------------------------------------------------------------
# loading

def encode_batches(encoder: Encoder, ids: np.ndarray, mask: np.ndarray, batch_size: int) -> np.ndarray:
  """z (N, D) for token ids in batches of rows of similar length (each batch costs its longest row), input order."""
  order = np.argsort(-mask.sum(1), kind="stable")
  out = np.zeros((len(ids), encoder.cfg.proj_dim), np.float32)
  for i in range(0, len(ids), batch_size):
    rows = order[i:i + batch_size]
    out[rows] = encoder(ids[rows], mask[rows])
  return out


def with_int8(raw: dict) -> dict:
  """The float32 arrays of load_arrays's `raw`, plus each int8 matrix as `name.qint8` with its `name.qscale` where the
  int8 kernel runs here (int8_gemm.lib)."""
  from studentz_runtime import quantize
  arrays = quantize.dequantize(raw)
  if int8_gemm.lib() is None: return arrays
  for k in raw:
    if k.endswith(quantize.SCALE_SUFFIX):
      name = k[:-len(quantize.SCALE_SUFFIX)]
      arrays[name + QINT8], arrays[k] = raw[name], raw[k]
  return arrays


def load_models(ckpt: Path, decoder: bool = True, int8: bool = False):
  """evaluate.load_models for this path: ({encoder, decoder?, proj_b?}, info, tokenizer), no tinygrad. int8: the
  weights through quantize.py's int8 rounding (an int8 checkpoint is read as it is); the encoder's GEMMs then run in
  int8 where the CPU can (int8_gemm.py), else on the int8 weights as float32."""
  from studentz_runtime import quantize
  from studentz_runtime.checkpoint import read_checkpoint_info
  from studentz_runtime.config import Config
  from studentz_corpus.tokenizer import StudentTokenizer
  info = read_checkpoint_info(ckpt)
  cfg = Config.from_dict(info["config"])
  arrays = with_int8(quantize.load_arrays(Path(ckpt) / "model.safetensors", int8=int8))
  models = {"encoder": Encoder(cfg, arrays)}
  if decoder and any(k.startswith("decoder.") for k in arrays):
    models["decoder"], models["proj_b"] = Decoder(cfg, arrays), ModeBProjection(cfg, arrays)
  return models, info, StudentTokenizer.load(Path(ckpt) / "tokenizer.json")
