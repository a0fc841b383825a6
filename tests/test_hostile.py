"""Issue 35, reliability second pass: hostile and careless use beyond the first failure-mode table. Each test names the
issue item it backs; docs/failure_modes.md lists every case with the test that backs it.

Shapes are those of test_train.py (training) and test_infer.py (the tiny checkpoint with a decoder), so the on-disk
kernel cache is shared and few new kernels compile."""
import fcntl, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from studentz_training import heldout
import train
from studentz_runtime import checkpoint
from studentz_training import run_folder
from test_reliability import error_lines, py
from test_train import RUN_CFG, assert_one_line_error, cli, run_args, run_main


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
  ck = run_folder.Checkpointer(out, None, {}, None)
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
from studentz_kernels import backend
from studentz import StudentZ
m = StudentZ.load(sys.argv[1], engine=sys.argv[3])
z = m.encode(["a cat sat", "two dogs"])  # the main thread opens tinygrad's kernel cache db (engine tinygrad)
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


@pytest.mark.parametrize("engine", ["tinygrad", "numpy"])
def test_decode_from_8_threads(ckpt, engine):
  r = py("-c", THREADS, ckpt, ROOT, engine)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_resume_of_a_held_run_fails_at_once(tmp_path, capsys):
  from test_reliability import _fake_checkpoint
  from test_train import TINY
  run = tmp_path / "run"
  _fake_checkpoint(run / "step-0000001", model_cfg=TINY, arrays_cfg=TINY)
  os.symlink("step-0000001", run / "last")
  with run_folder.run_lock(run):  # what the run still going holds
    assert run_main(["--resume", run, "--quiet"]) == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "in use by another run" in errs[0], errs


# ---------------------------------------------------------------------------------------------------------------------
# item 5: a full disk and crashed writers' temp files


def test_memmap_on_a_full_disk_is_one_line(work, tmp_path, monkeypatch, capsys):
  from studentz_corpus import store as corpus_store
  from studentz_runtime.cli_guard import guarded
  monkeypatch.setattr(corpus_store.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
  argv = run_args(work, tmp_path / "run")
  argv[argv.index(str(work["data_dir"]))] = str(tmp_path / "data")
  monkeypatch.setattr(heldout, "load_teacher", lambda name: __import__("test_train").FakeTeacher())
  assert guarded(train.main, argv) == 1  # what train.py's cli() returns: no SIGBUS, no traceback
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "not enough disk space" in errs[0] and "No space" not in errs[0], errs
  assert not list((tmp_path / "data").glob(".*.tmp*"))


def test_stale_tmp_files_of_dead_pids_are_removed(tmp_path):
  from studentz_corpus import store as corpus_store
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  stale = tmp_path / f".tokens.npy.tmp{int(dead.stdout)}"
  live = tmp_path / ".tokens.npy.tmp1"  # pid 1 runs: another process's write in progress
  other = tmp_path / f".lengths.npy.tmp{int(dead.stdout)}"  # another file's: not ours to judge here
  for f in (stale, live, other): f.write_bytes(b"x" * 100)
  corpus_store.atomic_save_npy(tmp_path / "tokens.npy", np.zeros(3))
  assert not stale.exists() and live.exists() and other.exists()


# ---------------------------------------------------------------------------------------------------------------------
# item 6: non-finite numbers


@pytest.mark.parametrize("text,words", [('{"optimizer": {"lr": Infinity}}', ["Infinity", "finite"]),
                                        ('{"dropout": NaN}', ["NaN", "finite"])], ids=["lr-inf", "dropout-nan"])
def test_nonfinite_config_file_refused(tmp_path, text, words):
  cfg = tmp_path / "c.json"
  cfg.write_text(text)
  assert_one_line_error(cli("--config", cfg, "--print-config"), str(cfg), *words)


def test_nonfinite_config_value_refused_everywhere():
  import studentz as sz
  with pytest.raises(ValueError, match="optimizer.lr must be finite"):
    sz.Config().override(("optimizer.lr", "Infinity"))
  with pytest.raises(ValueError, match="min_lr_ratio must be finite"):
    sz.Config.from_dict({"min_lr_ratio": float("nan")})


def _nan_checkpoint(ckpt, dst: Path) -> Path:
  from safetensors.numpy import load_file, save_file
  dst.mkdir()
  for f in ("config.json", "tokenizer.json"): (dst / f).write_bytes((ckpt / f).read_bytes())
  arrays = load_file(str(ckpt / "model.safetensors"))
  arrays = {k: np.full_like(v, np.nan) if k.startswith("encoder.proj") else v for k, v in arrays.items()}
  save_file(arrays, str(dst / "model.safetensors"))
  return dst


def test_infer_json_never_prints_nan(ckpt, tmp_path, capsys):
  bad = _nan_checkpoint(ckpt, tmp_path / "nan")
  assert infer_main("a cat", "--ckpt", bad, "--json", "--no-teacher") == 2
  cap = capsys.readouterr()
  errs = error_lines(cap.err)
  assert "NaN" not in cap.out and len(errs) == 1 and "not finite" in errs[0], cap


def infer_main(*argv) -> int:
  import infer
  return infer.main([str(a) for a in argv])


# ---------------------------------------------------------------------------------------------------------------------
# item 7: hub downloads have a total deadline and a size cap

@pytest.fixture(scope="module")
def hostile_server():
  """A loopback server whose /trickle sends one byte every 50 ms of a 10,000-byte body, /endless bytes without end."""
  import http.server, threading, time

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
      self.send_response(200)
      if self.path.startswith("/trickle"): self.send_header("Content-Length", "10000")
      self.end_headers()
      try:
        while True:
          self.wfile.write(b"x" if self.path.startswith("/trickle") else b"y" * 65536)
          self.wfile.flush()
          if self.path.startswith("/trickle"): time.sleep(0.05)
      except OSError: pass  # the client hung up: what we want

    def log_message(self, *args): pass
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def test_trickling_download_hits_the_deadline(hostile_server, tmp_path, monkeypatch):
  import time
  from teacher import hub
  monkeypatch.setattr(hub, "DEADLINE", 1.0)
  t0 = time.monotonic()
  with pytest.raises(hub.DownloadLimit, match="took more than 1 s"):
    hub.download_file(f"{hostile_server}/trickle/config.json", tmp_path / "config.json", progress=False)
  assert time.monotonic() - t0 < 10 and not list(tmp_path.iterdir())


def test_endless_body_hits_the_size_cap(hostile_server, tmp_path, monkeypatch):
  from teacher import hub
  monkeypatch.setattr(hub, "MAX_BYTES", {"model.safetensors": 1 << 20})
  with pytest.raises(hub.DownloadLimit, match="more than 1 MiB"):
    hub.download_file(f"{hostile_server}/endless/model.safetensors", tmp_path / "model.safetensors", progress=False)
  assert not list(tmp_path.iterdir())  # the part file is gone: the disk is not filled


# ---------------------------------------------------------------------------------------------------------------------
# item 8: every size a flag or file sets is bounded; infer.py --file streams


def test_beam_bounded(ckpt, capsys):
  from studentz import StudentZ
  assert infer_main("a cat", "--ckpt", ckpt, "--strategy", "beam", "--beam", "50000") == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "--beam must be in [1, 256]" in errs[0], errs
  with pytest.raises(ValueError, match="beam must be in"): StudentZ.load(ckpt).decode(np.zeros(24), beam=50000)


def test_checkpoint_max_len_bounded(tmp_path, capsys):
  from test_reliability import _fake_checkpoint
  from test_train import TINY
  ck = _fake_checkpoint(tmp_path / "ck", model_cfg={**TINY, "max_len": 1_000_000}, arrays_cfg=TINY)
  assert_one_line_error(cli("--eval", ck), "max_len must be at most 8192")
  assert infer_main("a cat", "--ckpt", ck) == 2
  assert "max_len must be at most 8192" in capsys.readouterr().err


def test_teacher_layers_bounded(tiny_checkpoint, tmp_path):
  import shutil, time
  from teacher import load_teacher
  t = tmp_path / "t"
  shutil.copytree(tiny_checkpoint, t)
  cfg = json.loads((t / "config.json").read_text())
  (t / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 10_000_000}))
  t0 = time.monotonic()
  with pytest.raises(ValueError, match=r"layers must be an integer in \[1, 256\], got 10000000"): load_teacher(str(t))
  assert time.monotonic() - t0 < 5
  r = py("-m", "teacher", "embed", "--teacher", t, "--out", tmp_path / "v.npy", input="a\n")
  assert_one_line_error(r, "layers must be an integer")


def test_infer_file_streams_in_bounded_batches(ckpt, monkeypatch, capsys, tmp_path):
  """Each batch is written before the next is read: never more than CHUNK lines held, output as it goes."""
  import infer
  monkeypatch.setattr(infer, "CHUNK", 4)
  src = tmp_path / "in.txt"
  src.write_text("".join(f"line number {i}\n" for i in range(10)))
  read, held = [0], []
  lines = infer.read_lines
  def counted(f):
    for x in lines(f):
      read[0] += 1
      yield x
  write = infer.write_rows
  def noted(texts, *a):
    held.append(read[0])
    write(texts, *a)
  monkeypatch.setattr(infer, "read_lines", counted)
  monkeypatch.setattr(infer, "write_rows", noted)
  assert infer_main("--file", src, "--ckpt", ckpt, "--no-teacher") == 0
  rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
  assert [r["input"] for r in rows] == [f"line number {i}" for i in range(10)]
  assert held == [4, 8, 10]  # lines read when each batch was written


# ---------------------------------------------------------------------------------------------------------------------
# item 9: one line instead of a traceback


def _infer_proc(*args, stdin=b"", env=None, shell_tail=""):
  argv = [sys.executable, str(ROOT / "infer.py"), *args]
  e = {**os.environ, "DEV": "CPU", **(env or {})}
  if shell_tail:  # e.g. "| head -1": through a shell, infer.py's stderr kept apart
    import shlex
    cmd = " ".join(shlex.quote(a if isinstance(a, str) else os.fsdecode(a)) for a in argv) + " " + shell_tail
    return subprocess.run(["bash", "-c", cmd], capture_output=True, env=e, timeout=300, input=stdin)
  return subprocess.run(argv, capture_output=True, env=e, timeout=300, input=stdin)


def test_invalid_utf8_argument_and_c_locale_stdin(ckpt):
  r = _infer_proc(b"caf\xe9 \xff bar", "--ckpt", str(ckpt), "--json", "--no-teacher")
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  assert json.loads(r.stdout)["input"] == "caf\ufffd \ufffd bar"
  r = _infer_proc("-", "--ckpt", str(ckpt), "--no-teacher", stdin=b"ok line\nbad \xff\xfe line\n", env={"LC_ALL": "C"})
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  assert [json.loads(ln)["input"] for ln in r.stdout.splitlines()] == ["ok line", "bad \ufffd\ufffd line"]


def test_negative_seed_one_line(ckpt, capsys):
  assert infer_main("a", "--ckpt", ckpt, "--seed", "-1") == 2
  assert "--seed must be an int >= 0" in capsys.readouterr().err
  assert_one_line_error(cli("--seed", "-1", "--print-config"), "seed must be in [0, 2**32)")


def test_output_to_head_and_dev_full(ckpt, tmp_path):
  src = tmp_path / "in.txt"
  src.write_text("a cat sat on the mat\n" * 300)  # ~150 kB of JSON: more than a pipe holds
  r = _infer_proc("--file", str(src), "--ckpt", str(ckpt), "--no-teacher", shell_tail=f"2>{tmp_path}/err | head -1")
  err = (tmp_path / "err").read_text()
  assert len(r.stdout.splitlines()) == 1 and "Traceback" not in err and "Error" not in err, err
  r = _infer_proc("a cat", "--ckpt", str(ckpt), "--json", "--no-teacher", shell_tail="> /dev/full")
  err = r.stderr.decode()
  assert r.returncode == 1, err
  assert error_lines(err) == ["error: No space left on device: free some space and run again"], err
  assert "Traceback" not in err


def test_tokenizer_smaller_than_the_vocabulary(ckpt, monkeypatch):
  """An untrained (or unlucky) decoder may pick ids the checkpoint's tokenizer does not have: dropped, not a crash."""
  from studentz_runtime import decoding  # both engines' decode (generate.py re-exports it) calls decoding.generate
  from studentz import StudentZ
  m = StudentZ.load(ckpt)
  V = m.tokenizer.vocab_size
  monkeypatch.setattr(decoding, "generate", lambda *a, **k: np.array([[V + 5, 10, V + 1, 2]], np.int32))
  assert m.decode(np.zeros(24)) == [m.tokenizer.decode([10])]


def test_deeply_nested_json(tmp_path, work):
  from studentz_corpus import prepare as corpus
  cfg = tmp_path / "c.json"
  cfg.write_text("[" * 100_000 + "]" * 100_000)
  assert_one_line_error(cli("--config", cfg, "--print-config"), "nested too deeply")
  src = tmp_path / "c.jsonl"
  lines = [json.dumps({"text": f"The sentence number {i} is here."}) for i in range(50)]
  src.write_text("\n".join(lines + ['{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"]) + "\n")
  dd = corpus.prepare(src, tmp_path / "d", vocab_size=300, max_len=24, progress=False)
  assert dd.n == 50


def test_full_disk_while_checkpointing(work, tmp_path, monkeypatch, capsys):
  import errno
  from studentz_runtime.cli_guard import guarded
  from test_train import fake_teacher
  def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))
  monkeypatch.setattr(heldout, "load_teacher", fake_teacher)
  monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
  assert guarded(train.main, [str(a) for a in run_args(work, tmp_path / "run", "--steps", "2")]) == 1
  errs = error_lines(capsys.readouterr().err)
  assert errs == [f"error: No space left on device ({tmp_path / 'run'}): free some space and run again"], errs
  assert not (tmp_path / "run" / "last").exists()


@pytest.mark.parametrize("change", [{"config": [1, 2]}, {"teacher": "x"}, {"step": "one"}, {"config": {"d_model": "x"}},
                                    None], ids=["config-list", "teacher-str", "step-str", "field-type", "not-object"])
def test_wrong_shaped_config_json(tmp_path, capsys, change):
  from test_reliability import _fake_checkpoint
  from test_train import TINY
  run = tmp_path / "run"
  ck = _fake_checkpoint(run / "step-0000001", model_cfg=TINY, arrays_cfg=TINY)
  info = json.loads((ck / "config.json").read_text())
  (ck / "config.json").write_text(json.dumps([info] if change is None else {**info, **change}))
  os.symlink("step-0000001", run / "last")
  r = cli("--eval", ck)
  assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert run_main(["--resume", run, "--quiet"]) == 2
  assert len(error_lines(capsys.readouterr().err)) == 1


# ---------------------------------------------------------------------------------------------------------------------
# item 10: the smaller ones


def test_file_lines_split_on_newlines_only(ckpt, tmp_path, capsys):
  src = tmp_path / "in.txt"
  src.write_bytes("a\x0bb\nc\x1cd\r\ne\u2028f\ng\n".encode())
  assert infer_main("--file", src, "--ckpt", ckpt, "--no-teacher") == 0
  assert [json.loads(ln)["input"] for ln in capsys.readouterr().out.splitlines()] == \
    ["a\x0bb", "c\x1cd", "e\u2028f", "g"]


def test_api_input_types_zero_rows_and_top_k(ckpt):
  from studentz import StudentZ
  m = StudentZ.load(ckpt)
  with pytest.raises(TypeError, match="decode bytes first"): m.encode(b"hello")
  with pytest.raises(TypeError, match="got dict"): m.encode({"a": 1})
  with pytest.raises(TypeError, match="got int"): m.encode(5)
  assert m.decode(np.zeros((0, 24), np.float32)) == [] and m.encode([]).shape == (0, 24)
  with pytest.raises(ValueError, match="top_k must be an int"): m.decode(np.zeros(24), top_k="5")


def test_small_corpus_tokenizer_fills_a_larger_vocabulary():
  """300 sentences teach fewer tokens than vocab_size: the teacher-initialised table keeps the model's size."""
  import studentz as sz
  from studentz_training import student_init
  from test_train import TINY
  enc = sz.Encoder(sz.Config(**TINY).validate())
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 270, (40, 8)).astype(np.int32)
  student_init.init_from_teacher(enc, rng.standard_normal((270, 24)).astype(np.float32), tokens,
                                 np.ones((40, 8), np.float32), rng.standard_normal((40, 24)).astype(np.float32))
  w = enc.embed.weight.numpy()
  assert w.shape == (TINY["vocab_size"], TINY["d_model"]) and not w[270:].any() and w[:270].any()


def test_checkpoint_files_follow_umask(tmp_path):
  checkpoint.atomic_write_bytes(tmp_path / "f.json", b"{}")
  assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~checkpoint.UMASK != 0o600


def test_resume_refuses_overrides(tmp_path, capsys):
  assert run_main(["--resume", tmp_path, "--d_model", "64", "--quiet"]) == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "--d_model cannot change it" in errs[0], errs


def test_bad_png_path_keeps_the_json(ckpt, capsys):
  assert infer_main("a cat", "--ckpt", ckpt, "--json", "--no-teacher", "--png", "/no/such/dir/z.png") == 2
  cap = capsys.readouterr()
  assert json.loads(cap.out)["input"] == "a cat"
  assert error_lines(cap.err) == [e for e in error_lines(cap.err) if "cannot write /no/such/dir/z.png" in e] != []
