"""Token-level targets (token_targets.py): span alignment, the cache (whole and sharded), the loader's token batches,
the token loss, and the real MiniLM teacher's token vectors against its sentence vectors."""
import hashlib, re, shutil

import numpy as np
import pytest

from studentz_corpus import prepare as corpus, token_targets as corpus_tokens
import studentz as sz
from studentz_training.trainer import Trainer
from conftest import SHARED_DATA
from studentz_corpus.prepare import Loader, compute_teacher_vectors, prepare
from tinygrad import Tensor

WIKI = SHARED_DATA / "wikipedia" / "enwiki-docs.jsonl.gz"
DIM = 8


def _vec(word: str) -> np.ndarray:
  return np.random.default_rng(list(hashlib.md5(word.encode()).digest()[:8])).standard_normal(DIM).astype(np.float32)


class WordTeacher:
  """A mean-pooling fake: [CLS], one token per word or punctuation mark (a fixed random vector each), [SEP]."""
  name, dim, fingerprint, pooling = "word-teacher", DIM, "a1" * 32, ("mean",)

  def token_vectors(self, texts, batch_size=64):
    out = []
    for t in texts:
      spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", t)]
      h = np.stack([_vec("[CLS]")] + [_vec(t[a:b].lower()) for a, b in spans] + [_vec("[SEP]")])
      out.append((h, [(0, 0)] + spans + [(0, 0)], [1] + [0] * len(spans) + [1]))
    return out

  def embed(self, texts, batch_size=64):
    m = np.stack([h.mean(0) for h, _, _ in self.token_vectors(texts)])
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok") / "wiki"
  prepare(WIKI, out, vocab_size=600, max_len=48, limit=300, progress=False)
  compute_teacher_vectors(out, WordTeacher(), progress=False)
  return out


def test_align_carries_spans_and_scales_to_the_sentence_vector():
  h = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 1                       # CLS, 3 words, SEP
  t_off, t_spec = [(0, 0), (0, 3), (4, 9), (9, 10), (0, 0)], [1, 0, 0, 0, 1]     # "The quick."
  s_off = [(0, 3), (3, 6), (6, 9), (9, 10)]                                      # "The", " qu", "ick", "."
  y, ok = corpus_tokens.align(h, t_off, t_spec, s_off, n_pos=6)
  scale = 1 / np.linalg.norm(h.mean(0))
  want = np.stack([h[0], h[1], h[2], h[2], h[3], h[4]]) * scale                  # " qu" overlaps "quick" only
  np.testing.assert_allclose(y, want, rtol=1e-6)
  assert ok.all()
  # a student token spanning two teacher tokens gets their mean; one covering none (here a space) gets no target
  y, ok = corpus_tokens.align(h, t_off, t_spec, [(0, 9), (3, 4)], n_pos=4)
  np.testing.assert_allclose(y[1], (h[1] + h[2]) / 2 * scale, rtol=1e-6)
  assert ok.tolist() == [True, True, False, True]
  # the scale: the scaled teacher tokens average to the unit sentence vector
  np.testing.assert_allclose(np.linalg.norm((h * scale).mean(0)), 1, rtol=1e-6)


def test_align_many_matches_the_overlap_definition_sentence_by_sentence():
  """The batched search against the plain (S, T) overlap matrix, on random tokenisations of random texts: spans that
  touch, student tokens over several or no teacher tokens, an empty student span, a sentence with no [SEP], and (last
  batch) a tokenizer whose spans go backwards or which puts a special token inside, both taking the matrix path."""
  rng = np.random.default_rng(0)
  def sentence(crossing=False, inner_special=False):
    cuts = np.unique(rng.integers(1, 40, rng.integers(2, 9)))
    t_off = [(0, 0)] + [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if rng.random() < 0.8] + [(0, 0)]
    spec = [1] + [0] * (len(t_off) - 2) + [1]
    if rng.random() < 0.2: t_off, spec = t_off[:-1], spec[:-1]                   # no [SEP]
    if crossing and len(t_off) > 3: t_off[1], t_off[2] = t_off[2], t_off[1]
    if inner_special and len(t_off) > 3: spec[2], t_off[2] = 1, (0, 0)
    s_cuts = np.unique(rng.integers(0, 42, rng.integers(2, 12)))
    s_off = [(int(a), int(b)) for a, b in zip(s_cuts[:-1], s_cuts[1:])] + [(5, 5)]
    n_pos = len(s_off) + 2 - int(rng.integers(0, 3))
    return rng.standard_normal((len(t_off), 8)).astype(np.float32), t_off, spec, s_off, n_pos
  for batch in ([sentence() for _ in range(40)], [sentence(crossing=True) for _ in range(5)],
                [sentence(inner_special=True) for _ in range(5)]):
    y, ok = corpus_tokens.align_many(*[list(x) for x in zip(*batch)])
    want = [corpus_tokens._align_crossing([h], [t], [sp], [np.asarray(s).reshape(-1, 2)[:max(n - 2, 0)]], [n])
            for h, t, sp, s, n in batch]
    np.testing.assert_allclose(y, np.concatenate([w[0] for w in want]), rtol=1e-5, atol=1e-6)
    assert (ok == np.concatenate([w[1] for w in want])).all() and ok.any() and not ok.all()


def test_targets_follow_the_student_tokens(taught):
  cache = corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)
  tgt, ok, off = corpus_tokens.token_targets(taught, WordTeacher().fingerprint)
  dd = corpus.open_data_dir(taught)
  tok = dd.tokenizer.backend
  assert off[-1] == int(np.asarray(dd.lengths).sum()) == len(tgt) == len(ok) and ok.mean() > 0.95
  for r in range(0, dd.n, 37):
    text, n = dd.text(r), int(dd.lengths[r])
    h, t_off, _ = WordTeacher().token_vectors([text])[0]
    scale = 1 / np.linalg.norm(h.mean(0))
    rows = np.asarray(tgt[off[r]:off[r + 1]], np.float32)
    np.testing.assert_allclose(rows[0], h[0] * scale, atol=2e-3)                # BOS <- [CLS]
    np.testing.assert_allclose(rows[n - 1], h[-1] * scale, atol=2e-3)           # EOS <- [SEP]
    for j, (a, b) in enumerate(tok.encode(text, add_special_tokens=False).offsets[:n - 2]):
      hit = [k for k, (c, d) in enumerate(t_off) if d > c and c < b and a < d]  # teacher words overlapping it
      if hit: np.testing.assert_allclose(rows[j + 1], h[hit].mean(0) * scale, atol=2e-3)
      assert bool(ok[off[r] + j + 1]) == bool(hit)
  assert corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False) == cache  # complete: a no-op


def test_shards_join_into_the_whole(taught, tmp_path, monkeypatch):
  corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)      # a no-op once complete
  whole = np.array(corpus_tokens.token_targets(taught, WordTeacher().fingerprint)[0])
  d = tmp_path / "copy"
  shutil.copytree(taught, d)
  cache = corpus_tokens.status(d, WordTeacher().fingerprint)["dir"]
  for f in cache.glob("tokens*"): f.unlink()
  monkeypatch.setattr(corpus_tokens, "CHUNK", 64)                                # 5 chunks over 300 sentences
  corpus_tokens.compute_token_targets(d, WordTeacher(), shard=(1, 2), progress=False)
  assert not corpus_tokens.status(d, WordTeacher().fingerprint)["complete"]
  with pytest.raises(FileNotFoundError, match="shards done"):
    Loader(d, "train", 8, teacher_key=WordTeacher().fingerprint, token_targets=True)
  corpus_tokens.compute_token_targets(d, WordTeacher(), shard=(0, 2), progress=False)  # the last one joins them
  np.testing.assert_array_equal(np.array(corpus_tokens.token_targets(d, WordTeacher().fingerprint)[0]), whole)
  assert not list(cache.glob("tokens.shard*"))


def test_one_pass_also_writes_the_sentence_vectors(taught, tmp_path):
  """Without cached sentence vectors the token pass writes them too (the normalised mean of the token vectors), and
  they equal the teacher's own embed(); the token targets are the same as after a separate vector pass."""
  corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)
  key = WordTeacher().fingerprint
  d = tmp_path / "fresh"
  shutil.copytree(taught, d, ignore=shutil.ignore_patterns("teacher-*"))
  calls = []
  class Counting(WordTeacher):
    def embed(self, texts, batch_size=64):
      calls.append(len(texts))
      return super().embed(texts, batch_size)
  corpus_tokens.compute_token_targets(d, Counting(), progress=False)
  compute_teacher_vectors(d, Counting(), progress=False)                         # complete already: no teacher calls
  assert calls == []
  np.testing.assert_allclose(np.asarray(corpus.teacher_vectors(d, key)),
                             np.asarray(corpus.teacher_vectors(taught, key)), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(corpus_tokens.token_targets(d, key)[0]),
                                np.asarray(corpus_tokens.token_targets(taught, key)[0]))
  assert not (d / corpus_tokens.TARGETS).exists() and not (d / corpus_tokens.OK).exists()  # moved to the teacher's


def test_train_prepares_with_one_teacher_pass(tmp_path):
  """train.py's data preparation with token targets on: the token pass gives the sentence vectors too, so the
  teacher's embed() is never called (on a CPU each pass over the 2,000-sentence slice is two minutes)."""
  import argparse, train
  calls = []
  class Counting(WordTeacher):
    def embed(self, texts, batch_size=64):
      calls.append(len(texts))
      return super().embed(texts, batch_size)
  cfg = sz.Config(vocab_size=600, max_len=48, data_limit=200, proj_dim=DIM,
                  loss_weights={"cos": 1.0, "mse": 1.0, "sem": 0.1, "tok": 0.25}).validate()
  args = argparse.Namespace(data_source=WIKI, data_dir=tmp_path / "d", teacher_batch_size=16)
  dd, d, took = train.prepare_data(cfg, Counting(), args, quiet=True)
  assert calls == [] and corpus_tokens.status(d, WordTeacher().fingerprint)["complete"]
  assert set(took) == {"sentences and tokens", "teacher pass"} and min(took.values()) >= 0
  np.testing.assert_allclose(np.asarray(corpus.teacher_vectors(d, WordTeacher().fingerprint)),
                             WordTeacher().embed(dd.texts()), atol=1e-6)


def test_targets_of_other_tokens_are_dropped_when_the_folder_is_prepared_again(taught, tmp_path):
  """Same texts, another max_len: the teacher's sentence vectors stay, the token targets (of the old tokens) go, and
  the next computation fits the new tokens (the seventh-session dry run met a stale file of the wrong size)."""
  corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)
  d = tmp_path / "again"
  shutil.copytree(taught, d)
  key = WordTeacher().fingerprint
  assert corpus_tokens.status(d, key)["complete"]
  prepare(WIKI, d, vocab_size=600, max_len=24, limit=300, progress=False)
  st = corpus_tokens.status(d, key)
  assert not st["complete"] and not list(st["dir"].glob("tokens*")) and corpus.teacher_status(d, key)["complete"]
  corpus_tokens.compute_token_targets(d, WordTeacher(), progress=False)
  tgt, ok, off = corpus_tokens.token_targets(d, key)
  assert tgt.shape[0] == off[-1] == int(np.asarray(corpus.open_data_dir(d).lengths).sum())
  with pytest.raises(ValueError, match="token_targets must be"):
    Loader(d, "train", 16, teacher_key=key, token_targets="device")


def test_loader_gives_token_batches(taught):
  corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)
  key = WordTeacher().fingerprint
  tgt, ok, off = corpus_tokens.token_targets(taught, key)
  # max_len 24 cuts the longer sentences: their EOS is written over a content token, which has no [SEP] target
  ld = Loader(taught, "train", 64, teacher_key=key, token_targets=True, max_len=24, shuffle=False)
  b = next(ld)
  assert b["tok_target"].shape == (64, 24, DIM) and b["tok_target"].dtype == np.float16
  full = np.asarray(corpus.open_data_dir(taught).lengths)[b["index"]]
  for i, r in enumerate(b["index"]):
    n = min(int(full[i]), 24)
    want = np.asarray(tgt[off[r]:off[r] + n])
    keep = n - 1 if full[i] > 24 else n
    np.testing.assert_array_equal(b["tok_target"][i, :keep], want[:keep])
    assert (b["tok_target"][i, keep:] == 0).all()
    np.testing.assert_array_equal(b["tok_mask"][i, :keep], np.asarray(ok[off[r]:off[r] + keep], np.float32))
    assert (b["tok_mask"][i, keep:] == 0).all()
  assert (full > 24).any() and (full <= 24).any()


def test_token_table_on_the_device_gives_the_host_batches_and_loss(taught):
  """--tok-table device: the loader gives row indices, the table sits on the device (copied in chunks, on two devices
  for data parallel) and the loss gathers there; same targets and same loss as the host path's tok_target."""
  from studentz_kernels.embedding import gather_rows
  from studentz_training.trainer import device_table
  corpus_tokens.compute_token_targets(taught, WordTeacher(), progress=False)
  key = WordTeacher().fingerprint
  host = Loader(taught, "train", 16, teacher_key=key, token_targets=True, max_len=24, shuffle=False)
  index = Loader(taught, "train", 16, teacher_key=key, token_targets=True, max_len=24, shuffle=False)
  index.give_token_index()
  bh, bi = next(host), next(index)
  assert "tok_target" not in bi and bi["tok_index"].dtype == np.int32 and bi["tok_index"].shape == (16, 24)
  np.testing.assert_array_equal(bi["tok_mask"], bh["tok_mask"])
  arr = index.token_table
  table = device_table(arr, chunk_bytes=1000 * DIM * 2)                           # several chunks, a short last one
  assert arr.shape[0] % 1000 and arr.shape[0] > 2000
  np.testing.assert_array_equal(table.numpy(), np.asarray(arr))
  m = bh["tok_mask"][..., None]
  got = gather_rows(table, Tensor(bi["tok_index"])).numpy()
  np.testing.assert_array_equal(got * m, bh["tok_target"] * m)
  cfg = sz.Config(vocab_size=600, d_model=16, hidden=24, n_blocks=1, dilation_schedule=[1], kernel_size=3, max_len=24,
                  batch_size=16, proj_dim=DIM, dropout=0.0,
                  loss_weights={"cos": 1.0, "mse": 1.0, "tok": 1.0}).validate()
  Tensor.manual_seed(0)
  models = {"encoder": sz.Encoder(cfg)}
  keys = ("tokens", "mask", "teacher", "tok_mask")
  want = sz.distill_loss_fn(models, {k: Tensor(bh[k]) for k in (*keys, "tok_target")})
  got = sz.distill_loss_fn(models, {k: Tensor(bi[k]) for k in (*keys, "tok_index")}, tok_table=table)
  assert got["tok"].item() == pytest.approx(want["tok"].item(), rel=1e-6) and want["tok"].item() > 0
  # data parallel: a copy on each device, the batch's rows split between them
  from studentz_kernels import parallel
  devs = parallel.device_names(2, "CPU")
  both = device_table(arr, devices=devs)
  assert both.device == devs
  split = gather_rows(both, Tensor(bi["tok_index"]).shard(devs, axis=0)).numpy()
  np.testing.assert_array_equal(split * m, bh["tok_target"] * m)


def test_token_loss_and_its_training_step(taught):
  rng = np.random.default_rng(0)
  y, t = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((3, 5, 4)).astype(np.float32)
  m = (rng.random((3, 5)) > 0.3).astype(np.float32)
  got = sz.token_loss(Tensor(y), Tensor(t.astype(np.float16)), Tensor(m)).item()
  want = (((y - t.astype(np.float16).astype(np.float32)) ** 2).sum(-1) * m).sum() / m.sum()
  assert got == pytest.approx(want, rel=1e-5)
  # a tiny student trained on the token targets lowers the token loss
  cfg = sz.Config(vocab_size=600, d_model=16, hidden=24, n_blocks=1, dilation_schedule=[1], kernel_size=3, max_len=48,
                  batch_size=16, proj_dim=DIM, dropout=0.0, steps=40, warmup_steps=2, length_buckets=[],
                  loss_weights={"cos": 1.0, "mse": 1.0, "sem": 0.0, "tok": 1.0}).validate()
  Tensor.manual_seed(0)
  trainer = Trainer(cfg, {"encoder": sz.Encoder(cfg)}, sz.distill_loss_fn)
  ld = Loader(taught, "train", 16, teacher_key=WordTeacher().fingerprint, token_targets=True)
  first = None
  for _ in range(cfg.steps):
    b = next(ld)
    out = trainer.step({k: b[k] for k in ("tokens", "mask", "teacher", "tok_target", "tok_mask")})
    first = first or out["tok"]
  assert np.isfinite(out["loss"]) and out["tok"] < 0.7 * first, (first, out["tok"])


def test_token_targets_need_a_mean_pooling_teacher_and_shards_the_vectors_first(taught):
  plain = type("Plain", (), {"name": "word-teacher", "dim": DIM, "fingerprint": WordTeacher.fingerprint})()
  with pytest.raises(ValueError, match="no token vectors"): corpus_tokens.compute_token_targets(taught, plain)
  class ClsTeacher(WordTeacher): pooling = ("cls",)
  with pytest.raises(ValueError, match="mean-pooling"): corpus_tokens.compute_token_targets(taught, ClsTeacher())
  other = type("T", (WordTeacher,), {"fingerprint": "c3" * 32, "name": "other"})()
  with pytest.raises(Exception, match="no teacher vectors|incomplete"):  # shards need the whole vector cache first
    corpus_tokens.compute_token_targets(taught, other, shard=(0, 2))


def test_non_finite_targets_are_refused(taught, tmp_path):
  class Broken(WordTeacher):
    def token_vectors(self, texts, batch_size=64):
      out = super().token_vectors(texts, batch_size)
      out[-1][0][1] = np.nan                                                     # one token of the last text
      return out
  d = tmp_path / "copy"
  shutil.copytree(taught, d)
  for f in corpus_tokens.status(d, WordTeacher().fingerprint)["dir"].glob("tokens*"): f.unlink()
  with pytest.raises(ValueError, match="non-finite token targets"):
    corpus_tokens.compute_token_targets(d, Broken(), progress=False)
  assert not corpus_tokens.status(d, WordTeacher().fingerprint)["complete"]


def test_minilm_token_vectors_average_to_its_sentence_vectors(minilm_dir):
  from teacher import load_teacher
  t = load_teacher(str(minilm_dir))
  texts = ["A man is playing a guitar.", "Tokyo, a café; naïve 1,234 items!", "Dogs run."]
  tv = t.token_vectors(texts, batch_size=2)                                       # two batches, longest first
  mean = np.stack([h.mean(0) for h, _, _ in tv])
  np.testing.assert_allclose(mean / np.linalg.norm(mean, axis=1, keepdims=True), t.embed(texts, batch_size=4),
                             atol=1e-5)
  assert [len(h) for h, _, _ in tv] == [len(t.tokenizer.encode(x).ids) for x in texts]
