"""rerank's k candidates per row in one decode pass: greedy, beam and sample rows side by side in one decoder state.

Why one pass: as three passes (greedy over N rows, a K-beam over N*K, S samples over N*S) a round cost the sum of
their step counts, each step a device call and a copy of (rows, V) logits to the host; one state of k*N rows costs the
longest row's steps, at one shape for every round. Why a shortlist: every choice reads only each row's m best tokens
(logits.shortlist) and, for the beam, its log-normaliser, so a state that computes them where its logits are
(`step_top`: the tinygrad engine on a GPU) hands back (k*N, 2m+1) numbers a step instead of (k*N, V).

Rows: N greedy, then sentence b's K beams at N + b*K + j, then its S samples at N + N*K + b*S + j.
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD
from studentz_runtime.logits import NEG, SPECIALS, _draw, filter_logits, restrict, shortlist


def draw_top(vals: np.ndarray, idx: np.ndarray, temperature: float, top_p: float,
             rng: np.random.Generator) -> np.ndarray:
  """One token per row sampled from its shortlist (vals, idx best first): temperature, then the nucleus (the best
  tokens whose mass reaches top_p, ties at the threshold kept). The same draw as decoding.sample with top_k = m: one
  uniform per row, inverse CDF over the kept tokens in id order."""
  p = filter_logits(vals, temperature, 0, top_p)                                # (R, m), best first
  order = np.argsort(idx, -1, kind="stable")
  p, ids = np.take_along_axis(p, order, -1), np.take_along_axis(idx, order, -1)
  return ids[np.arange(len(ids)), _draw(p, rng)]


class Beams:
  """Beam search over N sentences of K rows each, fed one step's shortlist at a time: decoding.beam_candidates's rule
  (hypotheses ranked by logp / len**length_penalty, a sentence done at K finished ones), vectorised over sentences."""

  def __init__(self, N: int, K: int, length_penalty: float = 1.0):
    self.N, self.K, self.lp = N, K, length_penalty
    self.scores = np.full((N, K), NEG)
    self.scores[:, 0] = 0.0                            # all beams start identical: expand only the first
    self.done = np.zeros(N, bool)
    self.finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(N)]
    self.length = 0                                    # tokens in every live hypothesis

  def step(self, t: int, vals: np.ndarray, idx: np.ndarray, lse: np.ndarray, hist: np.ndarray):
    """Shortlists (N*K, m) and log-normalisers (N*K,) of step t, hist (N*K, t) each row's tokens so far ->
    (parent (N, K) within the sentence, token (N, K)); also updates self.done. Done sentences keep their rows."""
    N, K, m = self.N, self.K, vals.shape[1]
    cand = (self.scores[:, :, None] + (vals.astype(np.float64) - lse.astype(np.float64)[:, None]).reshape(N, K, m))
    cand = cand.reshape(N, K * m)
    n2 = min(2 * K, K * m)  # at most K of the best 2K end with EOS, so K others always remain
    top = np.argpartition(-cand, n2 - 1, axis=-1)[:, :n2] if n2 < K * m else np.tile(np.arange(K * m), (N, 1))
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, -1), axis=-1, kind="stable"), -1)
    score = np.take_along_axis(cand, top, -1)
    parent, col = np.divmod(top, m)
    tok = idx.reshape(N, K, m)[np.arange(N)[:, None], parent, col]
    valid = (score > NEG / 2) & ~self.done[:, None]    # banned or unreachable: never a hypothesis
    eos = valid & (tok == EOS)
    live = valid & ~eos
    rank = np.cumsum(live, -1) - 1                     # the live extensions' places, best first
    keep = live & (rank < K)
    new_parent, new_tok = np.tile(np.arange(K), (N, 1)), np.full((N, K), PAD, np.int32)
    new_scores = self.scores.copy()
    b, c = np.nonzero(keep)
    new_parent[b, rank[b, c]], new_tok[b, rank[b, c]], new_scores[b, rank[b, c]] = parent[b, c], tok[b, c], score[b, c]
    n_live = keep.sum(-1)
    new_scores[(np.arange(K)[None] >= n_live[:, None]) & ~self.done[:, None]] = NEG  # the rest stay dead
    for b, c in zip(*np.nonzero(eos[:, :K])):          # an EOS among the best K finishes a hypothesis
      seq = np.append(hist[b * K + parent[b, c]], EOS).astype(np.int32)
      self.finished[b].append((score[b, c] / (t + 1) ** self.lp, seq))
    self.done |= (np.array([len(f) for f in self.finished]) >= K) | (n_live == 0)
    self.scores = new_scores
    return new_parent, new_tok

  def hypotheses(self, hist: np.ndarray) -> list[list[tuple[float, np.ndarray]]]:
    """Per sentence (score, ids) best first: the finished ones, else the live beams (hist (N*K, length))."""
    K = self.K
    live = lambda b: [(self.scores[b, k] / max(self.length, 1) ** self.lp, hist[b * K + k])  # noqa: E731
                      for k in range(K) if self.scores[b, k] > NEG / 2]
    return [sorted(self.finished[b] or live(b) or [(0.0, np.array([EOS], np.int32))], key=lambda h: -h[0])
            for b in range(self.N)]


def _choices(state, tok, par, live, t, out, m, n_lo, n_beam_rows, rep):
  """Step the state; -> (greedy tokens (n_lo,), shortlist (vals, idx, lse) of the rows from n_lo: beam, then sample
  rows). With the repetition controls the full logits come back (restrict needs every token); else `step_top` where
  the state computes it on its device (shortlist_on_device). Rows not `live` (ended) get PAD and a dummy shortlist:
  nothing reads them."""
  if rep is None and getattr(state, "shortlist_on_device", False):
    vals, idx, lse = state.step_top(tok, par, m)
    return idx[:n_lo, 0], (vals[n_lo:], idx[n_lo:], lse[n_lo:])
  R = len(tok)
  logits = state.step(tok, par, live=live) if getattr(state, "takes_live", False) else state.step(tok, par)
  rows = np.flatnonzero(live)
  logits = np.asarray(logits, np.float32)[rows]                                  # a copy: masked in place
  logits[:, list(SPECIALS)] = NEG
  if rep: logits = restrict(logits, out[rows, :t], **rep)
  greedy_tok = np.full(n_lo, PAD, np.int32)
  g = rows < n_lo
  greedy_tok[rows[g]] = logits[g].argmax(-1)
  vals, idx, lse = np.zeros((R - n_lo, m), np.float32), np.full((R - n_lo, m), EOS, np.int32), np.zeros(R - n_lo)
  sub = rows[~g] - n_lo
  vals[sub], idx[sub], lse[sub] = shortlist(logits[~g], m, sub < n_beam_rows)
  return greedy_tok, (vals, idx, lse)


def one_pass(state, z: np.ndarray, modes: np.ndarray, T: int, n_beam: int, n_samp: int, m: int, temperature: float,
             top_p: float, seed: int, rep: dict | None = None) -> tuple[np.ndarray, list, np.ndarray]:
  """Decode z (N, D) once in `state` (built for N*(1 + n_beam + n_samp) rows; modes (N,)) for at most T tokens.
  Returns greedy ids (N, T), the beam's hypotheses per sentence (Beams.hypotheses) and sample ids (N*n_samp, T):
  each exactly as decoding.greedy, beam_candidates and sample (top_k = m) give them."""
  N, K, S = len(z), n_beam, n_samp
  R, g_hi, b_hi = N * (1 + K + S), N, N + N * K
  state.reset(np.concatenate([z, np.repeat(z, K, 0), np.repeat(z, S, 0)]),
              np.concatenate([modes, np.repeat(modes, K), np.repeat(modes, S)]))
  out = np.full((R, T), PAD, np.int32)
  tok, par, ident = np.full(R, BOS, np.int32), np.arange(R, dtype=np.int32), np.arange(R, dtype=np.int32)
  done = np.zeros(R, bool)
  done[g_hi:b_hi] = K == 0
  beams, rng = Beams(N, K) if K else None, np.random.default_rng(seed)
  for t in range(T):
    live = ~done
    if K: live[g_hi:b_hi] = ~np.repeat(beams.done, K)
    greedy_tok, (vals, idx, lse) = _choices(state, tok, par, live, t, out, m, g_hi, N * K, rep)
    nxt = np.full(R, PAD, np.int32)
    nxt[:g_hi] = greedy_tok
    if S and not done[b_hi:].all(): nxt[b_hi:] = draw_top(vals[N * K:], idx[N * K:], temperature, top_p, rng)
    par = ident.copy()
    if K and not beams.done.all():
      parent, new_tok = beams.step(t, vals[:N * K], idx[:N * K], lse[:N * K], out[g_hi:b_hi, :t])
      if beams.done.all(): done[g_hi:b_hi] = True     # the beam ends as beam_candidates's loop does: no update
      else:
        par[g_hi:b_hi] = (g_hi + np.arange(N)[:, None] * K + parent).reshape(-1)
        out[g_hi:b_hi] = out[par[g_hi:b_hi]]
        nxt[g_hi:b_hi] = new_tok.reshape(-1)
        beams.length = t + 1
    for lo, hi in ((0, g_hi), (b_hi, R)):              # greedy and sample rows: PAD after their EOS
      nxt[lo:hi][done[lo:hi]] = PAD
      out[lo:hi, t] = nxt[lo:hi]
      done[lo:hi] |= nxt[lo:hi] == EOS
    if g_hi < b_hi and not done[g_hi:b_hi].all(): out[g_hi:b_hi, t] = nxt[g_hi:b_hi]
    if done.all(): break
    tok = nxt
  hyps = beams.hypotheses(out[g_hi:b_hi, :beams.length]) if K else [[] for _ in range(N)]
  return out[:g_hi], hyps, out[b_hi:]
