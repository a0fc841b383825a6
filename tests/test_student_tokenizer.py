import json

import numpy as np
import pytest

from conftest import SHARED_DATA
from studentz_corpus.prepare import build_sentences
from studentz_corpus.tokenizer import (BOS, EOS, PAD, UNK, SPECIAL_TOKENS, StudentTokenizer,
                                       without_surrogates)

WIKI = SHARED_DATA / "wikipedia" / "enwiki-docs.jsonl.gz"
STSB = SHARED_DATA / "stsb" / "sts-test.csv"


def stsb_sentences(path=STSB) -> list[str]:
  out = []
  for line in path.read_text(encoding="utf-8").splitlines():
    cols = line.split("\t")
    if len(cols) >= 7: out += [cols[5], cols[6]]
  return out


@pytest.fixture(scope="module")
def wiki_sentences():
  return [s for s, _ in build_sentences(WIKI, limit=4000)]


@pytest.fixture(scope="module")
def tok(wiki_sentences):
  return StudentTokenizer.fit(wiki_sentences[:3000], vocab_size=2000)


def test_special_ids(tok):
  assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
  for i, s in enumerate(SPECIAL_TOKENS): assert tok.backend.token_to_id(s) == i
  assert tok.vocab_size == 2000
  ids, mask = tok.encode("A short sentence.", max_len=16)
  assert ids.dtype == np.int32 and mask.dtype == np.float32 and ids.shape == mask.shape == (16,)
  n = int(mask.sum())
  assert ids[0] == BOS and ids[n - 1] == EOS and (ids[n:] == PAD).all() and (mask[:n] == 1).all()
  assert not np.isin(ids[1:n - 1], [PAD, BOS, EOS, UNK]).any()


def test_round_trip_real_sentences(tok, wiki_sentences):
  held_out = wiki_sentences[3000:]  # not seen in fit
  texts = held_out + stsb_sentences()
  ids, mask, trunc = tok.encode_batch(texts, max_len=128, return_truncated=True)
  assert trunc.mean() < 0.02
  decoded = tok.decode_batch(ids)
  bad = [(t, d) for t, d, tr in zip(texts, decoded, trunc) if not tr and d != tok.normalize(t)]
  assert not bad, bad[:3]
  assert sum(not tr for tr in trunc) > 3000


@pytest.mark.parametrize("text", ["Café ﬁne — naïve 東京 😀 x²", "literal <s> and </s> and <pad> stay text",
                                  "  two  spaces\tand a tab\nand newline ", "",
                                  "\u00a0nbsp and ｆｕｌｌｗｉｄｔｈ"])
def test_round_trip_unusual(tok, text):
  ids, _ = tok.encode(text, max_len=256)
  assert tok.decode(ids) == tok.normalize(text)
  assert tok.normalize("ﬁ") == "fi" and tok.normalize("Ab") == "Ab"  # NFKC, no lowercasing


def test_truncation_keeps_bos_and_eos(tok):
  text = "This sentence is much too long to fit into a handful of token positions at all."
  ids, mask = tok.encode(text, max_len=8)
  assert ids[0] == BOS and ids[-1] == EOS and mask.sum() == 8
  assert tok.normalize(text).startswith(tok.decode(ids)) and len(tok.decode(ids)) > 0
  _, _, tr = tok.encode_batch([text, "Short."], max_len=8, return_truncated=True)
  assert tr.tolist() == [True, False]
  ids3, mask3 = tok.encode(text, max_len=3)
  assert ids3.tolist()[0] == BOS and ids3.tolist()[2] == EOS and mask3.sum() == 3


def test_batch_matches_single(tok, wiki_sentences):
  texts = wiki_sentences[:50] + [""]
  ids, mask = tok.encode_batch(texts, max_len=24)
  assert ids.shape == mask.shape == (51, 24) and ids.dtype == np.int32 and mask.dtype == np.float32
  for i, t in enumerate(texts):
    a, m = tok.encode(t, 24)
    assert (a == ids[i]).all() and (m == mask[i]).all()
  e, em = tok.encode_batch([], max_len=5)
  assert e.shape == em.shape == (0, 5)


def test_decode_stops_at_eos_and_drops_specials(tok):
  a = tok.encode("Hello world.", 16)[0]
  content = [int(x) for x in a if x not in (PAD, BOS, EOS)]
  assert tok.decode([BOS] + content[:1] + [UNK, PAD] + content[1:] + [EOS] + content + [PAD]) == "Hello world."
  assert tok.decode([EOS] + content) == "" and tok.decode([]) == ""
  assert tok.decode_batch(np.stack([a, a])) == ["Hello world."] * 2


def test_fit_is_deterministic(tmp_path, wiki_sentences):
  p1 = StudentTokenizer.fit(wiki_sentences[:1500], vocab_size=800).save(tmp_path / "a.json")
  p2 = StudentTokenizer.fit(iter(wiki_sentences[:1500]), vocab_size=800).save(tmp_path / "b.json")
  assert p1.read_bytes() == p2.read_bytes()
  p3 = StudentTokenizer.fit(wiki_sentences[:1500], vocab_size=900).save(tmp_path / "c.json")
  assert p1.read_bytes() != p3.read_bytes()


def test_save_load(tmp_path, tok, wiki_sentences):
  path = tok.save(tmp_path / "sub" / "tok.json")
  obj = json.loads(path.read_text(encoding="utf-8"))
  assert set(obj) == {"studentz", "tokenizer"} and obj["studentz"]["specials"]["</s>"] == EOS
  assert not list(path.parent.glob("*.tmp*"))
  tok2 = StudentTokenizer.load(path)
  assert tok2 == tok and tok2.vocab_size == tok.vocab_size and tok2.fingerprint == tok.fingerprint
  a, b = tok.encode_batch(wiki_sentences[:200], 32)[0], tok2.encode_batch(wiki_sentences[:200], 32)[0]
  assert (a == b).all()
  assert tok2.decode(tok2.encode("literal <s> text", 16)[0]) == "literal <s> text"
  with pytest.raises(FileNotFoundError): StudentTokenizer.load(tmp_path / "missing.json")
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ValueError): StudentTokenizer.load(tmp_path / "bad.json")


def test_small_vocab_keeps_every_byte():
  t = StudentTokenizer.fit(["abc abc abd"] * 10, vocab_size=64)
  assert t.vocab_size == 260  # 4 specials + 256 bytes: nothing can become UNK
  assert t.decode(t.encode("zzz ÿ 😀", 32)[0]) == "zzz ÿ 😀"


def test_errors(tok):
  with pytest.raises(ValueError, match="vocab_size"): StudentTokenizer.fit(["a b c"], vocab_size=63)
  with pytest.raises(ValueError, match="empty"): StudentTokenizer.fit([], vocab_size=300)
  with pytest.raises(ValueError, match="str"): StudentTokenizer.fit(["ok", 5], vocab_size=300)
  with pytest.raises(ValueError, match="str"): StudentTokenizer.fit("one string", vocab_size=300)
  with pytest.raises(ValueError, match="max_len"): tok.encode("x", max_len=2)
  with pytest.raises(ValueError, match="str"): tok.encode(b"bytes", max_len=8)
  with pytest.raises(ValueError, match="str"): tok.encode_batch(["ok", None], max_len=8)
  with pytest.raises(ValueError, match="list"): tok.encode_batch("not a list", max_len=8)
  with pytest.raises(ValueError, match="ids"): tok.decode([5, tok.vocab_size])
  with pytest.raises(ValueError, match="ids"): tok.decode([5, -1])


def reference_layout(tok, texts, L):
  """encode_batch as it was built before its fast paths: every text through the full tokenizer (NFKC included, with
  offsets), laid out one row at a time."""
  encs = tok.backend.encode_batch(texts, add_special_tokens=False)
  ids, mask = np.zeros((len(texts), L), np.int32), np.zeros((len(texts), L), np.float32)
  for i, e in enumerate(encs):
    c = e.ids[:L - 2]
    ids[i, :len(c) + 2], mask[i, :len(c) + 2] = [BOS, *c, EOS], 1
  return ids, mask, np.array([len(e.ids) > L - 2 for e in encs])


MIXED = ["Plain ASCII text.", "\ufb01ve \ufb01sh", "\u00a0nbsp and \uff46\uff55\uff4c\uff4c", "",
         "literal <pad> <s> </s>", "caf\u00e9 na\u0131ve", "x y " * 20, "Two  spaces\tand a tab",
         "\ud800 lone surrogate", "\u00bd of \u2168"]


@pytest.mark.parametrize("pick", ["mixed", "ascii", "non_ascii"])
def test_fast_paths_give_the_reference_layout(tok, wiki_sentences, pick):
  """ASCII texts skip the normaliser and no path tracks offsets: ids, mask, cut flags and counts stay as they were,
  in order, whether a batch is all ASCII, none or mixed."""
  texts = {"mixed": MIXED + wiki_sentences[:30], "ascii": [t for t in MIXED if t.isascii()] + wiki_sentences[:30],
           "non_ascii": [t for t in MIXED if not t.isascii()]}[pick]
  checked = [without_surrogates(t) for t in texts]
  for L in (5, 12, 64):
    got, want = tok.encode_batch(texts, L, return_truncated=True), reference_layout(tok, checked, L)
    for g, w in zip(got, want): assert g.dtype == w.dtype and np.array_equal(g, w)
  counts = [len(e.ids) for e in tok.backend.encode_batch(checked, add_special_tokens=False)]
  assert tok.token_counts(texts).tolist() == counts
