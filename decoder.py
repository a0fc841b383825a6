"""StudentZ decoder: z -> tokens with an autoregressive causal TCN, FiLM-conditioned on z.

One decoder serves two input modes (the CondNorm `mode`): mode A (0) decodes the student encoder's z, mode B (1)
decodes a teacher vector after `ModeBProjection`. Training is teacher-forced: input BOS + target[:-1], target the
sentence without BOS. `step` is the same math for one new token from cached conv inputs (generate.py drives it).
Shapes: B batch, L tokens, d residual channels, h block channels, D z dimension, V vocabulary.
"""
from __future__ import annotations

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import cuda_ops
from embedding import TokenEmbedding
from student_tokenizer import PAD
from studentz import Config, CondNorm, DilatedConv, Linear, TCNBlock, distill_losses, matmul2d, zero_linear
from tinygrad import Tensor, dtypes
from tinygrad.helpers import Context


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
    # one GEMM for z_in and every block's FiLM: as separate Linears, z's gradient was one kernel adding up seven small
    # products over seven reduction ranges, at 0.47 TFLOP/s (5.4 ms of the joint step's ~120 ms of kernels, H200).
    # contiguous_backward: each piece's gradient (a sum over L) is its own kernel, and the whole output's gradient
    # one buffer gathered from them before the two GEMMs read it (else one kernel with thirteen reduction ranges)
    lins = [self.z_in, *self.films]
    w = Tensor.cat(*[lin.weight for lin in lins]).cast(z.dtype).contiguous()       # (d + n*2h, D)
    b = Tensor.cat(*[lin.bias for lin in lins]).cast(z.dtype)
    out = (matmul2d(z, w.T) + b).contiguous_backward()                            # (B, d + n*2h)
    piece = lambda a, n: out[:, a:a + n].contiguous_backward()  # noqa: E731
    films = [(piece(d + 2 * h * i, h), piece(d + 2 * h * i + h, h)) for i in range(len(self.films))]  # (B, h) each
    return piece(0, d), films

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
    for blk, film in zip(self.blocks, films): x = blk(x, ones, mode, film)
    return self.norm(x, ones, mode)                                                # (B, L, d)

  def step(self, tok: Tensor, bufs: list[Tensor], zb: Tensor, films: list[tuple[Tensor, Tensor]],
           mode: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One new token per row from the cached block inputs: the math of __call__ at the last position.

    tok (B,) int; bufs[i] (B, span_i + 1, d) the last inputs of block i (zeros before the start, like the causal
    pad); zb, films from `condition`. Returns logits (B, V) and the updated buffers (oldest input dropped)."""
    B = tok.shape[0]
    ones = Tensor.ones(B, 1, device=tok.device)
    x = self.embed(tok.reshape(B, 1)).cast(self.act_dtype) + zb.unsqueeze(1)      # (B, 1, d)
    new_bufs = []
    for blk, buf, film in zip(self.blocks, bufs, films):
      win = buf[:, 1:].cat(x, dim=1)                                               # (B, span + 1, d)
      new_bufs.append(win)
      x = blk.residual(x, conv_last(blk.conv, win), ones, mode, film)             # (B, 1, d)
    return self.logits(self.norm(x, ones, mode))[:, 0], new_bufs                   # (B, V)


def conv_last(conv: DilatedConv, win: Tensor) -> Tensor:
  """The causal DilatedConv's output at the last position of `win` (B, span + 1, C_in) -> (B, 1, C_out)."""
  assert conv.causal, "incremental decoding needs causal convolutions"
  taps = Tensor.cat(*[win[:, j * conv.dilation: j * conv.dilation + 1] for j in range(conv.k)], dim=-1)  # (B,1,k*C)
  return conv.gemm(taps)


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
# losses

def teacher_forcing(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
  """tokens/mask (B, L) as the loader gives them (BOS ... EOS PAD) -> decoder input (= tokens: BOS + target[:-1]),
  targets (B, L) (tokens shifted left, PAD last) and their mask (B, L)."""
  targets = tokens[:, 1:].pad(((0, 0), (0, 1)), value=PAD)
  tmask = mask.float()[:, 1:].pad(((0, 0), (0, 1)))
  return tokens, targets, tmask


def token_ce(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
  """Per-token cross-entropy (B, L) with PyTorch's label smoothing: (1 - eps) * nll + eps * mean over V of -log p.
  With log p = x - logsumexp(x) that is lse - (1 - eps) x[target] - eps mean(x): the (B, L, V) log-probabilities are
  never formed (on an H200 the joint step's reductions over its 524M logits were the largest non-GEMM kernels). On CUDA
  both the loss and its gradient are one kernel each, a device's rows each (cuda_ops.token_ce)."""
  if cuda_ops.ce_usable(logits, targets): return cuda_ops.token_ce(logits, targets, label_smoothing)
  x = logits.float()                                                               # (B, L, V)
  lse = x.logsumexp(-1)                                                            # (B, L)
  onehot = targets.unsqueeze(-1) == Tensor.arange(logits.shape[-1]).to(logits.device)
  x_t = onehot.where(x, 0).sum(-1)                                                 # (B, L)
  if label_smoothing == 0: return lse - x_t
  return lse - (1 - label_smoothing) * x_t - label_smoothing * x.mean(-1)


def head_ce(dec: Decoder, x: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
  """token_ce of dec.logits(x) (B, L): on CUDA the head's bf16 product and its bias go into the kernel as they are,
  the float32 logits are never formed (at B=512, L=64 on an H200, writing them and casting their gradient back were
  7.4 ms of a profiled first step's kernels; the JIT'd joint step went from 60.3 to 57.1 ms)."""
  raw, bias = dec.head_parts(x)                                                    # (B, L, V), (V,)
  if cuda_ops.ce_usable(raw, targets): return cuda_ops.token_ce(raw, targets, label_smoothing, bias=bias)
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
  if cfg.loss_weights.get("cycle", 0) > 0:  # the z each row was decoded from: z_t (mode B) or the frozen z_s (mode A)
    parts["cycle"] = cycle_loss(enc, dec, feats, tokens, mask, is_b.unsqueeze(-1).where(zt, zs.detach()))
    parts["loss"] = parts["loss"] + cfg.loss_weights["cycle"] * parts["cycle"]
  return parts


def soft_tokens(enc, dec: Decoder, feats: Tensor, tokens: Tensor) -> Tensor:
  """The decode as the encoder's input vectors (B, L, d): BOS's embedding, then at each later position the decoder's
  softmax (teacher-forced, from `feats`) times the encoder's embedding table: differentiable, unlike sampled ids."""
  probs = dec.logits(feats[:, :-1]).softmax(-1)                                    # (B, L-1, V)
  table = enc.embed.weight.detach().float()                                        # (V, d): frozen
  bos = enc.embed(tokens[:, :1]).detach().float()                                  # (B, 1, d)
  return bos.cat(probs.matmul(table), dim=1)                                       # (B, L, d)


def cycle_loss(enc, dec: Decoder, feats: Tensor, tokens: Tensor, mask: Tensor, z: Tensor) -> Tensor:
  """Cycle consistency z -> x_hat -> encoder(x_hat) ~ z: mean 1 - cos over rows. x_hat is `soft_tokens` at the
  positions of the input (mask); the encoder runs in eval mode, and only the decoder is trained by this term."""
  with Context(TRAINING=0): zc = enc.z(enc.features_of(soft_tokens(enc, dec, feats, tokens), mask), mask)  # (B, D)
  zc, z = zc.float(), z.detach().float()
  cos = (zc * z).sum(-1) / (zc.square().sum(-1).sqrt() * z.square().sum(-1).sqrt() + 1e-8)
  return (1 - cos).mean()
