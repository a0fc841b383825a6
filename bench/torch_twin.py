"""PyTorch twin of the StudentZ encoder and its training step: the baseline the benchmarks compare against.

Benchmark-only (torch is an optional dependency, never imported by the tool itself). It loads the very same weights
as the tinygrad model, and `bench/` checks both compute the same loss before timing anything.
"""
from __future__ import annotations
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def cond_norm(x, w, b, mode):
  """Twin of studentz.CondNorm("layer"): LayerNorm in fp32, then the per-mode scale w[mode] and shift b[mode]."""
  x = F.layer_norm(x.float(), x.shape[-1:], eps=1e-5).to(x.dtype)
  return x * w[mode].unsqueeze(1) + b[mode].unsqueeze(1)


class TorchBlock(nn.Module):
  def __init__(self, d, h, k, dilation, causal, dropout):
    super().__init__()
    self.k, self.dilation, self.causal, self.p = k, dilation, causal, dropout
    self.conv = nn.Conv1d(d, h, k, dilation=dilation)
    self.norm_w, self.norm_b = nn.Parameter(torch.ones(2, h)), nn.Parameter(torch.zeros(2, h))
    self.out = nn.Linear(h, d)

  def forward(self, x, mask, mode, film=None, shift=None):  # x (B, L, d); film: (gamma, beta) (B, h) each; shift (B, h)
    span = (self.k - 1) * self.dilation
    left = span if self.causal else span // 2
    y = F.pad((x * mask.unsqueeze(-1)).transpose(1, 2), (left, span - left))     # (B, d, L + span)
    y = self.conv(y).transpose(1, 2)                                              # (B, L, h)
    if shift is not None: y = y + shift.unsqueeze(1)
    y = cond_norm(y, self.norm_w, self.norm_b, mode)
    if film is not None: y = y * (1 + film[0].unsqueeze(1)) + film[1].unsqueeze(1)
    y = F.dropout(F.gelu(y, approximate="tanh"), self.p, self.training)
    return x + self.out(y)


class TorchEncoder(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg
    causal = cfg.padding == "causal"
    self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
    self.blocks = nn.ModuleList([TorchBlock(cfg.d_model, cfg.hidden, cfg.kernel_size, dl, causal, cfg.dropout)
                                 for dl in cfg.dilation_schedule])
    self.norm_w, self.norm_b = nn.Parameter(torch.ones(2, cfg.d_model)), nn.Parameter(torch.zeros(2, cfg.d_model))
    self.gate = nn.Linear(cfg.d_model, 1) if cfg.pool == "gated" else None
    self.proj = nn.Linear(cfg.d_model, cfg.proj_dim)
    if cfg.block_context:
      self.ctx_in = nn.ModuleList([nn.Linear(cfg.d_model, cfg.hidden) for _ in cfg.dilation_schedule])
    if cfg.pool_head:
      self.head_up, self.head_down = nn.Linear(cfg.d_model, 2 * cfg.pool_head), nn.Linear(cfg.pool_head, cfg.proj_dim)

  def forward(self, tokens, mask, with_tokens=False):
    """z (B, D); with_tokens: (z, every token's own projection (B, L, D)) for the token targets' loss."""
    mode = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    x = self.embed(tokens)
    m = mask.float()
    mean = lambda t: (t.float() * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)  # noqa: E731
    for i, b in enumerate(self.blocks):
      x = b(x, mask, mode, shift=self.ctx_in[i](mean(x).to(x.dtype)) if self.cfg.block_context else None)
    x = cond_norm(x, self.norm_w, self.norm_b, mode)
    w = m if self.gate is None else torch.sigmoid(self.gate(x).float().squeeze(-1)) * m + 1e-6 * m
    pooled = (x.float() * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)
    z = self.proj(pooled.to(x.dtype)).float()
    if self.cfg.pool_head:
      v, g = self.head_up(x).float().chunk(2, dim=-1)
      v, g = F.gelu(v, approximate="tanh"), (torch.sigmoid(g) + 1e-6) * m.unsqueeze(-1)
      z = z + self.head_down(((v * g).sum(1) / g.sum(1).clamp_min(1e-6)).to(x.dtype)).float()
    return (z, self.proj(x).float()) if with_tokens else z

  def load_from_tinygrad(self, sd: dict[str, np.ndarray]) -> None:
    load_from_tinygrad(self, sd)


def twin_name(name: str) -> str:
  """A tinygrad weight's name in the twins (they differ only for the conditional norms)."""
  return name.replace("norm.weight", "norm_w").replace("norm.bias", "norm_b")


def load_from_tinygrad(module: nn.Module, sd: dict[str, np.ndarray]) -> None:
  """Copy a tinygrad state dict into a twin (see twin_name); every weight must match."""
  own = {twin_name(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  missing, unexpected = module.load_state_dict(own, strict=False)
  if missing or unexpected: raise ValueError(f"weight mismatch: missing {missing} unexpected {unexpected}")


class TorchDecoder(nn.Module):
  """Twin of decoder.Decoder: embed(prev tokens) + Linear(z) -> causal blocks with FiLM(z) after each norm -> logits."""

  def __init__(self, cfg):
    super().__init__()
    d, h, D = cfg.d_model, cfg.hidden, cfg.proj_dim
    self.h, self.tied = h, cfg.dec_output == "tied"
    self.embed = nn.Embedding(cfg.vocab_size, d)
    self.z_in = nn.Linear(D, d)
    self.blocks = nn.ModuleList([TorchBlock(d, h, cfg.kernel_size, dl, True, cfg.dropout)
                                 for dl in cfg.dec_dilation_schedule])
    self.films = nn.ModuleList([nn.Linear(D, 2 * h) for _ in cfg.dec_dilation_schedule])
    self.norm_w, self.norm_b = nn.Parameter(torch.ones(2, d)), nn.Parameter(torch.zeros(2, d))
    if self.tied: self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
    else: self.head = nn.Linear(d, cfg.vocab_size)

  def forward(self, tokens, z, mode):  # tokens (B, L), z (B, D), mode (B,) long -> logits (B, L, V) float32
    ones = torch.ones(tokens.shape, device=tokens.device)
    x = self.embed(tokens) + self.z_in(z).unsqueeze(1)
    for blk, film in zip(self.blocks, self.films):
      gb = film(z)
      x = blk(x, ones, mode, (gb[:, :self.h], gb[:, self.h:]))
    x = cond_norm(x, self.norm_w, self.norm_b, mode)
    if self.tied: return (x @ self.embed.weight.to(x.dtype).T + self.head_bias.to(x.dtype)).float()
    return self.head(x).float()


class TorchModeB(nn.Module):
  """Twin of decoder.ModeBProjection ("mlp"): t + Linear(GELU(Linear(t)))."""

  def __init__(self, cfg):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(cfg.proj_dim, cfg.proj_dim), nn.Linear(cfg.proj_dim, cfg.proj_dim)

  def forward(self, t):
    t = t.detach().float()
    return t + self.fc2(F.gelu(self.fc1(t), approximate="tanh")).float()


class TorchJoint(nn.Module):
  """Encoder + decoder + mode-B projection trained together (decoder.joint_loss_fn's objective)."""

  def __init__(self, cfg):
    super().__init__()
    if cfg.mode_b_proj != "mlp": raise ValueError("the twin implements mode_b_proj='mlp' only")
    self.cfg = cfg
    self.encoder, self.decoder, self.proj_b = TorchEncoder(cfg), TorchDecoder(cfg), TorchModeB(cfg)

  def forward(self, tokens, mask, teacher, mode_b):
    """-> the loss parts of decoder.joint_loss_fn (mode_b (B,) float: 1 decodes proj_b(teacher), 0 the student z)."""
    cfg = self.cfg
    zs = self.encoder(tokens, mask)
    parts = distill_loss(zs, teacher, cfg)
    is_b = mode_b > 0.5
    cond = torch.where(is_b.unsqueeze(-1), self.proj_b(teacher), zs)
    targets = F.pad(tokens[:, 1:], (0, 1), value=0)                                # PAD = 0 after the last token
    tmask = F.pad(mask.float()[:, 1:], (0, 1))
    logits = self.decoder(tokens, cond.to(zs.dtype), is_b.long())
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                          label_smoothing=cfg.label_smoothing).reshape(targets.shape) * tmask
    parts["ce"] = tok.sum() / tmask.sum().clamp_min(1)
    parts["loss"] = parts["loss"] + cfg.loss_weights.get("ce", 0.0) * parts["ce"]
    return parts


def token_loss(y, target, mask):
  m = mask.float()
  return (((y - target.float()) ** 2).sum(-1) * m).sum() / m.sum().clamp_min(1)


def distill_loss(zs, zt, cfg, extra=None):
  cos = F.cosine_similarity(zs, zt, dim=-1, eps=1e-6)
  parts = {"cos": 1 - cos.mean(), "mse": ((zs - zt) ** 2).sum(-1).mean(), **(extra or {})}
  w = cfg.loss_weights
  if w.get("sem", 0) > 0:
    a, b = F.normalize(zs, dim=-1), F.normalize(zt, dim=-1)
    logits = a @ b.T / cfg.temperature
    labels = torch.arange(zs.shape[0], device=zs.device)
    parts["sem"] = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
  parts["loss"] = sum(w.get(k, 0) * v for k, v in parts.items())
  return parts


def make_optimizer(model, cfg):
  from studentz import decays  # tinygrad's rule, read off the same names (the twin's norms are "...norm_w")
  decay = [p for n, p in model.named_parameters() if decays(n, p)]
  rest = [p for n, p in model.named_parameters() if not decays(n, p)]
  opt = cfg.optimizer
  o = torch.optim.AdamW([{"params": decay, "weight_decay": opt.get("weight_decay", 0.01)},
                         {"params": rest, "weight_decay": 0.0}], lr=float(opt["lr"]), betas=(0.9, 0.999), eps=1e-8)
  warm, total = max(cfg.warmup_steps, 1), max(cfg.steps, 1)

  def sched(step):
    s = step + 1
    if s < warm: return s / warm
    prog = min(max((s - warm) / max(total - warm, 1), 0), 1)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
  return o, torch.optim.lr_scheduler.LambdaLR(o, sched)


def train_step(model, opt, sched, batch, cfg, autocast_dtype=None):
  """One optimiser step; batch (tokens, mask, teacher) for the encoder, plus (tok_target, tok_mask) for the token
  targets or (tok_index, tok_mask, table) for their rows of a table on the device, or plus mode_b for TorchJoint."""
  with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
    if isinstance(model, TorchJoint): parts = model(*batch)
    elif len(batch) >= 5:
      z, y = model(batch[0], batch[1], with_tokens=True)
      target = batch[3] if len(batch) == 5 else batch[5][batch[3]]                # (B, L, D)
      parts = distill_loss(z, batch[2], cfg, {"tok": token_loss(y, target, batch[4])})
    else: parts = distill_loss(model(batch[0], batch[1]), batch[2], cfg)
  opt.zero_grad(set_to_none=True)
  parts["loss"].backward()
  if cfg.clip_norm > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
  opt.step()
  sched.step()
  return parts["loss"]
