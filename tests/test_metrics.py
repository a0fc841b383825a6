"""Tests for metrics.py: hand-worked values first; scipy / sacrebleu only as optional oracles (skipped if missing)."""
import math

import numpy as np
import pytest

from conftest import SHARED_DATA
from studentz_runtime import metrics as M

# ---------------------------------------------------------------------------------------------------------------------
# correlations


def test_spearman_ties_hand_ranked():
  # x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]; both rank means are 2.5
  # centred: rx = [-1.5, 0, 0, 1.5], ry = [-1.5, 0.5, -0.5, 1.5]
  # sum(rx*ry) = 2.25 + 2.25 = 4.5; sum(rx^2) = 4.5; sum(ry^2) = 2.25+0.25+0.25+2.25 = 5  ->  4.5/sqrt(22.5) = sqrt(0.9)
  assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)
  np.testing.assert_array_equal(M._rank_average(np.array([10., 30, 20, 30, 10, 30])), [1.5, 5, 3, 5, 1.5, 5])


def test_spearman_monotone_and_errors():
  assert M.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
  assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))  # constant input: undefined, like scipy
  with pytest.raises(ValueError): M.spearman([1, 2, 3], [1, 2])
  with pytest.raises(ValueError): M.spearman([1], [1])
  with pytest.raises(ValueError): M.spearman([1, float("nan"), 3], [1, 2, 3])
  with pytest.raises(ValueError): M.pearson([1, 2], [1, 2, 3])


def test_spearman_vs_scipy():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  for _ in range(5):
    x, y = rng.integers(0, 6, 300).astype(float), rng.normal(size=300)  # many ties in x
    y[:50] = np.round(y[:50])
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    np.testing.assert_allclose(M._rank_average(x), stats.rankdata(x, method="average"))
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_pearson_hand():
  # x - 2 = [-1, 0, 1]; y - 7/3 = [-4/3, -1/3, 5/3]; cov sum = 4/3 + 5/3 = 3; sxx = 2; syy = 42/9 -> 9/sqrt(84)
  assert M.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# embeddings, STS-B


def test_cosine_rows():
  a = np.array([[1, 0], [1, 1], [0, 0], [3, 4]], np.float32)
  b = np.array([[0, 1], [2, 2], [1, 0], [-3, -4]], np.float32)
  out = M.cosine_rows(a, b)
  assert out.shape == (4,) and np.isfinite(out).all()
  np.testing.assert_allclose(out, [0, 1, 0, -1], atol=1e-7)
  with pytest.raises(ValueError): M.cosine_rows(a, b[:3])


def test_stsb_spearman_perfect_and_reversed():
  scores = np.array([0, 1.5, 1.5, 3, 4.2, 5], np.float32)
  theta = (5 - scores.astype(np.float64)) / 5 * (np.pi / 2)  # cosine falls as the score falls
  e1 = np.tile([1.0, 0.0], (len(scores), 1))
  e2 = np.stack([np.cos(theta), np.sin(theta)], 1)
  assert M.stsb_spearman(e1, e2, scores) == pytest.approx(100.0)
  assert M.stsb_spearman(e1, e2, -scores) == pytest.approx(-100.0)


def _angles(deg):
  r = np.deg2rad(np.asarray(deg, np.float64))
  return np.stack([np.cos(r), np.sin(r)], 1)


def test_retrieval_overlap_hand_case():
  # unit vectors at these angles; nearest = smallest angle difference
  s = _angles([0, 10, 30, 90, 100])
  t = _angles([0, 50, 30, 90, 100])
  # k=1: student NN 0->1 1->0 2->1 3->4 4->3; teacher NN 0->2 1->2 2->1 3->4 4->3; hits 0,0,1,1,1 -> 3/5
  assert M.retrieval_overlap_at_k(s, t, k=1) == pytest.approx(0.6)
  # k=2: student 0:{1 (10deg), 2 (30)} 1:{0 (10), 2 (20)} 2:{1 (20), 0 (30)} 3:{4 (10), 2 (60)} 4:{3 (10), 2 (70)}
  #      teacher 0:{2 (30), 1 (50)} 1:{2 (20), 3 (40)} 2:{1 (20), 0 (30)} 3:{4 (10), 1 (40)} 4:{3 (10), 1 (50)}
  #      |intersection| = 2,1,2,1,1 -> 7/(5*2) = 0.7
  np.testing.assert_allclose(M.retrieval_overlap_at_k(s, t, k=2, per_query=True), [1, .5, 1, .5, .5])
  assert M.retrieval_overlap_at_k(s, t, k=2, block=2) == pytest.approx(0.7)  # ragged blocks give the same
  assert M.retrieval_overlap_at_k(s, s * 7.0, k=3) == 1.0  # scale does not matter


def test_retrieval_ties_go_to_lower_index():
  sims = np.array([[0.5, 0.9, 0.5, 0.5, -np.inf]], np.float32)
  assert M._topk_mask(sims, 2).nonzero()[1].tolist() == [0, 1]
  assert M._topk_mask(sims, 3).nonzero()[1].tolist() == [0, 1, 2]
  assert M._topk_mask(sims, 1).nonzero()[1].tolist() == [1]
  z = np.zeros((6, 4), np.float32)  # all zero vectors: every similarity ties, both spaces pick the same neighbours
  assert M.retrieval_overlap_at_k(z, z, k=2) == 1.0


def test_retrieval_identical_random_and_errors():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2000, 32)).astype(np.float32)
  assert M.retrieval_overlap_at_k(x, x, k=10) == 1.0
  y = rng.normal(size=(2000, 24)).astype(np.float32)  # unrelated: expected overlap k/(N-1) = 0.005
  assert M.retrieval_overlap_at_k(x, y, k=10) < 0.02
  with pytest.raises(ValueError): M.retrieval_overlap_at_k(x, y[:100], k=10)
  with pytest.raises(ValueError): M.retrieval_overlap_at_k(x[:10], y[:10], k=10)  # k must be <= N-1
  with pytest.raises(ValueError): M.retrieval_overlap_at_k(x[:10], y[:10], k=0)


def _brute_overlap(s, t, k):
  out = []
  for e in (s, t):
    e = e.astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    out.append(np.argsort(-sims, axis=1, kind="stable")[:, :k])
  return np.array([len(set(a) & set(b)) / k for a, b in zip(*out)])


def test_retrieval_blocks_match_brute_force():
  rng = np.random.default_rng(2)
  n, k = 1500, 10
  s = rng.normal(size=(n, 16)).astype(np.float32)
  t = (s @ rng.normal(size=(16, 20)) + 0.7 * rng.normal(size=(n, 20))).astype(np.float32)  # related, not equal
  ref = _brute_overlap(s, t, k)
  assert 0.2 < ref.mean() < 0.9  # a non-trivial case
  for block in (1024, 256, n):  # 1024 + 476, 5 * 256 + 220, one block
    got = M.retrieval_overlap_at_k(s, t, k=k, block=block, per_query=True)
    # float32 blocks vs float64 brute force: only a near-tie at the k-th place could ever differ
    assert (got != ref).mean() <= 0.002
    assert abs(got.mean() - ref.mean()) < 1e-3
    assert M.retrieval_overlap_at_k(s, t, k=k, block=block) == pytest.approx(got.mean())


# ---------------------------------------------------------------------------------------------------------------------
# STS-B loading


@pytest.mark.parametrize("split,n", [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_load_stsb_counts(split, n):
  path = SHARED_DATA / "stsb" / f"sts-{split}.csv"
  if not path.exists(): pytest.skip(f"no STS-B data at {path}")
  s1, s2, scores, skipped = M.load_stsb(path, return_skipped=True)
  assert len(s1) == len(s2) == len(scores) == n and skipped == 0
  assert scores.dtype == np.float32 and scores.min() >= 0 and scores.max() <= 5
  if split == "dev":
    assert (s1[0], s2[0], scores[0]) == ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5)
    # a real 9-column row (source columns after sentence 2) parses to its own two sentences
    i = s1.index("US Supreme Court limits president's recess appointments power")
    assert s2[i] == "High court checks President's recess appointment power" and scores[i] == 5


def test_load_stsb_extra_columns_quotes_and_malformed(tmp_path):
  p = tmp_path / "sts.csv"
  p.write_text("\n".join([
    'main-news\theadlines\t2016\t0001\t3.800\tHe said "hi\tShe said "bye" twice\tsrc A\tsrc B',  # extra columns
    "main-forums\tdeft\t2014\t0002\t1.0\tno sentence two",  # 6 fields: malformed
    "main-forums\tdeft\t2014\t0003\tn/a\ta\tb",  # unparsable score: malformed
    "",  # blank lines are not counted
    "main-captions\tMSRvid\t2012test\t0004\t0\t'Single' quotes\t\"\"",
  ]) + "\n")
  with pytest.warns(UserWarning, match="skipped 2"):
    s1, s2, scores, skipped = M.load_stsb(p, return_skipped=True)
  assert skipped == 2
  assert s1 == ['He said "hi', "'Single' quotes"] and s2 == ['She said "bye" twice', '""']
  np.testing.assert_allclose(scores, [3.8, 0.0])
  assert scores.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------------
# text metrics


def test_simple_tokens():
  assert M.simple_tokens("Hello, World!  It's 3.5") == ["hello", ",", "world", "!", "it", "'", "s", "3", ".", "5"]
  assert M.simple_tokens("  ") == []


def test_bleu_perfect_and_zero():
  hyps = ["The cat sat on the mat.", "a dog runs in the park today"]
  assert M.bleu(hyps, hyps) == pytest.approx(100.0)
  assert M.bleu(hyps, [h.upper() for h in hyps]) == pytest.approx(100.0)  # lowercased tokens
  assert M.bleu(["a b c d e"], ["f g h i j"]) == 0.0
  assert M.bleu(["a b c d e"], ["f g h i j"], smooth="none") == 0.0
  assert M.bleu([""], ["a b c d"]) == 0.0
  assert M.bleu(["a b c"], ["a b c"]) == 0.0  # no 4-gram anywhere in the corpus: undefined -> 0 (as sacrebleu)
  assert M.sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
  assert M.sentence_bleu("x y z", "a b c") == 0.0


def test_bleu_hand_corpus():
  # pair 1 identical (6 tokens): matches = totals = [6, 5, 4, 3]
  # pair 2 hyp "a dog ran" (3 tokens) vs ref "a dog runs fast today" (5 tokens):
  #   1-grams a, dog match: 2/3; 2-gram "a dog": 1/2; 3-gram "a dog ran": 0/1; no 4-gram: 0/0
  # corpus: matches [8, 6, 4, 3], totals [9, 7, 5, 3]; c = 9, r = 11 -> BP = exp(1 - 11/9) = exp(-2/9)
  # BLEU = 100 * exp(-2/9) * (8/9 * 6/7 * 4/5 * 3/3) ** (1/4) = 100 * exp(-2/9) * (64/105) ** 0.25 ~ 70.7518
  hyps = ["the cat sat on the mat", "a dog ran"]
  refs = ["the cat sat on the mat", "a dog runs fast today"]
  want = 100 * math.exp(-2 / 9) * (64 / 105) ** 0.25
  assert M.bleu(hyps, refs) == pytest.approx(want, abs=1e-9)
  assert M.bleu(hyps, refs, smooth="none") == pytest.approx(want, abs=1e-9)
  assert want == pytest.approx(70.7518, abs=1e-4)


def test_bleu_hand_smoothing():
  # hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 tokens each, BP = 1)
  # 1-grams: the x2, cat, on, mat -> 5/6; 2-grams: "the cat", "on the", "the mat" -> 3/5
  # 3-grams: "on the mat" -> 1/4; 4-grams: 0/3
  h, r = "the cat sat on the mat", "the cat is on the mat"
  assert M.bleu([h], [r], smooth="none") == 0.0
  # exp smoothing (sacrebleu default): the first zero order gets 1/(2 * 3) -> (5/6 * 3/5 * 1/4 * 1/6)^(1/4) = 48^-0.25
  assert M.bleu([h], [r]) == pytest.approx(100 * 48 ** -0.25, abs=1e-9)
  # sentence BLEU, add-one on n > 1: 5/6, 4/6, 2/5, 1/4 -> (5/6 * 2/3 * 2/5 * 1/4)^(1/4) = (1/18)^(1/4)
  assert M.sentence_bleu(h, r) == pytest.approx(100 * 18 ** -0.25, abs=1e-9)
  # clipping (Papineni): "the the the the" vs "the cat": 1-gram 1/4 (clipped), then (0+1)/(3+1), 1/3, 1/2
  assert M.sentence_bleu("the the the the", "the cat") == pytest.approx(100 * 96 ** -0.25, abs=1e-9)
  # brevity: hyp "the cat" vs ref "the cat sat on" -> 1-gram 2/2, 2-gram (1+1)/(1+1), 3-/4-gram (0+1)/(0+1) -> all 1
  #          BP = exp(1 - 4/2) = e^-1
  assert M.sentence_bleu("the cat", "the cat sat on") == pytest.approx(100 * math.exp(-1), abs=1e-9)


def _random_corpus(rng, n, vocab=8):
  words = [f"w{i}" for i in range(vocab)]
  def sent():
    return " ".join(rng.choice(words, size=int(rng.integers(0, 12))))
  return [sent() for _ in range(n)], [sent() for _ in range(n)]


def test_bleu_vs_sacrebleu():
  sacrebleu = pytest.importorskip("sacrebleu")
  rng = np.random.default_rng(3)
  cases = [_random_corpus(rng, 40), _random_corpus(rng, 5, vocab=30), _random_corpus(rng, 3, vocab=50),
           (["The cat, it sat on the mat!", "Hello there"], ["the cat sat on a mat!", "hello, there friend"])]
  for hyps, refs in cases:
    th = [" ".join(M.simple_tokens(h)) for h in hyps]
    tr = [" ".join(M.simple_tokens(r)) for r in refs]
    for smooth in ("exp", "none"):
      want = sacrebleu.corpus_bleu(th, [tr], tokenize="none", lowercase=False, smooth_method=smooth).score
      assert M.bleu(hyps, refs, smooth=smooth) == pytest.approx(want, abs=1e-6)
    for h, r in zip(hyps, refs):
      want = sacrebleu.sentence_bleu(" ".join(M.simple_tokens(h)), [" ".join(M.simple_tokens(r))], tokenize="none",
                                     lowercase=False, smooth_method="add-k", smooth_value=1).score
      assert M.sentence_bleu(h, r) == pytest.approx(want, abs=1e-6)


def test_token_f1_and_exact_match():
  # P = 2/3, R = 2/2 -> F1 = 2 * (2/3) / (5/3) = 0.8
  assert M.token_f1("the cat sat", "the cat") == pytest.approx(0.8)
  assert M.token_f1("The cat.", "the CAT .") == 1.0
  assert M.token_f1("dog", "cat") == 0.0
  assert M.token_f1("", "") == 1.0 and M.token_f1("", "cat") == 0.0
  # multiset: "a a a b" vs "a b b": common = min(3,1) + min(1,2) = 2; P = 2/4, R = 2/3 -> F1 = 4/7
  assert M.token_f1("a a a b", "a b b") == pytest.approx(4 / 7)
  assert M.mean_token_f1(["the cat sat", "x"], ["the cat", "y"]) == pytest.approx(40.0)
  assert M.exact_match(["Hello   World", " foo\t", "foo"], ["hello world", "FOO", "bar"]) == pytest.approx(200 / 3)
  assert M.exact_match([], []) == 0.0
  with pytest.raises(ValueError): M.exact_match(["a"], [])
  with pytest.raises(TypeError): M.mean_token_f1("abc", "abc")


def test_distinct_n():
  texts = ["The cat sat", "the cat ran"]
  # 2-grams: (the cat) (cat sat) (the cat) (cat ran) -> 3 unique / 4
  assert M.distinct_n(texts, 2) == pytest.approx(0.75)
  # 1-grams: the cat sat the cat ran -> 4 unique / 6
  assert M.distinct_n(texts, 1) == pytest.approx(4 / 6)
  assert M.distinct_n(["a", ""], 2) == 0.0 and M.distinct_n([], 1) == 0.0
  assert M.distinct_n(["a b", "b c"], 2) == 1.0  # n-grams do not cross texts: (a b) (b c) only


def test_perplexity_and_entropy():
  assert M.perplexity(10 * math.log(5), 10) == pytest.approx(5.0)
  assert M.perplexity(1e6, 1) == math.inf
  with pytest.raises(ValueError): M.perplexity(1.0, 0)
  # uniform over 4 -> ln 4; one-hot -> 0
  logits = np.array([[[0., 0, 0, 0], [1000., 0, 0, 0]]], np.float32)  # [B=1, L=2, V=4], large logit stays finite
  assert M.token_entropy(logits) == pytest.approx(math.log(4) / 2, abs=1e-6)
  assert M.token_entropy(logits, mask=np.array([[1, 0]])) == pytest.approx(math.log(4), abs=1e-6)
  assert M.token_entropy(logits, mask=np.array([[0, 1]])) == pytest.approx(0.0, abs=1e-6)
  assert M.token_entropy(logits, mask=np.zeros((1, 2))) == 0.0
  probs = np.array([[0.5, 0.5, 0, 0], [1, 0, 0, 0]])
  assert M.token_entropy(probs, logits=False) == pytest.approx(math.log(2) / 2)
  rng = np.random.default_rng(4)
  z = rng.normal(size=(3, 5, 11)) * 3
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  mask = rng.integers(0, 2, (3, 5))
  mask[0, 0] = 1
  assert M.token_entropy(z, mask) == pytest.approx(M.token_entropy(p, mask, logits=False), abs=1e-9)
  with pytest.raises(ValueError): M.token_entropy(z, mask[:, :2])
