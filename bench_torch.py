"""PyTorch twin of the StudentZ encoder and its training step: the baseline the benchmarks compare against.

Benchmark-only (torch is an optional dependency, never imported by the tool itself). It loads the very same weights
as the tinygrad model, and `bench.py` checks both compute the same loss before timing anything.
"""
from __future__ import annotations
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchBlock(nn.Module):
  def __init__(self, d, h, k, dilation, causal, dropout):
    super().__init__()
    self.k, self.dilation, self.causal, self.p = k, dilation, causal, dropout
    self.conv = nn.Conv1d(d, h, k, dilation=dilation)
    self.norm_w, self.norm_b = nn.Parameter(torch.ones(2, h)), nn.Parameter(torch.zeros(2, h))
    self.out = nn.Linear(h, d)

  def forward(self, x, mask, mode):  # x (B, L, d)
    span = (self.k - 1) * self.dilation
    left = span if self.causal else span // 2
    y = F.pad((x * mask.unsqueeze(-1)).transpose(1, 2), (left, span - left))     # (B, d, L + span)
    y = self.conv(y).transpose(1, 2)                                              # (B, L, h)
    y = F.layer_norm(y.float(), y.shape[-1:], eps=1e-5).to(y.dtype)
    y = y * self.norm_w[mode].unsqueeze(1) + self.norm_b[mode].unsqueeze(1)
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

  def forward(self, tokens, mask):
    mode = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    x = self.embed(tokens)
    for b in self.blocks: x = b(x, mask, mode)
    x = F.layer_norm(x.float(), x.shape[-1:], eps=1e-5).to(x.dtype)
    x = x * self.norm_w[mode].unsqueeze(1) + self.norm_b[mode].unsqueeze(1)
    m = mask.float()
    w = m if self.gate is None else torch.sigmoid(self.gate(x).float().squeeze(-1)) * m + 1e-6 * m
    pooled = (x.float() * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)
    return self.proj(pooled.to(x.dtype)).float()

  def load_from_tinygrad(self, sd: dict[str, np.ndarray]) -> None:
    """Copy a tinygrad encoder's state dict (names differ only for the conditional norms)."""
    own = {}
    for k, v in sd.items():
      k = k.replace("norm.weight", "norm_w").replace("norm.bias", "norm_b").replace("conv.weight", "conv.weight")
      own[k] = torch.from_numpy(np.ascontiguousarray(v))
    missing, unexpected = self.load_state_dict(own, strict=False)
    if missing or unexpected: raise ValueError(f"weight mismatch: missing {missing} unexpected {unexpected}")


def distill_loss(zs, zt, cfg):
  cos = F.cosine_similarity(zs, zt, dim=-1, eps=1e-6)
  parts = {"cos": 1 - cos.mean(), "mse": ((zs - zt) ** 2).sum(-1).mean()}
  w = cfg.loss_weights
  if w.get("sem", 0) > 0:
    a, b = F.normalize(zs, dim=-1), F.normalize(zt, dim=-1)
    logits = a @ b.T / cfg.temperature
    labels = torch.arange(zs.shape[0], device=zs.device)
    parts["sem"] = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
  parts["loss"] = sum(w.get(k, 0) * v for k, v in parts.items())
  return parts


def make_optimizer(model, cfg):
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
  rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
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
  tokens, mask, teacher = batch
  with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
    parts = distill_loss(model(tokens, mask), teacher, cfg)
  opt.zero_grad(set_to_none=True)
  parts["loss"].backward()
  if cfg.clip_norm > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
  opt.step()
  sched.step()
  return parts["loss"]
