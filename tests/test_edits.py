"""The correction rounds' one-word edits (studentz_runtime/edits.py): which edits a text gets, the decoder's
teacher-forced shortlist they come from, and a round that keeps an edit only when the judge prefers it."""
from types import SimpleNamespace

import numpy as np
import pytest

from studentz_runtime import decoding, edits
from studentz_runtime.logits import SPECIALS

# ids 10.. are words ("Ġ" marked), 20.. continue a word: text [10, 20, 11] is two words, "a" + "x" and "b"
NAMES = {i: f"\u0120w{i}" for i in range(10, 20)} | {i: f"c{i}" for i in range(20, 30)} | {5: ".", 6: "First"}


class Backend:
  def id_to_token(self, i): return NAMES.get(i, "")

  def get_vocab_size(self): return 32


def starts_firsts():
  return edits.word_starts(SimpleNamespace(backend=Backend()))


def test_word_starts_read_the_space_mark_and_punctuation():
  starts, firsts = starts_firsts()
  assert starts[10] and starts[5] and not starts[20] and not starts[6]
  assert firsts[6] and firsts[20] and not firsts[10] and not firsts[5]


@pytest.fixture
def three_and_two(monkeypatch):
  monkeypatch.setattr(edits, "ALTERNATIVES", 3)
  monkeypatch.setattr(edits, "INSERTIONS", 2)


def test_each_word_is_replaced_deleted_or_preceded_whole(three_and_two):
  starts, firsts = starts_firsts()
  x = [10, 20, 11]  # words [10, 20] and [11]
  top = np.array([[6, 20, 12, 13, 14], [21, 15, 16, 17, 18], [20, 12, 17, 11, 19], [5, 2, 13, 14, 15]])
  got = edits.edited(x, edits.text_moves(x, top, starts, firsts))
  # word 1 (at the text's start an unmarked token may begin it): replaced whole, removed
  want = ([[a, 11] for a in (6, 20, 12)] + [[11]]
          + [[10, 20, a] for a in (12, 17, 19)] + [[10, 20]]     # word 2: its own token 11 is not a replacement
          + [[10, 20, a, 11] for a in (12, 17)]                  # a word before word 2 (none before the first)
          + [[10, 20, 11, a] for a in (5, 13)])                  # a word after the last (EOS is never one)
  assert sorted(got) == sorted(want) and len(got) == len(want)


def test_a_one_word_text_is_never_deleted_to_nothing(three_and_two):
  starts, firsts = starts_firsts()
  got = edits.edited([10], edits.text_moves([10], np.array([[11, 12, 13, 14], [15, 16, 17, 18]]), starts, firsts))
  assert [] not in got and len(got) == 3 + 2


def test_no_edit_puts_a_word_beside_itself(three_and_two):
  starts, firsts = starts_firsts()
  x = [10, 11, 10]  # words w10 w11 w10: removing w11 would leave w10 w10
  top = np.array([[6, 10, 11, 12, 13], [10, 11, 12, 13, 14], [10, 11, 12, 13, 14], [10, 12, 13, 14, 15]])
  got = edits.edited(x, edits.text_moves(x, top, starts, firsts))
  assert [10, 10] not in got and [11, 11, 10] not in got and [10, 11, 10, 10] not in got
  assert all(a != b for e in got for a, b in zip(e, e[1:])), [e for e in got if any(a == b for a, b in zip(e, e[1:]))]
  assert [10, 11, 10, 12] in got and [10, 12, 11, 10] in got  # the words that repeat nothing stay


def test_improving_moves_are_made_together_where_their_places_do_not_touch():
  starts, _ = starts_firsts()
  x = [10, 20, 11, 12, 13]  # words [10, 20] [11] [12] [13]
  moves = [(0, 2, [14]), (2, 3, []), (2, 2, [15]), (3, 4, [16]), (5, 5, [17]), (4, 5, [18])]
  gains = np.array([0.3, 0.1, 0.2, -0.1, 0.05, 0.0])
  # by gain: word 1 -> 14; the insertion before word 2 (the deletion of word 2 touches it: left out); the append;
  # word 3's replacement and word 4's did not improve
  assert edits.combine(x, moves, gains, starts) == [[14, 15, 11, 12, 13], [14, 15, 11, 12, 13, 17]]
  assert edits.combine(x, moves, np.array([0.3, 0, 0, 0, 0, 0]), starts) == []  # one move alone: nothing new
  # two moves that would put w14 beside w14: the pair is dropped
  assert edits.combine([10, 11], [(0, 1, [14]), (1, 2, [14])], np.array([0.2, 0.1]), starts) == []


@pytest.fixture(scope="module")
def shipped():
  from studentz import DEFAULT_MODEL_DIR, StudentZ
  if not (DEFAULT_MODEL_DIR / "config.json").is_file(): pytest.skip("no shipped model")
  return StudentZ.load(engine="numpy")


def test_forced_shortlist_is_the_teacher_forced_decoders_best(shipped):
  """Position t of the shortlist is what the decoder predicts for token t given the text before it."""
  dec, tok = shipped.models["decoder"], shipped.tokenizer
  z = shipped.encode(["The cat sat on the mat.", "A man is playing a guitar."])
  ids = [tok.backend.encode(t, add_special_tokens=False).ids for t in ["The cat sat on the mat.", "A man plays."]]
  top = edits.forced_shortlists(dec, z, 0, ids, 4)
  forced = np.zeros((2, max(map(len, ids)) + 1), np.int32)
  forced[:, 0] = 1  # BOS
  for i, x in enumerate(ids): forced[i, 1:1 + len(x)] = x
  logits = dec.head(dec.hidden(forced, z).reshape(-1, dec.cfg.d_model)).reshape(*forced.shape, -1)
  logits[..., list(SPECIALS)] = -np.inf  # PAD, BOS, UNK: never generated
  for i, x in enumerate(ids):
    assert (top[i, :len(x) + 1, 0] == logits[i, :len(x) + 1].argmax(-1)).all()


def test_edits_of_a_real_text_differ_by_one_word(shipped):
  text = "The cat sat on the mat."
  z = shipped.encode([text])
  ((x, moves),) = edits.candidates(shipped.models["decoder"], z, 0, shipped.tokenizer, [text], 31)
  assert x == shipped.tokenizer.backend.encode(text, add_special_tokens=False).ids
  cands = decoding._texts(edits.padded(edits.edited(x, moves), 31), shipped.tokenizer)
  words = text.split()
  assert len(cands) > len(words)
  for c in cands:  # a word replaced, removed or added: the word lists differ by one edit
    w = c.split()
    assert abs(len(w) - len(words)) <= 1 and c != text
  assert edits.candidates(shipped.models["decoder"], z, 0, shipped.tokenizer, [""], 31) == [([], [])]


def test_a_later_round_keeps_an_edit_only_when_the_judge_prefers_it(shipped):
  texts = ["The cat sat on the mat.", "Rain is expected tomorrow afternoon."]
  z = shipped.encode(texts)
  res = decoding.rerank_decode(shipped.models["decoder"], z, shipped.tokenizer, shipped.encode, k=4, rounds=2)
  one, two = res["rounds"]
  assert two["score"] >= one["score"] - 1e-6  # the best so far never falls
  cos = decoding.cosine(shipped.encode(two["texts"]), z)
  assert np.allclose(cos, res["cos"], atol=1e-5)  # the cosine reported is the judge's of the text returned


def test_tinygrad_engine_gives_the_same_shortlist(shipped):
  """tinygrad's DecoderState computes the shortlist on its device (step_top): the same best tokens as numpy's."""
  from studentz_training import evaluate
  models, _, _ = evaluate.load_models(shipped.path)
  texts = ["The cat sat on the mat.", "Rain is expected tomorrow afternoon."]
  z = shipped.encode(texts)
  ids = [shipped.tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]
  a = edits.forced_shortlists(shipped.models["decoder"], z, 0, ids, 4)
  b = edits.forced_shortlists(models["decoder"], z, 0, ids, 4)
  assert (a[:, :, 0] == b[:, :, 0]).mean() > 0.9  # float32 on both: only near-ties may swap


def test_continuing_an_empty_prefix_is_the_greedy_decode_and_a_prefix_is_kept(shipped):
  dec, tok = shipped.models["decoder"], shipped.tokenizer
  texts = ["The cat sat on the mat.", "Rain is expected tomorrow afternoon."]
  z = shipped.encode(texts)
  greedy = decoding.decode(dec, z, tok, "greedy", max_len=24)
  head = tok.backend.encode("A dog", add_special_tokens=False).ids
  empty, forced = edits.continuations(dec, z, 0, [[], head], 24)
  assert tok.decode_batch(edits.padded([empty], 24))[0] == greedy[0]
  assert forced[:len(head)] == head and len(forced) > len(head) and len(forced) <= 24


def test_regenerations_continue_a_word_end_or_a_replaced_word(shipped, monkeypatch):
  monkeypatch.setattr(edits, "REWRITES", 1)
  text = "The cat sat on the mat."
  z = shipped.encode([text])
  ((x, moves),) = edits.candidates(shipped.models["decoder"], z, 0, shipped.tokenizer, [text], 31)
  (again,) = edits.regenerations(shipped.models["decoder"], z, 0, [(x, moves)], 31)
  starts = [p for p, e in edits._spans(x, edits.word_starts(shipped.tokenizer)[0])]
  heads = [x[:p] for p in starts[1:]] + [x[:p] + new for p, e, new in moves if new and e > p]
  assert again and x not in again and len({tuple(y) for y in again}) == len(again)
  assert all(any(y[:len(h)] == h for h in heads) for y in again)


def test_tinygrad_engine_continues_a_prefix_as_numpy_does(shipped):
  from studentz_training import evaluate
  models, _, _ = evaluate.load_models(shipped.path)
  z = shipped.encode(["The cat sat on the mat.", "Rain is expected tomorrow afternoon."])
  head = shipped.tokenizer.backend.encode("The dog", add_special_tokens=False).ids
  a = edits.continuations(shipped.models["decoder"], z, 0, [head, []], 16)
  b = edits.continuations(models["decoder"], z, 0, [head, []], 16)
  assert [y[:len(head)] for y in b[:1]] == [head]
  assert sum(u == v for x, y in zip(a, b) for u, v in zip(x, y)) >= 0.9 * sum(map(len, a))  # near-ties may swap
