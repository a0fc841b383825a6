"""The real all-MiniLM-L6-v2 teacher against HF transformers (oracle only), its tokenizer, and the embed CLI.

Shapes: one in-process embed (batch 16; buckets 256 and 16) and one CLI run, to keep tinygrad compiles few.
"""
import os, shutil, subprocess, sys
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import ROOT  # noqa: E402
from teacher import load_teacher  # noqa: E402
from teacher.embedder import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  return load_teacher("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def hf(minilm_dir):
  model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
  return model, transformers.AutoTokenizer.from_pretrained(minilm_dir)


def all_sentences(pairs) -> list[str]:
  return [s for pair in pairs for s in pair]


def hf_embed(hf, texts, max_len) -> np.ndarray:
  """sentence-transformers' recipe by hand: mean over real tokens, then L2 normalise."""
  model, tok = hf
  enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
  with torch.no_grad(): h = model(**enc).last_hidden_state
  m = enc["attention_mask"].unsqueeze(-1).float()
  return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1).numpy()


def test_metadata(minilm):
  assert (minilm.dim, minilm.max_seq_length, minilm.pooling, minilm.normalize) == (384, 256, ("mean",), True)
  assert len(minilm.fingerprint) == 64 and int(minilm.fingerprint, 16) >= 0


def test_embeddings_match_hf(minilm, hf, stsb_test_pairs):
  texts = all_sentences(stsb_test_pairs[:10])  # 20 real sentences
  long_text = " ".join(all_sentences(stsb_test_pairs[10:40]))
  assert len(minilm.tokenizer.encode(long_text, add_special_tokens=True).ids) == 256  # truncated
  texts.insert(7, long_text)
  got = minilm.embed(texts, batch_size=16)
  ref = hf_embed(hf, texts, 256)
  assert got.shape == (21, 384) and got.dtype == np.float32
  cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() >= 0.99999, f"worst cosine {cos.min():.7f} at row {cos.argmin()}"
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_past_the_sentence_transformers_length(minilm, hf, stsb_test_pairs):
  """max_seq_length raised to the position table (512): a 512-token text as HF embeds it at max_length=512."""
  long_text = " ".join(all_sentences(stsb_test_pairs[:80]))
  try:
    minilm.max_seq_length = 512
    assert len(minilm.encode([long_text])[0]) == 512 and minilm.bucket(300) == 512
    got = minilm.embed([long_text], batch_size=1)
  finally:
    minilm.max_seq_length = 256
  assert len(minilm.encode([long_text])[0]) == 256 and minilm.buckets[-1] == 256
  ref = hf_embed(hf, [long_text], 512)
  assert float((got * ref).sum()) >= 0.99999
  for bad in (513, 1, 256.0, True):
    with pytest.raises(ValueError, match="from 2 to 512"): minilm.max_seq_length = bad


def test_tokenizer_ids_match_hf(minilm, hf, stsb_test_pairs):
  texts = all_sentences(stsb_test_pairs)
  ref = hf[1](texts, truncation=True, max_length=256)["input_ids"]
  assert [ids.tolist() for ids in minilm.encode(texts)] == ref


def test_vocab_txt_fallback_matches_hf(minilm_dir, hf, stsb_test_pairs, tmp_path):
  for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):  # no tokenizer.json
    shutil.copy(minilm_dir / name, tmp_path / name)
  tok, pad_id = load_tokenizer(tmp_path, 256)
  texts = all_sentences(stsb_test_pairs)
  assert pad_id == 0
  assert [e.ids for e in tok.encode_batch(texts)] == hf[1](texts, truncation=True, max_length=256)["input_ids"]


def run_cli(*args, stdin: bytes = b"") -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "teacher", *args], input=stdin, capture_output=True, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


def test_cli_round_trip(hf, tmp_path):
  lines = ["A man is playing a guitar.", "", "Bad byte \xff here"]
  stdin = b"A man is playing a guitar.\n\nBad byte \xff here\n"  # invalid UTF-8 is replaced, not fatal
  out = tmp_path / "vecs.npy"
  r = run_cli("embed", "--teacher", "all-MiniLM-L6-v2", "--batch-size", "16", "--out", str(out), stdin=stdin)
  assert r.returncode == 0, r.stderr.decode()
  assert b"sentences/s" in r.stderr and b"CPU" in r.stderr
  vecs = np.load(out)
  assert vecs.shape == (3, 384) and vecs.dtype == np.float32
  lines[2] = "Bad byte \ufffd here"
  np.testing.assert_allclose(vecs, hf_embed(hf, lines, 256), atol=1e-4)  # same rows, same order


@pytest.mark.parametrize("args, stdin, needle", [
  (["embed", "--teacher", "/no/such/teacher", "--out", "X"], b"a\n", b"teacher"),
  (["embed", "--batch-size", "0", "--out", "X"], b"a\n", b"--batch-size"),
  (["embed", "--input", "/no/such/file.txt", "--out", "X"], b"", b"cannot read input"),
])
def test_cli_errors_are_one_line(args, stdin, needle, tmp_path):
  args = [str(tmp_path / "x.npy") if a == "X" else a for a in args]
  r = run_cli(*args, stdin=stdin)
  assert r.returncode == 2
  assert needle in r.stderr and b"Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert not (tmp_path / "x.npy").exists()
