"""The decoder's mean token log-probability of a text (studentz_runtime/fluency.py) and the correction's use of it:
the teacher-forced pass agrees with step-by-step decoding and across engines, and reads broken text as less likely."""
import numpy as np
import pytest

from studentz_runtime import decoding, fluency
from studentz_corpus.tokenizer import EOS

TEXTS = ["The cat sat on the mat.", "Rain is expected tomorrow afternoon."]


@pytest.fixture(scope="module")
def shipped():
  from studentz import DEFAULT_MODEL_DIR, StudentZ
  if not (DEFAULT_MODEL_DIR / "config.json").is_file(): pytest.skip("no shipped model")
  return StudentZ.load(engine="numpy")


def ids_of(model, texts):
  return [model.tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]


def test_forced_pass_is_the_step_by_step_decoders_log_probability(shipped):
  dec, z = shipped.models["decoder"], shipped.encode(TEXTS)
  ids = ids_of(shipped, TEXTS)
  got = fluency.mean_logprob(dec, z, 0, ids)
  state, T = dec.new_state(len(ids)).reset(z, 0), max(map(len, ids))
  forced, targets = fluency.forced_inputs(ids, T + 1)
  want, n = np.zeros(len(ids)), np.zeros(len(ids))
  for t in range(T + 1):
    logits = state.step(forced[:, t]).astype(np.float64)
    lp = logits - logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    for i, tok in enumerate(targets[:, t]):
      if tok >= 0: want[i], n[i] = want[i] + lp[i, tok], n[i] + 1
  assert (targets == EOS).sum() == len(ids) and np.allclose(got, want / n, atol=1e-4)


def test_broken_text_reads_as_less_likely(shipped):
  """Given the z of a sentence, the sentence itself scores above a stutter and a scramble of its words."""
  z = shipped.encode(TEXTS[:1])
  variants = [TEXTS[0], "The the cat sat on on the mat.", "mat the on sat cat The."]
  lp = fluency.mean_logprob(shipped.models["decoder"], np.repeat(z, 3, 0), 0, ids_of(shipped, variants))
  assert lp[0] > lp[1] and lp[0] > lp[2], lp


def test_tinygrad_engine_gives_the_same_log_probability(shipped):
  from studentz_training import evaluate
  models, _, _ = evaluate.load_models(shipped.path)
  z, ids = shipped.encode(TEXTS), ids_of(shipped, TEXTS)
  a = fluency.mean_logprob(shipped.models["decoder"], z, [0, 1], ids)
  b = fluency.mean_logprob(models["decoder"], z, [0, 1], ids, length=24)
  assert np.allclose(a, b, atol=1e-3), (a, b)


def test_rerank_chooses_by_cosine_plus_weighted_fluency(shipped):
  dec, z = shipped.models["decoder"], shipped.encode(TEXTS)
  res = decoding.rerank_decode(dec, z, shipped.tokenizer, shipped.encode, k=4, fluency_weight=0.5)
  groups = decoding.rerank_candidates(dec, z, shipped.tokenizer, 4)
  for i in range(len(TEXTS)):
    cands = [g[i] for g in groups]
    cos = decoding.cosine(shipped.encode(cands), z[i])
    lp = fluency.mean_logprob(dec, np.repeat(z[i:i + 1], len(cands), 0), 0, ids_of(shipped, cands))
    assert res["texts"][i] == cands[int(np.argmax(cos + 0.5 * lp))]
    assert np.isclose(res["cos"][i], cos[int(np.argmax(cos + 0.5 * lp))], atol=1e-5)


def test_pruned_fluency_pass_picks_what_scoring_every_candidate_picks(shipped, monkeypatch):
  """_fluent reads the decoder only for candidates that can still win; its choice is the full computation's."""
  dec, z = shipped.models["decoder"], shipped.encode(TEXTS)
  words = [t.rstrip(".").split() for t in TEXTS]
  rows = [[" ".join(w[:k] + w[k + 1:]) for k in range(len(w))] + [" ".join(w[::-1])] * 2 + [" ".join(w)]
          for w in words]  # one-word deletions, a scramble twice (a tie), the text
  cos = [decoding.cosine(shipped.encode(r), z[i]) for i, r in enumerate(rows)]
  read = []
  real = fluency.mean_logprob
  monkeypatch.setattr(fluency, "mean_logprob", lambda *a, **k: read.append(len(a[3])) or real(*a, **k))
  monkeypatch.setattr(decoding, "FLUENCY_FIRST", 2)
  score = decoding._fluent(dec, z, np.zeros(2, int), shipped.tokenizer, rows, 24, cos, 0.02)
  for i, r in enumerate(rows):
    full = cos[i] + 0.02 * real(dec, np.repeat(z[i:i + 1], len(r), 0), 0, ids_of(shipped, r))
    assert int(np.argmax(score[i])) == int(np.argmax(full))
    assert np.isclose(score[i].max(), full.max(), atol=1e-5)
  assert sum(read) < sum(map(len, rows)), read  # some candidates were never read
