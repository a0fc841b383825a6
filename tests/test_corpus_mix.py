"""Training mixes: several sources as domains, interleaved, deduplicated, each with its own held-out rows and weight."""
import collections, gzip, json, zlib
from studentz_training import heldout

import numpy as np
import pytest

from studentz_corpus import prepare as corpus, mix as corpus_mix
from studentz_corpus.tokenizer import StudentTokenizer


def write_gz(path, lines):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for line in lines: f.write(line + "\n")
  return path


@pytest.fixture
def mix(tmp_path):
  wiki = [json.dumps({"text": f"Article number {i} describes a town in the north of a country. It has a river."})
          for i in range(60)]
  write_gz(tmp_path / "wiki.jsonl.gz", wiki)
  write_gz(tmp_path / "tagged.txt.gz", [f"example\tthe dog number {i} ran home" for i in range(80)] +
           [f"gloss\ta small animal kept as pet number {i}" for i in range(40)] +
           ["example\tthe dog number 1 ran home"])
  write_gz(tmp_path / "quotes.txt.gz", [f"\x07Life is short, eat dessert {i} first." for i in range(50)])
  spec = {"sources": [
    {"domain": "wiki", "path": "wiki.jsonl.gz", "weight": 0.5},
    {"domain": "examples", "path": "tagged.txt.gz", "tag": "example", "split": "lines", "weight": 2, "heldout": 0.1},
    {"domain": "glosses", "path": "tagged.txt.gz", "tag": "gloss", "split": "lines", "heldout": 0.1},
    {"domain": "quotes", "path": str(tmp_path / "quotes.txt.gz"), "split": "lines", "weight": 1.5, "heldout": 0.1}]}
  (tmp_path / "mix.json").write_text(json.dumps(spec))
  return tmp_path / "mix.json"


def test_mix_folder_has_every_domain_split_and_weight(mix, tmp_path):
  dd = corpus.prepare(mix, tmp_path / "d", vocab_size=300, max_len=24, progress=False)
  assert dd.domains == ["wiki", "examples", "glosses", "quotes"] and dd.meta["weights"] == [0.5, 2.0, 1.0, 1.5]
  dom, texts = np.asarray(dd.domain_of), dd.texts(np.arange(dd.n))
  counts = collections.Counter(dom.tolist())
  # 60 articles of one sentence each (their 4-word second sentence is dropped in sentence mode, a 4-word line is kept
  # in line mode), 80 examples (the repeated one dropped), 40 glosses, 50 quotes
  assert [counts[d] for d in range(4)] == [60, 80, 40, 50]
  assert all(t.startswith("the dog") for t in np.array(texts)[dom == 1])
  assert all(t.startswith("Life is short") for t in np.array(texts)[dom == 3])  # control bytes gone
  assert "\t" not in "".join(texts)
  # round-robin: the first four rows come from four domains, so a limit keeps every domain
  assert sorted(dom[:4].tolist()) == [0, 1, 2, 3]
  small = corpus.prepare(mix, tmp_path / "small", vocab_size=300, max_len=24, limit=8, progress=False)
  assert sorted(np.asarray(small.domain_of).tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
  # each domain has its own hash split, with about its held-out share in val and test
  split = np.asarray(dd.split)
  assert 0 < (split[dom == 1] > 0).sum() <= 40
  report = corpus.prepare_report(dd)  # what `prepare` prints: readers summed over domains, rows per domain
  assert report[0].startswith("read 352 lines: 352 texts, 230 sentences kept")  # the tagged file: once per domain
  assert "domains: wiki 60, examples 80, glosses 40, quotes 50" in report


def test_weights_change_only_the_loader_not_the_folder(mix, tmp_path):
  dd = corpus.prepare(mix, tmp_path / "d", vocab_size=300, max_len=24, progress=False)
  spec = json.loads(mix.read_text())
  spec["sources"][0]["weight"] = 3
  mix.write_text(json.dumps(spec))
  again = corpus.prepare(mix, tmp_path / "d", vocab_size=300, max_len=24, progress=False)
  assert again.data_id == dd.data_id and again.meta["weights"][0] == 3.0


def test_loader_draws_each_domain_by_its_weight(mix, tmp_path):
  dd = corpus.prepare(mix, tmp_path / "d", vocab_size=300, max_len=24, progress=False)
  rows = dd.indices("train")
  per = collections.Counter(np.asarray(dd.domain_of)[rows].tolist())
  loader = corpus.Loader(dd.path, "train", 4, teacher_key=None, seed=1, drop_last=False)
  seen = collections.Counter()
  for b in loader.epoch_batches():
    seen.update(np.asarray(dd.domain_of)[b["index"][b["valid"] > 0]].tolist())
  for d, w in enumerate([0.5, 2.0, 1.0, 1.5]):
    assert seen[d] == round(w * per[d]) or (w % 1 and abs(seen[d] - w * per[d]) <= 1), (d, seen[d], per[d])
  # another epoch draws another half of the down-weighted domain
  first = {tuple(b["index"]) for b in corpus.Loader(dd.path, "train", 4, teacher_key=None, seed=1).epoch_batches()}
  assert loader.epoch == 1
  second = {tuple(b["index"]) for b in loader.epoch_batches()}
  assert first != second
  val = corpus.Loader(dd.path, "val", 1, teacher_key=None)
  assert val.weights is None  # held-out rows are never re-weighted


def test_mix_with_a_given_tokenizer_and_bad_files(mix, tmp_path):
  tok = StudentTokenizer.fit(["the dog ran home", "a small animal"] * 5, vocab_size=280)
  dd = corpus.prepare(mix, tmp_path / "d", tokenizer=tok, max_len=24, progress=False)
  assert dd.meta["tokenizer_fingerprint"] == tok.fingerprint
  bad = tmp_path / "bad.json"
  for spec, words in [({"sources": []}, "a mix file holds"), ({"sources": [{"domain": "A b", "path": "x"}]}, "domain"),
                      ({"sources": [{"domain": "a", "path": "nowhere.txt"}]}, "not found"),
                      ({"sources": [{"domain": "a", "path": str(mix), "weight": -1}]}, "weight"),
                      ({"sources": [{"domain": "a", "path": str(mix), "colour": 1}]}, "unknown source field")]:
    bad.write_text(json.dumps(spec))
    with pytest.raises((ValueError, FileNotFoundError), match=words): corpus_mix.load_mix(bad)


def test_clean_line():
  assert corpus_mix.clean_line('"Some travelers pass through the desert') == "Some travelers pass through the desert"
  assert corpus_mix.clean_line("') used to connect clauses") is None
  assert corpus_mix.clean_line("two words") is None
  assert corpus_mix.clean_line("ok \"quoted\" fine   here") == 'ok "quoted" fine here'


def test_default_mix_resolves_against_the_shared_data():
  if not (corpus_mix.ROOT.parent / "shared" / "data" / "wikipedia").is_dir(): pytest.skip("no ../shared/data here")
  sources = corpus_mix.load_mix(corpus_mix.DEFAULT_MIX)
  assert sources[0].domain == "wikipedia" and all(p.is_file() for p in map(corpus_mix.Path, (s.path for s in sources)))


def test_domain_adaptation_from_a_checkpoint(tmp_path, capsys):
  """The README's `train.py --init-from models/default --data-source my.jsonl.gz`: the user's corpus is tokenized with
  the checkpoint's tokenizer, training starts from the checkpoint's weights, and validation follows the (here fake,
  384-d) teacher. The checkpoint is a tiny one (fine-tuning the 11M shipped model cost a minute of JIT compile on this
  CPU); test_readme.py runs the README's command itself against models/default (config and encoder shape), and
  test_api / test_infer load the shipped weights."""
  import train
  import studentz as sz
  from studentz_runtime.checkpoint import load_tensors
  from conftest import write_checkpoint
  from tinygrad import Tensor
  # the checkpoint's tokenizer is fitted on other text than the user's corpus: a fresh fit would give another one
  tok = StudentTokenizer.fit([f"A {a} {b} was seen near the {c} at noon, number {i}." for i in range(40)
                              for a, b, c in [("small", "dog", "river"), ("large", "cat", "station")]],
                             vocab_size=300)
  # the smallest encoder (one block, no pool head): tinygrad's scheduling of the training step grows with its ops
  cfg = sz.Config(vocab_size=tok.vocab_size, d_model=32, hidden=48, n_blocks=1, dilation_schedule=[1],
                  kernel_size=3, max_len=24, proj_dim=384, pool_head=0).validate()
  Tensor.manual_seed(1234)  # not the run's seed: a fresh init would be far from these weights
  shipped = tmp_path / "ckpt"
  write_checkpoint(shipped, cfg, {"encoder": sz.Encoder(cfg)}, tok, teacher_name=WordTeacher.name)
  lines = [json.dumps({"text": f"Order number {i} for a {c} {t} ships from our {w} warehouse today."})
           for i in range(160) for c, t, w in [("red", "chair", "north"), ("blue", "table", "south")][i % 2:i % 2 + 1]]
  src = write_gz(tmp_path / "my.jsonl.gz", lines)
  argv = ["--init-from", str(shipped), "--data-source", str(src), "--out", str(tmp_path / "run"), "--steps", "4",
          "--batch_size", "8", "--eval_every", "2", "--warmup_steps", "1", "--optimizer.lr", "1e-3", "--quiet",
          "--loss_weights.tok", "0", "--length_buckets", "[]", "--data-dir", str(tmp_path / "data"),
          "--decoder_share", "0"]  # the encoder's adaptation alone (test_two_stage runs the decoder's stage)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(heldout, "load_teacher", lambda name: WordTeacher())
    assert train.main(argv) == 0
  assert "init from " in capsys.readouterr().err
  dd = corpus.open_data_dir(tmp_path / "data")
  assert dd.meta["tokenizer_fingerprint"] == StudentTokenizer.load(shipped / "tokenizer.json").fingerprint
  before = load_tensors(shipped / "model.safetensors")["encoder.embed.weight"].astype(np.float32)
  after = load_tensors(tmp_path / "run" / "best" / "model.safetensors")["encoder.embed.weight"].astype(np.float32)
  # 4 small steps from the checkpoint's weights: near them (a fresh init would be far), but trained (not equal)
  rel = np.abs(after - before).max() / np.abs(before).max()
  assert 0 < rel < 0.05, rel


class WordTeacher:
  """A 384-d stand-in teacher: the normalised sum of a fixed random vector per word."""
  name, dim, fingerprint, max_seq_length, pooling = "word-teacher", 384, "ab" * 32, 128, ("mean",)

  def embed(self, texts, batch_size=64, **_):
    out = np.stack([sum(np.random.default_rng(zlib.crc32(w.encode())).standard_normal(384) for w in t.split())
                    for t in texts]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _held_out(dd):
  dom, split, texts = np.asarray(dd.domain_of), np.asarray(dd.split), np.array(dd.texts(np.arange(dd.n)))
  return {(d, s): texts[(dom == d) & (split == s)].tolist() for d in range(len(dd.domains)) for s in (1, 2)}


def test_augment_adds_variants_as_training_rows_only(mix, tmp_path):
  from studentz_corpus import augment
  plain = corpus.prepare(mix, tmp_path / "plain", vocab_size=300, max_len=24, progress=False)
  spec = json.loads(mix.read_text())
  shares = {"lower": 0.5, "nopunct": 0.7, "crop": 0.4, "typo": 0.3}
  spec["augment"] = {"typo": 0.2}  # mix-level: for every source without its own
  spec["sources"][3]["augment"] = shares
  mix.write_text(json.dumps(spec))
  dd = corpus.prepare(mix, tmp_path / "aug", vocab_size=300, max_len=24, progress=False)
  assert dd.data_id != plain.data_id and dd.meta["stats"]["augmented"] > 0
  assert _held_out(dd) == _held_out(plain)  # val and test rows: the same texts in the same order
  again = corpus.prepare(mix, tmp_path / "again", vocab_size=300, max_len=24, progress=False)
  assert again.data_id == dd.data_id  # deterministic
  dom, split = np.asarray(dd.domain_of), np.asarray(dd.split)
  texts = np.array(dd.texts(np.arange(dd.n)))
  originals = set(plain.texts(np.arange(plain.n)))
  quotes = set(texts[(dom == 3) & (split == 0)].tolist())
  train = [t for t in np.array(plain.texts(np.arange(plain.n)))[(np.asarray(plain.domain_of) == 3)
                                                               & (np.asarray(plain.split) == 0)]]
  want = {augment.VARIANTS[k](s) for s in train for k, p in shares.items() if augment.chosen(k, s, p)} - set(train)
  want = {v for v in want if corpus.split_of(v, (0.8, 0.1, 0.1)) == 0}
  assert quotes - set(train) == want and 0 < len(want) < 2 * len(train)
  assert any(t.islower() for t in want) and any(not t.endswith(".") for t in want)
  # the mix-level default reached the other sources: typo variants of their training texts, nothing else new
  for d in range(3):
    new = set(texts[dom == d].tolist()) - originals
    assert new and all(len(t) == len(next(s for s in originals if augment.typo(s) == t)) for t in new)


def test_augment_values_are_checked_in_one_line(mix, tmp_path):
  bad = tmp_path / "bad.json"
  src = {"domain": "a", "path": str(mix), "split": "lines"}
  for spec, words in [({"sources": [{**src, "augment": {"lower": 1.5}}]}, "share of 'lower' must be"),
                      ({"sources": [{**src, "augment": {"lower": 0}}]}, "share of 'lower' must be"),
                      ({"sources": [{**src, "augment": {"lower": True}}]}, "share of 'lower' must be"),
                      ({"sources": [{**src, "augment": {"shout": 0.1}}]}, "unknown augment variant 'shout'"),
                      ({"sources": [{**src, "augment": ["lower"]}]}, "augment must be an object"),
                      ({"augment": {"crop": "a lot"}, "sources": [src]}, "mix-level: augment share of 'crop'")]:
    bad.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=words) as e: corpus_mix.load_mix(bad)
    assert "\n" not in str(e.value)


def test_augment_variants():
  from studentz_corpus import augment
  s = '"Where is the railway station?" she asked.'
  assert augment.lower(s) == s.lower() and augment.nopunct(s) == '"Where is the railway station?" she asked'
  assert augment.lower_nopunct("Is it OK?!") == "is it ok"
  t = augment.typo(s)
  diff = [i for i, (a, b) in enumerate(zip(s, t)) if a != b]
  assert len(t) == len(s) and len(diff) == 2 and diff[1] == diff[0] + 1 and s[diff[0]] == t[diff[1]]
  assert s[diff[0] - 1].isalpha() and s[diff[0]].isalpha() and s[diff[1]].isalpha()  # inside a word, not its start
  assert augment.typo("An ox at sea") == "An ox at sea" and augment.crop("Is it ok?") == "Is it ok?"
  words = "The mayor opens a new bridge over the river in the old town today.".split()
  crops = {augment.crop(" ".join(words[:n])) for n in range(5, len(words) + 1)}
  assert all(3 <= len(c.split()) <= 8 and " ".join(words).startswith(c) for c in crops) and len(crops) > 1
  assert augment.typo(s) == t and augment.crop(" ".join(words)) == augment.crop(" ".join(words))
  picked = sum(augment.chosen("lower", f"text {i}", 0.25) for i in range(2000))
  assert 400 < picked < 600
