"""scripts/cos_by_length.py: the shipped student against its teacher on held-out sentences, grouped by length."""
import json, sys
from pathlib import Path

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
