"""Issue 35, reliability second pass: hostile and careless use beyond the first failure-mode table. Each test names the
issue item it backs; docs/failure_modes.md lists every case with the test that backs it.

Shapes are those of test_train.py (training) and test_infer.py (the tiny checkpoint with a decoder), so the on-disk
kernel cache is shared and few new kernels compile."""
import fcntl, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
import checkpoint, train
from test_infer import ckpt  # noqa: F401  (a fixture: tiny encoder + decoder checkpoint)
from test_reliability import error_lines, py
from test_train import RUN_CFG, assert_one_line_error, cli, run_args, run_main, work  # noqa: F401  (work: a fixture)


# ---------------------------------------------------------------------------------------------------------------------
# item 1: nothing outside the run folder is ever deleted


def test_pruning_never_follows_a_symlink(tmp_path):
  out, victim = tmp_path / "run", tmp_path / "elsewhere"
  victim.mkdir()
  (victim / "precious.txt").write_text("keep me")
  (victim / "sub").mkdir()
  (victim / "sub" / "more.txt").write_text("keep me too")
  (out / "step-0000002").mkdir(parents=True)
  (out / "step-0000003").mkdir()
  (out / "step-0000003" / "nested").mkdir()  # a stray sub-folder in an old step folder: removed, no traceback
  os.symlink(victim, out / "step-0000001")
  os.symlink(victim / "precious.txt", out / "step-0000002" / "link.txt")
  os.symlink("step-0000004", out / "last")
  (out / "step-0000004").mkdir()
  ck = checkpoint.Checkpointer(out, None, {}, None)
  ck._prune()
  assert (victim / "precious.txt").read_text() == "keep me" and (victim / "sub" / "more.txt").is_file()
  assert sorted(p.name for p in out.iterdir()) == ["last", "step-0000004"]


# ---------------------------------------------------------------------------------------------------------------------
# item 2 (and item 9's --out a file): a run owns its folder


def test_second_run_on_one_out_fails_at_once(work, tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a run in progress holds
  os.write(fd, b"4242\n")
  try:
    r = py("train.py", *run_args(work, out))
    assert_one_line_error(r, str(out), "in use by another run", "4242")
    assert not (out / "metrics.jsonl").exists()
  finally:
    os.close(fd)


def test_out_an_existing_file_refused_before_data_prep(work, tmp_path, capsys):
  f = tmp_path / "file"
  f.write_text("not a folder")
  argv = run_args(work, f)
  argv[argv.index(str(work["data_dir"]))] = str(tmp_path / "new-data")  # data prep would make this folder
  assert run_main(argv) == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "is a file" in errs[0], errs
  assert not (tmp_path / "new-data").exists() and f.read_text() == "not a folder"


def test_failed_start_leaves_no_folder(work, tmp_path, monkeypatch):
  """The lock makes the run folder; a run refused before any output (here: no such corpus) removes it again."""
  out = tmp_path / "run"
  argv = run_args(work, out)
  argv[argv.index(str(work["source"]))] = str(tmp_path / "no-corpus.txt")
  with pytest.raises(SystemExit): run_main(argv)
  assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# item 4: the API from any thread

THREADS = """
import sys, threading
sys.path.insert(0, sys.argv[2])
import backend
from studentz import StudentZ
m = StudentZ.load(sys.argv[1])
z = m.encode(["a cat sat", "two dogs"])  # the main thread opens tinygrad's kernel cache db
out, errors = {}, []
def work(i):
  try: out[i] = m.decode(z, max_len=4)
  except Exception as e: errors.append(repr(e))
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors[:2]
assert len({tuple(v) for v in out.values()}) == 1 and len(out) == 8
print("ok")
"""


def test_decode_from_8_threads(ckpt):
  r = py("-c", THREADS, ckpt, ROOT)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
