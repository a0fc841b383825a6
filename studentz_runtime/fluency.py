"""How well a text reads to the decoder: the mean log-probability of its tokens, teacher-forced from z.

The correction rounds' judge re-embeds candidates, and a student judge is close to a bag of words: an edit that
breaks the grammar ("What are is you written in") can still move its vector toward the target. Adding a little of
the decoder's own log-probability to the judge's cosine prefers the candidates that also read as text. Either engine:
numpy_infer.Decoder or the tinygrad Decoder (both have `hidden`; the head is `head` or `logits`).
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD

CHUNK = 64  # rows per teacher-forced pass on a CPU: the (rows, L, V) logits of one pass stay around a hundred MB
CHUNK_GPU = 1024  # ... and on a GPU, where each pass also costs tinygrad's scheduling: few passes, a few GB each


def forced_inputs(ids: list[list[int]], L: int) -> tuple[np.ndarray, np.ndarray]:
  """Teacher-forcing input (BOS + ids) and targets (ids + EOS, -1 after), both (N, L); L >= the longest text + 1."""
  forced, targets = np.full((len(ids), L), PAD, np.int32), np.full((len(ids), L), -1, np.int32)
  forced[:, 0] = BOS
  for i, x in enumerate(ids):
    forced[i, 1:1 + len(x)], targets[i, :len(x)], targets[i, len(x)] = x, x, EOS
  return forced, targets


def _target_log_probs_numpy(decoder, forced, targets, z, mode) -> np.ndarray:
  h = decoder.hidden(forced, z, mode)
  logits = decoder.head(h.reshape(-1, h.shape[-1])).reshape(*forced.shape, -1)    # (n, L, V)
  top = logits.max(-1)
  lse = top + np.log(np.exp(logits - top[..., None]).sum(-1))
  return np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0] - lse


def _target_log_probs_tinygrad(decoder, forced, targets, z, mode) -> np.ndarray:
  from tinygrad import Tensor
  h = decoder.hidden(Tensor(forced), Tensor(np.ascontiguousarray(z, np.float32)), Tensor(mode.astype(np.int32)))
  lp = decoder.logits(h).log_softmax(-1)                                          # (n, L, V), stays on the device
  return lp.gather(-1, Tensor(np.maximum(targets, 0)).unsqueeze(-1)).squeeze(-1).numpy()


def mean_logprob(decoder, z: np.ndarray, mode, ids: list[list[int]], length: int | None = None) -> np.ndarray:
  """(N,) mean log p of each text's tokens and its EOS given z (N, D) in `mode` (int or (N,)); ids without BOS/EOS.
  length: the positions of every pass on the tinygrad engine (>= the longest text + 1; default that rounded up to 8):
  a caller that always passes the same gets one compiled shape."""
  N = len(ids)
  out = np.zeros(N, np.float32)
  if not N: return out
  modes = np.broadcast_to(np.asarray(mode, np.int64), (N,))
  on_tinygrad = hasattr(decoder, "logits")
  L, chunk = max(map(len, ids)) + 1, CHUNK
  if on_tinygrad:  # few shapes, each compiled once: every pass `chunk` rows of L positions
    L = max(L, length or -(-L // 8) * 8)
    if str(decoder.embed.weight.device).split(":")[0] != "CPU": chunk = CHUNK_GPU
  log_probs = _target_log_probs_tinygrad if on_tinygrad else _target_log_probs_numpy
  for s in range(0, N, chunk):
    e = min(s + chunk, N)
    rows = np.minimum(np.arange(s, s + chunk if on_tinygrad else e), N - 1)  # the last row again as padding
    forced, targets = forced_inputs([ids[r] for r in rows], L)
    got = log_probs(decoder, forced, targets, np.asarray(z, np.float32)[rows], modes[rows])
    mask = targets >= 0
    out[s:e] = ((got * mask).sum(1) / mask.sum(1))[:e - s]
  return out
