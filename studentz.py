"""StudentZ: an attention-free student encoder (dilated TCN) distilled into a teacher's sentence-embedding space.

Read top to bottom: building blocks -> encoder -> losses -> optimiser. The config is config.py, the JIT'd train step
trainer.py, checkpoint I/O checkpoint.py.
Shapes: B batch, L tokens, d residual channels, h block channels, D teacher dimension.
"""
from __future__ import annotations
import math, os

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import cpu_gemm, cpu_gelu, cuda_gemm, cuda_ops
import numpy as np
from config import SIZE_LIMITS, Config  # noqa: F401  (its own module so numpy_infer reads it without tinygrad)
from plot_png import as_grid, display_grid  # noqa: F401  (display helpers, kept importable as studentz.*)
from embedding import TokenEmbedding, gather_rows
from tinygrad import Tensor, dtypes
from tinygrad.helpers import TRAINING
from tinygrad.nn.optim import Optimizer

# Block outputs are materialised in the forward (contiguous) and their gradients in the backward
# (contiguous_backward), so no kernel recomputes a whole block: 130 -> 116 ms (fp32), 111 -> 92 ms (bf16) per step on
# an H100 at B=64, L=128. STUDENTZ_CONTIG_ACT=0/1 keeps the other variants for benchmarks.
CONTIG_ACT = int(os.environ.get("STUDENTZ_CONTIG_ACT", "2"))
# GEMMs run on (B*L, C) views: a weight gradient then reduces over one axis, which tinygrad's tensor-core matcher
# needs (with (B, L, C) it reduces over two and falls back to scalar FMA). STUDENTZ_GEMM2D=0 keeps the 3-D form.
GEMM2D = int(os.environ.get("STUDENTZ_GEMM2D", "1"))
# Materialise the k shifted views (im2col) before the conv GEMM, so the GEMM reads two plain buffers. Measured on an
# H100 (README): training 52.6 -> 44.4 ms bf16, 118 -> 88 ms fp32; fp32 encoding 1,303 -> 2,939 sentences/s; but bf16
# encoding 6,206 -> 5,255. 1 (default): in training and in fp32; 2: always; 0: never.
TAPS_CONTIG = int(os.environ.get("STUDENTZ_TAPS_CONTIG", "1"))
# Materialise the gradient of the taps in training, so the input-gradient GEMM is a plain GEMM and the sum over the
# shifted taps a separate elementwise kernel: measured on an H100 (bf16, B=512, L=64) 73.3 -> 69.3 ms per step.
TAPS_GRAD_CONTIG = int(os.environ.get("STUDENTZ_TAPS_GRAD_CONTIG", "1"))
# Give the conv GEMM its weight already cast and in (k*C_in, C_out) order: read through the permute of PyTorch's
# (C_out, C_in, k) layout, every load of the GEMM's second operand strides by k. Measured on an H100 (bf16 step,
# B=512, L=64): 68.9 -> 50.1 ms per step (results/h100_train_step_sweep.json). The CPU prefers the layout of Linear's
# weight, (C_out, k*C_in) rows read transposed: encoding 33.8 -> 67.2 sentences/s at L=32, 8.6 -> 17.0 at L=128 (2
# cores; the (k*C_in, C_out) copy made it slower, 21), training 3.47 -> 2.89 s per step (B=16, L=32, vocab 4000).
# The copy costs as much as a GEMM of one row, so one-token steps (streaming, batch-1 decoding) skip it: 26.1 -> 18.2
# ms per streamed token. GPU encoding keeps the permuted view it was measured with.
W_CONTIG = int(os.environ.get("STUDENTZ_W_CONTIG", "1"))
# Materialise the dropped activation in training, so the 1x1 conv's GEMM (and its weight gradient) reads a plain
# buffer instead of recomputing GELU and the mask inside its loads. H100, bf16, B=512, L=64, dropout 0.1: 69.3 ms fused
# -> 46.7 materialised with heuristic GEMM schedules (42.4 without dropout), 64.3 -> 36.8 with searched ones
# (results/h100_dropout_step.json, h100_profile_*.txt); CPU step 2.83 -> 1.70 s. 0 keeps the fused form.
DROPOUT_CONTIG = int(os.environ.get("STUDENTZ_DROPOUT_CONTIG", "1"))


def matmul2d(x: Tensor, w: Tensor) -> Tensor:
  """(..., C_in) @ (C_in, C_out) with the leading axes flattened into one (see GEMM2D), on our own GEMM kernels where
  they apply (cuda_gemm: bf16/fp16 tensor cores on CUDA; cpu_gemm: float32 on the CPU), else tinygrad's matmul."""
  if not GEMM2D: return x.matmul(w)
  x2 = x.reshape(-1, x.shape[-1])
  y = cuda_gemm.matmul(x2, w) if cuda_gemm.usable(x2, w) else cpu_gemm.matmul(x2, w)
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
  tinygrad's ops (cuda_ops.taps is the CUDA kernel of the same)."""
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
    # k shifted views side by side, then one GEMM. (Measured on an H100: one GEMM to (B, L, k*C_out) followed by a
    # shifted sum of its slices was 15-20% slower in tinygrad 0.14.)
    left = self.span if self.causal else self.span // 2
    if cuda_ops.taps_usable(x): return self.gemm(cuda_ops.taps(x, self.k, self.dilation, left))  # (B, L, k*C) on CUDA
    taps = shifted_views(x, self.k, self.dilation, left)                            # (B, L, k*C_in)
    if TAPS_CONTIG == 2 or (TAPS_CONTIG == 1 and (TRAINING or x.dtype == dtypes.float32)): taps = taps.contiguous()
    if TAPS_GRAD_CONTIG and TRAINING: taps = taps.contiguous_backward()
    return self.gemm(taps)

  def gemm(self, taps: Tensor) -> Tensor:
    """(..., k*C_in) shifted views side by side -> (..., C_out); also the incremental decoder's one-position conv."""
    c_out, c_in = self.weight.shape[0], self.weight.shape[1]
    w = self.weight.cast(taps.dtype)
    if W_CONTIG and str(w.device).split(":")[0] == "CPU" and math.prod(taps.shape[:-1]) >= 16:
      w = w.permute(0, 2, 1).reshape(c_out, self.k * c_in).contiguous().T  # rows (C_out, k*C_in), as Linear's
    else:
      w = w.permute(2, 1, 0).reshape(self.k * c_in, c_out)                   # (k*C_in, C_out), the GEMM's order
      if W_CONTIG and TRAINING: w = w.contiguous()
    return matmul2d(taps, w) + self.bias.cast(taps.dtype)


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
  """Tensor.dropout (training only), its output materialised (DROPOUT_CONTIG)."""
  if not TRAINING or p == 0: return x
  return x.dropout(p).contiguous() if DROPOUT_CONTIG else x.dropout(p)


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
    if CONTIG_ACT >= 2: out = out.contiguous_backward()
    return out.contiguous() if CONTIG_ACT else out

  def residual(self, x: Tensor, conv_out: Tensor, mask: Tensor, mode: Tensor,
               film: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x + the block's branch after its conv; the incremental decoder (decoder.Decoder.step) shares it."""
    y = self.norm(conv_out, mask, mode)                                            # (B, L, h)
    if film is not None: y = y * (1 + film[0].unsqueeze(1)) + film[1].unsqueeze(1)
    return x + self.out(dropout(cpu_gelu.gelu(y), self.dropout))                   # (B, L, d)


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
    # the context enters before each block's norm, which bounds it; a first version scaled the normed activations
    # by (1 + gamma) after it, as the decoder's FiLM does, and a run with it and the pool head collapsed on an H200
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
# losses (z_s student, z_t teacher; both (B, D))

# Each loss reduces per row first into a materialised (B,) vector: otherwise tinygrad fuses every term's full
# reduction into the one kernel that produces the scalar loss, which then runs with little parallelism (profiled on an
# H100 at B=512: 5.7 ms of a 69 ms step; results/h100_profile_bf16_step_b512.txt, r_8_16_32_512_384_512_512).

def cosine_loss(zs: Tensor, zt: Tensor) -> Tensor:
  return 1 - _cos(zs, zt).contiguous().mean()


def _cos(a: Tensor, b: Tensor) -> Tensor:
  return (a * b).sum(-1) / ((a * a).sum(-1) * (b * b).sum(-1) + 1e-12).sqrt()


def mse_loss(zs: Tensor, zt: Tensor) -> Tensor:
  """Mean squared error per coordinate, scaled by D so it is the squared distance: independent of the dimension."""
  return ((zs - zt) ** 2).sum(-1).contiguous().mean()


def info_nce(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
  """Symmetric in-batch InfoNCE: each student vector must pick its own teacher vector among the batch's."""
  a = zs / ((zs * zs).sum(-1, keepdim=True) + 1e-12).sqrt()
  b = zt / ((zt * zt).sum(-1, keepdim=True) + 1e-12).sqrt()
  logits = (a.matmul(b.T) / temperature).contiguous()                              # (B, B)
  labels = Tensor.arange(zs.shape[0]).to(zs.device)
  rows = logits.sparse_categorical_crossentropy(labels, reduction="none").contiguous()     # (B,)
  cols = logits.T.sparse_categorical_crossentropy(labels, reduction="none").contiguous()   # (B,)
  return (rows.mean() + cols.mean()) / 2


def token_loss(y: Tensor, target: Tensor, mask: Tensor) -> Tensor:
  """Squared distance between per-token predictions y (B, L, D) and the teacher's token targets (corpus_tokens.py),
  averaged over the positions that have one (mask (B, L))."""
  m = mask.float()
  d = ((y.float() - target.float()) ** 2).sum(-1)                                  # (B, L)
  return (d * m).sum(-1).contiguous().sum() / m.sum().maximum(1)


def distill_losses(zs: Tensor, zt: Tensor, cfg: Config, extra: dict | None = None) -> dict[str, Tensor]:
  """The weighted objective; `extra` holds terms computed elsewhere (token_loss as "tok")."""
  w = cfg.loss_weights
  parts = {"cos": cosine_loss(zs, zt), "mse": mse_loss(zs, zt), **(extra or {})}
  if w.get("sem", 0) > 0: parts["sem"] = info_nce(zs, zt, cfg.temperature)
  parts["loss"] = sum(w.get(k, 0) * v for k, v in parts.items())
  return parts


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


# checkpoint I/O lives in checkpoint.py; re-exported because callers know it as studentz.save_tensors etc.
from checkpoint import (FORMAT_VERSION, CheckpointError, assign_state, atomic_write_bytes,  # noqa: E402,F401
                        host, load_tensors, save_tensors)


def __getattr__(name):  # `studentz.StudentZ` / `.Trainer` without importing those modules (and their deps) eagerly
  if name == "StudentZ":
    from studentz_api import StudentZ
    return StudentZ
  if name in ("Trainer", "half_dtype"):
    import trainer
    return getattr(trainer, name)
  raise AttributeError(name)
