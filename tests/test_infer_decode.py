"""`python infer.py --decode v.npy`: vectors from a .npy file -> text with the shipped model, both modes, streamed in
chunks, and one-line errors for files that cannot be vectors."""
import json

import numpy as np
import pytest

import infer

SENTS = ["The cat sat on the mat.", "A man is playing a guitar on stage.", "How do I install a package?",
         "Dogs run in the park.", "The printing press spread across Europe."]


@pytest.fixture(scope="module")
def shipped():
  from studentz import DEFAULT_MODEL_DIR, StudentZ
  if not (DEFAULT_MODEL_DIR / "config.json").is_file(): pytest.skip("no shipped model")
  return StudentZ.load(engine="numpy")


def rows(capsys) -> list[dict]:
  return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_mode_a_round_trip_streams_in_chunks(shipped, tmp_path, capsys, monkeypatch):
  z = shipped.encode(SENTS)
  np.save(tmp_path / "z.npy", z)
  monkeypatch.setattr(infer, "CHUNK", 2)  # 5 rows: three chunks, output in input order
  assert infer.main(["--decode", str(tmp_path / "z.npy"), "--decode-mode", "a", "--json"]) == 0
  out = rows(capsys)
  assert [r["row"] for r in out] == list(range(5)) and [r["text"] for r in out] == shipped.decode(z)
  assert all(-1 <= r["cos_student"] <= 1 for r in out)
  np.save(tmp_path / "one.npy", z[0])  # a lone [D] vector is one row; plain output is one line per row
  assert infer.main(["--decode", str(tmp_path / "one.npy"), "--decode-mode", "a", "--no-repeat-ngram", "3"]) == 0
  assert capsys.readouterr().out.splitlines() == shipped.decode(z[:1], no_repeat_ngram=3)


def test_options_reach_the_decode(shipped, tmp_path, capsys):
  z = shipped.encode(SENTS[:2])
  np.save(tmp_path / "z.npy", z)
  argv = ["--decode", str(tmp_path / "z.npy"), "--decode-mode", "a", "--strategy", "rerank", "--rerank", "3",
          "--repetition-penalty", "1.2"]
  assert infer.main(argv) == 0
  assert capsys.readouterr().out.splitlines() == shipped.decode(z, strategy="rerank", rerank=3, repetition_penalty=1.2)
  argv = ["--decode", str(tmp_path / "z.npy"), "--strategy", "rerank", "--rerank", "3", "--rounds", "2"]
  assert infer.main(argv) == 0
  assert capsys.readouterr().out.splitlines() == shipped.decode_from_teacher(z, strategy="rerank", rerank=3, rounds=2)


def test_mode_b_teacher_round_trip(shipped, tmp_path, capsys):
  """`python -m teacher embed --out v.npy` then `infer.py --decode v.npy`: the teacher's vectors, mode B by default."""
  try:
    from teacher.numpy_model import load_teacher
    teacher = load_teacher(shipped.info["teacher"]["name"])
  except Exception as e:  # not cached and offline: the round trip cannot run here
    pytest.skip(f"teacher unavailable: {e}")
  v = teacher.embed(SENTS[:3])
  np.save(tmp_path / "v.npy", v)
  assert infer.main(["--decode", str(tmp_path / "v.npy"), "--json"]) == 0
  assert [r["text"] for r in rows(capsys)] == shipped.decode_from_teacher(v)


def test_bad_files_one_line_errors(shipped, tmp_path, capsys):
  np.save(tmp_path / "nan.npy", np.full((2, shipped.dim), np.nan, np.float32))
  np.save(tmp_path / "dim.npy", np.ones((2, 7), np.float32))
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  np.save(tmp_path / "str.npy", np.array(["a", "b"]))
  np.save(tmp_path / "cube.npy", np.ones((2, 2, shipped.dim), np.float32))
  (tmp_path / "text.npy").write_text("not numpy")
  cases = {"nan": "NaN", "dim": "dimension 7", "obj": "Python objects", "str": "expected float", "cube": "shape",
           "text": "not a .npy", "missing": "cannot read"}
  for name, word in cases.items():
    assert infer.main(["--decode", str(tmp_path / f"{name}.npy")]) == 2, name
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and word in err[-1], (name, err)
  assert infer.main(["x", "--decode", str(tmp_path / "dim.npy")]) == 2
  assert "not both" in capsys.readouterr().err
