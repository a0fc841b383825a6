"""Token choice from an incremental decoder state: greedy, sampling (temperature, top-k, top-p) and beam search.

The strategies only need a state with `reset(z, mode)` and `step(tokens, parents) -> logits (B, V)`: tinygrad's
generate.DecoderState or numpy_infer.DecoderState. Its own module so the numpy inference path decodes without
importing tinygrad; generate.py re-exports everything here.
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD, UNK
from studentz_runtime import candidates, edits, fluency
from studentz_runtime.logits import (NEG, _draw, _log_softmax, _mask_specials, filter_logits,  # noqa: F401
                                     repeated_ngram_tokens, restrict)
from studentz_runtime.metrics import cosine

MAX_BEAM = 256  # beam rows x vocabulary logits per step: bounded so a typo (--beam 50000) cannot take all memory
MAX_TOKENS = 8192  # generated tokens per row at most (config.SIZE_LIMITS' max_len)
MAX_NGRAM = 32  # no_repeat_ngram at most: longer n-grams almost never repeat, so a bigger value is a typo
MAX_PENALTY = 10.0  # repetition_penalty at most: 1.2 (CTRL's value) is typical; beyond 10 a token can never come back
MAX_RERANK = 64  # rerank candidates per row at most: each costs a decode and an encode
MAX_ROUNDS = 20  # rerank's correction rounds at most: each costs a whole rerank
# rerank's samples: a little colder than the model's own distribution and without its tail, so candidates vary
# around the greedy decode instead of wandering off it
RERANK_TEMPERATURE, RERANK_TOP_P = 0.8, 0.95
# ... and from the best RERANK_TOP_K tokens only: the candidates come from one shortlist per row and step
# (candidates.py), which a GPU computes on the device instead of copying every logit to the host
RERANK_TOP_K = 16
# rerank's choice: the judge's cosine plus this much of the decoder's mean token log-probability of the candidate
# (fluency.py), so that of two texts about as close the one that reads as text wins
FLUENCY = 0.02
# the decoder reads each row's this many closest candidates first: their best score rules most of the others out
FLUENCY_FIRST = 16


def get_state(decoder, batch_size: int):
  """A state of `decoder` for batch_size rows: numpy_infer.Decoder and studentz.Decoder (through generate.py, so the
  numpy path never imports tinygrad) each make their own."""
  return decoder.new_state(batch_size)


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


def _run(decoder, z: np.ndarray, T: int, mode, choose, rep: dict | None = None) -> np.ndarray:
  B = z.shape[0]
  state = get_state(decoder, B).reset(z, mode)
  out = np.full((B, T), PAD, np.int32)
  tok, done = np.full(B, BOS, np.int32), np.zeros(B, bool)
  for t in range(T):
    logits = _mask_specials(state.step(tok))
    if rep: logits = restrict(logits, out[:, :t], **rep)
    nxt = choose(logits).astype(np.int32)
    nxt[done] = PAD
    out[:, t] = nxt
    done |= nxt == EOS
    if done.all(): break
    tok = nxt
  return out


def _rep(no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> dict | None:
  """restrict's options, or None when both are off (the plain loop then does no extra work)."""
  if not no_repeat_ngram and repetition_penalty == 1.0: return None
  return {"no_repeat_ngram": int(no_repeat_ngram), "repetition_penalty": float(repetition_penalty)}


def greedy(decoder, z, max_len: int | None = None, mode=0, no_repeat_ngram: int = 0,
           repetition_penalty: float = 1.0) -> np.ndarray:
  z, T = _prepare(decoder, z, max_len)
  return _run(decoder, z, T, mode, lambda lg: lg.argmax(-1), _rep(no_repeat_ngram, repetition_penalty))


def sample(decoder, z, max_len: int | None = None, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, mode=0, no_repeat_ngram: int = 0,
           repetition_penalty: float = 1.0) -> np.ndarray:
  z, T = _prepare(decoder, z, max_len)
  rep = _rep(no_repeat_ngram, repetition_penalty)
  if temperature <= 0: return _run(decoder, z, T, mode, lambda lg: lg.argmax(-1), rep)
  rng = np.random.default_rng(seed)
  return _run(decoder, z, T, mode, lambda lg: _draw(filter_logits(lg, temperature, top_k, top_p), rng), rep)


def beam_search(decoder, z, beam: int = 4, max_len: int | None = None, length_penalty: float = 1.0,
                mode=0, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> np.ndarray:
  """Beam search ranking finished hypotheses by logp / len**length_penalty (len counts EOS); a row stops once it has
  `beam` finished hypotheses (early stopping, as HF's early_stopping=True). beam=1 is exactly greedy."""
  return beam_candidates(decoder, z, beam, max_len, length_penalty, mode, no_repeat_ngram, repetition_penalty)[:, 0]


def beam_candidates(decoder, z, beam: int = 4, max_len: int | None = None, length_penalty: float = 1.0, mode=0,
                    no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, n_best: int = 1) -> np.ndarray:
  """ids (B, n_best, T): each row's n_best best hypotheses of beam search, best first (n_best <= beam)."""
  z, T = _prepare(decoder, z, max_len)
  if int(beam) < 1: raise ValueError("beam must be >= 1")
  hyps = _beam_hyps(decoder, z, int(beam), T, length_penalty, mode, _rep(no_repeat_ngram, repetition_penalty))
  return _hyp_ids(hyps, n_best, T)


def _hyp_ids(hyps: list[list[tuple[float, np.ndarray]]], n_best: int, T: int) -> np.ndarray:
  """ids (B, n_best, T) of each row's n_best best hypotheses (score, ids), best first."""
  out = np.full((len(hyps), n_best, T), PAD, np.int32)
  for b, row in enumerate(hyps):
    for j, (_, seq) in enumerate(row[:n_best]): out[b, j, :len(seq[:T])] = seq[:T]
    out[b, len(row):] = out[b, 0]  # fewer hypotheses than asked (tiny vocabularies): the best stands in
  return out


def _beam_hyps(decoder, z, K: int, T: int, length_penalty: float, mode, rep) -> list[list[tuple[float, np.ndarray]]]:
  """Per row, the hypotheses (score, ids) best first: the finished ones, else the live beams."""
  B = z.shape[0]
  state = get_state(decoder, B * K).reset(np.repeat(z, K, 0), np.repeat(np.broadcast_to(mode, (B,)), K))
  V = decoder.cfg.vocab_size
  scores = np.full((B, K), NEG)
  scores[:, 0] = 0.0                               # all beams start identical: expand only the first
  seqs = np.zeros((B, K, 0), np.int32)
  finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(B)]
  done = np.zeros(B, bool)
  tok, parents = np.full(B * K, BOS, np.int32), None
  for t in range(T):
    logits = _mask_specials(state.step(tok, parents))
    if rep: logits = restrict(logits, seqs.reshape(B * K, t), **rep)  # each beam's own history
    logp = _log_softmax(logits).reshape(B, K, V)
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
        if cand[b, c] <= NEG / 2: break            # banned or unreachable: never a hypothesis
        if v == EOS:
          if rank < K: finished[b].append((cand[b, c] / (t + 1) ** length_penalty, np.append(seqs[b, k], EOS)))
          continue
        new_parent[b, n], new_tok[b, n], new_scores[b, n] = k, v, cand[b, c]
        n += 1
        if n == K: break
      new_scores[b, n:] = NEG                      # fewer than K live extensions: the rest stay dead
      done[b] = len(finished[b]) >= K or n == 0
    if done.all(): break
    seqs = np.concatenate([seqs[np.arange(B)[:, None], new_parent], new_tok[..., None]], -1)
    scores = new_scores
    tok = new_tok.reshape(-1)
    parents = (np.arange(B)[:, None] * K + new_parent).reshape(-1)
  live = lambda b: [(scores[b, k] / max(seqs.shape[-1], 1) ** length_penalty, seqs[b, k])
                    for k in range(K) if scores[b, k] > NEG / 2]
  return [sorted(finished[b] or live(b) or [(0.0, np.array([EOS], np.int32))], key=lambda h: -h[0])
          for b in range(B)]


def generate(decoder, z, strategy: str = "greedy", max_len: int | None = None, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, beam: int = 1, length_penalty: float = 1.0, seed: int = 0,
             mode=0, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> np.ndarray:
  """z (B, D) -> ids (B, T). strategy: "greedy", "sample" or "beam" (width `beam`); no_repeat_ngram and
  repetition_penalty (restrict) apply to every strategy."""
  rep = {"no_repeat_ngram": no_repeat_ngram, "repetition_penalty": repetition_penalty}
  if strategy == "greedy": return greedy(decoder, z, max_len, mode, **rep)
  if strategy == "sample": return sample(decoder, z, max_len, temperature, top_k, top_p, seed, mode, **rep)
  if strategy == "beam": return beam_search(decoder, z, beam, max_len, length_penalty, mode, **rep)
  raise ValueError(f"unknown strategy {strategy!r}: use greedy, sample or beam (rerank goes through decode)")


def _is_int(x) -> bool: return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool: return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)


STRATEGIES = ("greedy", "sample", "beam", "rerank")


def check_options(strategy="greedy", temperature=1.0, top_k=0, top_p=1.0, beam=1, seed=0, max_len=None,
                  no_repeat_ngram=0, repetition_penalty=1.0, rerank=16, rounds=1) -> None:
  """ValueError naming the first decoding option that cannot mean anything (before any model work)."""
  if strategy not in STRATEGIES: raise ValueError(f"unknown strategy {strategy!r}: use {', '.join(STRATEGIES)}")
  if not (_is_num(temperature) and temperature > 0 and np.isfinite(temperature)):
    raise ValueError(f"temperature must be a positive number, got {temperature!r}")
  if not (_is_int(top_k) and top_k >= 0): raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
  if not (_is_num(top_p) and 0 < top_p <= 1):
    raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
  if not (_is_int(beam) and 1 <= beam <= MAX_BEAM): raise ValueError(f"beam must be in [1, {MAX_BEAM}], got {beam!r}")
  if not (_is_int(seed) and 0 <= seed < 2 ** 63): raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  if max_len is not None and not (_is_int(max_len) and 1 <= max_len <= MAX_TOKENS):
    raise ValueError(f"max_len must be in [1, {MAX_TOKENS}], got {max_len!r}")
  check_repetition(no_repeat_ngram, repetition_penalty)
  if not (_is_int(rerank) and 2 <= rerank <= MAX_RERANK):
    raise ValueError(f"rerank must be an int in [2, {MAX_RERANK}] (candidates per row), got {rerank!r}")
  if not (_is_int(rounds) and 1 <= rounds <= MAX_ROUNDS):
    raise ValueError(f"rounds must be an int in [1, {MAX_ROUNDS}] (rerank's correction rounds), got {rounds!r}")


def check_repetition(no_repeat_ngram=0, repetition_penalty=1.0) -> None:
  if not (_is_int(no_repeat_ngram) and 0 <= no_repeat_ngram <= MAX_NGRAM):
    raise ValueError(f"no_repeat_ngram must be an int in [0, {MAX_NGRAM}] (0 = off), got {no_repeat_ngram!r}")
  if not (_is_num(repetition_penalty) and 1 <= repetition_penalty <= MAX_PENALTY):
    raise ValueError(f"repetition_penalty must be a number in [1, {MAX_PENALTY:g}] (1 = off), "
                     f"got {repetition_penalty!r}")


def _texts(ids: np.ndarray, tokenizer) -> list[str]:
  # ids past the tokenizer's own size (it may learn fewer merges than vocab_size): rows never trained on, dropped
  size = getattr(tokenizer, "vocab_size", None)  # any object with decode_batch will do; one with a size is checked
  return tokenizer.decode_batch(ids if size is None else np.where(ids >= size, UNK, ids))


def decode(decoder, z, tokenizer, strategy: str = "greedy", max_len: int | None = None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, beam: int = 1, seed: int = 0, mode=0,
           length_penalty: float = 1.0, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0,
           rerank: int = 16, embed_fn=None, target=None, rounds: int = 1, proj=None) -> list[str]:
  """z (B, D) -> B strings (tokenizer: student_tokenizer.StudentTokenizer); 0 rows give [].
  strategy "rerank" needs embed_fn (texts -> vectors) and uses `rerank` candidates per row for `rounds` rounds of
  correction (see rerank_decode)."""
  check_options(strategy, temperature, top_k, top_p, beam, seed, max_len, no_repeat_ngram, repetition_penalty, rerank,
                rounds)
  if check_z(z, decoder.cfg.proj_dim).shape[0] == 0: return []
  rep = {"no_repeat_ngram": no_repeat_ngram, "repetition_penalty": repetition_penalty}
  if strategy == "rerank":
    if embed_fn is None: raise ValueError("strategy 'rerank' needs embed_fn: the encoder that judges the candidates")
    return rerank_decode(decoder, z, tokenizer, embed_fn, target, rerank, max_len, seed, mode, rounds, proj,
                         **rep)["texts"]
  ids = generate(decoder, z, strategy, max_len, temperature, top_k, top_p, beam, length_penalty, seed, mode, **rep)
  return _texts(ids, tokenizer)


# ----------------------------------------------------------------------------------------------------------------------
# re-embedding rerank: the encoder as judge of several decodes (vec2text's hypothesis scoring), over rounds of
# correction (its corrector's loop, with the decoder itself as the corrector)

def rerank_split(k: int) -> tuple[int, int]:
  """(beam width, samples) of k candidates per row: greedy, the beam's best ceil((k-1)/2), the rest sampled.
  Why a mix: beam hypotheses are fluent but alike; samples add the variety that lets the judge find a closer text."""
  n_beam = (k - 1 + 1) // 2
  return n_beam, k - 1 - n_beam


def rerank_candidates(decoder, z: np.ndarray, tokenizer, k: int, max_len=None, seed: int = 0, mode=0,
                      **rep) -> list[list[str]]:
  """k candidate texts per row of z (candidate-major lists of N): greedy first, then the beam's best, then samples
  (temperature RERANK_TEMPERATURE, nucleus RERANK_TOP_P among the m = max(RERANK_TOP_K, 2 * beam) best tokens), all
  decoded in one pass over one state of k*N rows (candidates.one_pass), each as its own strategy would decode it."""
  z, T = _prepare(decoder, z, max_len)
  n_beam, n_samp = rerank_split(k)
  N = len(z)
  modes = np.array(np.broadcast_to(np.asarray(mode), (N,)))
  m = min(max(RERANK_TOP_K, 2 * n_beam), decoder.cfg.vocab_size)  # the beam reads each row's best 2K tokens
  greedy_ids, hyps, sample_ids = candidates.one_pass(get_state(decoder, N * k), z, modes, T, n_beam, n_samp, m,
                                                     RERANK_TEMPERATURE, RERANK_TOP_P, seed, _rep(**rep))
  groups = [_texts(greedy_ids, tokenizer)]
  if n_beam:
    ids = _hyp_ids(hyps, n_beam, T)
    groups += [_texts(ids[:, j], tokenizer) for j in range(n_beam)]
  if n_samp:
    s = _texts(sample_ids, tokenizer)
    groups += [s[j::n_samp] for j in range(n_samp)]
  return groups


def rerank_decode(decoder, z, tokenizer, embed_fn, target=None, k: int = 16, max_len=None, seed: int = 0, mode=0,
                  rounds: int = 1, proj=None, step_size: float = 1.0, fluency_weight: float | None = None,
                  **rep) -> dict:
  """Decode k candidates per row, re-embed them with embed_fn (texts -> (n, D)), keep the one closest in cosine to
  `target` (default z itself: mode A, the student's z judged by the student). For mode B pass the teacher vector as
  target: the student's z lives in the teacher's space, so the student judges there too.

  rounds > 1 corrects: each later round decodes from c + step_size * (target - z_best), c the last condition in
  target's space (first: target) and z_best the embedding of the best text so far, so the decoder is pushed against
  the error its best text still makes (vec2text's move; `proj` maps c to the decoder's input, mode B: the model's
  ModeBProjection; default identity), and judges those candidates together with the one-word edits of the best text
  and the decoder's rewrites of it after each word, then the edits that improved on it made together (edits.py).
  Candidates are chosen by cosine + fluency_weight * the decoder's mean token log-probability of them
  from z (fluency.py; None: FLUENCY; 0: cosine alone). The best is kept across rounds: its score never falls.
  Returns {"texts": N best, "cos": (N,) their cosines, "greedy_cos": (N,) round 1's greedy candidate's, "rounds": per
  round {"texts", "cos" (mean cosine of the best so far), "new_cos" (mean cosine of the round's own best), "score"
  (mean score of the best so far), "seconds" (since the start)}}."""
  import time
  t0 = time.perf_counter()
  z = check_z(z, decoder.cfg.proj_dim)
  target = z if target is None else np.asarray(target, np.float32).reshape(len(z), -1)
  N, T = len(z), _prepare(decoder, z, max_len)[1]
  best_txt, best_cos, best_z = [""] * N, np.full(N, -np.inf), np.zeros_like(target)
  best_score, modes = np.full(N, -np.inf), np.broadcast_to(np.asarray(mode), (N,))
  cond, zc, per_round, greedy_cos = target.copy(), z, [], None
  weight = FLUENCY if fluency_weight is None else fluency_weight
  judge = lambda rows: _judge(rows, embed_fn, target, lambda c: _fluent(decoder, z, modes, tokenizer, rows, T, c,
                                                                         weight))
  for r in range(int(rounds)):
    if r: cond = cond + step_size * (target - best_z)
    if r: zc = check_z(cond if proj is None else proj(cond), decoder.cfg.proj_dim)
    groups = rerank_candidates(decoder, zc, tokenizer, k, max_len, seed * 1000 + r, mode, **rep)
    rows = [[g[i] for g in groups] for i in range(N)]  # greedy first: ties go to it, then to the beam's order
    if r:  # the best texts' one-word edits, judged beside the round's decodes
      more = edits.candidates(decoder, z, mode, tokenizer, best_txt, T)
      rows = [row + _id_texts(edits.edited(x, mv), T, tokenizer)
              for row, (x, mv) in zip(rows, more)]
      again = edits.regenerations(decoder, z, mode, more, T)
      rows = [row + _id_texts(y, T, tokenizer) for row, y in zip(rows, again)]
    emb, cos, score = judge(rows)
    if r:  # ... then the edits that improved on it, made together
      starts = edits.word_starts(tokenizer)[0]
      both = [_id_texts(edits.combine(x, mv, s[len(groups):len(groups) + len(mv)] - b, starts), T, tokenizer)
              for (x, mv), s, b in zip(more, score, best_score)]
      if any(both):
        e2, c2, s2 = judge(both)
        rows = [a + b for a, b in zip(rows, both)]
        emb, cos, score = ([np.concatenate(ab) for ab in zip(x, y)] for x, y in ((emb, e2), (cos, c2), (score, s2)))
    pick = [int(c.argmax()) for c in score]
    new_cos = np.array([c[j] for c, j in zip(cos, pick)])
    new_score = np.array([c[j] for c, j in zip(score, pick)])
    if greedy_cos is None: greedy_cos = np.array([c[0] for c in cos])
    for i in np.flatnonzero(new_score > best_score):
      best_txt[i], best_cos[i], best_z[i], best_score[i] = rows[i][pick[i]], new_cos[i], emb[i][pick[i]], new_score[i]
    per_round.append({"texts": list(best_txt), "cos": float(best_cos.mean()), "new_cos": float(new_cos.mean()),
                      "score": float(best_score.mean()), "seconds": time.perf_counter() - t0})
  return {"texts": best_txt, "cos": best_cos, "greedy_cos": greedy_cos, "rounds": per_round}


def _id_texts(rows: list[list[int]], T: int, tokenizer) -> list[str]:
  return _texts(edits.padded(rows, T), tokenizer) if rows else []


def _judge(rows: list[list[str]], embed_fn, target: np.ndarray, fluent) -> tuple[list, list, list]:
  """Each row's candidates re-embedded: their vectors (n, D), cosines to the row's target (n,), scores (n,)."""
  sizes = [len(row) for row in rows]
  emb = np.asarray(embed_fn([t for row in rows for t in row]), np.float32)
  offsets = np.cumsum([0] + sizes[:-1])
  emb = [emb[o:o + n] for o, n in zip(offsets, sizes)]
  cos = [cosine(e, t) if len(e) else np.zeros(0, np.float32) for e, t in zip(emb, target)]
  return emb, cos, fluent(cos)


def _fluent(decoder, z, modes, tokenizer, rows: list[list[str]], T: int, cos: list, weight: float) -> list:
  """Each row's candidates' cosines plus weight * their mean token log-probability from that row's z. A log-probability
  is below 0, so a candidate whose cosine is below a score already found cannot win: it is never read (score -inf).
  Two passes: each row's FLUENCY_FIRST closest candidates, then those still closer than the best score."""
  if not weight: return cos
  score = [np.full(len(c), -np.inf) for c in cos]
  order = [np.argsort(-c, kind="stable") for c in cos]
  first = [o[:FLUENCY_FIRST] for o in order]
  for picks in (first, None):
    if picks is None:
      picks = [o[FLUENCY_FIRST:][c[o[FLUENCY_FIRST:]] > s.max(initial=-np.inf)] for c, s, o in zip(cos, score, order)]
    owner = np.repeat(np.arange(len(rows)), [len(p) for p in picks])
    if not len(owner): break
    ids = [tokenizer.backend.encode(rows[i][j], add_special_tokens=False).ids[:T] for i, p in enumerate(picks)
           for j in p]
    lp = fluency.mean_logprob(decoder, np.asarray(z)[owner], modes[owner], ids, T + 1)
    for i, (p, o) in enumerate(zip(picks, np.cumsum([0] + [len(p) for p in picks]))):
      score[i][p] = cos[i][p] + weight * lp[o:o + len(p)]
  return score
