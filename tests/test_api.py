"""StudentZ on a tiny untrained causal checkpoint (built here, no training): loading, encode of texts and
ids, decode in both modes, streaming == the full encoder on every prefix, and thread safety.

Shapes are kept to a few (batches of 1, 2 and 4; L=16) because every new tinygrad shape costs a clang compile."""
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, write_checkpoint
from tinygrad import Tensor

import studentz as sz
from studentz_runtime import checkpoint
from studentz_corpus.tokenizer import BOS, EOS
from studentz import StudentZ
from studentz_runtime.stream_tinygrad import StreamState

D, L = 24, 16
TEXTS = ["A man is playing a guitar.", "Two dogs run on the grass.", "A woman slices an onion.", "The cat sleeps.",
         "A plane is taking off.", "Children play in a park.", "A man rides a horse.", "Someone is cooking rice."]


def tiny_cfg(vocab: int, **kw) -> sz.Config:
  base = dict(vocab_size=vocab, d_model=16, hidden=24, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3,
              proj_dim=D, max_len=L, dec_blocks=2, dec_dilation_schedule=[1, 2], padding="causal", dropout=0.0,
              loss_weights={"cos": 1.0, "mse": 1.0, "ce": 1.0, "sem": 0.1})
  return sz.Config(**{**base, **kw}).validate()


def _perturb(model, seed: int):
  """Non-trivial norm scales/shifts and biases, so every path (norm modes, gate bias, conv bias) matters."""
  from tinygrad.nn.state import get_state_dict
  rng = np.random.default_rng(seed)
  for name, t in get_state_dict(model).items():
    if "norm" in name or name.endswith("bias"):
      base = 1.0 if name.endswith("norm.weight") else 0.0
      t.assign(Tensor(rng.normal(base, 0.3, t.shape).astype(np.float32))).realize()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
  """A run folder holding best/ in train.py's layout: encoder + decoder + proj_b, config.json, tokenizer.json."""
  from studentz_runtime import metrics
  from studentz import Decoder, ModeBProjection
  from studentz_corpus.tokenizer import StudentTokenizer
  path = SHARED_DATA / "stsb" / "sts-train.csv"
  if not path.is_file(): pytest.skip(f"STS-B not found at {path} (set STUDENTZ_DATA)")
  s1, s2, _ = metrics.load_stsb(path)
  tok = StudentTokenizer.fit(s1[:25] + s2[:25], vocab_size=300)
  cfg = tiny_cfg(tok.vocab_size)
  run = tmp_path_factory.mktemp("run")
  out = run / "best"
  Tensor.manual_seed(0)
  models = {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  _perturb(models["encoder"], 0)
  write_checkpoint(out, cfg, models, tok)
  return run


@pytest.fixture(scope="module")
def model(run_dir) -> StudentZ:
  return StudentZ.load(run_dir)  # a run folder: its best/ is used


def test_load_paths_and_lazy_reexport(run_dir, model, monkeypatch, tmp_path):
  from studentz import StudentZ as Lazy
  assert Lazy is StudentZ
  with pytest.raises(AttributeError): sz.NoSuchThing
  assert model.path == run_dir / "best" and model.dim == D and model.max_len == L and model.has_decoder
  monkeypatch.setenv("STUDENTZ_CKPT", str(run_dir / "best"))
  assert checkpoint.resolve_path(None) == run_dir / "best"
  assert StudentZ.load().encode("The cat sleeps.").tolist() == model.encode("The cat sleeps.").tolist()
  monkeypatch.delenv("STUDENTZ_CKPT")
  monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", run_dir)  # a shipped default (here a run folder)
  assert checkpoint.resolve_path(None) == run_dir / "best"
  monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", tmp_path / "none")
  with pytest.raises(FileNotFoundError, match="shipped default model"): StudentZ.load()
  with pytest.raises(sz.CheckpointError, match="not found"): StudentZ.load(tmp_path / "missing")


def test_load_a_shipped_model_by_name(run_dir, monkeypatch, tmp_path):
  shipped = tmp_path / "models"
  (shipped / "default").mkdir(parents=True)
  shutil.copytree(run_dir / "best", shipped / "streaming")
  monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_DIR", shipped / "default")
  monkeypatch.chdir(tmp_path)  # no folder named "streaming" here: the name means the shipped one
  assert checkpoint.shipped_models() == ["streaming"]  # default has no config.json here
  assert StudentZ.load("streaming").path == shipped / "streaming"
  with pytest.raises(sz.CheckpointError, match=r"not found: nosuch \(shipped models by name: streaming\)"):
    StudentZ.load("nosuch")
  (tmp_path / "streaming").mkdir()  # a folder of that name here wins, as any path does
  with pytest.raises(sz.CheckpointError, match="no config.json"): StudentZ.load("streaming")


def test_encode_texts_and_ids(model):
  zs = model.encode(TEXTS[:4])
  assert zs.shape == (4, D) and zs.dtype == np.float32 and np.isfinite(zs).all()
  one = model.encode(TEXTS[0])
  assert one.shape == (D,) and np.abs(one - zs[0]).max() < 1e-5       # batch of 1 vs batch of 4: same row
  assert np.abs(model.encode(TEXTS[:4], batch_size=2) - zs).max() < 1e-5
  assert len({tuple(r) for r in zs.round(5).tolist()}) == 4
  ids, mask = model.tokenizer.encode_batch(TEXTS[:4], L)
  assert np.abs(model.encode(ids) - zs).max() < 1e-6                  # the tokenizer's padded layout, as is
  content = [r[1:int(m.sum()) - 1].tolist() for r, m in zip(ids, mask)]
  assert np.abs(model.encode(content) - zs).max() < 1e-6              # BOS/EOS added when missing
  assert np.abs(model.encode(content[0]) - one).max() < 1e-6          # one row of ids is the spelling of one str
  unit = model.encode(TEXTS[:4], normalize=True)
  assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5) and np.allclose(unit * np.linalg.norm(zs, axis=1,
                                                                                  keepdims=True), zs, atol=1e-5)
  assert model.encode([]).shape == (0, D)
  with pytest.raises(ValueError, match="not a mix"): model.encode(["text", [5, 6]])
  with pytest.raises(ValueError, match="must lie in"): model.encode([[5, 10 ** 6]])
  with pytest.raises(ValueError, match="batch_size"): model.encode("x", batch_size=0)


def test_decode_modes_and_errors(model):
  z = model.encode(TEXTS[:2])
  a = model.decode(z, max_len=4)
  assert len(a) == 2 and all(isinstance(t, str) for t in a)
  assert model.decode(z, max_len=4) == a and model.decode(z[0], max_len=4) == a[:1]  # a [D] vector: one text
  s1 = model.decode(z, max_len=4, strategy="sample", top_k=20, top_p=0.9, temperature=0.8, seed=3)
  assert s1 == model.decode(z, max_len=4, strategy="sample", top_k=20, top_p=0.9, temperature=0.8, seed=3)
  b = model.decode_from_teacher(np.ones((2, D), np.float32), max_len=4)
  assert len(b) == 2 and all(isinstance(t, str) for t in b)
  with pytest.raises(ValueError, match="dimension 5"): model.decode(np.zeros((1, 5), np.float32))
  with pytest.raises(ValueError, match="NaN"): model.decode(np.full((1, D), np.nan, np.float32))
  with pytest.raises(ValueError, match="strategy"): model.decode(z, strategy="nope")
  with pytest.raises(ValueError, match="top_p"): model.decode(z, top_p=0)
  bare = StudentZ({"encoder": model.encoder}, model.info, model.tokenizer)
  with pytest.raises(ValueError, match="has no decoder"): bare.decode(z)
  with pytest.raises(ValueError, match="has no decoder"): bare.decode_from_teacher(z)


def test_rerank_judge_teacher_picks_what_the_teacher_prefers(model, monkeypatch):
  """judge="teacher": the checkpoint's teacher (here a stand-in that likes short texts) re-embeds the candidates, so
  its favourite wins; the teacher is loaded only for rerank, and a judge of another name is a one-line error."""
  z = model.encode(TEXTS[:2])
  class ShortLover:  # vectors turned away from z as the text grows: the shortest candidate is closest
    calls = 0
    def embed(self, texts, batch_size=32):
      ShortLover.calls += 1
      return np.stack([np.cos(len(t) / 50) * z[0] + np.sin(len(t) / 50) * np.roll(z[0], 1) for t in texts])
  monkeypatch.setattr(model, "_teacher", None, raising=False)
  assert model.decode(z[:1], max_len=6, judge="teacher") == model.decode(z[:1], max_len=6)  # greedy: no judge
  assert model._teacher is None
  monkeypatch.setattr(model, "_teacher", ShortLover(), raising=False)
  from studentz_runtime import decoding
  monkeypatch.setattr(decoding, "FLUENCY", 0.0)  # the judge's cosine alone chooses (test_fluency.py covers the rest)
  got = model.decode(z[:1], max_len=6, strategy="rerank", rerank=6, judge="teacher")
  cands = decoding.rerank_candidates(model.models["decoder"], z[:1], model.tokenizer, 6, 6)
  assert got[0] == min((g[0] for g in cands), key=len) and ShortLover.calls == 1
  with pytest.raises(ValueError, match="judge must be 'student' or 'teacher'"):
    model.decode(z, strategy="rerank", judge="oracle")


def test_engines_agree_and_int8(run_dir, model):
  """The numpy engine (the default on the CPU) and the tinygrad one: the same z and decodes; int8 weights close."""
  assert model.engine == "numpy"
  tg = StudentZ.load(run_dir, engine="tinygrad")
  assert tg.engine == "tinygrad"
  assert np.abs(tg.encode(TEXTS[:2]) - model.encode(TEXTS[:2])).max() < 1e-4
  z = model.encode(TEXTS[:2])
  assert tg.decode(z, max_len=4) == model.decode(z, max_len=4)
  assert tg.decode_from_teacher(z, max_len=4) == model.decode_from_teacher(z, max_len=4)
  q8 = StudentZ.load(run_dir, int8=True).encode(TEXTS[:2])
  cos = (q8 * z).sum(1) / np.linalg.norm(q8, axis=1) / np.linalg.norm(z, axis=1)
  assert cos.min() > 0.99 and np.abs(q8 - z).max() > 0


@pytest.mark.parametrize("pool,head", [("mean", 0), ("gated", 0), ("gated", 6)])
def test_stream_equals_full_encoder_on_every_prefix(pool, head):
  T = 10
  Tensor.manual_seed(1)
  enc = sz.Encoder(tiny_cfg(64, pool=pool, max_len=T, pool_head=head))
  _perturb(enc, 1)
  if head: enc.head_down.weight.assign(Tensor.randn(*enc.head_down.weight.shape)).realize()
  toks = np.random.default_rng(2).integers(4, 64, T).astype(np.int32)
  toks[0] = BOS
  # row t = the first t+1 tokens, masked after them: one full forward gives z for every prefix
  mask = np.tril(np.ones((T, T), np.float32))
  full = enc(Tensor(np.tile(toks, (T, 1)) * mask.astype(np.int32)), Tensor(mask)).numpy()
  st = StreamState(enc)
  streamed = np.stack([st.push(int(t)) for t in toks])                # JIT captured at the 2nd push, replayed after
  assert np.abs(streamed - full).max() < 1e-4, np.abs(streamed - full).max()
  st.reset()
  assert st.n == 0
  again = np.stack([st.push(t) for t in toks[:4]])
  assert np.abs(again - full[:4]).max() < 1e-4
  with pytest.raises(ValueError, match="token ids"): st.push(64)


def test_encode_stream(model):
  text = TEXTS[0]
  n = len(model.tokenizer.tokens(text))
  zs = list(model.encode_stream(text))
  assert len(zs) == n + 2                                             # BOS, content, EOS
  assert np.abs(zs[-1] - model.encode(text)).max() < 1e-4             # the whole sentence: the full encoder's z
  ids = [BOS, *model.tokenizer.backend.encode(text, add_special_tokens=False).ids, EOS]
  # a live generator of ids, two streams interleaved (each holds its own state), and a stream left unfinished
  g1, g2 = model.encode_stream(iter(ids)), model.encode_stream(ids[:3])
  first = [next(g1), next(g2)]
  assert np.abs(first[0] - zs[0]).max() < 1e-6 and np.abs(first[1] - zs[0]).max() < 1e-6
  rest = list(g1)
  assert np.abs(np.stack(rest) - np.stack(zs[1:])).max() < 1e-6
  g2.close()
  assert len(model._free_streams) == 2                                # both states are back in the pool


def test_stream_refusals(model):
  for kw, msg in (({"padding": "centred"}, "--padding causal"), ({"norm": "group"}, "GroupNorm")):
    enc = sz.Encoder(tiny_cfg(64, **kw))
    with pytest.raises(ValueError, match=msg): StreamState(enc)
    with pytest.raises(ValueError, match=msg): StudentZ({"encoder": enc}, {}, model.tokenizer).encode_stream("x")


def test_threads_match_serial(model):
  batches = [TEXTS[i:i + 4] for i in range(4)]                        # different batches, one shape (4 rows)
  serial = [model.encode(b) for b in batches]
  z = model.encode(TEXTS[:4])
  zpairs = [z[:2], z[2:]]
  serial_dec = [model.decode(zz, max_len=4) for zz in zpairs]
  results, errors = {}, []
  start = threading.Barrier(6)

  def work(key, fn):
    try:
      start.wait()
      for _ in range(3): results.setdefault(key, []).append(fn())
    except Exception as e:  # surfaced below: an exception in a thread would otherwise vanish
      errors.append(e)
  threads = [threading.Thread(target=work, args=(("enc", i), lambda b=b: model.encode(b)))
             for i, b in enumerate(batches)]
  threads += [threading.Thread(target=work, args=(("dec", i), lambda zz=zz: model.decode(zz, max_len=4)))
              for i, zz in enumerate(zpairs)]
  for t in threads: t.start()
  for t in threads: t.join(60)
  assert not errors, errors
  for i, want in enumerate(serial):
    assert all(np.array_equal(got, want) for got in results[("enc", i)])
  for i, want in enumerate(serial_dec):
    assert all(got == want for got in results[("dec", i)])


def test_text_pipeline_matches_serial_encode(run_dir, monkeypatch):
  """Texts over several batches on the tinygrad engine: tokenized a batch ahead in a background thread, the same z
  bit for bit, in order, as the tokenizer's ids encoded one batch after another."""
  from studentz_runtime.encode_tinygrad import encode_ids
  tg = StudentZ.load(run_dir, engine="tinygrad")
  texts = TEXTS + ["\ufb01ve \ufb01sh", ""]                              # 3 batches of 4, the last one padded
  want = encode_ids(tg.encoder, *tg.tokenizer.encode_batch(texts, L), 4)
  where, encode_batch = [], tg.tokenizer.encode_batch
  monkeypatch.setattr(tg.tokenizer, "encode_batch", lambda t, n: where.append(threading.current_thread()) or
                      encode_batch(t, n))
  got = tg.encode(texts, batch_size=4)
  assert got.dtype == np.float32 and np.array_equal(got, want)
  assert len(where) == 3 and all(t is not threading.main_thread() for t in where)
  assert np.array_equal(tg.encode(texts[::-1], batch_size=4), want[::-1])
