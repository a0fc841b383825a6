"""bench teacher encode: teacher rows past the sentence-transformers length, student rows with their ratios."""
import json, shutil

import pytest

from bench import speed as bench
from bench.__main__ import main as bench_main


def test_ratios_pair_rows_of_the_same_length_and_batch(capsys):
  rows = [{"bench": "teacher_encode", "L": 128, "B": 4, "precision": "fp32", "tinygrad_sent_per_s": 100.0,
           "hf_sent_per_s": 400.0},
          {"bench": "teacher_encode", "L": 128, "B": 4, "precision": "fp16", "tinygrad_sent_per_s": 200.0,
           "hf_sent_per_s": None},
          {"bench": "teacher_encode", "L": 128, "B": 8, "precision": "fp32", "tinygrad_sent_per_s": 1.0},
          {"bench": "student_encode", "L": 128, "B": 4, "precision": "bfloat16", "student_sent_per_s": 1000.0},
          {"bench": "student_encode", "L": 2048, "B": 4, "precision": "bfloat16", "student_sent_per_s": 10.0},
          {"bench": "student_encode", "L": 128, "B": 4, "precision": "fp32", "student_sent_per_s": 900.0,
           "student_text_sent_per_s": 600.0}]
  assert bench.add_encode_ratios(rows) == [rows[3], rows[5]]
  assert {k: v for k, v in rows[3].items() if k.startswith("ratio")} == {
    "ratio_vs_teacher": 10.0, "ratio_vs_hf": 2.5, "ratio_vs_teacher_fp16": 5.0, "ratio_basis": "ids"}
  assert not any(k.startswith("ratio") for k in rows[4])  # no teacher row at L=2048: no ratio, not a made-up one
  # from text where the row has it: the teachers' rates include their tokenizers
  assert {k: v for k, v in rows[5].items() if k.startswith("ratio")} == {
    "ratio_vs_teacher": 6.0, "ratio_vs_hf": 1.5, "ratio_vs_teacher_fp16": 3.0, "ratio_basis": "text"}
  out = capsys.readouterr().out
  assert "student bfloat16 L=128 B=4 (from ids): ratio_vs_teacher=10.0 ratio_vs_hf=2.5" in out
  assert "student fp32 L=128 B=4 (from text): ratio_vs_teacher=6.0 ratio_vs_hf=1.5" in out


def test_teacher_past_its_tuned_length_then_student_ratios(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
  """A random 1-layer BERT of 64 positions whose sentence-transformers config cuts at 16 tokens."""
  folder = tmp_path / "tiny16"
  shutil.copytree(tiny_checkpoint, folder)
  (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
  out = tmp_path / "rows.json"
  argv = ["teacher", "encode", "--teacher", str(folder), "--lens", "8", "32", "--student-lens", "8", "32",
          "--batch", "2", "--teacher-n", "2", "--reps-teacher", "1", "--d", "8", "--h", "8", "--k", "3", "--D", "32",
          "--vocab", "100", "--dilations", "1", "--json", str(out)]
  assert bench_main([*argv, "--teacher-max-len", "32"]) == 0
  rows = json.loads(out.read_text())
  teach = {r["L"]: r for r in rows if r["bench"] == "teacher_encode"}
  student = {r["L"]: r for r in rows if r["bench"] == "student_encode"}
  assert sorted(teach) == sorted(student) == [8, 32]
  assert (teach[8]["past_tuned_length"], teach[32]["past_tuned_length"]) == (False, True)
  for L in (8, 32):
    text_rate = student[L]["student_text_sent_per_s"]  # tokenizer + encoder, as the teacher rows are timed
    assert teach[L]["tinygrad_sent_per_s"] > 0 and student[L]["student_sent_per_s"] > 0 and text_rate > 0
    assert student[L]["ratio_basis"] == "text"
    assert student[L]["ratio_vs_teacher"] == pytest.approx(text_rate / teach[L]["tinygrad_sent_per_s"])
    if teach[L].get("hf_sent_per_s"):  # torch + transformers installed (the test extra)
      assert student[L]["ratio_vs_hf"] == pytest.approx(text_rate / teach[L]["hf_sent_per_s"])
  capsys.readouterr()
  assert bench_main([*argv, "--teacher-max-len", "65"]) == 2  # past the 64-row position table
  errs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(errs) == 1 and "--teacher-max-len" in errs[0] and "from 2 to 64" in errs[0], errs
