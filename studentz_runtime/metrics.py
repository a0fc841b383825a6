"""Evaluation metrics in plain numpy: correlations, STS-B, retrieval overlap, BLEU, token-F1, exact match, distinct-n.

Run-time dependencies: numpy and the standard library only. Text metrics all tokenise with `simple_tokens`.
"""
import math, re, warnings
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["spearman", "pearson", "cosine_rows", "retrieval_overlap_at_k", "stsb_spearman", "load_stsb",
           "simple_tokens", "bleu", "sentence_bleu", "token_f1", "mean_token_f1", "exact_match", "distinct_n",
           "perplexity", "token_entropy"]

# ---------------------------------------------------------------------------------------------------------------------
# correlations


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if x.ndim != 1 or y.ndim != 1: raise ValueError(f"expected 1-D inputs, got shapes {x.shape} and {y.shape}")
  if len(x) != len(y): raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
  if len(x) < 2: raise ValueError(f"need at least 2 items, got {len(x)}")
  if not (np.isfinite(x).all() and np.isfinite(y).all()): raise ValueError("inputs contain NaN or inf")
  return x, y


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  xm, ym = x - x.mean(), y - y.mean()
  denom = math.sqrt(float(xm @ xm) * float(ym @ ym))
  if denom == 0.0: return float("nan")  # a constant input: the correlation is undefined (as scipy says)
  return float(np.clip((xm @ ym) / denom, -1.0, 1.0))


def _rank_average(x: np.ndarray) -> np.ndarray:
  """1-based ranks, ties get the mean of the ranks they span (scipy.stats.rankdata(method='average'))."""
  n = len(x)
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  first = np.r_[True, xs[1:] != xs[:-1]]
  starts = np.flatnonzero(first)
  counts = np.diff(np.r_[starts, n])
  avg = starts + (counts + 1) / 2.0
  ranks = np.empty(n, dtype=np.float64)
  ranks[order] = avg[np.cumsum(first) - 1]
  return ranks


def pearson(x, y) -> float:
  """Pearson correlation of two 1-D sequences. ValueError on length mismatch, < 2 items or NaN/inf; NaN if constant."""
  return _pearson(*_paired(x, y))


def spearman(x, y) -> float:
  """Spearman rank correlation with average ranks for ties. Same errors as `pearson`; NaN if an input is constant."""
  x, y = _paired(x, y)
  return _pearson(_rank_average(x), _rank_average(y))


# ---------------------------------------------------------------------------------------------------------------------
# embeddings


def _unit_rows(a: np.ndarray, eps: float, dtype=np.float64) -> np.ndarray:
  a = np.asarray(a, dtype=dtype)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps).astype(dtype)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine along the last axis, broadcasting the others ((k, N, D) against (N, D) gives (k, N)); float32 stays
  float32. The candidate judges (rerank, correction rounds, infer.py's cos to the teacher) all use this one."""
  return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1) + 1e-12)


def cosine_rows(a, b, eps: float = 1e-8) -> np.ndarray:
  """Row-wise cosine similarity of a[i] and b[i] ([N, D] each) -> float64 [N]; a zero row gives 0, not NaN."""
  a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
  if a.shape != b.shape or a.ndim != 2: raise ValueError(f"expected two [N, D] arrays, got {a.shape} and {b.shape}")
  return np.einsum("nd,nd->n", _unit_rows(a, eps), _unit_rows(b, eps))


def _topk_mask(sims: np.ndarray, k: int) -> np.ndarray:
  """Boolean mask [B, N] with exactly k True per row: the k largest; ties at the k-th value go to lower indices."""
  kth = np.partition(sims, -k, axis=1)[:, -k][:, None]
  above = sims > kth
  need = k - above.sum(1)
  eq = sims == kth
  mask = above | eq
  over = np.flatnonzero(eq.sum(1) > need)  # rows whose tie group at the k-th value is larger than the room left
  if len(over):
    sub = eq[over]
    mask[over] = above[over] | (sub & (np.cumsum(sub, axis=1) <= need[over, None]))
  return mask


def retrieval_overlap_at_k(student, teacher, k: int = 10, block: int = 1024, per_query: bool = False):
  """Mean over queries of |kNN_student(i) & kNN_teacher(i)| / k.

  Neighbours are by cosine over the same N items (rows of `student` [N, Ds] and `teacher` [N, Dt]), the query itself
  excluded; ties at the k-th place go to the lower index. Computed `block` query rows at a time in float32, so memory
  is O(block * N). `per_query=True` returns the float64 [N] overlaps instead of their mean.
  """
  s, t = np.asarray(student), np.asarray(teacher)
  if s.ndim != 2 or t.ndim != 2 or len(s) != len(t):
    raise ValueError(f"expected [N, Ds] and [N, Dt] with the same N, got {s.shape} and {t.shape}")
  n = len(s)
  if not 1 <= k <= n - 1: raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
  if block < 1: raise ValueError(f"block must be >= 1, got {block}")
  if not (np.isfinite(s).all() and np.isfinite(t).all()): raise ValueError("embeddings contain NaN or inf")
  s, t = _unit_rows(s, 1e-12, np.float32), _unit_rows(t, 1e-12, np.float32)
  out = np.empty(n, dtype=np.float64)
  for lo in range(0, n, block):
    hi = min(lo + block, n)
    rows = np.arange(hi - lo)
    ms = []
    for e in (s, t):
      sims = e[lo:hi] @ e.T
      sims[rows, rows + lo] = -np.inf
      ms.append(_topk_mask(sims, k))
      del sims
    out[lo:hi] = (ms[0] & ms[1]).sum(1) / k
  return out if per_query else float(out.mean())


# ---------------------------------------------------------------------------------------------------------------------
# STS benchmark


def stsb_spearman(emb1, emb2, scores) -> float:
  """100 * Spearman(cosine(emb1[i], emb2[i]), scores): the STS-B figure as papers report it."""
  return 100.0 * spearman(cosine_rows(emb1, emb2), scores)


def load_stsb(path, return_skipped: bool = False):
  """Read an STS-B file (tab-separated: genre, file, year, id, score, sentence1, sentence2[, extra columns...]).

  Columns are taken by position, no csv quoting (sentences contain quotes). Lines with fewer than 7 fields or an
  unparsable score are skipped and counted (a warning says how many). Returns (s1, s2, scores float32 [N]), plus the
  skipped count when `return_skipped`.
  """
  s1, s2, scores, skipped = [], [], [], 0
  with open(Path(path), encoding="utf-8", newline="") as f:
    for line in f:
      line = line.rstrip("\r\n")
      if not line.strip(): continue
      fields = line.split("\t")
      if len(fields) < 7:
        skipped += 1
        continue
      try:
        score = float(fields[4])
      except ValueError:
        skipped += 1
        continue
      if not math.isfinite(score):
        skipped += 1
        continue
      s1.append(fields[5]); s2.append(fields[6]); scores.append(score)
  if skipped: warnings.warn(f"load_stsb: skipped {skipped} malformed line(s) in {path}", stacklevel=2)
  out = (s1, s2, np.asarray(scores, dtype=np.float32))
  return (*out, skipped) if return_skipped else out


# ---------------------------------------------------------------------------------------------------------------------
# text metrics

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def simple_tokens(text: str) -> list[str]:
  """Lowercased word runs and single punctuation marks: 'Hello, World!' -> ['hello', ',', 'world', '!']."""
  return _TOKEN_RE.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
  return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_stats(hyp: list[str], ref: list[str], max_n: int) -> tuple[list[int], list[int]]:
  matches, totals = [], []
  for n in range(1, max_n + 1):
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    matches.append(sum((h & r).values()))
    totals.append(max(len(hyp) - n + 1, 0))
  return matches, totals


def _check_pairs(hyps, refs) -> None:
  if isinstance(hyps, str) or isinstance(refs, str): raise TypeError("expected lists of strings, got a str")
  if len(hyps) != len(refs): raise ValueError(f"length mismatch: {len(hyps)} hyps vs {len(refs)} refs")


def bleu(hyps: list[str], refs: list[str], max_n: int = 4, smooth: str = "exp") -> float:
  """Corpus BLEU in 0-100 (Papineni et al.): clipped n-gram counts summed over the corpus, geometric mean of the
  precisions, brevity penalty exp(1 - r/c) when c < r. One reference per hypothesis.

  `smooth` only matters when some order has no match at all: 'none' gives 0 then; 'exp' (sacrebleu's default, NIST
  mteval) uses 1 / (2^j * total) for the j-th such order. Equals sacrebleu.corpus_bleu(hyps, [refs], tokenize='none')
  on text pre-tokenised by `simple_tokens`. 0 when nothing matches or the corpus has no n-gram of some order.
  """
  _check_pairs(hyps, refs)
  if smooth not in ("exp", "none"): raise ValueError(f"smooth must be 'exp' or 'none', got {smooth!r}")
  if max_n < 1: raise ValueError(f"max_n must be >= 1, got {max_n}")
  matches, totals, c, r = [0] * max_n, [0] * max_n, 0, 0
  for h, ref in zip(hyps, refs):
    ht, rt = simple_tokens(h), simple_tokens(ref)
    m, t = _bleu_stats(ht, rt, max_n)
    matches = [a + b for a, b in zip(matches, m)]
    totals = [a + b for a, b in zip(totals, t)]
    c, r = c + len(ht), r + len(rt)
  if c == 0 or not any(matches) or min(totals) == 0: return 0.0
  log_p, halvings = 0.0, 1.0
  for m, t in zip(matches, totals):
    if m == 0:
      if smooth == "none": return 0.0
      halvings *= 2.0
      log_p += math.log(1.0 / (halvings * t))
    else:
      log_p += math.log(m / t)
  bp = 1.0 if c >= r else math.exp(1.0 - r / c)
  return 100.0 * bp * math.exp(log_p / max_n)


def sentence_bleu(hyp: str, ref: str, max_n: int = 4) -> float:
  """Sentence BLEU in 0-100 with Lin & Och (2004) add-one smoothing: p1 = m1/t1, pn = (mn + 1)/(tn + 1) for n > 1;
  brevity penalty from the sentence lengths. 0 when no unigram matches (or hyp is empty)."""
  if max_n < 1: raise ValueError(f"max_n must be >= 1, got {max_n}")
  ht, rt = simple_tokens(hyp), simple_tokens(ref)
  m, t = _bleu_stats(ht, rt, max_n)
  if not ht or m[0] == 0: return 0.0
  log_p = math.log(m[0] / t[0]) + sum(math.log((mn + 1) / (tn + 1)) for mn, tn in zip(m[1:], t[1:]))
  bp = 1.0 if len(ht) >= len(rt) else math.exp(1.0 - len(rt) / len(ht))
  return 100.0 * bp * math.exp(log_p / max_n)


def token_f1(hyp: str, ref: str) -> float:
  """SQuAD-style bag-of-tokens F1 in 0-1 (multiset overlap); 1 if both are empty, 0 if only one is."""
  ht, rt = simple_tokens(hyp), simple_tokens(ref)
  if not ht or not rt: return float(ht == rt)
  common = sum((Counter(ht) & Counter(rt)).values())
  if common == 0: return 0.0
  p, r = common / len(ht), common / len(rt)
  return 2 * p * r / (p + r)


def mean_token_f1(hyps: list[str], refs: list[str]) -> float:
  """Mean `token_f1` over pairs, in 0-100 (0 for an empty list)."""
  _check_pairs(hyps, refs)
  return 100.0 * sum(token_f1(h, r) for h, r in zip(hyps, refs)) / len(hyps) if hyps else 0.0


def exact_match(hyps: list[str], refs: list[str]) -> float:
  """Percent (0-100) of pairs equal after lowercasing and whitespace normalisation (compared as `simple_tokens`, so
  'Hello , world' == 'hello, world'). 0 for an empty list."""
  _check_pairs(hyps, refs)
  return 100.0 * sum(simple_tokens(h) == simple_tokens(r) for h, r in zip(hyps, refs)) / len(hyps) if hyps else 0.0


def distinct_n(texts: list[str], n: int) -> float:
  """Unique n-grams / total n-grams over the corpus (n-grams do not cross texts); 0 if there are none."""
  if isinstance(texts, str): raise TypeError("expected a list of strings, got a str")
  if n < 1: raise ValueError(f"n must be >= 1, got {n}")
  seen, total = set(), 0
  for text in texts:
    tok = simple_tokens(text)
    grams = [tuple(tok[i:i + n]) for i in range(len(tok) - n + 1)]
    seen.update(grams)
    total += len(grams)
  return len(seen) / total if total else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# language-model helpers


def perplexity(nll_sum: float, n_tokens: int) -> float:
  """exp(nll_sum / n_tokens) for a summed natural-log NLL; inf on overflow. ValueError if n_tokens <= 0."""
  if n_tokens <= 0: raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
  try:
    return math.exp(float(nll_sum) / n_tokens)
  except OverflowError:
    return math.inf


def token_entropy(x, mask=None, logits: bool = True) -> float:
  """Mean entropy (nats) of the distributions along the last axis of x [..., V], over the positions where mask [...]
  is nonzero (all if None). x holds logits (softmax taken, stably) or, with logits=False, probabilities.
  0 when no position is selected."""
  x = np.asarray(x)
  x = x.astype(np.result_type(x.dtype, np.float32), copy=False)  # float32 stays float32 ([B, L, V] can be big)
  if x.ndim < 1: raise ValueError("expected an array [..., V]")
  if logits:
    z = x - x.max(axis=-1, keepdims=True)
    ez = np.exp(z)
    s = ez.sum(axis=-1, keepdims=True)
    h = (np.log(s[..., 0]) - (ez * z).sum(-1) / s[..., 0]).astype(np.float64)  # H = log S - sum(e^z z) / S
  else:
    with np.errstate(divide="ignore", invalid="ignore"):
      h = -np.where(x > 0, x * np.log(x), 0.0).sum(-1).astype(np.float64)
  if mask is None: return float(h.mean()) if h.size else 0.0
  m = np.asarray(mask, dtype=np.float64)
  if m.shape != h.shape: raise ValueError(f"mask shape {m.shape} != positions shape {h.shape}")
  denom = m.sum()
  return float((h * m).sum() / denom) if denom > 0 else 0.0
