"""scripts/cos_by_length.py: the shipped student against its teacher on held-out sentences, grouped by length."""
import json, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import cos_by_length  # noqa: E402


def test_groups_cover_every_sentence_and_cosines_are_real(tmp_path, minilm_dir, capsys):
  src = tmp_path / "docs.jsonl"
  words = ["river", "castle", "engine", "season", "album", "village", "protein", "election"]
  with src.open("w") as f:  # ~1% of sentences land in the test split, so write enough for a handful
    for i in range(1500):
      text = f"The {words[i % 8]} number {i} was described in {1900 + i % 97} by {words[(i * 3) % 8]} scholars."
      f.write(json.dumps({"id": i, "title": "t", "text": text}) + "\n")
  out = tmp_path / "cbl.json"
  assert cos_by_length.main(["--source", str(src), "--teacher", str(minilm_dir), "--n", "6", "--json", str(out)]) == 0
  res = json.loads(out.read_text())
  by_tokens = [r for r in res["rows"] if r["by"] == "tokens"]
  assert res["n"] == 6 and sum(r["n"] for r in by_tokens) == 6
  assert 0.2 < res["cos_mean"] < 1.0  # the shipped student is close to its teacher, not identical
  assert "held-out sentences, mean cos" in capsys.readouterr().out
  # the same six sentences, each student vector against its own sentence's teacher vector, computed here: rows
  # paired off by one, a sign or a mean over the wrong axis gives another figure
  from studentz_corpus import prepare as corpus
  from studentz import StudentZ
  from teacher import load_teacher
  texts = [s for s, split in corpus.build_sentences(str(src)) if split == 2][:6]
  m = StudentZ.load()
  zs, zt = m.encode(texts), load_teacher(str(minilm_dir)).embed(texts)
  cos = (zs * zt).sum(1) / (np.linalg.norm(zs, axis=1) * np.linalg.norm(zt, axis=1))
  assert abs(res["cos_mean"] - cos.mean()) < 1e-4, (res["cos_mean"], cos)
  n_tok = [len(m.tokenizer.backend.encode(t, add_special_tokens=False).ids) + 2 for t in texts]
  for r in by_tokens:
    sel = [c for c, n in zip(cos, n_tok) if r["from"] <= n < r["to"]]
    assert r["n"] == len(sel) and abs(r["cos_mean"] - np.mean(sel)) < 1e-4, (r, sel)
