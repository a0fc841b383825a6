"""Repetition controls (no_repeat_ngram, repetition_penalty) and the re-embedding rerank of decoding.py, proven on a
tiny fake logit source whose preferences are known, then on the shipped model with both engines."""
from types import SimpleNamespace

import numpy as np
import pytest

from studentz_runtime import candidates, decoding
from studentz_runtime import logits as logits_rules
from studentz_corpus.tokenizer import EOS, PAD

V = 12  # 0-3 are PAD/BOS/EOS/UNK: 8 ordinary tokens


class FakeState:
  """Logits that never depend on the input: token 5 always best, then 6, 7, ...; EOS worst (never ends by itself)."""

  def __init__(self, batch_size: int): self.batch_size = batch_size

  def reset(self, z, mode): return self

  def step(self, tokens, parents=None):
    row = np.array([0, 0, -5, 0, 1.0, 2.0, 1.9, 1.5, 1.4, 1.3, -0.5, -1.0], np.float32)
    return np.tile(row, (self.batch_size, 1))


class FakeDecoder:
  cfg = SimpleNamespace(proj_dim=4, vocab_size=V, max_len=25)

  def new_state(self, batch_size: int): return FakeState(batch_size)


class FakeBackend:
  """Every token a word of its own ("Ġ" marks a word start, as byte-level BPE does): text "5 7" is ids [5, 7]."""

  def encode(self, text, add_special_tokens=False): return SimpleNamespace(ids=[int(t) for t in text.split()])

  def id_to_token(self, i): return f"\u0120{i}"

  def get_vocab_size(self): return 32


class FakeTokenizer:
  vocab_size = V
  backend = FakeBackend()

  def decode_batch(self, ids):
    return [" ".join(str(int(t)) for t in row if t not in (PAD, EOS)) for row in ids]


Z = np.ones((3, 4), np.float32)


def ngrams(row, n):
  row = [int(t) for t in row if t not in (PAD, EOS)]
  return [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]


def test_fake_model_repeats_without_controls():
  ids = decoding.greedy(FakeDecoder(), Z)
  assert (ids == 5).all()  # the loop the controls must break


@pytest.mark.parametrize("strategy,kw", [("greedy", {}), ("sample", {"temperature": 0.7, "seed": 3}),
                                         ("beam", {"beam": 3})])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_never_repeats(strategy, kw, n):
  ids = decoding.generate(FakeDecoder(), Z, strategy, no_repeat_ngram=n, **kw)
  for row in ids:
    grams = ngrams(row, n)
    assert len(grams) == len(set(grams)) and len(grams) > 0, row
  if n == 1:  # 8 tokens, none may come twice: then nothing is allowed and the row must end with EOS, not a masked id
    assert all(EOS in row for row in ids) and not np.isin(ids, [1, 3]).any()


def test_restrict_penalty_divides_positive_multiplies_negative():
  logits = np.array([[2.0, -2.0, 1.0, 4.0]], np.float32)
  out = decoding.restrict(logits.copy(), np.array([[0, 1, 1]]), repetition_penalty=2.0)
  np.testing.assert_allclose(out, [[1.0, -4.0, 1.0, 4.0]])  # token 1 twice in the history: penalised once


def test_repetition_penalty_moves_greedy_off_a_repeat():
  ids = decoding.greedy(FakeDecoder(), Z, repetition_penalty=1.2)
  # 2.0 / 1.2 < 1.9: the runner-up wins the second step; then 1.67 > 1.9 / 1.2 (penalised once, however often seen)
  assert ids[0, :3].tolist() == [5, 6, 5]
  beam = decoding.beam_search(FakeDecoder(), Z, beam=2, repetition_penalty=1.2)
  assert beam[0, 0] == 5 and beam[0, 1] != 5


def test_controls_validated_with_one_line_errors():
  for kw, word in [({"no_repeat_ngram": -1}, "no_repeat_ngram"), ({"no_repeat_ngram": 2.5}, "no_repeat_ngram"),
                   ({"no_repeat_ngram": 99}, "no_repeat_ngram"), ({"repetition_penalty": 0.5}, "repetition_penalty"),
                   ({"repetition_penalty": float("nan")}, "repetition_penalty"),
                   ({"repetition_penalty": 11}, "repetition_penalty"), ({"rerank": 1}, "rerank"),
                   ({"strategy": "nope"}, "strategy")]:
    with pytest.raises(ValueError, match=word) as e: decoding.check_options(**kw)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="embed_fn"): decoding.decode(FakeDecoder(), Z, FakeTokenizer(), "rerank")


def test_rerank_keeps_the_candidate_the_judge_prefers():
  # the judge: a text's vector counts its tokens 6 and 7; the target wants many 7s, so greedy (all 5s) must lose
  def embed(texts):
    return np.array([[t.split().count("6"), t.split().count("7"), 0.1, 0] for t in texts], np.float32)
  target = np.tile(np.array([0, 1, 0, 0], np.float32), (3, 1))
  # the fake has no teacher-forced pass: the judge's cosine alone chooses
  res = decoding.rerank_decode(FakeDecoder(), Z, FakeTokenizer(), embed, target, k=6, max_len=6, fluency_weight=0)
  assert (res["cos"] >= res["greedy_cos"]).all() and (res["cos"] > res["greedy_cos"]).any()
  assert all("7" in t for t in res["texts"])
  cands = decoding.rerank_candidates(FakeDecoder(), Z, FakeTokenizer(), 6, max_len=6)
  assert len(cands) == 6 and all(len(g) == 3 for g in cands)
  emb = embed([t for g in cands for t in g]).reshape(6, 3, 4)
  best = emb[..., 1] / np.linalg.norm(emb, axis=-1)  # cosine with the target (0, 1, 0, 0)
  assert [cands[c][i] for i, c in enumerate(best.argmax(0))] == res["texts"]


V2 = 24  # the drifting fake's vocabulary: room for a shortlist smaller than it
W_Z = np.sin(np.arange(4 * V2).reshape(4, V2) * 1.3)
W_H = np.sin(np.arange(V2 * V2).reshape(V2, V2))


class DriftState:
  """Logits from z and each row's own history (which parents reorder, as a beam does), EOS more likely the longer a
  row runs: rows end at different steps, so a pass must track each strategy's rows separately."""

  def __init__(self, batch_size: int, log: list | None = None): self.batch_size, self.log = batch_size, log

  def reset(self, z, mode):
    self.z, self.h = np.asarray(z, np.float64), np.zeros((self.batch_size, V2))
    return self

  def step(self, tokens, parents=None):
    if self.log is not None: self.log.append(self.batch_size)
    if parents is not None: self.z, self.h = self.z[parents], self.h[parents]
    self.h = 0.7 * self.h + np.eye(V2)[np.asarray(tokens) % V2]
    logits = self.z @ W_Z * 2 + np.cos(self.h @ W_H) * 1.5
    logits[:, EOS] += 0.9 * self.h.sum(-1) - 2.5
    return logits.astype(np.float32)


class SkippingDriftState(DriftState):
  """As numpy_infer's state: rows not `live` get zero logits and keep their history, as if never stepped."""
  takes_live = True

  def step(self, tokens, parents=None, live=None):
    h = self.h[parents] if parents is not None else self.h
    logits = super().step(tokens, parents)
    if live is not None: self.h[~live], logits[~live] = h[~live], 0
    return logits


class DriftDecoder:
  cfg = SimpleNamespace(proj_dim=4, vocab_size=V2, max_len=25)

  def __init__(self, skip: bool = False): self.states, self.steps, self.skip = [], [], skip

  def new_state(self, batch_size: int):
    self.states.append(batch_size)
    return (SkippingDriftState if self.skip else DriftState)(batch_size, self.steps)


ZD = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


@pytest.mark.parametrize("rep", [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram": 2}])
@pytest.mark.parametrize("k,m", [(2, V2), (3, V2), (8, V2), (8, 8), (5, 5)])
@pytest.mark.parametrize("skip", [False, True])
def test_one_pass_gives_each_strategy_its_own_ids(rep, k, m, skip):
  """rerank's single pass: greedy rows are greedy's ids, the beam rows beam_candidates's, the sample rows those of
  sample with top_k = m and the same seed, whatever the others do (they end at other steps); a state that skips
  ended rows (skip) changes nothing."""
  n_beam, n_samp = decoding.rerank_split(k)
  T = 24
  g, hyps, s = candidates.one_pass(DriftDecoder(skip).new_state(5 * k), ZD, np.zeros(5, int), T, n_beam, n_samp, m,
                                   0.8, 0.95, 7, decoding._rep(**rep))
  dec = DriftDecoder()
  assert (g == decoding.greedy(dec, ZD, **rep)).all()
  assert len(set((g == EOS).argmax(1))) > 1  # rows do end at different steps
  want = decoding.beam_candidates(dec, ZD, n_beam, n_best=n_beam, **rep)
  assert (decoding._hyp_ids(hyps, n_beam, T) == want).all()
  if n_samp:
    want = decoding.sample(dec, np.repeat(ZD, n_samp, 0), None, 0.8, m if m < V2 else 0, 0.95, 7, **rep)
    assert (s == want).all()


def test_shortlist_best_first_ties_to_the_lower_id():
  x = np.array([[1, 5, 3, 5, 0, 5], [2, 2, 2, 2, 2, 9]], np.float32)
  vals, idx, lse = logits_rules.shortlist(x, 3, slice(0, 1))
  assert idx.tolist() == [[1, 3, 5], [5, 0, 1]] and vals.tolist() == [[5, 5, 5], [9, 2, 2]]
  assert np.isclose(lse[0], np.log(np.exp(x[0]).sum())) and np.isnan(lse[1])  # only the rows asked for
  assert (np.argmax(x, -1) == logits_rules.shortlist(x, 1)[1][:, 0]).all()


def test_rerank_rounds_decode_in_one_state_of_k_rows_per_sentence():
  dec = DriftDecoder()
  def embed(texts): return np.array([[len(t), t.count("5"), 1.0, 0] for t in texts], np.float32)
  res = decoding.rerank_decode(dec, ZD, FakeTokenizer(), embed, k=8, max_len=20, rounds=3, fluency_weight=0)
  # one pass a round at the same shape, its longest row's steps; later rounds also read the best texts teacher-forced
  # (5 rows), then continue their prefixes (one state of them all, at most max_len steps)
  assert len(res["rounds"]) == 3 and dec.states[:3] == [5 * 8, 5 * 8, 5] and dec.states[4:6] == [5 * 8, 5]
  again = dec.states[3::3]
  assert len(dec.states) == 7 and all(n > 5 for n in again)
  assert dec.steps.count(40) <= 3 * 20 and dec.steps.count(5) <= 2 * 21 and set(dec.steps) == {40, 5, *again}
  assert sum(dec.steps.count(n) for n in set(again)) <= 2 * 20


@pytest.fixture(scope="module")
def shipped():
  from studentz import DEFAULT_MODEL_DIR, StudentZ
  if not (DEFAULT_MODEL_DIR / "config.json").is_file(): pytest.skip("no shipped model")
  return StudentZ.load(engine="numpy")


def test_shipped_model_controls_and_rerank(shipped):
  z = shipped.encode(["The printing press spread across Europe in the fifteenth century.", "A dog runs."])
  ids = decoding.generate(shipped.models["decoder"], z, "greedy", no_repeat_ngram=3)
  assert all(len(g) == len(set(g)) for g in (ngrams(r, 3) for r in ids))
  assert shipped.decode(z, no_repeat_ngram=3) == decoding._texts(ids, shipped.tokenizer)
  res = decoding.rerank_decode(shipped.models["decoder"], z, shipped.tokenizer, shipped.encode, k=4, fluency_weight=0)
  assert (res["cos"] >= res["greedy_cos"] - 1e-6).all()  # greedy is a candidate: the judge never loses ground
  res = decoding.rerank_decode(shipped.models["decoder"], z, shipped.tokenizer, shipped.encode, k=4)
  assert shipped.decode(z, strategy="rerank", rerank=4) == res["texts"]
  with pytest.raises(ValueError, match="repetition_penalty"): shipped.decode(z, repetition_penalty=0)


def test_tinygrad_engine_applies_the_controls(shipped):
  """The same strategies over tinygrad's DecoderState: the constraints hold and both engines pick the same ids."""
  from studentz_training import evaluate
  models, _, _ = evaluate.load_models(shipped.path)
  z = shipped.encode(["A man is playing a guitar on stage.", "The cat sat on the mat."])
  for kw in ({"no_repeat_ngram": 2}, {"repetition_penalty": 1.3}):
    a = decoding.generate(models["decoder"], z, "greedy", max_len=12, **kw)
    b = decoding.generate(shipped.models["decoder"], z, "greedy", max_len=12, **kw)
    assert (a == b).mean() > 0.9  # float differences between engines may flip a near-tie late in a row
    if "no_repeat_ngram" in kw: assert all(len(g) == len(set(g)) for g in (ngrams(r, 2) for r in a))
