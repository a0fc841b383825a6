"""Token choice from an incremental decoder state: greedy, sampling (temperature, top-k, top-p) and beam search.

The strategies only need a state with `reset(z, mode)` and `step(tokens, parents) -> logits (B, V)`: tinygrad's
generate.DecoderState or numpy_infer.DecoderState. Its own module so the numpy inference path decodes without
importing tinygrad; generate.py re-exports everything here.
"""
from __future__ import annotations

import numpy as np
from student_tokenizer import BOS, EOS, PAD, UNK

NEG = -1e9  # a log-probability that never wins, without the NaNs of -inf arithmetic
MAX_BEAM = 256  # beam rows x vocabulary logits per step: bounded so a typo (--beam 50000) cannot take all memory
MAX_TOKENS = 8192  # generated tokens per row at most (config.SIZE_LIMITS' max_len)


def get_state(decoder, batch_size: int):
  """A state of `decoder` for batch_size rows: numpy_infer.Decoder makes its own; a tinygrad Decoder's comes from
  generate (imported only then, so the numpy path never imports tinygrad)."""
  if hasattr(decoder, "new_state"): return decoder.new_state(batch_size)
  from generate import get_state as tinygrad_state
  return tinygrad_state(decoder, batch_size)


# ----------------------------------------------------------------------------------------------------------------------
# strategies (all return int32 ids (B, T): generated tokens, EOS where a row stopped, PAD after)

def check_z(z, dim: int) -> np.ndarray:
  """z as float32 (B, dim), or ValueError naming the problem: a wrong-sized or non-finite z would otherwise decode
  to confident garbage (or NaN logits) with no hint why."""
  z = z.numpy() if hasattr(z, "numpy") else np.asarray(z)  # a tinygrad Tensor too
  if z.dtype == object or not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
    raise ValueError(f"z must hold numbers, got dtype {z.dtype}")
  with np.errstate(over="ignore"): z = z.astype(np.float32)  # an overflow becomes Inf, refused below
  if z.ndim != 2: raise ValueError(f"z must be (B, D), got shape {z.shape}")
  if z.shape[1] != dim:
    raise ValueError(f"z has dimension {z.shape[1]} but this decoder expects {dim} (the teacher's dimension it was "
                     f"trained with): embed with the matching teacher or use the matching checkpoint")
  bad = ~np.isfinite(z).all(axis=1)
  if bad.any():
    raise ValueError(f"z has NaN or Inf values in {int(bad.sum())} of {len(z)} rows (first: row "
                     f"{int(np.flatnonzero(bad)[0])}): pass finite vectors")
  return z


def _prepare(decoder, z, max_len):
  z = check_z(z, decoder.cfg.proj_dim)
  T = decoder.cfg.max_len - 1 if max_len is None else int(max_len)  # the loader's L minus BOS
  if T < 1: raise ValueError("max_len must be >= 1")
  return z.astype(np.float32), T


def _mask_specials(logits: np.ndarray) -> np.ndarray:
  """PAD/BOS/UNK are never generated (PAD is only ever a smoothed target; byte-level BPE never needs UNK)."""
  out = np.array(logits, dtype=np.float32)  # a writable copy; float32 keeps the per-step host work small
  out[:, [PAD, BOS, UNK]] = NEG
  return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float64)  # beam scores add up in float64


def _run(decoder, z: np.ndarray, T: int, mode, choose) -> np.ndarray:
  B = z.shape[0]
  state = get_state(decoder, B).reset(z, mode)
  out = np.full((B, T), PAD, np.int32)
  tok, done = np.full(B, BOS, np.int32), np.zeros(B, bool)
  for t in range(T):
    nxt = choose(_mask_specials(state.step(tok))).astype(np.int32)
    nxt[done] = PAD
    out[:, t] = nxt
    done |= nxt == EOS
    if done.all(): break
    tok = nxt
  return out


def greedy(decoder, z, max_len: int | None = None, mode=0) -> np.ndarray:
  z, T = _prepare(decoder, z, max_len)
  return _run(decoder, z, T, mode, lambda lg: lg.argmax(-1))


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


def sample(decoder, z, max_len: int | None = None, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, mode=0) -> np.ndarray:
  z, T = _prepare(decoder, z, max_len)
  if temperature <= 0: return _run(decoder, z, T, mode, lambda lg: lg.argmax(-1))
  rng = np.random.default_rng(seed)
  return _run(decoder, z, T, mode, lambda lg: _draw(filter_logits(lg, temperature, top_k, top_p), rng))


def beam_search(decoder, z, beam: int = 4, max_len: int | None = None, length_penalty: float = 1.0,
                mode=0) -> np.ndarray:
  """Beam search ranking finished hypotheses by logp / len**length_penalty (len counts EOS); a row stops once it has
  `beam` finished hypotheses (early stopping, as HF's early_stopping=True). beam=1 is exactly greedy."""
  z, T = _prepare(decoder, z, max_len)
  B, K = z.shape[0], int(beam)
  if K < 1: raise ValueError("beam must be >= 1")
  state = get_state(decoder, B * K).reset(np.repeat(z, K, 0), np.repeat(np.broadcast_to(mode, (B,)), K))
  V = decoder.cfg.vocab_size
  scores = np.full((B, K), NEG)
  scores[:, 0] = 0.0                               # all beams start identical: expand only the first
  seqs = np.zeros((B, K, 0), np.int32)
  finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(B)]
  done = np.zeros(B, bool)
  tok, parents = np.full(B * K, BOS, np.int32), None
  for t in range(T):
    logp = _log_softmax(_mask_specials(state.step(tok, parents))).reshape(B, K, V)
    cand = (scores[:, :, None] + logp).reshape(B, K * V)
    # the best 2K (at most K are EOS, so K others always remain), found by a partition, then only those sorted
    top = np.argpartition(-cand, 2 * K - 1, axis=-1)[:, :2 * K] if 2 * K < K * V else np.tile(np.arange(K * V), (B, 1))
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, -1), axis=-1, kind="stable"), -1)
    new_parent = np.tile(np.arange(K), (B, 1))
    new_tok = np.full((B, K), PAD, np.int32)
    new_scores = scores.copy()
    for b in range(B):
      if done[b]: continue
      n = 0
      for rank, c in enumerate(top[b]):
        k, v = divmod(int(c), V)
        if v == EOS:
          if rank < K: finished[b].append((cand[b, c] / (t + 1) ** length_penalty, np.append(seqs[b, k], EOS)))
          continue
        new_parent[b, n], new_tok[b, n], new_scores[b, n] = k, v, cand[b, c]
        n += 1
        if n == K: break
      done[b] = len(finished[b]) >= K
    if done.all(): break
    seqs = np.concatenate([seqs[np.arange(B)[:, None], new_parent], new_tok[..., None]], -1)
    scores = new_scores
    tok = new_tok.reshape(-1)
    parents = (np.arange(B)[:, None] * K + new_parent).reshape(-1)
  out = np.full((B, T), PAD, np.int32)
  for b in range(B):
    hyps = finished[b] or [(scores[b, k] / seqs.shape[-1] ** length_penalty, seqs[b, k]) for k in range(K)]
    best = max(hyps, key=lambda h: h[0])[1][:T]
    out[b, :len(best)] = best
  return out


def generate(decoder, z, strategy: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, beam: int = 1, length_penalty: float = 1.0, seed: int = 0,
             mode=0) -> np.ndarray:
  """z (B, D) -> ids (B, T). strategy: "greedy", "sample" or "beam" (width `beam`)."""
  if strategy == "greedy": return greedy(decoder, z, max_len, mode)
  if strategy == "sample": return sample(decoder, z, max_len, temperature, top_k, top_p, seed, mode)
  if strategy == "beam": return beam_search(decoder, z, beam, max_len, length_penalty, mode)
  raise ValueError(f"unknown strategy {strategy!r}: use greedy, sample or beam")


def _is_int(x) -> bool: return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_options(strategy="greedy", temperature=1.0, top_k=0, top_p=1.0, beam=1, seed=0, max_len=None) -> None:
  """ValueError naming the first decoding option that cannot mean anything (before any model work)."""
  if strategy not in ("greedy", "sample", "beam"):
    raise ValueError(f"unknown strategy {strategy!r}: use greedy, sample or beam")
  num = isinstance(temperature, (int, float, np.floating)) and not isinstance(temperature, bool)
  if not (num and temperature > 0 and np.isfinite(temperature)):
    raise ValueError(f"temperature must be a positive number, got {temperature!r}")
  if not (_is_int(top_k) and top_k >= 0): raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
  if not (isinstance(top_p, (int, float, np.floating)) and 0 < top_p <= 1):
    raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
  if not (_is_int(beam) and 1 <= beam <= MAX_BEAM): raise ValueError(f"beam must be in [1, {MAX_BEAM}], got {beam!r}")
  if not (_is_int(seed) and 0 <= seed < 2 ** 63): raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  if max_len is not None and not (_is_int(max_len) and 1 <= max_len <= MAX_TOKENS):
    raise ValueError(f"max_len must be in [1, {MAX_TOKENS}], got {max_len!r}")


def decode(decoder, z, tokenizer, strategy: str = "greedy", max_len: int | None = None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, beam: int = 1, seed: int = 0, mode=0,
           length_penalty: float = 1.0) -> list[str]:
  """z (B, D) -> B strings (tokenizer: student_tokenizer.StudentTokenizer); 0 rows give []."""
  check_options(strategy, temperature, top_k, top_p, beam, seed, max_len)
  if check_z(z, decoder.cfg.proj_dim).shape[0] == 0: return []
  ids = generate(decoder, z, strategy, max_len, temperature, top_k, top_p, beam, length_penalty, seed, mode)
  # ids past the tokenizer's own size (it may learn fewer merges than vocab_size): rows never trained on, dropped
  size = getattr(tokenizer, "vocab_size", None)  # any object with decode_batch will do; one with a size is checked
  return tokenizer.decode_batch(ids if size is None else np.where(ids >= size, UNK, ids))
