"""The numpy inference path against the tinygrad models on tiny random ones: encoder (every config switch), decoder
(teacher forcing, the incremental step, greedy/beam decodes), mode-B projection, streaming, int8 quantisation, the
numpy teacher against the tinygrad port, and the engine choice. Shapes stay few: each new tinygrad shape compiles."""
import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

from studentz_kernels import backend
from studentz_runtime import decoding
from studentz_runtime import numpy_infer
from studentz_runtime import quantize
import studentz as sz
from studentz import Decoder, ModeBProjection

B, L, D, V = 3, 12, 24, 64


def tiny_cfg(**kw) -> sz.Config:
  base = dict(vocab_size=V, d_model=16, hidden=24, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3, proj_dim=D,
              max_len=L, dec_blocks=2, dec_dilation_schedule=[1, 2], dropout=0.0)
  return sz.Config(**{**base, **kw}).validate()


def perturbed(model, seed: int):
  """Every weight random and non-trivial (zero-initialised paths, norm scales and shifts included)."""
  rng = np.random.default_rng(seed)
  for name, t in get_state_dict(model).items():
    base = 1.0 if name.endswith("norm.weight") else 0.0
    t.assign(Tensor(rng.normal(base, 0.3, t.shape).astype(np.float32))).realize()
  return model


def arrays_of(models: dict) -> dict:
  return {f"{k}.{n}": t.numpy() for k, m in models.items() for n, t in get_state_dict(m).items()}


def batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, V, (B, L)).astype(np.int32)
  mask = (np.arange(L)[None] < np.array([[L], [7], [3]])).astype(np.float32)     # rows of 12, 7 and 3 tokens
  return ids * mask.astype(np.int32), mask


@pytest.mark.parametrize("kw", [dict(), dict(padding="causal", pool="mean"), dict(norm="group", pool_head=6),
                                dict(block_context=True, pool_head=4)])
def test_encoder_matches_tinygrad(kw):
  cfg = tiny_cfg(**kw)
  enc = perturbed(sz.Encoder(cfg), 0)
  ids, mask = batch()
  want = enc(Tensor(ids), Tensor(mask)).numpy()
  ours = numpy_infer.Encoder(cfg, arrays_of({"encoder": enc}))
  got = ours(ids, mask)
  assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
  # a row alone (cropped to its own length) equals its row in the padded batch
  assert np.abs(ours(ids[2:], mask[2:]) - got[2:]).max() < 1e-5
  z = numpy_infer.encode_batches(ours, ids, mask, 2)                            # sorted by length, input order back
  assert np.abs(z - got).max() < 1e-5


def test_big_batch_split_over_threads_equals_small_batches(monkeypatch):
  """A call of at least SPLIT_TOKENS tokens runs its rows on several Python threads: the same z as small calls."""
  from studentz_runtime import blas_threads
  cfg = tiny_cfg(pool_head=4)
  ours = numpy_infer.Encoder(cfg, arrays_of({"encoder": perturbed(sz.Encoder(cfg), 4)}))
  rng = np.random.default_rng(5)
  n = max(numpy_infer.SPLIT_TOKENS, numpy_infer.CHUNK_TOKENS) // L + 7           # over the threshold, 2+ chunks
  ids = rng.integers(4, V, (n, L)).astype(np.int32)
  mask = (np.arange(L)[None] < rng.integers(1, L + 1, (n, 1))).astype(np.float32)
  small = numpy_infer.encode_batches(ours, ids, mask, numpy_infer.SPLIT_TOKENS // L - 1)
  monkeypatch.setattr(blas_threads, "get", lambda: 3)                            # three workers, uneven shares
  split = ours(ids, mask)
  assert split.shape == (n, D) and np.abs(split - small).max() < 1e-5


@pytest.mark.parametrize("draft", [0, 4])
def test_decoder_and_projection_match_tinygrad(draft):
  cfg = tiny_cfg(dec_output="tied", dec_draft=draft)
  dec, proj = perturbed(Decoder(cfg), 1), perturbed(ModeBProjection(cfg), 2)
  ours_arrays = arrays_of({"decoder": dec, "proj_b": proj})
  ours, ours_proj = numpy_infer.Decoder(cfg, ours_arrays), numpy_infer.ModeBProjection(cfg, ours_arrays)
  ids, _ = batch(1)
  z = np.random.default_rng(3).normal(0, 1, (B, D)).astype(np.float32)
  mode = np.array([0, 1, 0], np.int32)
  want = dec.logits(dec.hidden(Tensor(ids), Tensor(z), Tensor(mode))).numpy()
  got = ours.head(ours.hidden(ids, z, mode))
  assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
  # the incremental step reproduces teacher forcing position by position
  st = ours.new_state(B).reset(z, mode)
  steps = np.stack([st.step(ids[:, t]) for t in range(L)], 1)
  assert np.abs(steps - want).max() < 1e-4
  assert np.abs(ours_proj(z) - proj(Tensor(z)).numpy()).max() < 1e-5
  # greedy and beam decodes pick the same tokens as the tinygrad decoder
  assert (decoding.greedy(ours, z, 6) == decoding.greedy(dec, z, 6)).all()
  assert (decoding.beam_search(ours, z[:1], beam=2, max_len=5) == decoding.beam_search(dec, z[:1], beam=2,
                                                                                        max_len=5)).all()


@pytest.mark.parametrize("draft", [0, 4])
def test_step_reorders_rows_and_skips_ended_ones(draft):
  """parents hand rows another row's cache (beam search; numpy copies only the moved rows) as tinygrad's state does;
  rows not `live` come back as zeros, cost nothing and leave the live rows' logits as they were."""
  from studentz_runtime import generate
  cfg = tiny_cfg(dec_output="tied", dec_draft=draft)
  dec = perturbed(Decoder(cfg), 5)
  ours = numpy_infer.Decoder(cfg, arrays_of({"decoder": dec}))
  rng = np.random.default_rng(6)
  z, mode, ids = rng.normal(0, 1, (4, D)).astype(np.float32), np.array([0, 1, 0, 1]), rng.integers(4, V, (4, 6))
  a, b = generate.DecoderState(dec, 4).reset(z, mode), ours.new_state(4).reset(z, mode)
  for t in range(6):
    par = np.array([0, 0, 3, 2]) if t == 2 else None
    live = np.array([True, False, True, True]) if t == 3 else None
    want, got = a.step(ids[:, t], par), b.step(ids[:, t], par, live=live)
    rows = [0, 2, 3] if t >= 3 else [0, 1, 2, 3]  # row 1 ended at step 3: its cache stood still since
    assert np.abs(got[rows] - want[rows]).max() < 1e-4
    if live is not None: assert (got[1] == 0).all()


def test_separate_head():
  cfg = tiny_cfg(dec_output="separate")
  dec = perturbed(Decoder(cfg), 4)
  ours = numpy_infer.Decoder(cfg, arrays_of({"decoder": dec}))
  ids, _ = batch(2)
  z = np.ones((B, D), np.float32)
  want = dec(Tensor(ids), Tensor(z)).numpy()
  assert np.abs(ours.head(ours.hidden(ids, z)) - want).max() < 1e-4


def test_stream_equals_full_encoder():
  cfg = tiny_cfg(padding="causal", pool_head=5)
  enc = numpy_infer.Encoder(cfg, arrays_of({"encoder": perturbed(sz.Encoder(cfg), 5)}))
  toks = np.random.default_rng(6).integers(4, V, L).astype(np.int32)
  mask = np.tril(np.ones((L, L), np.float32))                                    # row t: the first t+1 tokens
  full = enc(np.tile(toks, (L, 1)) * mask.astype(np.int32), mask)
  st = enc.stream()
  assert np.abs(np.stack([st.push(int(t)) for t in toks]) - full).max() < 1e-4
  assert st.reset().n == 0
  with pytest.raises(ValueError, match="token ids"): st.push(V)
  with pytest.raises(ValueError, match="causal"): numpy_infer.Encoder(tiny_cfg(), arrays_of(
    {"encoder": sz.Encoder(tiny_cfg())})).stream()


def test_int8_round_trip_and_fidelity(tmp_path):
  from conftest import write_checkpoint
  from studentz_corpus.tokenizer import StudentTokenizer
  rng = np.random.default_rng(7)
  w = rng.normal(0, 1, (8, 40)).astype(np.float32)
  q, s = quantize.quantize_rows(w)
  assert q.dtype == np.int8 and s.dtype == np.float16 and np.abs(q).max() == 127
  assert np.abs(q * s.astype(np.float32)[:, None] - w).max() <= s.astype(np.float32).max() / 2 + 1e-6
  cfg = tiny_cfg(vocab_size=300, d_model=32, hidden=64)
  tok = StudentTokenizer.fit(["a man plays a guitar", "two dogs run on grass", "the cat sleeps"], vocab_size=300)
  cfg = tiny_cfg(vocab_size=tok.vocab_size, d_model=32, hidden=64)
  models = {"encoder": perturbed(sz.Encoder(cfg), 8), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  write_checkpoint(tmp_path / "fp", cfg, models, tok)
  sizes = quantize.quantize_checkpoint(tmp_path / "fp", tmp_path / "q8")
  assert sizes["int8_bytes"] < 0.6 * sizes["fp_bytes"]                             # float32 file here: ~1/4
  ids, mask = batch(3)
  ids = ids % tok.vocab_size
  fp = numpy_infer.load_models(tmp_path / "fp")[0]["encoder"](ids, mask)
  q8 = numpy_infer.load_models(tmp_path / "q8")[0]["encoder"](ids, mask)
  mem = numpy_infer.load_models(tmp_path / "fp", int8=True)[0]["encoder"](ids, mask)  # int8 in memory: same
  assert np.array_equal(q8, mem)
  cos = (fp * q8).sum(1) / np.linalg.norm(fp, axis=1) / np.linalg.norm(q8, axis=1)
  assert cos.min() > 0.99 and np.abs(fp - q8).max() > 0                          # close, and really quantised
  with pytest.raises(ValueError, match="already quantised"):
    quantize.quantize_checkpoint(tmp_path / "q8", tmp_path / "x")


def test_int8_file_deflated_and_old_layout(tmp_path):
  """The int8 file holds its matrices deflated; it, the plain int8 layout of older files and the float weights through
  int8 all read back the same; a damaged deflated tensor is a CheckpointError, not garbage weights."""
  from safetensors.numpy import save_file
  from studentz_runtime.checkpoint import CheckpointError
  rng = np.random.default_rng(3)
  fp = {"m.weight": rng.normal(0, 0.1, (128, 8, 5)).astype(np.float32),  # big enough to be quantised
        "m.bias": rng.normal(0, 1, 128).astype(np.float32)}
  q = quantize.quantize_arrays(fp)
  packed, meta = quantize.pack(q)
  assert packed["m.weight"].dtype == np.uint8 and packed["m.weight"].size < q["m.weight"].size
  save_file(packed, str(tmp_path / "new.safetensors"), metadata=meta)
  save_file(q, str(tmp_path / "old.safetensors"), metadata={"studentz_quantization": "int8-per-output-channel"})
  save_file(fp, str(tmp_path / "fp.safetensors"))
  new, old = (quantize.load_float32(tmp_path / f"{n}.safetensors") for n in ("new", "old"))
  mem = quantize.load_float32(tmp_path / "fp.safetensors", int8=True)
  for k in fp: assert np.array_equal(new[k], old[k]) and np.array_equal(new[k], mem[k])
  assert 0 < np.abs(new["m.weight"] - fp["m.weight"]).max() < np.abs(fp["m.weight"]).max() / 127  # within a step
  bad = dict(packed, **{"m.weight": packed["m.weight"][:-3]})
  save_file(bad, str(tmp_path / "bad.safetensors"), metadata=meta)
  with pytest.raises(CheckpointError, match="damaged int8 tensor"): quantize.load_float32(tmp_path / "bad.safetensors")


def test_engine_choice(monkeypatch):
  monkeypatch.delenv("STUDENTZ_ENGINE", raising=False)
  monkeypatch.setenv("DEV", "CPU")
  assert backend.inference_engine() == "numpy" and backend.inference_engine("tinygrad") == "tinygrad"
  monkeypatch.setenv("DEV", "CUDA")
  assert backend.inference_engine() == "tinygrad"
  monkeypatch.setenv("STUDENTZ_ENGINE", "numpy")
  assert backend.inference_engine() == "numpy"
  monkeypatch.delenv("DEV")
  monkeypatch.delenv("STUDENTZ_ENGINE")
  monkeypatch.setattr(backend, "likely_gpu", lambda: False)
  assert backend.inference_engine() == "numpy"
  with pytest.raises(backend.DeviceError, match="unknown engine"): backend.inference_engine("torch")


@pytest.mark.parametrize("kind", ["bert", "distilbert", "mpnet"])
def test_numpy_teacher_matches_tinygrad_port(kind, tmp_path):
  pytest.importorskip("transformers")
  from test_teacher_ports import padded_batch, save_tiny
  from teacher.models import load_model
  from teacher.numpy_model import Model
  from teacher.folder import read_safetensors
  import json
  save_tiny(kind, tmp_path)
  ids, mask = padded_batch(pad_id=1 if kind == "mpnet" else 0)
  want = load_model(tmp_path)(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.float32))).numpy()
  got = Model(json.loads((tmp_path / "config.json").read_text()), read_safetensors(tmp_path / "model.safetensors"))(
    ids, mask)
  keep = mask.astype(bool)
  assert np.abs(got[keep] - want[keep]).max() < 1e-4


def test_numpy_teacher_embed_matches_real_teacher(minilm_dir):
  """all-MiniLM-L6-v2 end to end (tokenizer, truncation, pooling, normalisation): numpy Teacher == tinygrad's."""
  from teacher.embedder import Teacher as TinygradTeacher
  from teacher.numpy_model import Teacher
  texts = ["A man is playing a guitar.", "word " * 300, "Hi"]                     # the second is truncated to 256
  got, want = Teacher(minilm_dir).embed(texts, batch_size=2), TinygradTeacher(minilm_dir).embed(texts, batch_size=4)
  assert got.shape == (3, 384) and np.abs(got - want).max() < 1e-5


def test_cpu_path_never_imports_tinygrad():
  """The numpy engine skips tinygrad's import, device probe and compiles: infer.py (student, decode, teacher) and
  studentz_runtime.api.StudentZ run without tinygrad in sys.modules; `from studentz import StudentZ` imports the model
  module (tinygrad's import, ~0.1 s) but opens no device."""
  import os, subprocess, sys
  from conftest import ROOT
  code = ("import sys, infer\n"
          "assert infer.main(['The cat sat.', '--json']) == 0\n"
          "from studentz_runtime.api import StudentZ\n"
          "m = StudentZ.load()\n"
          "assert m.engine == 'numpy' and m.decode(m.encode('Hi'))\n"
          "print(any('tinygrad' in k for k in sys.modules))\n"
          "import studentz\n"
          "m = studentz.StudentZ.load()\n"
          "assert m.decode(m.encode('Hi'))\n"
          "print(sorted(sys.modules['tinygrad.device'].Device._opened_devices))\n")
  env = {k: v for k, v in os.environ.items() if k not in ("STUDENTZ_CKPT", "STUDENTZ_ENGINE")}
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr
  assert p.stdout.strip().splitlines()[-2:] == ["False", "[]"], p.stdout[-500:]
