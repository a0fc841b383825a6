"""infer.py on a tiny untrained checkpoint (built here, no training): JSON lines, determinism, errors, PNG, teacher."""
import json, os, struct, subprocess, sys, zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, write_checkpoint

import infer

D = 24


def make_ckpt(base: Path) -> Path:
  """A checkpoint folder in train.py's layout: encoder + decoder + proj_b weights, config.json, tokenizer.json (the
  session's `ckpt` fixture, tests/conftest.py)."""
  import studentz as sz
  from studentz_runtime import metrics
  from studentz import Decoder, ModeBProjection
  from studentz_corpus.tokenizer import StudentTokenizer
  path = SHARED_DATA / "stsb" / "sts-train.csv"
  if not path.is_file(): pytest.skip(f"STS-B not found at {path} (set STUDENTZ_DATA)")
  s1, s2, _ = metrics.load_stsb(path)
  tok = StudentTokenizer.fit((s1[:25] + s2[:25]), vocab_size=300)
  cfg = sz.Config(vocab_size=tok.vocab_size, d_model=16, hidden=24, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3,
                  proj_dim=D, max_len=16, dec_blocks=2, dec_dilation_schedule=[1, 2],
                  loss_weights={"cos": 1.0, "mse": 1.0, "ce": 1.0, "sem": 0.1}).validate()
  out = base / "best"
  models = {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  write_checkpoint(out, cfg, models, tok)
  return out


def run_json(capsys, *argv):
  rc = infer.main([*argv, "--json"])
  cap = capsys.readouterr()
  assert rc == 0, cap.err
  return [json.loads(line) for line in cap.out.splitlines()], cap.err


def test_json_lines_order_determinism_and_missing_teacher(ckpt, capsys):
  texts = ["A man is playing a guitar.", "", "A man is playing a guitar.", "word " * 40]
  rows, err = run_json(capsys, *texts, "--ckpt", str(ckpt))
  assert [r["input"] for r in rows] == texts  # one line per text, input order
  for r in rows:
    assert len(r["z"]) == D and all(isinstance(v, float) and np.isfinite(v) for v in r["z"])
    assert isinstance(r["text"], str)
    assert r["cos_teacher"] is None  # none-such-teacher cannot load: null, not a crash
  assert rows[0]["z"] == rows[2]["z"] and rows[0]["z"] != rows[1]["z"]
  assert "none-such-teacher" in err and "unavailable" in err
  assert "text 2 is empty" in err and "text 4 is longer than max_len=16" in err
  # a second call (fresh models, the text alone) gives the same vector up to float rounding (a GEMM's rows round by
  # the batch they are in) and the same greedy decode
  again, _ = run_json(capsys, texts[0], "--ckpt", str(ckpt), "--no-teacher")
  assert np.abs(np.array(again[0]["z"]) - rows[0]["z"]).max() < 1e-6 and again[0]["text"] == rows[0]["text"]


def test_human_view_png_and_teacher_cos(ckpt, capsys, monkeypatch, tmp_path):
  from studentz import StudentZ
  texts, want = ["Two dogs run.", "A cat sleeps on the mat."], [0.6, -0.3]
  zs = StudentZ.load(ckpt).encode(texts)
  rng = np.random.default_rng(0)

  class FakeTeacher:  # the real teacher costs minutes on CPU: vectors at a chosen cosine to each student vector
    name, dim, fingerprint = "fake", D, "x"
    def embed(self, texts_in, batch_size=64):
      assert texts_in == texts
      out = []
      for z, c in zip(zs, want):
        u = z / np.linalg.norm(z)
        w = rng.standard_normal(D)
        w -= (w @ u) * u
        out.append(3.0 * (c * u + np.sqrt(1 - c * c) * w / np.linalg.norm(w)))  # not unit: the cosine normalises
      return np.stack(out).astype(np.float32)
  monkeypatch.setattr(infer, "load_teacher", lambda name, engine: FakeTeacher())
  png = tmp_path / "z.png"
  assert infer.main([*texts, "--ckpt", str(ckpt), "--png", str(png)]) == 0
  out = capsys.readouterr().out
  assert "device:" in out and "decode:" in out and "unavailable" not in out
  # each text's cosine to its own teacher vector, in input order (a sign flip, a constant or a swap fails)
  got = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("  cos(z_s, z_t):  ")]
  assert got == pytest.approx(want, abs=2e-4), got
  heat = [line for line in out.splitlines() if line.startswith("  ") and set(line.strip()) <= set("+-" + infer.SHADES)]
  # 24-d shows as 1x24, two characters per cell after a 2-space indent (a cell's shade may itself be a space)
  assert len(heat) == 2 and all(len(h[2:]) == 2 * D for h in heat)
  data = png.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
  w, h = struct.unpack(">II", data[16:24])
  assert (w, h) == infer.heatmap_figure(zs[0], texts[0])[1]["size"]  # the first text's figure (test_plot checks it)
  assert zlib.crc32(data[12:29]) & 0xFFFFFFFF == struct.unpack(">I", data[29:33])[0]


def test_engines_and_int8_agree(ckpt, capsys):
  """--engine tinygrad and the numpy default give the same z and decode; --int8 stays close to the float weights."""
  rows, err = run_json(capsys, "Two dogs run.", "--ckpt", str(ckpt), "--no-teacher")
  tg, _ = run_json(capsys, "Two dogs run.", "--ckpt", str(ckpt), "--no-teacher", "--engine", "tinygrad")
  q8, _ = run_json(capsys, "Two dogs run.", "--ckpt", str(ckpt), "--no-teacher", "--int8")
  z, zt, zq = (np.array(r[0]["z"]) for r in (rows, tg, q8))
  assert np.abs(z - zt).max() < 1e-4 and rows[0]["text"] == tg[0]["text"]
  assert 0 < np.abs(z - zq).max() and (z @ zq) / np.linalg.norm(z) / np.linalg.norm(zq) > 0.99


def test_missing_backend_is_named(ckpt):
  """METAL=1 / CUDA=1 where the machine has neither: the backend is named as missing, with what to use instead."""
  env = {**os.environ, "METAL": "1"}
  env.pop("DEV", None)
  p = subprocess.run([sys.executable, str(ROOT / "infer.py"), "hello", "--ckpt", str(ckpt)], capture_output=True,
                     text=True, env=env, cwd=ROOT, timeout=300)
  if p.returncode == 0: pytest.skip("this machine has Metal")
  assert p.returncode == 2 and "Traceback" not in p.stderr and "cannot load checkpoint" not in p.stderr
  assert "METAL backend is not available on this machine" in p.stderr and "DEV=CPU" in p.stderr, p.stderr


def test_file_input_implies_json(ckpt, capsys, tmp_path):
  f = tmp_path / "in.txt"
  f.write_text("first line\nsecond line\n")
  assert infer.main(["--file", str(f), "--ckpt", str(ckpt), "--no-teacher", "--strategy", "sample", "--seed", "3"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["input"] for r in rows] == ["first line", "second line"]


def test_bad_inputs_exit_2_one_line(ckpt, capsys, tmp_path, monkeypatch):
  monkeypatch.delenv("STUDENTZ_CKPT", raising=False)
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in ("config.json", "tokenizer.json"): (bad / name).write_bytes((ckpt / name).read_bytes())
  (bad / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:100])
  cases = [(["x", "--ckpt", str(bad)], "not a readable safetensors"),
           (["x", "--ckpt", str(tmp_path / "nope")], "checkpoint not found"),
           (["--ckpt", str(ckpt)], "no texts"),
           (["--file", str(tmp_path / "missing.txt"), "--ckpt", str(ckpt)], "cannot read")]
  for argv, msg in cases:
    assert infer.main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], (argv, err)


def test_missing_checkpoint_subprocess_exit_2_no_traceback(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "STUDENTZ_CKPT"}
  p = subprocess.run([sys.executable, str(ROOT / "infer.py"), "hello", "--ckpt", str(tmp_path / "nope")],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error:") and "nope" in p.stderr


def test_no_checkpoint_and_no_shipped_model(monkeypatch, tmp_path, capsys):
  from studentz_runtime import checkpoint
  monkeypatch.delenv("STUDENTZ_CKPT", raising=False)
  monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", tmp_path / "none")
  assert infer.main(["hello"]) == 2
  assert capsys.readouterr().err.strip() == f"error: {infer.NO_CKPT}"


def test_shipped_default_model_end_to_end():
  """`python infer.py "text" --json` right after install: the shipped model encodes, decodes and (with the teacher
  present, as in CI) reports a cosine to the teacher that a trained student reaches."""
  env = {k: v for k, v in os.environ.items() if k != "STUDENTZ_CKPT"}
  p = subprocess.run([sys.executable, str(ROOT / "infer.py"), "A man is playing a guitar on stage.", "--json"],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert p.returncode == 0, p.stderr
  out = json.loads(p.stdout)
  assert len(out["z"]) == 384 and np.isfinite(out["z"]).all()
  assert isinstance(out["text"], str) and len(out["text"].split()) >= 3
  if out["cos_teacher"] is not None: assert out["cos_teacher"] > 0.5  # untrained weights give ~0
