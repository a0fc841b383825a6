"""Text from z: greedy, sampling (temperature, top-k, top-p), beam search, and re-embedding correction.

Decoding is incremental: `DecoderState` keeps, per decoder block, the last (k-1)*dilation + 1 inputs of its causal
conv, so each new token costs one step through the blocks (`Decoder.step`, one TinyJit per batch size), not a pass
over the whole prefix. Token choice happens on the host from the step's logits (numpy; seeded Generator), which is
cheap for the small batches generation runs at.
"""
from __future__ import annotations
import weakref

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from device_inputs import InputSlots
from decoder import Decoder
from student_tokenizer import BOS, EOS, PAD, UNK
from tinygrad import Tensor, TinyJit, dtypes

NEG = -1e9  # a log-probability that never wins, without the NaNs of -inf arithmetic
MAX_BEAM = 256  # beam rows x vocabulary logits per step: bounded so a typo (--beam 50000) cannot take all memory
MAX_TOKENS = 8192  # generated tokens per row at most (studentz.SIZE_LIMITS' max_len)


# ----------------------------------------------------------------------------------------------------------------------
# incremental state

def _host(a, dtype) -> np.ndarray:
  """C-contiguous and writable: tinygrad's CUDA copy-in refuses read-only buffers (broadcast views, .numpy() output)."""
  return np.require(a, dtype=dtype, requirements=["C", "W"])


class DecoderState:
  """Per-row conv caches and z-conditioning of one decoder at a fixed batch size, updated in place by `step`.

  The step is a TinyJit over persistent buffers, so it reads the decoder's weights as they are at call time (weights
  updated by assign, as the optimiser and checkpoint loading do, are seen)."""

  def __init__(self, decoder: Decoder, batch_size: int, _weak: bool = False):
    kinds = {blk.norm.kind for blk in decoder.blocks} | {decoder.norm.kind}
    if kinds != {"layer"}:
      raise ValueError("incremental decoding needs per-token (layer) norms in the decoder: GroupNorm statistics span "
                       "the whole sequence, so one step cannot reproduce them (build the Decoder with norm='layer')")
    # get_state's cache holds states under a weak key: a strong reference back would keep the decoder alive forever
    self.decoder, self.batch_size = (weakref.proxy(decoder) if _weak else decoder), batch_size
    B = batch_size
    cfg, act = decoder.cfg, decoder.act_dtype
    self.bufs = [Tensor.zeros(B, blk.conv.span + 1, cfg.d_model, dtype=act).contiguous().realize()
                 for blk in decoder.blocks]
    self.zb = Tensor.zeros(B, cfg.d_model, dtype=act).contiguous().realize()
    self.films = [(Tensor.zeros(B, cfg.hidden, dtype=act).contiguous().realize(),
                   Tensor.zeros(B, cfg.hidden, dtype=act).contiguous().realize()) for _ in decoder.blocks]
    self.mode = Tensor.zeros(B, dtype=dtypes.int32).contiguous().realize()
    self._jit = TinyJit(self._step_impl)
    self._slots = InputSlots([np.zeros(B, np.int32), np.zeros(B, np.int32)])  # tokens, parents: no scheduler work
    self._identity = np.arange(B, dtype=np.int32)

  def reset(self, z, mode) -> "DecoderState":
    """Start every row afresh from z (B, D) numpy or Tensor in `mode` (int or (B,) ints)."""
    B = self.batch_size
    z = z if isinstance(z, Tensor) else Tensor(_host(z, np.float32))
    if z.shape[0] != B: raise ValueError(f"z has {z.shape[0]} rows but this state was built for {B}")
    zb, films = self.decoder.condition(z)
    mode = _host(np.broadcast_to(np.asarray(mode, dtype=np.int32), (B,)), np.int32)
    outs = [self.zb.assign(zb), self.mode.assign(Tensor(mode))]
    for (g, b), (g_new, b_new) in zip(self.films, films): outs += [g.assign(g_new), b.assign(b_new)]
    outs += [buf.assign(buf.zeros_like()) for buf in self.bufs]
    Tensor.realize(*outs)
    return self

  def _step_impl(self, tok: Tensor, parent: Tensor) -> Tensor:
    # rows first take over their parent's cache (beam search reorders; otherwise parent is the identity)
    bufs = [buf[parent] for buf in self.bufs]
    zb, mode = self.zb[parent], self.mode[parent]
    films = [(g[parent], b[parent]) for g, b in self.films]
    logits, new_bufs = self.decoder.step(tok, bufs, zb, films, mode)
    outs = [buf.assign(nb) for buf, nb in zip(self.bufs, new_bufs)]
    outs += [self.zb.assign(zb), self.mode.assign(mode)]
    for (g, b), (g_new, b_new) in zip(self.films, films): outs += [g.assign(g_new), b.assign(b_new)]
    logits = logits.contiguous()
    Tensor.realize(logits, *outs)
    return logits

  def step(self, tokens, parents=None) -> np.ndarray:
    """tokens (B,) ints fed at the next position; parents (B,) row each row continues from (None: itself).
    Returns logits (B, V) float32 for the position after."""
    tok = _host(np.asarray(tokens).reshape(self.batch_size), np.int32)
    par = self._identity if parents is None else _host(parents, np.int32)
    return self._jit(*self._slots.fill(tok, par)).numpy()


_STATES: "weakref.WeakKeyDictionary[Decoder, dict]" = weakref.WeakKeyDictionary()


def get_state(decoder: Decoder, batch_size: int) -> DecoderState:
  """A DecoderState per (decoder, batch size), kept so repeated calls reuse the captured JIT. Not stored on the
  decoder itself: get_state_dict would then find the caches and save or train them as weights."""
  per = _STATES.setdefault(decoder, {})
  if batch_size not in per: per[batch_size] = DecoderState(decoder, batch_size, _weak=True)
  return per[batch_size]


def step(token_ids, state: DecoderState, parents=None) -> tuple[np.ndarray, DecoderState]:
  """Functional spelling of DecoderState.step: (B,) tokens -> (logits (B, V), the same state, advanced)."""
  return state.step(token_ids, parents), state


# ----------------------------------------------------------------------------------------------------------------------
# strategies (all return int32 ids (B, T): generated tokens, EOS where a row stopped, PAD after)

def check_z(z, dim: int) -> np.ndarray:
  """z as float32 (B, dim), or ValueError naming the problem: a wrong-sized or non-finite z would otherwise decode
  to confident garbage (or NaN logits) with no hint why."""
  z = z.numpy() if isinstance(z, Tensor) else np.asarray(z)
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


def _prepare(decoder: Decoder, z, max_len):
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


def _run(decoder: Decoder, z: np.ndarray, T: int, mode, choose) -> np.ndarray:
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


def greedy(decoder: Decoder, z, max_len: int | None = None, mode=0) -> np.ndarray:
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


def sample(decoder: Decoder, z, max_len: int | None = None, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, mode=0) -> np.ndarray:
  z, T = _prepare(decoder, z, max_len)
  if temperature <= 0: return _run(decoder, z, T, mode, lambda lg: lg.argmax(-1))
  rng = np.random.default_rng(seed)
  return _run(decoder, z, T, mode, lambda lg: _draw(filter_logits(lg, temperature, top_k, top_p), rng))


def beam_search(decoder: Decoder, z, beam: int = 4, max_len: int | None = None, length_penalty: float = 1.0,
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


def generate(decoder: Decoder, z, strategy: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
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


def decode(decoder: Decoder, z, tokenizer, strategy: str = "greedy", max_len: int | None = None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, beam: int = 1, seed: int = 0, mode=0,
           length_penalty: float = 1.0) -> list[str]:
  """z (B, D) -> B strings (tokenizer: student_tokenizer.StudentTokenizer); 0 rows give []."""
  check_options(strategy, temperature, top_k, top_p, beam, seed, max_len)
  if check_z(z, decoder.cfg.proj_dim).shape[0] == 0: return []
  ids = generate(decoder, z, strategy, max_len, temperature, top_k, top_p, beam, length_penalty, seed, mode)
  # ids past the tokenizer's own size (it may learn fewer merges than vocab_size): rows never trained on, dropped
  return tokenizer.decode_batch(np.where(ids >= tokenizer.vocab_size, UNK, ids))


# ----------------------------------------------------------------------------------------------------------------------
# re-embedding correction

def student_embed_fn(encoder, tokenizer, max_len: int | None = None):
  """texts -> the student encoder's z (N, D) numpy; the default judge of `correct`."""
  L = encoder.cfg.max_len if max_len is None else max_len

  def embed(texts: list[str]) -> np.ndarray:
    ids, mask = tokenizer.encode_batch(texts, L)
    return encoder(Tensor(ids), Tensor(mask)).numpy()
  return embed


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1) + 1e-12)


def correct(z_target, decoder: Decoder, encoder, tokenizer, rounds: int = 3, candidates: int = 8, embed_fn=None,
            proj=None, mode=0, temperature: float = 0.8, top_p: float = 0.95, beam: int = 4, step_size: float = 1.0,
            seed: int = 0, max_len: int | None = None) -> dict:
  """Generate, re-embed, keep the candidate closest (cosine) to z_target; repeat from a corrected condition.

  Each round decodes from the condition c (round 1: c = z_target) `candidates` texts per row: greedy, beam (if
  beam > 1) and samples. `embed_fn(list[str]) -> (N, D)` re-embeds them in z_target's space (default: the student
  encoder; pass teacher.embed for teacher vectors). The next condition is c + step_size * (z_target - z_best), the
  vec2text move: the decoder is pushed against the error its best text still makes (z_best is the best embedding so
  far, kept across rounds, so the best cosine never decreases). `proj` maps c into the decoder's z space (pass the
  ModeBProjection for teacher vectors in mode B). Returns texts and cos (N,) of the best per row, and per round:
  round_cos (mean best-so-far cosine) and round_new_cos (mean cosine of that round's own best candidate).
  """
  zt = np.asarray(z_target.numpy() if isinstance(z_target, Tensor) else z_target, np.float32)
  N = zt.shape[0]
  embed_fn = embed_fn or student_embed_fn(encoder, tokenizer)
  n_samples = max(candidates - 1 - (beam > 1), 0)
  best_txt, best_cos, best_z = [""] * N, np.full(N, -np.inf), np.zeros_like(zt)
  c = zt.copy()
  round_cos, round_new = [], []
  for r in range(rounds):
    zc = c if proj is None else proj(Tensor(c)).numpy()
    cands = [decode(decoder, zc, tokenizer, "greedy", max_len, mode=mode)]   # each (N,) texts
    if beam > 1: cands.append(decode(decoder, zc, tokenizer, "beam", max_len, beam=beam, mode=mode))
    if n_samples:
      s = decode(decoder, np.repeat(zc, n_samples, 0), tokenizer, "sample", max_len, temperature=temperature,
                 top_p=top_p, seed=seed * 1000 + r, mode=mode)
      cands += [s[j::n_samples] for j in range(n_samples)]
    texts = [t for group in cands for t in group]                             # candidate-major: (n_cand * N,)
    emb = np.asarray(embed_fn(texts), np.float32).reshape(len(cands), N, -1)
    cos = _cos(emb, zt[None])                                                 # (n_cand, N)
    pick = cos.argmax(0)
    new_cos = cos[pick, np.arange(N)]
    round_new.append(float(new_cos.mean()))
    better = new_cos > best_cos
    for i in np.flatnonzero(better):
      best_txt[i], best_cos[i], best_z[i] = cands[pick[i]][i], new_cos[i], emb[pick[i], i]
    round_cos.append(float(best_cos.mean()))
    c = c + step_size * (zt - best_z)
  return {"texts": best_txt, "cos": best_cos, "round_cos": round_cos, "round_new_cos": round_new}
