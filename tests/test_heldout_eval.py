"""scripts/heldout_eval.py's texts: the first rows of one split per domain; --split train (the fit gap) reads texts
the model trained on, none of which is a held-out text."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import heldout_eval  # noqa: E402


def test_each_split_gives_its_own_texts(work):
  from studentz_corpus import prepare as corpus
  dd = corpus.open_data_dir(work["data_dir"])
  got = {split: heldout_eval.heldout_texts(work["data_dir"], 6, split) for split in ("train", "val", "test")}
  for split, texts in got.items():
    assert texts and all(0 < len(t) <= 6 for t in texts.values()), split
    want = set(dd.texts(dd.indices(split)))
    assert all(set(t) <= want for t in texts.values()), f"{split}: a text from another split"
  train, test = (set().union(*got[s].values()) for s in ("train", "test"))
  assert not train & test
