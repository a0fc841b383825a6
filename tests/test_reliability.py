"""Issue 7, reliability: bad input gives one clear line and a non-zero exit, training survives non-finite steps, and
nothing loaded can execute code. docs/failure_modes.md lists every case with the test that backs it.

Already covered elsewhere (not repeated here): invalid config values, unknown keys, config file not JSON, missing and
truncated checkpoints for --eval, atomic checkpoints, Ctrl-C and kill -9 resume (tests/test_train.py); teacher-vector
resume with row counts and checksums (test_corpus.py::test_teacher_resume_after_crash, test_teacher_corrupt_chunk_
recomputed); pytorch_model.bin refused and hub ids with '..' rejected (test_hub.py::test_local_folder_returned_as_is,
test_pytorch_only_repo_refused, test_traversal_and_malformed_ids_rejected, test_safe_extract_rejects_zip_slip).

tinygrad shapes are test_train.py's (vocab 300, d 32, hidden 48, 2 blocks, L 24, B 20, D 24) so the on-disk kernel
cache is shared; the only new compile is the fp16 (mixed precision) step.
"""
import contextlib, io, json, os, pickle, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from studentz_training.trainer import Trainer
import train
from studentz_corpus import prepare as corpus
import studentz as sz
from test_train import (BATCH, D, MAX_LEN, RUN_CFG, TINY, VOCAB, FakeTeacher, assert_one_line_error, cli, run_args,
                        run_main)
from tinygrad.nn.state import get_state_dict


def py(*args, env=None, input=None, cwd=ROOT):
  """A CLI in a fresh process: exit status, stderr and 'no traceback' are what a user sees."""
  e = {**os.environ, "DEV": "CPU", **(env or {})}
  return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                        env=e, input=input)


def error_lines(err: str) -> list[str]:
  return [ln for ln in err.splitlines() if ln.startswith("error:")]


# ---------------------------------------------------------------------------------------------------------------------
# 1. bad input -> one line, non-zero exit, no traceback


@pytest.mark.parametrize("args,words", [
  (["--dropout", "2"], ["dropout must be in [0, 1)"]),
  (["--precision", "fp8"], ["precision must be 'fp32' or 'mixed'"]),
  (["--batch_size", "0"], ["batch_size must be a positive integer"]),
  (["--dropout", "high"], ["dropout must be a number", "high"]),
  (["--dilation_schedule", "4"], ["dilation_schedule must be a list"]),
  (["--optimizer.betas", "[0.9]"], ["optimizer.betas"]),
], ids=["dropout-2", "precision-fp8", "batch-size-0", "dropout-string", "dilations-not-list", "betas-one"])
def test_invalid_config_values_more(args, words):
  assert_one_line_error(cli(*args, "--print-config"), *words)


def test_unknown_device_one_line():
  r = py("train.py", "--steps", "1", env={"DEV": "TPU"})
  assert_one_line_error(r, "unknown device 'TPU'", "CPU", "CUDA", "METAL")
  assert py("train.py", "--help", env={"DEV": "TPU"}).returncode == 0  # help needs no device
  for cmd in (["-m", "teacher", "embed", "--out", "x.npy"],
              ["-m", "studentz_corpus", "teacher", "--data", "x", "--teacher", "y"]):
    assert_one_line_error(py(*cmd, env={"DEV": "TPU"}, input=""), "unknown device 'TPU'")


def test_missing_teacher_one_line(tmp_path):
  src = tmp_path / "c.txt"
  src.write_text("The cat sat on the mat all day long.\n")
  r = cli("--teacher", "/no/such/dir", "--steps", "1", "--data-source", src, "--out", tmp_path / "run", "--quiet")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  errs = error_lines(r.stderr)
  assert len(errs) == 1 and "/no/such/dir" in errs[0] and "no such folder" in errs[0], r.stderr
  assert not (tmp_path / "run" / "last").exists()
  r = py("-m", "teacher", "embed", "--teacher", "/no/such/dir", "--out", tmp_path / "v.npy", input="a\n")
  assert_one_line_error(r, "cannot load teacher", "/no/such/dir")
  r = py("-m", "studentz_corpus", "teacher", "--data", tmp_path, "--teacher", "/no/such/dir")
  assert_one_line_error(r, "cannot load teacher", "/no/such/dir")


def _mixed_corpus(path: Path) -> None:
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
  rng = np.random.default_rng(0)
  garbage = bytes(range(14, 32)) * 3 + bytes(range(128, 256))  # control bytes and no newline: one binary line
  lines = [b"", b"   ", b"\t", b"\x00\x01\x02binary\x00garbage\x00\x00", garbage,
           b"The \xff\xfe bytes \xc3 sit inside this otherwise fine sentence here."]
  lines += [("The " + " ".join(rng.choice(words, 8)) + f" number {i}.").encode() for i in range(200)]
  path.write_bytes(b"\n".join(lines) + b"\n")


def test_corpus_prepare_reports_skipped_lines(tmp_path, capsys):
  src = tmp_path / "mixed.txt"
  _mixed_corpus(src)
  assert corpus.main(["prepare", "--source", str(src), "--out", str(tmp_path / "d"), "--vocab-size", "300",
                      "--max-len", "8", "--quiet"]) == 0
  cap = capsys.readouterr()
  assert "skipped 5 lines: 2 binary, 3 empty" in cap.err, cap.err
  assert "1 lines had invalid UTF-8" in cap.err
  assert "were truncated" in cap.err and "--max-len" in cap.err  # the student tokenizer's truncation note
  assert "DataDir(" in cap.out and corpus.open_data_dir(tmp_path / "d").n >= 200
  # reusing the folder reports the same counts (they live in meta.json)
  assert corpus.main(["prepare", "--source", str(src), "--out", str(tmp_path / "d"), "--vocab-size", "300",
                      "--max-len", "8", "--quiet"]) == 0
  assert "skipped 5 lines" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n", b"\x00\x00\x01binary\x00\n"], ids=["empty", "blank", "binary"])
def test_corpus_prepare_empty_corpus(tmp_path, content):
  src = tmp_path / "c.txt"
  src.write_bytes(content)
  r = py("-m", "studentz_corpus", "prepare", "--source", src, "--out", tmp_path / "d", "--quiet")
  assert_one_line_error(r, "no usable sentences", str(src))
  assert not (tmp_path / "d" / "meta.json").exists()


def test_train_empty_corpus(tmp_path, capsys):
  src = tmp_path / "c.txt"
  src.write_text("\n \n")
  assert run_main(["--data-source", src, "--out", tmp_path / "run", "--quiet", "--data-dir", tmp_path / "d"]) == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "no usable sentences" in errs[0]


def test_teacher_embed_empty_whitespace_and_long(tiny_checkpoint, tmp_path, capsys):
  """tiny_checkpoint (test_hub.py): a random 1-layer BERT, 32-d, 64 positions, as a local HF folder."""
  from teacher.__main__ import main as teacher_main
  texts = ["", "   ", "the cat sat", "the cat sat " * 100]  # the last: ~300 tokens, the teacher keeps 64
  inp = tmp_path / "in.txt"
  inp.write_text("\n".join(texts) + "\n")
  out = tmp_path / "v.npy"
  assert teacher_main(["embed", "--teacher", str(tiny_checkpoint), "--input", str(inp), "--out", str(out),
                       "--no-progress"]) == 0
  err = capsys.readouterr().err
  v = np.load(out)
  assert v.shape == (4, 32) and v.dtype == np.float32 and np.isfinite(v).all()  # empty lines are rows too
  assert "note: 1 of 4 texts were longer than 64 tokens" in err and "truncated" in err, err
  assert "Traceback" not in err
  # a shorter cut on request (the third text's 3 tokens now count as long too); past the position table: one line
  assert teacher_main(["embed", "--teacher", str(tiny_checkpoint), "--input", str(inp), "--out", str(out),
                       "--no-progress", "--max-seq-length", "2"]) == 0
  assert "note: 2 of 4 texts were longer than 2 tokens" in capsys.readouterr().err
  assert np.load(out).shape == (4, 32)
  assert teacher_main(["embed", "--teacher", str(tiny_checkpoint), "--input", str(inp), "--out", str(out),
                       "--no-progress", "--max-seq-length", "65"]) == 2
  errs = error_lines(capsys.readouterr().err)
  assert len(errs) == 1 and "from 2 to 64" in errs[0], errs


def test_student_tokenizer_truncates_long_text(tmp_path):
  from studentz_corpus.tokenizer import BOS, EOS, StudentTokenizer
  tok = StudentTokenizer.fit(["the cat sat on the mat"] * 10, vocab_size=300)
  ids, mask, cut = tok.encode_batch(["the cat sat " * 500, "", "   "], 16, return_truncated=True)
  assert cut.tolist() == [True, False, False]
  assert ids[0, 0] == BOS and ids[0, -1] == EOS and mask[0].all()
  assert ids[1, :2].tolist() == [BOS, EOS] and mask[1].sum() == 2


@pytest.fixture(scope="module")
def tiny_decoder():
  from studentz import Decoder
  from studentz_corpus.tokenizer import StudentTokenizer
  cfg = sz.Config(**TINY, dropout=0.0).validate()
  return Decoder(cfg), StudentTokenizer.fit(["the cat sat on the mat"] * 10, vocab_size=VOCAB)


@pytest.mark.parametrize("z,words", [
  (np.zeros((2, D + 8), np.float32), ["dimension 32", f"expects {D}", "teacher"]),
  (np.zeros((2, D - 1), np.float32), [f"dimension {D - 1}"]),
  (np.zeros(D, np.float32), ["must be (B, D)"]),
  (np.array([[0.0] * D, [np.nan] + [0.0] * (D - 1)], np.float32), ["NaN or Inf", "1 of 2 rows", "row 1"]),
  (np.full((1, D), np.inf, np.float32), ["NaN or Inf"]),
  (np.full((1, D), 1e300), ["NaN or Inf"]),  # finite in float64, Inf once cast to the model's float32
  (np.array([["a"] * D]), ["must hold numbers"]),
], ids=["too-wide", "too-narrow", "1-d", "nan-row", "inf", "overflows-fp32", "strings"])
def test_decode_rejects_bad_z(tiny_decoder, z, words):
  from studentz_runtime import generate
  dec, tok = tiny_decoder
  for strategy in ("greedy", "beam"):
    with pytest.raises(ValueError) as e: generate.decode(dec, z, tok, strategy=strategy, beam=2)
    for w in words: assert w in str(e.value), (w, str(e.value))


def _fake_checkpoint(path: Path, model_cfg: dict, arrays_cfg: dict, data_dir="/no/such/data") -> Path:
  """A checkpoint folder whose config.json says `model_cfg` but whose weights have the shapes of `arrays_cfg`
  (zeros: the shapes are all that matter; no kernel runs before the refusal)."""
  path.mkdir(parents=True)
  enc = sz.Encoder(sz.Config.from_dict(arrays_cfg))
  arrays = {f"encoder.{k}": np.zeros(t.shape, np.float32) for k, t in get_state_dict(enc).items()}
  from safetensors.numpy import save_file
  save_file(arrays, str(path / "model.safetensors"))
  info = {"format_version": 1, "step": 1, "config": model_cfg, "data_dir": str(data_dir), "metrics": {},
          "teacher": {"name": "fake-teacher", "dim": model_cfg.get("proj_dim", D), "fingerprint": "fa7e" * 16}}
  (path / "config.json").write_text(json.dumps(info))
  return path


@pytest.mark.parametrize("what", ["proj_dim", "vocab_size"])
def test_checkpoint_for_another_teacher_or_vocab(tmp_path, what):
  from studentz_training import evaluate
  other = {**TINY, what: TINY[what] + 8}
  ck = _fake_checkpoint(tmp_path / "ck", model_cfg=TINY, arrays_cfg=other)
  with pytest.raises(sz.CheckpointError, match="another config"): evaluate.load_models(ck)
  assert_one_line_error(cli("--eval", ck, "--json"), "shape", "another config")


def test_eval_bad_config_or_missing_data_is_one_line(tmp_path):
  bad = _fake_checkpoint(tmp_path / "bad", model_cfg={**TINY, "dropout": 2}, arrays_cfg=TINY)
  assert_one_line_error(cli("--eval", bad), "dropout must be in [0, 1)")
  ck = _fake_checkpoint(tmp_path / "ck", model_cfg=TINY, arrays_cfg=TINY, data_dir=tmp_path / "gone")
  from studentz_corpus.tokenizer import StudentTokenizer
  StudentTokenizer.fit(["the cat sat on the mat"] * 10, vocab_size=VOCAB).save(ck / "tokenizer.json")
  assert_one_line_error(cli("--eval", ck), "gone", "not a prepared data folder")


# ---------------------------------------------------------------------------------------------------------------------
# 2. non-finite steps: skipped, logged, loss scale backs off, training stops after max_bad_steps with a usable last/


def _batch(seed: int, nan_rows=()) -> dict:
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, VOCAB, (BATCH, MAX_LEN)).astype(np.int32)
  lens = rng.integers(4, MAX_LEN + 1, BATCH)
  mask = (np.arange(MAX_LEN)[None] < lens[:, None]).astype(np.float32)
  ids = np.where(mask > 0, ids, 0).astype(np.int32)
  t = rng.standard_normal((BATCH, D)).astype(np.float32)
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  for r in nan_rows: t[r, r % D] = np.nan if r % 2 == 0 else np.inf
  return {"tokens": ids, "mask": mask, "teacher": t}


def _snapshot(trainer) -> dict:
  return {k: v.numpy().copy() for k, v in {**trainer.named, **trainer.state()}.items()}


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_nonfinite_step_is_skipped(precision):
  from tinygrad import Tensor
  cfg = sz.Config(**TINY, dropout=0.0, steps=300, warmup_steps=10, precision=precision).validate()
  Tensor.manual_seed(0)
  trainer = Trainer(cfg, {"encoder": sz.Encoder(cfg)}, sz.distill_loss_fn)
  assert trainer.scale.numpy()[0] == (2.0 ** 15 if precision == "mixed" else 1.0)  # CPU: mixed = fp16 + dynamic scale
  first = trainer.step(_batch(0))
  assert first["ok"] == 1 and trainer.step_count == 1
  scale = first["loss_scale"]
  before = _snapshot(trainer)
  bad = trainer.step(_batch(1, nan_rows=(3, 7)))
  assert bad["ok"] == 0 and not np.isfinite(bad["loss"])
  after = _snapshot(trainer)
  changed = [k for k in before if k not in ("trainer.scale", "trainer.good")
             and before[k].tobytes() != after[k].tobytes()]
  assert not changed, f"a skipped step changed {changed[:5]}"  # params, AdamW moments, t, step: bit-identical
  assert trainer.step_count == 1
  assert bad["loss_scale"] == (scale / 2 if precision == "mixed" else 1.0)
  assert after["trainer.scale"][0] == bad["loss_scale"]
  good = trainer.step(_batch(2))  # training goes on from where it was
  assert good["ok"] == 1 and np.isfinite(good["loss"]) and trainer.step_count == 2


NAN_FROM = 3  # steps 1-2 are good (a checkpoint at step 2), every later batch carries a NaN teacher vector


@pytest.fixture(scope="module")
def nan_run(work):
  out = work["base"] / "nan-run"
  cfg = work["base"] / "nan.json"
  cfg.write_text(json.dumps({**RUN_CFG, "eval_every": 2, "max_bad_steps": 3, "log_every": 100}))
  argv = [*run_args(work, out), "--config", cfg]
  calls = [0]
  nxt = corpus.Loader.__next__

  def poisoned(self):
    b = nxt(self)
    calls[0] += 1
    if calls[0] >= NAN_FROM: b = {**b, "teacher": np.where(np.arange(D) == 0, np.nan, b["teacher"]).astype(np.float32)}
    return b
  err = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
    mp.setattr(corpus.Loader, "__next__", poisoned)
    with pytest.raises(SystemExit) as e: run_main(argv)
  return {"out": out, "exit": e.value.code, "stderr": err.getvalue()}


def test_bad_steps_stop_training_with_usable_checkpoint(nan_run):
  out = nan_run["out"]
  # SystemExit(message): Python prints the message as the last stderr line and exits with status 1
  msg = nan_run["exit"]
  assert isinstance(msg, str) and msg.startswith("error: 3 non-finite steps in a row") and str(out / "last") in msg
  err = nan_run["stderr"]
  assert err.count("warning: step") == 3 and "non-finite loss/gradients" in err and "Traceback" not in err
  enc, info, tok = train.load_encoder(out / "last")
  assert info["step"] == NAN_FROM - 1  # the counter never moved on a skipped step
  weights = sz.load_tensors(out / "last" / "model.safetensors")
  assert all(np.isfinite(a).all() for a in weights.values())
  recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
  bad = [r for r in recs if r.get("ok") == 0]
  assert [r["step"] for r in bad] == [NAN_FROM, NAN_FROM + 1, NAN_FROM + 2]  # each skipped step, logged (ok=0)
  assert all(r["loss_scale"] == 1 for r in bad)  # fp32: no loss scale to back off


def test_resume_truncated_or_corrupt_checkpoint(nan_run, tmp_path, capsys):
  for how in ("truncate", "garbage", "config"):
    run = tmp_path / how
    shutil.copytree(nan_run["out"], run, symlinks=True)
    last = run / "last"
    if how == "truncate":
      w = last / "model.safetensors"
      w.write_bytes(w.read_bytes()[:w.stat().st_size // 3])
    elif how == "garbage":
      (last / "train_state.safetensors").write_bytes(os.urandom(4096))
    else:
      (last / "config.json").write_text('{"format_version": 1, "step":')
    assert run_main(["--resume", run, "--quiet"]) == 2, how
    errs = error_lines(capsys.readouterr().err)
    assert len(errs) == 1 and ("truncated or corrupt" in errs[0] or "is corrupt" in errs[0]), (how, errs)
  assert run_main(["--resume", tmp_path / "nothing", "--quiet"]) == 2
  assert "checkpoint not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# 4. security: nothing loaded executes code


class _Boom:
  """Unpickling this creates `marker`: proof that a loader ran pickle."""
  def __init__(self, marker): self.marker = marker
  def __reduce__(self): return (open, (str(self.marker), "w"))


def test_pickle_renamed_safetensors_is_refused(tmp_path):
  marker = tmp_path / "PWNED"
  path = tmp_path / "model.safetensors"
  path.write_bytes(pickle.dumps({"encoder.embed.weight": _Boom(marker)}))
  with pytest.raises(sz.CheckpointError, match="not a readable safetensors"): sz.load_tensors(path)
  assert not marker.exists()
  # the same file as a checkpoint given to --eval, in a real process
  (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "step": 1, "config": TINY, "data_dir": "x",
                                                    "teacher": {"name": "t", "dim": D, "fingerprint": "0"}}))
  assert_one_line_error(cli("--eval", tmp_path), "truncated or corrupt")
  assert not marker.exists()


def test_pytorch_bin_teacher_never_unpickled(tmp_path):
  """test_hub.py checks resolve() refuses a pytorch_model.bin-only folder; here it holds a live pickle, via the CLI."""
  marker = tmp_path / "PWNED"
  pt = tmp_path / "pt"
  pt.mkdir()
  (pt / "config.json").write_text(json.dumps({"model_type": "bert"}))
  (pt / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))
  r = py("-m", "teacher", "embed", "--teacher", pt, "--out", tmp_path / "v.npy", input="a cat\n")
  assert_one_line_error(r, "cannot load teacher", "unpickling")
  assert not marker.exists() and not (tmp_path / "v.npy").exists()


@pytest.mark.parametrize("key", ["norm", "optimizer.type", "pool"])
def test_config_values_are_data(tmp_path, key):
  marker = tmp_path / "x"
  payload = f"__import__('os').system('touch {marker}')"
  assert_one_line_error(cli(f"--{key}", payload, "--print-config"), key)
  cfg = tmp_path / "c.json"
  head, _, sub = key.partition(".")
  cfg.write_text(json.dumps({head: {sub: payload} if sub else payload}))
  assert_one_line_error(cli("--config", cfg, "--print-config"), key)
  assert not marker.exists()
