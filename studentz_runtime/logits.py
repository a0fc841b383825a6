"""Rules over one decode step's logits (B, V), shared by every strategy: the special tokens never generated, the
repetition controls, the log-softmax beam scores add up, each row's shortlist of its best tokens, and sampling's
filter (temperature, top-k, nucleus) and draw.

Its own module so that decoding.py (the strategies) and candidates.py (rerank's one-pass candidates) both build on it
without importing each other.
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD, UNK

NEG = -1e9  # a log-probability that never wins, without the NaNs of -inf arithmetic
SPECIALS = (PAD, BOS, UNK)  # never generated (PAD is only ever a smoothed target; byte-level BPE never needs UNK)


def _mask_specials(logits: np.ndarray) -> np.ndarray:
  """The logits with SPECIALS at NEG, as a writable float32 copy (float32 keeps the per-step host work small)."""
  out = np.array(logits, dtype=np.float32)
  out[:, list(SPECIALS)] = NEG
  return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float64)  # beam scores add up in float64


def repeated_ngram_tokens(seq: np.ndarray, n: int) -> np.ndarray:
  """The tokens that would complete an n-gram already in `seq` (1-D ids) if appended: those no_repeat_ngram bans."""
  if n < 1 or len(seq) < n: return np.zeros(0, np.int64)
  if n == 1: return np.asarray(seq)
  grams = np.lib.stride_tricks.sliding_window_view(seq, n)            # every n-gram so far
  hit = (grams[:, :-1] == seq[len(seq) - n + 1:]).all(1)                # those starting with the last n-1 tokens
  return grams[hit, -1]


def restrict(logits: np.ndarray, hist: np.ndarray, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0):
  """(R, V) logits (modified in place and returned) given each row's generated tokens `hist` (R, t).
  repetition_penalty: HF's (CTRL's) rule on raw logits, every strategy alike: a token already generated has its logit
  divided by the penalty when positive, multiplied when negative (so it always becomes less likely).
  no_repeat_ngram n: a token that would repeat an n-gram of the row's output is banned (HF's no_repeat_ngram_size).
  A row left with nothing allowed gets EOS, so a decode always ends instead of emitting a masked token."""
  if hist.shape[1] == 0: return logits
  rows = np.arange(len(logits))[:, None]
  if repetition_penalty != 1.0:
    seen = logits[rows, hist]                                           # repeats in hist write the same value
    logits[rows, hist] = np.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
  if no_repeat_ngram > 0:
    for r in range(len(logits)): logits[r, repeated_ngram_tokens(hist[r], no_repeat_ngram)] = NEG
    stuck = logits.max(-1) <= NEG
    logits[stuck, EOS] = 0.0
  return logits


def shortlist(logits: np.ndarray, m: int, lse_rows=slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each row's m best tokens: values (R, m) float32 and ids (R, m) int32, best first (ties: the lower id first, as
  argmax), and the log-normaliser log(sum(exp(logits))) (R,) float32 of the rows `lse_rows` selects (others NaN), so
  that a token's log-probability is value - lse. A decoder state may compute the same on its device (`step_top`)."""
  R, V = logits.shape
  m = min(int(m), V)
  part = np.argpartition(-logits, m - 1, axis=-1)[:, :m] if m < V else np.tile(np.arange(V), (R, 1))
  vals = np.take_along_axis(logits, part, -1)
  if m < V:  # the m-th value tied beyond the shortlist: the partition took any of the ties, the rule wants the lowest
    thr = vals.min(-1, keepdims=True)
    tied = np.flatnonzero((logits >= thr).sum(-1) > m)
    for r in tied:
      above, at = np.flatnonzero(logits[r] > thr[r]), np.flatnonzero(logits[r] == thr[r])
      part[r] = np.concatenate([above, at[:m - len(above)]])
    vals[tied] = np.take_along_axis(logits[tied], part[tied], -1)
  order = np.lexsort((part, -vals), axis=-1)                          # value descending, then id ascending
  vals, idx = np.take_along_axis(vals, order, -1), np.take_along_axis(part, order, -1)
  lse = np.full(R, np.nan, np.float32)
  sub = logits[lse_rows]
  if len(sub):
    mx = vals[lse_rows, :1]
    lse[lse_rows] = (mx + np.log(np.exp(sub - mx).sum(-1, keepdims=True)))[:, 0]
  return vals.astype(np.float32), idx.astype(np.int32), lse


def filter_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
  """(B, V) logits -> (B, V) probabilities after temperature, top-k and nucleus (top-p) truncation."""
  x = logits.astype(np.float64) / max(temperature, 1e-6)
  V = x.shape[-1]
  if 0 < top_k < V:
    kth = np.partition(x, V - top_k, axis=-1)[:, V - top_k, None]
    x = np.where(x < kth, -np.inf, x)
  p = np.exp(x - x.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  if top_p < 1.0:
    # nucleus = tokens with p >= the smallest probability of the sorted prefix whose mass reaches top_p (ties at that
    # value all stay). Only values are sorted, and only the top 256 when they already hold top_p (nearly always).
    m = min(V, 256)
    top = np.partition(p, V - m, axis=-1)[:, V - m:] if m < V else p
    if (top.sum(-1) < top_p).any(): top = p
    ps = -np.sort(-top, axis=-1)
    n_keep = ((np.cumsum(ps, -1) - ps) < top_p).sum(-1)                          # >= 1
    thr = ps[np.arange(p.shape[0]), n_keep - 1]
    p = np.where(p >= thr[:, None], p, 0)
    p /= p.sum(-1, keepdims=True)
  return p


def _draw(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One index per row by inverse CDF from one uniform per row: reproducible for a seed and a batch."""
  cum = np.cumsum(p, -1)
  u = rng.random(p.shape[0]) * cum[:, -1]
  idx = np.array([np.searchsorted(c, x, side="right") for c, x in zip(cum, u)])
  idx = np.minimum(idx, p.shape[1] - 1)
  bad = p[np.arange(p.shape[0]), idx] <= 0  # rounding at the top end: fall back to the most likely token
  idx[bad] = p[bad].argmax(-1)
  return idx
