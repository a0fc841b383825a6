"""StudentZ: an attention-free student encoder (dilated TCN) distilled into a teacher's sentence-embedding space, and a
decoder from its vectors back to text.

Read top to bottom: config -> building blocks -> encoder -> decoder -> losses -> optimiser -> loading a checkpoint and
the `StudentZ` API. Kernels are reached through studentz_kernels.ops; the config is studentz_runtime/config.py (read
without tinygrad by the numpy engine), the JIT'd train step studentz_training/trainer.py.
Shapes: B batch, L tokens, d residual channels, h block channels, D teacher dimension, V vocabulary.
"""
from __future__ import annotations
import math
from pathlib import Path

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
from studentz_kernels import ops
from studentz_kernels.ops import TokenEmbedding, gather_rows
import numpy as np
from studentz_corpus.tokenizer import PAD
from studentz_runtime.config import SIZE_LIMITS, Config  # noqa: F401  (numpy_infer reads it without tinygrad)
from studentz_runtime.plot_png import as_grid, display_grid  # noqa: F401  (display helpers, as studentz.*)
from studentz_runtime import api
from studentz_runtime.checkpoint import (DEFAULT_MODEL_DIR, FORMAT_VERSION, CheckpointError, assign_state,  # noqa: F401
                                         atomic_write_bytes, host, load_tensors, read_checkpoint_info, resolve_path,
                                         save_tensors)
from tinygrad import Tensor, dtypes
from tinygrad.helpers import TRAINING, Context
from tinygrad.nn.optim import Optimizer

def matmul2d(x: Tensor, w: Tensor) -> Tensor:
  """(..., C_in) @ (C_in, C_out) with the leading axes flattened into one, so a weight gradient reduces over one axis
  (tinygrad's tensor-core matcher needs that), on our own GEMM kernels where they apply (cuda_gemm: bf16/fp16 tensor
  cores on CUDA; cpu_gemm: float32 on the CPU), else tinygrad's matmul."""
  x2 = x.reshape(-1, x.shape[-1])
  y = ops.matmul(x2, w)
  return y.reshape(*x.shape[:-1], w.shape[-1])


# ----------------------------------------------------------------------------------------------------------------------
# building blocks (channels-last: activations are (B, L, C) so Linear, norms and pooling need no transposes)

def _uniform(*shape, fan_in: int) -> Tensor:
  bound = 1 / math.sqrt(fan_in)
  return Tensor.uniform(*shape, low=-bound, high=bound)


class Linear:
  def __init__(self, n_in: int, n_out: int, bias: bool = True):
    self.weight = _uniform(n_out, n_in, fan_in=n_in)  # PyTorch layout, so a torch reference can load it as is
    self.bias = Tensor.zeros(n_out) if bias else None

  def __call__(self, x: Tensor) -> Tensor:
    y = matmul2d(x, self.weight.cast(x.dtype).T)
    return y if self.bias is None else y + self.bias.cast(x.dtype)


def zero_linear(n_in: int, n_out: int) -> Linear:
  """A Linear whose output starts at its zero bias: a new path that leaves the network's function unchanged at init."""
  lin = Linear(n_in, n_out)
  lin.weight = Tensor.zeros(n_out, n_in).contiguous()
  return lin


def weighted_mean(x: Tensor, w: Tensor) -> Tensor:
  """(B, L, C) averaged over L with weights w (B, L, 1) or (B, L, C), zero at padding: (B, C)."""
  return (x * w).sum(1) / w.sum(1).maximum(1e-6)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
  """(B, L, C), (B, L) -> (B, C) in float32, over valid tokens only."""
  m = mask.float().unsqueeze(-1)                                                   # (B, L, 1)
  return (x.float() * m).sum(1) / m.sum(1).maximum(1.0)


def shifted_views(x: Tensor, k: int, dilation: int, left: int) -> Tensor:
  """(B, L, C) -> (B, L, k*C): [x[t + j*dilation - left] for j < k] side by side, zero outside the sequence, in
  tinygrad's ops (ops.taps is the CUDA kernel of the same)."""
  L, span = x.shape[1], (k - 1) * dilation
  xp = x.pad(((0, 0), (left, span - left), (0, 0)))                                # (B, L + span, C)
  return Tensor.cat(*[xp[:, j * dilation: j * dilation + L] for j in range(k)], dim=-1)


class DilatedConv:
  """Conv1d over tokens as one matmul over k shifted views: (B, L, C_in) -> (B, L, C_out).

  `causal` pads only on the left, so position t sees t - (k-1)*dilation .. t; otherwise the window is centred.
  Weight layout is PyTorch's Conv1d (C_out, C_in, k)."""

  def __init__(self, n_in: int, n_out: int, k: int, dilation: int, causal: bool):
    self.k, self.dilation, self.causal = k, dilation, causal
    self.weight = _uniform(n_out, n_in, k, fan_in=n_in * k)
    self.bias = Tensor.zeros(n_out)

  @property
  def span(self) -> int: return (self.k - 1) * self.dilation

  def __call__(self, x: Tensor) -> Tensor:  # x (B, L, C_in), zero at padding positions
    # k shifted views side by side, then one GEMM (faster than a GEMM to (B, L, k*C_out) and a shifted sum of slices)
    left = self.span if self.causal else self.span // 2
    if ops.taps_usable(x): return self.gemm(ops.taps(x, self.k, self.dilation, left))  # (B, L, k*C) on CUDA
    taps = shifted_views(x, self.k, self.dilation, left)                            # (B, L, k*C_in)
    # materialised (im2col) so the GEMM reads plain buffers, its gradient too; bf16 encoding is faster fused
    if TRAINING or x.dtype == dtypes.float32: taps = taps.contiguous()
    if TRAINING: taps = taps.contiguous_backward()
    return self.gemm(taps)

  def gemm(self, taps: Tensor) -> Tensor:
    """(..., k*C_in) shifted views side by side -> (..., C_out); also the incremental decoder's one-position conv."""
    c_out, c_in = self.weight.shape[0], self.weight.shape[1]
    w = self.weight.cast(taps.dtype)
    # the weight laid out for the GEMM first, not read through a strided permute; one-token steps skip the copy
    if str(w.device).split(":")[0] == "CPU" and math.prod(taps.shape[:-1]) >= 16:
      w = w.permute(0, 2, 1).reshape(c_out, self.k * c_in).contiguous().T  # rows (C_out, k*C_in), as Linear's
    else:
      w = w.permute(2, 1, 0).reshape(self.k * c_in, c_out)                   # (k*C_in, C_out), the GEMM's order
      if TRAINING: w = w.contiguous()
    return matmul2d(taps, w) + self.bias.cast(taps.dtype)

  def last(self, win: Tensor) -> Tensor:
    """The causal conv's output at the last position of `win` (B, span + 1, C_in) -> (B, 1, C_out): one step of
    incremental decoding or streaming."""
    assert self.causal, "incremental decoding needs causal convolutions"
    taps = Tensor.cat(*[win[:, j * self.dilation: j * self.dilation + 1] for j in range(self.k)], dim=-1)  # (B,1,k*C)
    return self.gemm(taps)


class CondNorm:
  """LayerNorm (per token) or masked GroupNorm, with a per-mode scale and shift (conditional norm / FiLM).

  The mode (0 = tokens, 1 = teacher vector) lets one network serve both input modes; extra FiLM (gamma, beta) from a
  vector z can be added by the caller."""

  def __init__(self, dim: int, kind: str = "layer", n_modes: int = 2, groups: int = 8, eps: float = 1e-5):
    self.kind, self.groups, self.eps = kind, groups, eps
    self.weight, self.bias = Tensor.ones(n_modes, dim), Tensor.zeros(n_modes, dim)

  def __call__(self, x: Tensor, mask: Tensor, mode: Tensor) -> Tensor:  # x (B, L, C) mask (B, L) mode (B,) int
    xf = x.float()
    if self.kind == "layer":
      y = xf.layernorm(axis=-1, eps=self.eps)
    else:  # masked GroupNorm: statistics over valid tokens only, so padding never changes the result
      B, L, C = xf.shape
      g = xf.reshape(B, L, self.groups, C // self.groups)
      m = mask.reshape(B, L, 1, 1)
      n = (m.sum(axis=(1, 3), keepdim=True) * (C // self.groups)).maximum(1)
      mu = (g * m).sum(axis=(1, 3), keepdim=True) / n
      var = (((g - mu) * m) ** 2).sum(axis=(1, 3), keepdim=True) / n
      y = ((g - mu) * (var + self.eps).rsqrt()).reshape(B, L, C)
    w, b = self.weight[mode].unsqueeze(1), self.bias[mode].unsqueeze(1)           # (B, 1, C)
    return (y * w + b).cast(x.dtype)


def dropout(x: Tensor, p: float) -> Tensor:
  """Tensor.dropout (training only), its output materialised so the next GEMM reads a plain buffer."""
  if not TRAINING or p == 0: return x
  return x.dropout(p).contiguous()


class TCNBlock:
  """x + Conv1x1(Dropout(GELU(Norm(DilatedConv(x))))) with optional FiLM (gamma, beta) after the norm."""

  def __init__(self, d: int, h: int, k: int, dilation: int, causal: bool, norm: str, dropout: float):
    self.conv = DilatedConv(d, h, k, dilation, causal)
    self.norm = CondNorm(h, norm)
    self.out = Linear(h, d)
    self.dropout = dropout

  def __call__(self, x: Tensor, mask: Tensor, mode: Tensor, film: tuple[Tensor, Tensor] | None = None,
               shift: Tensor | None = None) -> Tensor:
    """shift (B, h): added to the conv's output at every position, before the norm (Encoder's block_context)."""
    m = mask.unsqueeze(-1).cast(x.dtype)                                           # (B, L, 1)
    conv_out = self.conv(x * m)                                                    # (B, L, h)
    if shift is not None: conv_out = conv_out + shift.unsqueeze(1)
    out = self.residual(x, conv_out, mask, mode, film)                             # (B, L, d)
    return out.contiguous_backward().contiguous()  # materialised both ways: no kernel recomputes a whole block

  def residual(self, x: Tensor, conv_out: Tensor, mask: Tensor, mode: Tensor,
               film: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x + the block's branch after its conv; the incremental decoder (decoder.Decoder.step) shares it."""
    y = self.norm(conv_out, mask, mode)                                            # (B, L, h)
    if film is not None: y = y * (1 + film[0].unsqueeze(1)) + film[1].unsqueeze(1)
    return x + self.out(dropout(ops.gelu(y), self.dropout))                   # (B, L, d)


# ----------------------------------------------------------------------------------------------------------------------
# encoder: tokens -> z in the teacher's space

class Encoder:
  def __init__(self, cfg: Config):
    self.cfg = cfg
    causal = cfg.padding == "causal"
    self.embed = TokenEmbedding(cfg.vocab_size, cfg.d_model)
    self.blocks = [TCNBlock(cfg.d_model, cfg.hidden, cfg.kernel_size, dl, causal, cfg.norm, cfg.dropout)
                   for dl in cfg.dilation_schedule]
    self.norm = CondNorm(cfg.d_model, "layer")
    self.gate = Linear(cfg.d_model, 1) if cfg.pool == "gated" else None
    self.proj = Linear(cfg.d_model, cfg.proj_dim)
    # both extras start as zero paths, so the teacher initialisation (student_init.py) still holds at step 0
    # the context enters before each block's norm, which bounds it (scaling after the norm, FiLM-style, collapsed)
    self.ctx_in = [zero_linear(cfg.d_model, cfg.hidden) for _ in self.blocks] if cfg.block_context else None
    if cfg.pool_head:
      self.head_up = Linear(cfg.d_model, 2 * cfg.pool_head)                       # values and their gate logits
      self.head_down = zero_linear(cfg.pool_head, cfg.proj_dim)
    self.act_dtype = dtypes.float32

  @property
  def receptive_field(self) -> int:
    return 1 + sum((self.cfg.kernel_size - 1) * d for d in self.cfg.dilation_schedule)

  def features(self, tokens: Tensor, mask: Tensor, mode: Tensor | None = None) -> Tensor:
    """Per-token features (B, L, d) after the TCN stack and final norm."""
    return self.features_of(self.embed(tokens), mask, mode)

  def features_of(self, x: Tensor, mask: Tensor, mode: Tensor | None = None) -> Tensor:
    """`features` from the token vectors (B, L, d) instead of ids: the cycle loss feeds soft tokens this way."""
    if mode is None: mode = Tensor.zeros(x.shape[0], dtype=dtypes.int32, device=x.device)
    x = x.cast(self.act_dtype)                                                     # (B, L, d)
    for i, blk in enumerate(self.blocks):
      # block_context: the sentence's mean input, seen by every position of the block
      shift = None if self.ctx_in is None else self.ctx_in[i](masked_mean(x, mask).cast(x.dtype))  # (B, h)
      x = blk(x, mask, mode, shift=shift)
    return self.norm(x, mask, mode)

  def pool(self, x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) -> (B, d); weights are normalised over valid tokens only, so padding never changes the result."""
    xf, m = x.float(), mask.float()
    if self.gate is None:
      w = m
    else:  # a sigmoid gate per token: a soft choice of which tokens matter, with no interaction between tokens
      w = self.gate(x).float().squeeze(-1).sigmoid() * m + 1e-6 * m                # (B, L)
    return weighted_mean(xf, w.unsqueeze(-1))

  def head_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
    """The pool head's per-token values and gates (B, L, P) each, float32; gates > 0 so every sum is positive."""
    u = self.head_up(x).float()                                                    # (B, L, 2P)
    P = self.cfg.pool_head
    return u[..., :P].gelu(), u[..., P:].sigmoid() + 1e-6

  def head(self, x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) -> (B, D): each of P features pooled with its own weights over valid tokens, like P one-feature
    attention heads whose scores come from the token alone (no query, no token-to-token weights)."""
    v, g = self.head_terms(x)
    g = g * mask.float().unsqueeze(-1)                                             # (B, L, P)
    return self.head_down(weighted_mean(v, g).cast(self.act_dtype)).float()       # (B, P) pooled -> (B, D)

  def z(self, x: Tensor, mask: Tensor) -> Tensor:
    """Per-token features (B, L, d) -> the sentence vector z (B, D)."""
    z = self.proj(self.pool(x, mask).cast(self.act_dtype)).float()                 # (B, D)
    return z + self.head(x, mask) if self.cfg.pool_head else z

  def __call__(self, tokens: Tensor, mask: Tensor) -> Tensor:  # tokens (B, L) int, mask (B, L) float -> z (B, D)
    return self.z(self.features(tokens, mask), mask)


# ----------------------------------------------------------------------------------------------------------------------
# decoder: z -> text, a causal TCN FiLM-conditioned on z (mode A: the student's z, B: a teacher vector)

class Decoder:
  """embed(prev tokens) + Linear(z) -> causal TCN blocks, each FiLM(z) after its norm -> CondNorm -> logits (B, L, V).

  The decoder's norms are LayerNorm (per token) whatever `cfg.norm` says for the encoder: masked GroupNorm takes its
  statistics over the whole sequence, so under teacher forcing every position would see the future through them.
  `norm="group"` is accepted for experiments, but then the model is not causal and `step` refuses it."""

  def __init__(self, cfg: Config, tie_output: bool | None = None, norm: str = "layer"):
    self.cfg = cfg
    if tie_output is None: tie_output = cfg.dec_output == "tied"
    d, h, D = cfg.d_model, cfg.hidden, cfg.proj_dim
    self.embed = TokenEmbedding(cfg.vocab_size, d)
    self.z_in = Linear(D, d)                                                       # z as a bias on every input token
    self.blocks = [TCNBlock(d, h, cfg.kernel_size, dl, True, norm, cfg.dropout) for dl in cfg.dec_dilation_schedule]
    # zero FiLM at init: every block starts as the unconditioned block, and z enters through z_in only
    self.films = [zero_linear(D, 2 * h) for _ in cfg.dec_dilation_schedule]
    if cfg.dec_draft:  # z's per-position draft: a rank-r code per input position, brought up to d; the zero
      # up-projection starts it at nothing, so a checkpoint without a draft loads as the same function
      self.draft_in = Linear(D, cfg.max_len * cfg.dec_draft)
      self.draft_out = zero_linear(cfg.dec_draft, d)
    self.norm = CondNorm(d, "layer")
    self.tie_output = tie_output
    if tie_output:  # logits = x @ embedding^T + a free bias: V*d fewer parameters, the embedding gets both gradients
      self.head_bias = Tensor.zeros(cfg.vocab_size)
    else:
      self.head = Linear(d, cfg.vocab_size)
    self.act_dtype = dtypes.float32

  @property
  def receptive_field(self) -> int:
    return 1 + sum((self.cfg.kernel_size - 1) * dl for dl in self.cfg.dec_dilation_schedule)

  def condition(self, z: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """z (B, D) -> input bias (B, d) and one FiLM (gamma, beta) pair (B, h) each per block."""
    z = z.cast(self.act_dtype)
    d, h = self.cfg.d_model, self.cfg.hidden
    # one GEMM for z_in and every block's FiLM: as separate Linears, z's gradient was one slow kernel adding up seven
    # small products over seven reduction ranges
    # contiguous_backward: each piece's gradient (a sum over L) is its own kernel, and the whole output's gradient
    # one buffer gathered from them before the two GEMMs read it (else one kernel with thirteen reduction ranges)
    lins = [self.z_in, *self.films]
    w = Tensor.cat(*[lin.weight for lin in lins]).cast(z.dtype).contiguous()       # (d + n*2h, D)
    b = Tensor.cat(*[lin.bias for lin in lins]).cast(z.dtype)
    out = (matmul2d(z, w.T) + b).contiguous_backward()                            # (B, d + n*2h)
    piece = lambda a, n: out[:, a:a + n].contiguous_backward()  # noqa: E731
    films = [(piece(d + 2 * h * i, h), piece(d + 2 * h * i + h, h)) for i in range(len(self.films))]  # (B, h) each
    return piece(0, d), films

  def draft(self, z: Tensor, L: int) -> Tensor | None:
    """z (B, D) -> what z adds to the input at positions 0..L-1 beyond z_in (B, L, d), zero from max_len on; None
    when the decoder has no draft (dec_draft 0)."""
    if not self.cfg.dec_draft: return None
    B, M = z.shape[0], self.cfg.max_len
    codes = self.draft_in(z.cast(self.act_dtype)).reshape(B, M, self.cfg.dec_draft)  # (B, M, r)
    out = self.draft_out(codes)                                                    # (B, M, d)
    return out[:, :L] if L <= M else out.pad(((0, 0), (0, L - M), (0, 0)))

  def head_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
    """(..., d) -> the output head's product (..., V) in x's dtype, without its bias, and the bias (V,)."""
    if self.tie_output: return matmul2d(x, self.embed.weight.cast(x.dtype).T), self.head_bias
    return matmul2d(x, self.head.weight.cast(x.dtype).T), self.head.bias

  def logits(self, x: Tensor) -> Tensor:  # (..., d) -> (..., V) float32
    raw, bias = self.head_parts(x)
    return (raw + bias.cast(x.dtype)).float()

  def __call__(self, tokens: Tensor, z: Tensor, mode: Tensor | None = None) -> Tensor:
    """tokens (B, L) int: the teacher-forcing input (BOS + target[:-1]); z (B, D); mode (B,) int -> logits (B, L, V)."""
    return self.logits(self.hidden(tokens, z, mode))

  def hidden(self, tokens: Tensor, z: Tensor, mode: Tensor | None = None) -> Tensor:
    """What the output head reads (B, L, d): __call__ without the head."""
    B, L = tokens.shape
    if mode is None: mode = Tensor.zeros(B, dtype=dtypes.int32, device=tokens.device)
    # causal convs: a position never sees later ones, so padding after EOS cannot reach a real target; an all-ones
    # mask keeps this forward identical to `step`, which has no notion of padding
    ones = Tensor.ones(B, L, device=tokens.device)
    zb, films = self.condition(z)
    x = self.embed(tokens).cast(self.act_dtype) + zb.unsqueeze(1)                 # (B, L, d)
    if (draft := self.draft(z, L)) is not None: x = x + draft
    for blk, film in zip(self.blocks, films): x = blk(x, ones, mode, film)
    return self.norm(x, ones, mode)                                                # (B, L, d)

  def new_state(self, batch_size: int):
    """The incremental decoding state of batch_size rows (studentz_runtime/generate.py: one JIT'd step per size)."""
    from studentz_runtime.generate import get_state
    return get_state(self, batch_size)

  def step(self, tok: Tensor, bufs: list[Tensor], zb: Tensor, films: list[tuple[Tensor, Tensor]],
           mode: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One new token per row from the cached block inputs: the math of __call__ at the last position.

    tok (B,) int; bufs[i] (B, span_i + 1, d) the last inputs of block i (zeros before the start, like the causal
    pad); zb, films from `condition` (zb plus this position's row of `draft`, where the decoder has one). Returns
    logits (B, V) and the updated buffers (oldest input dropped)."""
    B = tok.shape[0]
    ones = Tensor.ones(B, 1, device=tok.device)
    x = self.embed(tok.reshape(B, 1)).cast(self.act_dtype) + zb.unsqueeze(1)      # (B, 1, d)
    new_bufs = []
    for blk, buf, film in zip(self.blocks, bufs, films):
      win = buf[:, 1:].cat(x, dim=1)                                               # (B, span + 1, d)
      new_bufs.append(win)
      x = blk.residual(x, blk.conv.last(win), ones, mode, film)                    # (B, 1, d)
    return self.logits(self.norm(x, ones, mode))[:, 0], new_bufs                   # (B, V)


class ModeBProjection:
  """Teacher vector -> the decoder's z space. "mlp": t + Linear(GELU(Linear(t))), the second layer zero-initialised
  so it starts as the identity; "identity": t as is. The teacher vector is data: no gradient flows into it."""

  def __init__(self, cfg: Config):
    self.kind = cfg.mode_b_proj
    D = cfg.proj_dim
    if self.kind == "mlp": self.fc1, self.fc2 = Linear(D, D), zero_linear(D, D)
    self.act_dtype = dtypes.float32

  def __call__(self, t: Tensor) -> Tensor:  # (B, D) -> (B, D)
    t = t.detach().float()
    if self.kind == "identity": return t
    return t + self.fc2(self.fc1(t.cast(self.act_dtype)).gelu()).float()


# ----------------------------------------------------------------------------------------------------------------------
# losses (z_s student, z_t teacher; both (B, D))

# Each loss reduces per row first into a materialised (B,) vector: otherwise tinygrad fuses every term's full
# reduction into the one kernel that produces the scalar loss, which then runs with little parallelism.

def cosine_loss(zs: Tensor, zt: Tensor) -> Tensor:
  return 1 - _cos(zs, zt).contiguous().mean()


def _cos(a: Tensor, b: Tensor) -> Tensor:
  return (a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1) + 1e-12).sqrt()


def mse_loss(zs: Tensor, zt: Tensor) -> Tensor:
  """Mean squared error per coordinate, scaled by D so it is the squared distance: independent of the dimension."""
  return ((zs - zt) ** 2).sum(-1).contiguous().mean()


def _unit(x: Tensor) -> Tensor: return x / ((x * x).sum(-1, keepdim=True) + 1e-12).sqrt()


def info_nce(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
  """Symmetric in-batch InfoNCE: each student vector must pick its own teacher vector among the batch's."""
  a, b = _unit(zs), _unit(zt)
  logits = (a.matmul(b.T) / temperature).contiguous()                              # (B, B)
  labels = Tensor.arange(zs.shape[0]).to(zs.device)
  rows = logits.sparse_categorical_crossentropy(labels, reduction="none").contiguous()     # (B,)
  cols = logits.T.sparse_categorical_crossentropy(labels, reduction="none").contiguous()   # (B,)
  return (rows.mean() + cols.mean()) / 2


def similarity_kd(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
  """Relational distillation: each student vector's softmax over its in-batch neighbours (itself left out) must match
  the teacher's, the neighbour order that retrieval and similarity rankings read, which cos and mse do not weigh."""
  a, b = _unit(zs), _unit(zt)
  self_out = Tensor.eye(zs.shape[0]).to(zs.device) * 1e4                            # (B, B)
  log_s = (a.matmul(a.T) / temperature - self_out).log_softmax(-1)                 # (B, B)
  p_t = (b.matmul(b.T) / temperature - self_out).softmax(-1)                       # (B, B)
  return -(p_t * log_s).sum(-1).mean()


def token_loss(y: Tensor, target: Tensor, mask: Tensor) -> Tensor:
  """Squared distance between per-token predictions y (B, L, D) and the teacher's token targets
  (studentz_corpus/token_targets.py), averaged over the positions that have one (mask (B, L))."""
  m = mask.float()
  d = ((y.float() - target.float()) ** 2).sum(-1)                                  # (B, L)
  return (d * m).sum(-1).contiguous().sum() / m.sum().maximum(1)


def distill_losses(zs: Tensor, zt: Tensor, cfg: Config, extra: dict | None = None) -> dict[str, Tensor]:
  """The weighted objective; `extra` holds terms computed elsewhere (token_loss as "tok")."""
  w = cfg.loss_weights
  parts = {"cos": cosine_loss(zs, zt), "mse": mse_loss(zs, zt), **(extra or {})}
  if w.get("sem", 0) > 0: parts["sem"] = info_nce(zs, zt, cfg.temperature)
  if w.get("rel", 0) > 0: parts["rel"] = similarity_kd(zs.float(), zt.float(), cfg.temperature)
  parts["loss"] = sum(w.get(k, 0) * v for k, v in parts.items())
  return parts


def distill_loss_fn(models: dict, batch: dict[str, Tensor], tok_table: Tensor | None = None) -> dict[str, Tensor]:
  """The encoder's objective on a batch {tokens, mask, teacher}, plus the token targets either as tok_target (B, L, D)
  or as tok_index (B, L) rows of tok_table, the whole table held on the device (trainer.device_table)."""
  enc: Encoder = models["encoder"]
  if "tok_mask" not in batch: return distill_losses(enc(batch["tokens"], batch["mask"]), batch["teacher"], enc.cfg)
  x = enc.features(batch["tokens"], batch["mask"])                                 # (B, L, d)
  target = batch["tok_target"] if "tok_target" in batch else gather_rows(tok_table, batch["tok_index"])  # (B, L, D)
  # token targets: each token's own projection (the one z pools through) against the teacher's vector of that token
  tok = token_loss(enc.proj(x).float(), target, batch["tok_mask"])
  return distill_losses(enc.z(x, batch["mask"]), batch["teacher"], enc.cfg, {"tok": tok})



def teacher_forcing(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
  """tokens/mask (B, L) as the loader gives them (BOS ... EOS PAD) -> decoder input (= tokens: BOS + target[:-1]),
  targets (B, L) (tokens shifted left, PAD last) and their mask (B, L)."""
  targets = tokens[:, 1:].pad(((0, 0), (0, 1)), value=PAD)
  tmask = mask.float()[:, 1:].pad(((0, 0), (0, 1)))
  return tokens, targets, tmask


def token_ce(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
  """Per-token cross-entropy (B, L) with PyTorch's label smoothing: (1 - eps) * nll + eps * mean over V of -log p.
  With log p = x - logsumexp(x) that is lse - (1 - eps) x[target] - eps mean(x): the (B, L, V) log-probabilities are
  never formed (the joint step's reductions over its logits were its largest non-GEMM kernels). On CUDA
  both the loss and its gradient are one kernel each, a device's rows each (ops.token_ce)."""
  if ops.ce_usable(logits, targets): return ops.token_ce(logits, targets, label_smoothing)
  x = logits.float()                                                               # (B, L, V)
  lse = x.logsumexp(-1)                                                            # (B, L)
  onehot = targets.unsqueeze(-1) == Tensor.arange(logits.shape[-1]).to(logits.device)
  x_t = onehot.where(x, 0).sum(-1)                                                 # (B, L)
  if label_smoothing == 0: return lse - x_t
  return lse - (1 - label_smoothing) * x_t - label_smoothing * x.mean(-1)


def head_ce(dec: Decoder, x: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
  """token_ce of dec.logits(x) (B, L): on CUDA the head's bf16 product and its bias go into the kernel as they are,
  the float32 logits are never formed (writing them and casting their gradient back cost more than the loss)."""
  raw, bias = dec.head_parts(x)                                                    # (B, L, V), (V,)
  if ops.ce_usable(raw, targets): return ops.token_ce(raw, targets, label_smoothing, bias=bias)
  # the kernel's math: the bias added in float32 (Decoder.logits rounds the sum to x's dtype first; same in fp32)
  return token_ce(raw.float() + bias.float(), targets, label_smoothing)


def decoder_ce(logits: Tensor, targets: Tensor, mask: Tensor, label_smoothing: float = 0.0) -> Tensor:
  """Mean cross-entropy over real target positions (mask 1); pad positions contribute nothing."""
  m = mask.float()
  return (token_ce(logits, targets, label_smoothing) * m).sum() / m.sum().maximum(1)


def joint_loss_fn(models: dict, batch: dict[str, Tensor]) -> dict[str, Tensor]:
  """Distillation + loss_weights["ce"] * decoder CE, for trainer.Trainer.

  models: encoder, decoder, proj_b. batch: tokens (B, L), mask (B, L), teacher (B, D), mode_b (B,) float (1: the row's
  decoder is fed proj_b(teacher), 0: the student z, so its CE also trains the encoder)."""
  enc, dec, proj = models["encoder"], models["decoder"], models["proj_b"]
  cfg = enc.cfg
  tokens, mask, zt = batch["tokens"], batch["mask"], batch["teacher"]
  if "encoder" in cfg.freeze:  # a distilled encoder, kept as it is: eval mode (no dropout), no gradient
    with Context(TRAINING=0): zs = enc(tokens, mask).detach()                     # (B, D)
  else:
    zs = enc(tokens, mask)                                                         # (B, D)
  parts = distill_losses(zs, zt, cfg)
  if "encoder" in cfg.freeze: parts["loss"] = parts["loss"].detach() * 0  # figures still logged, nothing to learn
  mb = batch["mode_b"].float()                                                     # (B,)
  is_b = mb > 0.5
  cond = is_b.unsqueeze(-1).where(proj(zt), zs)                                    # (B, D)
  inp, targets, tmask = teacher_forcing(tokens, mask)
  feats = dec.hidden(inp, cond, is_b.cast(dtypes.int32))                           # (B, L, d)
  tok = head_ce(dec, feats, targets, dec.cfg.label_smoothing) * tmask              # (B, L)
  row_sum, row_n = tok.sum(-1), tmask.sum(-1)                                      # (B,)
  parts["ce"] = row_sum.sum() / row_n.sum().maximum(1)
  # per-mode means for logging; max(1) keeps a batch without rows of one mode at 0 instead of NaN
  parts["ce_a"] = (row_sum * (1 - mb)).sum() / (row_n * (1 - mb)).sum().maximum(1)
  parts["ce_b"] = (row_sum * mb).sum() / (row_n * mb).sum().maximum(1)
  parts["loss"] = parts["loss"] + cfg.loss_weights.get("ce", 0.0) * parts["ce"]
  if cfg.loss_weights.get("bow", 0) > 0:
    parts["bow"] = bow_loss(dec, cond, targets, tmask)
    parts["loss"] = parts["loss"] + cfg.loss_weights["bow"] * parts["bow"]
  if cfg.loss_weights.get("cycle", 0) > 0:  # the z each row was decoded from: z_t (mode B) or the frozen z_s (mode A)
    parts["cycle"] = cycle_loss(enc, dec, feats, tokens, mask, is_b.unsqueeze(-1).where(zt, zs.detach()))
    parts["loss"] = parts["loss"] + cfg.loss_weights["cycle"] * parts["cycle"]
  return parts


def bow_loss(dec: Decoder, z: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
  """Bag of words: the input bias z_in(z) that every position of the decoder gets, read by its output head as one
  distribution over the vocabulary, must give each target token (mask 1) of the row a high probability, wherever it
  stands: mean -log p(token). z (B, D), targets (B, L) ints -> scalar."""
  logp = dec.logits(dec.z_in(z.cast(dec.act_dtype))).log_softmax(-1)             # (B, V)
  picked = logp.gather(-1, targets)                                               # (B, L)
  return -(picked * mask).sum() / mask.sum().maximum(1)


def soft_tokens(enc: Encoder, dec: Decoder, feats: Tensor, tokens: Tensor) -> Tensor:
  """The decode as the encoder's input vectors (B, L, d): BOS's embedding, then at each later position the decoder's
  softmax (teacher-forced, from `feats`) times the encoder's embedding table: differentiable, unlike sampled ids."""
  probs = dec.logits(feats[:, :-1]).softmax(-1)                                    # (B, L-1, V)
  table = enc.embed.weight.detach().float()                                        # (V, d): frozen
  bos = enc.embed(tokens[:, :1]).detach().float()                                  # (B, 1, d)
  return bos.cat(probs.matmul(table), dim=1)                                       # (B, L, d)


def cycle_loss(enc: Encoder, dec: Decoder, feats: Tensor, tokens: Tensor, mask: Tensor, z: Tensor) -> Tensor:
  """Cycle consistency z -> x_hat -> encoder(x_hat) ~ z: mean 1 - cos over rows. x_hat is `soft_tokens` at the
  positions of the input (mask); the encoder runs in eval mode, and only the decoder is trained by this term."""
  with Context(TRAINING=0): zc = enc.z(enc.features_of(soft_tokens(enc, dec, feats, tokens), mask), mask)  # (B, D)
  zc, z = zc.float(), z.detach().float()
  cos = (zc * z).sum(-1) / (zc.square().sum(-1).sqrt() * z.square().sum(-1).sqrt() + 1e-8)
  return (1 - cos).mean()


# ----------------------------------------------------------------------------------------------------------------------
# optimiser: AdamW on tinygrad's Optimizer base, with the LR schedule, clipping and overflow skip inside the graph

def lr_at(step: Tensor, cfg: Config, total: Tensor) -> Tensor:
  """Linear warmup then cosine decay, computed on device from a step counter so the JIT sees no Python scalars; the
  schedule's length `total` is a (1,) float tensor too (Trainer.total_t: train.py --minutes re-plans it in a run)."""
  base, warm = float(cfg.optimizer["lr"]), max(cfg.warmup_steps, 1)
  s = step.float() + 1
  warm_lr = base * s / warm
  prog = ((s - warm) / (total.reshape(()) - warm).maximum(1)).clip(0, 1)
  cos_lr = base * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + (prog * math.pi).cos()))
  return (s < warm).where(warm_lr, cos_lr)


def decays(name: str, t: Tensor) -> bool:
  """Weight decay on matrices only: biases, norm scales/shifts and gates are left alone."""
  return len(t.shape) >= 2 and ".norm" not in name and not name.startswith("norm") and "film" not in name


class AdamW(Optimizer):
  """Decoupled AdamW (Loshchilov & Hutter). A step whose gradients are not finite leaves params and moments as they
  were, so mixed precision can skip it and back off the loss scale; the caller passes `ok` (a 0/1 tensor)."""

  def __init__(self, named: dict[str, Tensor], lr: float, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01):
    super().__init__(list(named.values()), lr, fused=False)
    self.names = list(named)
    self.b1, self.b2, self.eps, self.wd = b1, b2, eps, weight_decay
    self.decay = [decays(n, t) for n, t in named.items()]
    self.m = [Tensor.zeros(*t.shape, dtype=dtypes.float32, device=t.device).contiguous() for t in self.params]
    self.v = [Tensor.zeros(*t.shape, dtype=dtypes.float32, device=t.device).contiguous() for t in self.params]
    self.t = Tensor.zeros(1, dtype=dtypes.float32, device=self.device).contiguous()

  def update(self, grads: list[Tensor], lr: Tensor, ok: Tensor) -> list[Tensor]:
    """Schedule one update with these gradients; returns the tensors to realize."""
    t_new = self.t + ok
    self.t.assign(t_new)
    keep = ok > 0.5
    bc1, bc2 = 1 - self.b1 ** t_new.maximum(1), 1 - self.b2 ** t_new.maximum(1)
    for i, (p, g) in enumerate(zip(self.params, grads)):
      g = g.float()
      m_new = self.b1 * self.m[i] + (1 - self.b1) * g
      v_new = self.b2 * self.v[i] + (1 - self.b2) * g * g
      step = (m_new / bc1) / ((v_new / bc2).sqrt() + self.eps)
      if self.decay[i]: step = step + self.wd * p.detach()
      p_new = p.detach() - lr * step
      self.m[i].assign(keep.where(m_new, self.m[i]))
      self.v[i].assign(keep.where(v_new, self.v[i]))
      p.assign(keep.where(p_new, p.detach()).cast(p.dtype))
    return [self.t, *self.m, *self.v, *self.params]

  def state(self) -> dict[str, Tensor]:
    return {"t": self.t, **{f"m.{n}": m for n, m in zip(self.names, self.m)},
            **{f"v.{n}": v for n, v in zip(self.names, self.v)}}


# ----------------------------------------------------------------------------------------------------------------------
# loading a checkpoint, and the API

def load_models(ckpt: Path, decoder: bool = True, int8: bool = False):
  """(models dict, info, tokenizer) from a checkpoint folder: encoder always, decoder and proj_b when trained (and
  `decoder` is true). An int8 checkpoint (studentz_runtime/quantize.py) is dequantised; int8: a float one goes
  through int8 first."""
  from studentz_runtime import quantize
  from studentz_corpus.tokenizer import StudentTokenizer
  info = read_checkpoint_info(ckpt)
  cfg = Config.from_dict(info["config"])
  arrays = quantize.load_float32(Path(ckpt) / "model.safetensors", int8=int8)
  models = {"encoder": Encoder(cfg)}
  if decoder and any(k.startswith("decoder.") for k in arrays):
    models["decoder"], models["proj_b"] = Decoder(cfg), ModeBProjection(cfg)
  for name, m in models.items():
    if name == "proj_b" and not any(k.startswith("proj_b.") for k in arrays): continue  # identity: no weights
    assign_state(m, arrays, prefix=f"{name}.")
  return models, info, StudentTokenizer.load(Path(ckpt) / "tokenizer.json")


class StudentZ(api.StudentZ):
  __doc__ = api.StudentZ.__doc__
  # the tinygrad engine's models are this file's classes; studentz_runtime never imports the model (no import cycle)
  tinygrad_loader = staticmethod(load_models)
