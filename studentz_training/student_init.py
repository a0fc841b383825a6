"""Start a student from its teacher instead of from noise (`Config.embed_init = "teacher"`).

Three closed-form steps, in numpy, before the first gradient step:
1. token vectors: the teacher embeds each student token's text on its own (model2vec's trick), so even a token seen
   twice in the corpus starts with a meaning;
2. the embedding table takes their top-d principal components (centred, rows scaled to unit RMS), the residual
   branches start at zero (every block is the identity) and the pooling gate at 0.5 (a plain mean);
3. the output projection is a ridge regression from the pooled features of training sentences to their teacher
   vectors: exactly what a static (bag-of-token-vectors) model would fit.
The student's first forward is then that static model (val_cos ~0.6 for MiniLM instead of ~0), and training only has
to learn what context adds. Token vectors are cached next to the teacher vectors: computed once per teacher.
"""
from __future__ import annotations
import os
from pathlib import Path

import numpy as np

from studentz_corpus.tokenizer import UNK


def token_texts(tok) -> list[str]:
  """The text of every id (specials and pieces that decode to nothing give "")."""
  return [tok.decode([i]).strip() if i > UNK else "" for i in range(tok.vocab_size)]


def token_vectors(tok, teacher, cache: Path | None = None, batch_size: int = 256, progress: bool = False) -> np.ndarray:
  """(V, D) teacher vector of each token's text; zero rows for specials and empty pieces."""
  if cache is not None and cache.is_file():
    tv = np.load(cache)
    if tv.shape == (tok.vocab_size, teacher.dim): return tv
  texts = token_texts(tok)
  keep = [i for i, t in enumerate(texts) if t]
  tv = np.zeros((len(texts), teacher.dim), np.float32)
  if keep: tv[keep] = teacher.embed([texts[i] for i in keep], batch_size=batch_size, progress=progress)
  if cache is not None:
    # a per-process temporary: runs that share a data folder (one per GPU) may fill the cache at the same time
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, tv)
    tmp.replace(cache)
  return tv


def pca_table(tv: np.ndarray, d: int, seed: int = 0) -> np.ndarray:
  """(V, D) -> (V, d): centred top-d components, each row scaled to unit RMS (zero rows stay zero)."""
  used = np.abs(tv).sum(1) > 0
  mu = tv[used].mean(0) if used.any() else np.zeros(tv.shape[1], np.float32)
  x = np.where(used[:, None], tv - mu, 0).astype(np.float64)
  _, _, vt = np.linalg.svd(x[used], full_matrices=False)
  e = x @ vt[:d].T                                                                 # (V, min(d, D))
  if e.shape[1] < d:  # a student wider than the teacher: the extra channels start as small noise
    # ...on used rows only: noise on a zero row would survive the RMS scaling as a unit-RMS random embedding
    noise = np.random.default_rng(seed).standard_normal((len(e), d - e.shape[1])) * 1e-2 * used[:, None]
    e = np.concatenate([e, noise], 1)
  rms = np.sqrt((e ** 2).mean(1, keepdims=True))
  return np.where(rms > 0, e / np.maximum(rms, 1e-12), 0).astype(np.float32)


def layernorm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def static_features(table: np.ndarray, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The encoder's pooled features (B, d) when every block is the identity and the gate is a plain mean."""
  f = layernorm(table[tokens]) * mask[..., None]                                   # (B, L, d)
  return f.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-6)


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
  """Least squares y ~ x @ W + b with an L2 penalty lam * n on W: -> W (d, D), b (D,)."""
  xm, ym = x.mean(0), y.mean(0)
  xc, yc = (x - xm).astype(np.float64), (y - ym).astype(np.float64)
  w = np.linalg.solve(xc.T @ xc + lam * len(x) * np.eye(x.shape[1]), xc.T @ yc)
  return w.astype(np.float32), (ym - xm @ w).astype(np.float32)


def init_from_teacher(enc, tv: np.ndarray, tokens: np.ndarray, mask: np.ndarray, zt: np.ndarray) -> dict:
  """Set `enc`'s embedding, residual branches, gate and projection as described above. tokens/mask/zt: a sample of
  training sentences and their teacher vectors for the ridge fit. Returns the static fit's figures."""
  from tinygrad import Tensor
  cfg = enc.cfg
  table = pca_table(tv, cfg.d_model, cfg.seed)
  # a small corpus fits fewer tokens than vocab_size: the rows past them are never looked up, so they start at zero
  table = np.concatenate([table, np.zeros((cfg.vocab_size - len(table), table.shape[1]), table.dtype)])
  feats = static_features(table, tokens, mask)
  w, b = ridge(feats, zt)
  pred = feats @ w + b
  cos = (pred * zt).sum(1) / np.maximum(np.linalg.norm(pred, axis=1) * np.linalg.norm(zt, axis=1), 1e-12)

  def put(t: Tensor, v: np.ndarray) -> None:
    t.assign(Tensor(np.ascontiguousarray(v, dtype=np.float32), device=t.device).cast(t.dtype)).realize()
  put(enc.embed.weight, table)
  for blk in enc.blocks:  # residual branch output at zero: each block starts as the identity
    put(blk.out.weight, np.zeros(blk.out.weight.shape))
    put(blk.out.bias, np.zeros(blk.out.bias.shape))
  if enc.gate is not None:
    put(enc.gate.weight, np.zeros(enc.gate.weight.shape))
    put(enc.gate.bias, np.zeros(enc.gate.bias.shape))
  put(enc.proj.weight, w.T)
  put(enc.proj.bias, b)
  return {"static_fit_cos": float(cos.mean()), "n_fit": len(zt)}
