import gzip, hashlib, json, os, shutil

import numpy as np
import pytest

from studentz_corpus import prepare as corpus
from conftest import SHARED_DATA
from studentz_corpus.prepare import (DataDir, Loader, TeacherCacheIncomplete, build_sentences, compute_teacher_vectors,
                                     export_jsonl, import_jsonl, merge_teacher_shards, prepare, read_texts,
                                     split_sentences, teacher_vectors)
from studentz_corpus.text import split_of
from studentz_corpus.tokenizer import EOS, PAD, StudentTokenizer

WIKI = SHARED_DATA / "wikipedia" / "enwiki-docs.jsonl.gz"
N_SENT, CHUNK = 2000, 256  # 8 teacher chunks


class FakeTeacher:
  """Deterministic hashing bag-of-words embedder; counts embed calls and can fail on the k-th one."""

  def __init__(self, dim=16, fail_on_call=None, name="fake/bow teacher", fingerprint="f" * 64):
    self.name, self.dim, self.fingerprint = name, dim, fingerprint
    self.calls, self.fail_on_call = 0, fail_on_call

  def embed(self, texts, batch_size=64):
    self.calls += 1
    if self.fail_on_call is not None and self.calls >= self.fail_on_call: raise RuntimeError("simulated crash")
    out = np.zeros((len(texts), self.dim), np.float32)
    for i, t in enumerate(texts):
      for w in t.lower().split():
        h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
        out[i, h % self.dim] += 1.0 if h & 1 << 31 else -1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("data") / "wiki"
  return prepare(WIKI, out, vocab_size=1000, max_len=32, limit=N_SENT, progress=False).path


@pytest.fixture
def data_dir(base_dir, tmp_path):
  dst = tmp_path / "wiki"
  shutil.copytree(base_dir, dst, ignore=shutil.ignore_patterns("teacher-*"))
  return dst


@pytest.fixture(scope="module")
def taught_dir(base_dir, tmp_path_factory):
  dst = tmp_path_factory.mktemp("taught") / "wiki"
  shutil.copytree(base_dir, dst)
  compute_teacher_vectors(dst, FakeTeacher(), chunk_size=CHUNK, progress=False)
  return dst


@pytest.fixture(scope="module")
def reference(taught_dir):
  return np.array(teacher_vectors(taught_dir, "fake/bow teacher"))


# ---------------------------------------------------------------- reading
BAD_LINES = [b'{"text": "First good line here."}', b"", b"   ", b'{"text": "caf\xe9 with a broken byte"}',
             b"\x00\x01\x02\xff\xfe\x03\x04garbage\x00\x00", b'{"text": "unterminated', b"[1, 2, 3]", b'{"title": "x"}',
             b'{"text": ""}', b'{"text": "Last good line."}']


@pytest.mark.parametrize("gz", [False, True])
def test_read_texts_jsonl_robust(tmp_path, gz):
  data = b"\n".join(BAD_LINES) + b"\n"
  p = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
  p.write_bytes(gzip.compress(data) if gz else data)
  r = read_texts(p)
  texts = list(r)
  assert r.format == "jsonl"
  assert texts == ["First good line here.", "caf\ufffd with a broken byte", "Last good line."]
  assert r.stats["invalid_utf8"] == 1 and r.stats["binary"] == 1 and r.stats["bad_json"] == 1
  assert r.stats["no_text_field"] == 2 and r.stats["empty"] == 3 and r.stats["texts"] == 3
  assert r.skipped == {"binary": 1, "bad_json": 1, "no_text_field": 2, "empty": 3}


def test_read_texts_plain_and_errors(tmp_path):
  p = tmp_path / "c.txt"
  p.write_bytes(b"One line of text.\r\n\n\x00\x00\x00bin\nbad \xff byte here\n{not json either}\nlast")
  r = read_texts(p)
  assert r.format == "text"
  assert list(r) == ["One line of text.", "bad \ufffd byte here", "{not json either}", "last"]
  assert r.stats["empty"] == 1 and r.stats["binary"] == 1 and r.stats["invalid_utf8"] == 1
  with pytest.raises(FileNotFoundError, match="not found"): read_texts(tmp_path / "missing.jsonl")
  trunc = tmp_path / "t.jsonl.gz"
  trunc.write_bytes(gzip.compress(b'{"text": "A line."}\n' * 5000)[:200])
  r = read_texts(trunc)
  list(r)  # no crash
  assert r.stats["truncated_gzip"] >= 1


# ---------------------------------------------------------------- sentences
ARTICLE = """Jane Doe (born 1 May 1950) is an US writer, e.g. of novels, and lives in the U.S. with Mr. J. R. Smith.
Early life and education.
She studied at St. Mary's College and earned 3.5 credits per term in the program. Then she left the city.
Harrow School () is a British boarding school in the west of London.
The campus covers . The facilities include many fine rooms and halls.
Martin Smith (; born 3 April 1998) is a Bahraini football player of note.
Her brothers , , and her sister joined the company in that year.
 wrote a review of her first novel in the local paper.
Too short here.
This sentence was split by the extractor across
two lines of the source file.
Career.
"""


def test_split_sentences():
  got = split_sentences(ARTICLE)
  assert got == [
    "Jane Doe (born 1 May 1950) is an US writer, e.g. of novels, and lives in the U.S. with Mr. J. R. Smith.",
    "She studied at St. Mary's College and earned 3.5 credits per term in the program.",
    "Then she left the city.",
    "The facilities include many fine rooms and halls.",
    "This sentence was split by the extractor across two lines of the source file.",
  ]
  assert split_sentences(ARTICLE) == got
  assert split_sentences(" ".join(["word"] * 61) + ".") == [] and split_sentences("") == []
  assert split_sentences("Plain text line one is here. And a second sentence follows it.") == [
    "Plain text line one is here.", "And a second sentence follows it."]
  assert split_sentences("The\u00a0value   was  \ufb01ne in the end.") == ["The value was fine in the end."]


def test_build_sentences_dedup_limit_split():
  dup = ["The same sentence appears twice here.",
         "The same sentence appears twice here. Another one follows right here."]
  stats = {}
  assert [s for s, _ in build_sentences(dup, stats=stats)] == ["The same sentence appears twice here.",
                                                                "Another one follows right here."]
  assert stats["duplicates"] == 1 and stats["sentences"] == 2
  a = list(build_sentences(WIKI, limit=300))
  b = list(build_sentences(WIKI, limit=100))
  assert len(a) == 300 and a[:100] == b  # a limit gives a prefix
  assert len({s for s, _ in a}) == 300
  assert all(sp == split_of(s) for s, sp in a)


# ---------------------------------------------------------------- prepare
def test_build_sentences_crops_only_training_sentences():
  """data_crops: word spans of training sentences only, each a contiguous 50-90% of its words (at least 5), in the
  train split, the same on every call; held-out sentences and short ones give none."""
  texts = [f"The river number {j} flows past the old castle of the northern village before reaching the sea."
           for j in range(40)] + ["Short ones are never cropped."]
  f = (0.5, 0.25, 0.25)  # so that 40 sentences hold some of val and test
  plain = list(build_sentences(texts, fractions=f))
  stats = {}
  got = list(build_sentences(texts, crops=2, stats=stats, fractions=f))
  assert got == list(build_sentences(texts, crops=2, fractions=f))
  originals = {s for s, _ in plain}
  crops = [(s, sp) for s, sp in got if s not in originals]
  assert [x for x in got if x[0] in originals] == plain and stats["crops"] == len(crops) > 0
  train = [s for s, sp in plain if sp == 0 and len(s.split()) >= 10]
  assert len(train) < 41 - 5 and stats["crops"] <= 2 * len(train)  # some held out; at most 2 per training sentence
  for c, sp in crops:
    src = [s for s in train if f" {c} " in f" {s} " or s.startswith(c + " ") or s.endswith(" " + c)]
    assert sp == 0 and src, c  # a contiguous span of a training sentence (never only of a held-out one)
    n = len(src[0].split())
    assert max(5, n / 2) <= len(c.split()) < n
  assert len(list(build_sentences(texts, limit=5, crops=2, fractions=f))) == 5  # crops count towards a limit


def test_prepare_with_crops_is_its_own_data(tmp_path):
  import studentz as sz
  out = tmp_path / "d"
  dd = prepare(WIKI, out, vocab_size=300, max_len=32, limit=300, progress=False, crops=1)
  assert dd.meta["key"]["crops"] == 1 and dd.meta["stats"]["crops"] > 0
  assert any("word spans of training sentences" in line for line in corpus.prepare_report(dd))
  assert "crops" not in prepare(WIKI, out, vocab_size=300, max_len=32, limit=300, progress=False).meta["key"]
  with pytest.raises(ValueError, match="data_crops"): sz.Config(data_crops=-1).validate()


def test_prepare_empty_corpus(tmp_path):
  p = tmp_path / "empty.txt"
  p.write_bytes(b"\n\n   \n\x00\x00\x00\nToo short.\n")
  with pytest.raises(ValueError, match="no usable sentences"): prepare(p, tmp_path / "out", progress=False)
  assert not (tmp_path / "out" / "meta.json").exists()
  with pytest.raises(FileNotFoundError): prepare(tmp_path / "nope.txt", tmp_path / "out2", progress=False)
  with pytest.raises(ValueError, match="max_len"): prepare(p, tmp_path / "o", max_len=2)


def test_prepare_layout_and_reuse(base_dir):
  dd = DataDir(base_dir)
  assert dd.n == N_SENT and dd.max_len == 32
  for name in ("texts.bin", "offsets.npy", "split.npy", "tokenizer.json", "tokens.npy", "lengths.npy", "meta.json"):
    assert (base_dir / name).is_file()
  assert not [p for p in base_dir.iterdir() if ".tmp" in p.name]
  tokens = np.load(base_dir / "tokens.npy", mmap_mode="r")
  assert tokens.shape == (N_SENT, 32) and tokens.dtype in (np.uint16, np.int32)
  off = np.load(base_dir / "offsets.npy", mmap_mode="r")
  assert off.dtype == np.int64 and off.shape == (N_SENT + 1,) and off[-1] == (base_dir / "texts.bin").stat().st_size
  split = np.load(base_dir / "split.npy")
  texts = dd.texts(start=0, stop=N_SENT)
  assert split.dtype == np.uint8 and split.tolist() == [split_of(t) for t in texts]
  assert 0.9 < (split == 0).mean() < 1.0 and dd.texts([5, 7]) == [texts[5], texts[7]]
  tok = dd.tokenizer
  lengths = np.asarray(dd.lengths)
  for i in range(50):
    ids = np.asarray(tokens[i], np.int32)
    assert ids[0] == 1 and ids[lengths[i] - 1] == EOS and (ids[lengths[i]:] == PAD).all()
    if lengths[i] < 32: assert tok.decode(ids) == texts[i]
  # a second call with the same settings reuses the folder untouched
  mtimes = {p.name: p.stat().st_mtime_ns for p in base_dir.iterdir()}
  dd2 = prepare(WIKI, base_dir, vocab_size=1000, max_len=32, limit=N_SENT, progress=False)
  assert dd2.n == N_SENT and {p.name: p.stat().st_mtime_ns for p in base_dir.iterdir()} == mtimes


def test_prepare_rebuilds_on_change_and_after_crash(data_dir, monkeypatch):
  before = np.array(np.load(data_dir / "split.npy"))
  dd = prepare(WIKI, data_dir, vocab_size=1000, max_len=24, limit=N_SENT, progress=False)
  assert dd.max_len == 24 and (np.load(data_dir / "split.npy") == before).all()  # split is a function of the text
  def boom(*a, **k): raise KeyboardInterrupt("killed")
  monkeypatch.setattr(StudentTokenizer, "fit", boom)
  with pytest.raises(KeyboardInterrupt): prepare(WIKI, data_dir, vocab_size=1000, max_len=32, limit=500, progress=False)
  with pytest.raises(FileNotFoundError, match="prepare"): DataDir(data_dir)  # half-built folder is not trusted
  monkeypatch.undo()
  assert prepare(WIKI, data_dir, vocab_size=1000, max_len=32, limit=500, progress=False).n == 500


def test_prepare_with_given_tokenizer_and_texts(tmp_path, base_dir):
  texts = ["Word " + " ".join(f"w{j}" for j in range(i % 7, i % 7 + 6)) + f" number {i}." for i in range(300)]
  dd = prepare(texts, tmp_path / "t", tokenizer=base_dir / "tokenizer.json", max_len=16, progress=False)
  assert dd.n == 300 and dd.tokenizer == StudentTokenizer.load(base_dir / "tokenizer.json")


# ---------------------------------------------------------------- teacher cache
def test_teacher_resume_after_crash(data_dir, reference):
  crashing = FakeTeacher(fail_on_call=3)
  with pytest.raises(RuntimeError, match="simulated"):
    compute_teacher_vectors(data_dir, crashing, chunk_size=CHUNK, progress=False)
  with pytest.raises(TeacherCacheIncomplete, match="2/8"): teacher_vectors(data_dir, "fake/bow teacher")
  with pytest.raises(TeacherCacheIncomplete): Loader(data_dir, "train", 8, teacher_key="fake/bow teacher")
  t = FakeTeacher()
  out = compute_teacher_vectors(data_dir, t, chunk_size=CHUNK, progress=False)
  assert t.calls == 6  # the two finished chunks were not recomputed
  assert out.dtype == np.float32 and out.shape == (N_SENT, 16) and np.array_equal(out, reference)
  t2 = FakeTeacher()
  compute_teacher_vectors(data_dir, t2, chunk_size=CHUNK * 2, progress=False)  # keeps the cache's chunking
  assert t2.calls == 0
  assert np.array_equal(teacher_vectors(data_dir, "f" * 12, verify=True), reference)


def test_teacher_corrupt_chunk_recomputed(data_dir, reference):
  compute_teacher_vectors(data_dir, FakeTeacher(), chunk_size=CHUNK, progress=False)
  cache = next(data_dir.glob("teacher-*"))
  vec = np.load(cache / "vectors.f32.npy", mmap_mode="r+")
  vec[CHUNK + 3, 2] += 1.0  # damage chunk 1
  vec.flush()
  del vec
  with pytest.raises(TeacherCacheIncomplete, match="checksum"):
    teacher_vectors(data_dir, "fake/bow teacher", verify=True)
  t = FakeTeacher()
  out = compute_teacher_vectors(data_dir, t, chunk_size=CHUNK, progress=False)
  assert t.calls == 1 and np.array_equal(out, reference)


def test_teacher_shards_merge(data_dir, tmp_path, reference):
  other = tmp_path / "copy"
  shutil.copytree(data_dir, other)
  a, b = FakeTeacher(), FakeTeacher()
  compute_teacher_vectors(data_dir, a, chunk_size=CHUNK, shard=(0, 2), progress=False)
  compute_teacher_vectors(other, b, chunk_size=CHUNK, shard=(1, 2), progress=False)
  assert a.calls == b.calls == 4
  with pytest.raises(TeacherCacheIncomplete): teacher_vectors(data_dir, "fake/bow teacher")
  res = merge_teacher_shards(data_dir, [other], teacher_key="fake/bow teacher")
  assert res["complete"] and res["copied"] == 4 and res["bad"] == 0
  assert np.array_equal(teacher_vectors(data_dir, "fake/bow teacher", verify=True), reference)
  with pytest.raises(ValueError, match="shard"):
    compute_teacher_vectors(data_dir, FakeTeacher(), chunk_size=CHUNK, shard=(2, 2), progress=False)


def test_teacher_cache_lookup_errors(data_dir):
  with pytest.raises(FileNotFoundError, match="compute_teacher_vectors"): teacher_vectors(data_dir, "nobody")
  class Bad(FakeTeacher):
    def embed(self, texts, batch_size=64): return np.zeros((len(texts), 3), np.float32)
  with pytest.raises(ValueError, match="shape"): compute_teacher_vectors(data_dir, Bad(), progress=False)


# ---------------------------------------------------------------- loader
def _loader(d, **kw):
  args = dict(teacher_key="fake/bow teacher", seed=3)
  args.update(kw)
  return Loader(d, "train", kw.pop("batch_size", 32), **{k: v for k, v in args.items() if k != "batch_size"})


def test_loader_shapes_and_content(taught_dir, reference):
  ld = _loader(taught_dir)
  dd = DataDir(taught_dir)
  n_train = int((np.load(taught_dir / "split.npy") == 0).sum())
  assert len(ld) == n_train // 32
  seen = []
  for b in ld.epoch_batches():
    assert b["tokens"].shape == b["mask"].shape == (32, 32) and b["teacher"].shape == (32, 16)
    assert b["tokens"].dtype == np.int32 and b["mask"].dtype == np.float32 and b["index"].dtype == np.int64
    assert np.array_equal(b["teacher"], reference[b["index"]]) and (b["valid"] == 1).all()
    assert np.array_equal(b["mask"] == 1, b["tokens"] != PAD)
    seen += b["index"].tolist()
  assert len(seen) == len(set(seen)) == len(ld) * 32 and (dd.split[seen] == 0).all()
  assert ld.state_dict()["epoch"] == 1 and ld.state_dict()["position"] == 0


def test_loader_seeded_order(taught_dir):
  a, b, c = _loader(taught_dir), _loader(taught_dir), _loader(taught_dir, seed=4)
  ea = [next(a)["index"] for _ in range(len(a))]
  assert all(np.array_equal(x, next(b)["index"]) for x in ea)
  assert not np.array_equal(ea[0], next(c)["index"])
  e1 = [next(a)["index"] for _ in range(len(a))]  # infinite iteration moved on to epoch 1
  assert a.state_dict()["epoch"] == 1 and not any(np.array_equal(x, y) for x, y in zip(ea, e1))


def test_loader_resume(taught_dir):
  ld = _loader(taught_dir)
  for _ in range(len(ld) + 5): next(ld)  # cross an epoch boundary
  state = json.loads(json.dumps(ld.state_dict()))
  want = [next(ld) for _ in range(3)]
  ld2 = _loader(taught_dir, seed=99)
  ld2.load_state_dict(state)
  for w in want:
    got = next(ld2)
    assert all(np.array_equal(w[k], got[k]) for k in w)
  with pytest.raises(ValueError, match="resume"): _loader(taught_dir, batch_size=16).load_state_dict(state)


def test_loader_ranks_disjoint_and_covering(taught_dir):
  world = 3
  ranks = [_loader(taught_dir, batch_size=8, shard=(r, world)) for r in range(world)]
  full = _loader(taught_dir, batch_size=8 * world)
  assert len({len(r) for r in ranks} | {len(full)}) == 1
  for _ in range(len(full)):
    parts = [next(r)["index"] for r in ranks]
    assert len(set(np.concatenate(parts).tolist())) == 8 * world
    assert np.array_equal(np.concatenate(parts), next(full)["index"])


def test_loader_buckets_and_no_drop(taught_dir):
  ld = _loader(taught_dir, batch_size=16, length_buckets=(8, 16, 24, 32))
  widths, seen = set(), []
  for b in ld.epoch_batches():
    w = b["tokens"].shape[1]
    widths.add(w)
    lens = b["mask"].sum(1)
    assert (lens <= w).all() and (b["tokens"][np.arange(16), lens.astype(int) - 1] == EOS).all()
    seen += b["index"].tolist()
  assert widths <= {8, 16, 24, 32} and len(widths) > 1 and len(seen) == len(set(seen))
  short = _loader(taught_dir, batch_size=16, max_len=12)
  b = next(short)
  assert b["tokens"].shape == (16, 12) and (b["tokens"][b["mask"].sum(1) == 12, 11] == EOS).all()
  ev = Loader(taught_dir, "val", 7, teacher_key="fake/bow teacher", shuffle=False, drop_last=False)
  got = [(b["index"], b["valid"]) for b in ev.epoch_batches()]
  real = np.concatenate([i[v == 1] for i, v in got])
  assert all(len(i) == 7 for i, _ in got) and np.array_equal(real, DataDir(taught_dir).indices("val"))


# ---------------------------------------------------------------- interop
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_export_import_round_trip(taught_dir, tmp_path, reference, suffix):
  path = tmp_path / ("x" + suffix)
  assert export_jsonl(taught_dir, path, "fake/bow teacher") == N_SENT
  first = json.loads((gzip.open(path, "rt") if suffix.endswith("gz") else open(path)).readline())
  assert set(first) == {"text", "tokens", "teacher"} and first["tokens"][-1] == EOS
  src = DataDir(taught_dir)
  dd = import_jsonl(path, tmp_path / "imp", max_len=32, teacher_name="fake/bow teacher", progress=False)
  assert dd.texts(start=0, stop=dd.n) == src.texts(start=0, stop=src.n)
  assert np.array_equal(dd.tokens, src.tokens) and np.array_equal(dd.lengths, src.lengths)
  assert np.array_equal(dd.split, src.split)
  assert np.array_equal(teacher_vectors(dd, "fake/bow teacher"), reference)
  retok = import_jsonl(path, tmp_path / "imp2", max_len=32, tokenizer=taught_dir / "tokenizer.json", progress=False)
  assert np.array_equal(retok.tokens, src.tokens)
  assert export_jsonl(taught_dir, tmp_path / "val.jsonl", None, split="val") == int((src.split == 1).sum())


# ---------------------------------------------------------------- CLI
def test_cli(tmp_path, capsys):
  with pytest.raises(SystemExit) as e: corpus.main(["--help"])
  assert e.value.code == 0
  src = tmp_path / "in.txt"
  src.write_text("\n".join(f"Sentence number {i} is a plain line of text for the cli." for i in range(200)))
  assert corpus.main(["prepare", "--source", str(src), "--out", str(tmp_path / "d"), "--vocab-size", "300",
                      "--max-len", "20", "--quiet"]) == 0
  assert corpus.main(["export", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e.jsonl")]) == 0
  assert corpus.main(["import", "--source", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "i"),
                      "--max-len", "20"]) == 0
  assert DataDir(tmp_path / "i").n == 200
  assert corpus.main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
  assert "not found" in capsys.readouterr().err
  assert os.path.getsize(tmp_path / "e.jsonl") > 0
