"""The tinygrad ports against HF transformers (test oracle only) on tiny random models, and the checkpoint loader.

Every model here shares one input shape (3, 20) and the embed tests one batch shape, to keep kernel compiles few.
"""
import hashlib, json
import numpy as np
import pytest
from tinygrad import Tensor

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from teacher.models import ModelLoadError, build_model, load_model, normalise_keys, relative_position_bucket  # noqa
from teacher.embedder import Teacher  # noqa: E402

TINY = dict(vocab_size=99, max_position_embeddings=64, initializer_range=0.2)  # large init: bugs show in outputs
LENGTHS = (20, 13, 5)  # padded batch: every row but the first has padding; 20 > 8 exercises MPNet's log buckets


def tiny_config(kind: str):
  if kind == "bert":
    return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                   layer_norm_eps=1e-12, **TINY)
  if kind == "distilbert":
    return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, **TINY)
  if kind == "mpnet":
    return transformers.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                    layer_norm_eps=1e-12, **TINY)
  raise ValueError(kind)


HF_CLASSES = {"bert": "BertModel", "distilbert": "DistilBertModel", "mpnet": "MPNetModel"}


def save_tiny(kind: str, folder, head: str | None = None):
  """A seeded random HF model of `kind` saved (safetensors) to folder; returns the base model in eval mode."""
  torch.manual_seed(0)
  cls = getattr(transformers, head or HF_CLASSES[kind])
  model = cls(tiny_config(kind)).eval()
  model.save_pretrained(folder, safe_serialization=True)
  return getattr(model, kind) if head else model


def padded_batch(pad_id: int):
  rng = np.random.default_rng(0)
  ids = np.full((len(LENGTHS), max(LENGTHS)), pad_id, dtype=np.int64)
  mask = np.zeros(ids.shape, dtype=np.int64)
  for r, n in enumerate(LENGTHS):
    ids[r, :n], mask[r, :n] = rng.integers(2, 99, n), 1  # ids >= 2: never the pad id of any of the three
  return ids, mask


def hf_hidden(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


def assert_parity(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray, tol: float = 1e-4):
  keep = mask.astype(bool)
  diff = np.abs(ours[keep] - ref[keep]).max()
  assert diff <= tol, f"max abs diff {diff:.3g} on unmasked positions"


@pytest.mark.parametrize("kind", ["bert", "distilbert", "mpnet"])
def test_port_matches_hf(kind, tmp_path):
  ref_model = save_tiny(kind, tmp_path)
  ours = load_model(tmp_path)
  ids, mask = padded_batch(pad_id=1 if kind == "mpnet" else 0)
  got = ours(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.float32))).numpy()
  assert got.shape == (3, 20, 32)
  assert_parity(got, hf_hidden(ref_model, ids, mask), mask)


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_fp16_matmuls_stay_close_to_hf(kind, tmp_path):
  """compute_dtype float16 (the GPU's bulk teacher pass): half-precision matmul inputs, float32 sums and everything
  else; the hidden states stay close to HF's float32 ones, and switching back gives float32 parity again."""
  from tinygrad import dtypes
  ref_model = save_tiny(kind, tmp_path)
  ours = load_model(tmp_path)
  ids, mask = padded_batch(pad_id=1 if kind == "mpnet" else 0)
  ref = hf_hidden(ref_model, ids, mask)
  run = lambda: ours(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.float32))).numpy()
  ours.compute_dtype = dtypes.float16
  half = run()
  keep = mask.astype(bool)
  err = np.abs(half[keep] - ref[keep]).max()
  assert half.dtype == np.float32 and 1e-5 < err < 2e-2, err  # rounded (so the half path ran), and close
  ours.compute_dtype = None
  assert_parity(run(), ref, mask)


def test_prefixed_checkpoint_with_heads_loads(tmp_path):
  base = save_tiny("distilbert", tmp_path, head="DistilBertForMaskedLM")
  raw = (tmp_path / "model.safetensors").read_bytes()
  keys = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # the safetensors header
  assert any(k.startswith("distilbert.") for k in keys) and any(k.startswith("vocab_") for k in keys)
  ids, mask = padded_batch(pad_id=0)
  got = load_model(tmp_path)(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.float32))).numpy()
  assert_parity(got, hf_hidden(base, ids, mask), mask)


def test_missing_weights_and_bad_type_are_clear():
  cfg = tiny_config("bert").to_dict()
  state = {"bert.embeddings.word_embeddings.weight": np.zeros((99, 32), np.float32)}
  with pytest.raises(ModelLoadError) as e:
    build_model(cfg, state, source="ckpt.safetensors")
  msg = str(e.value)
  assert "ckpt.safetensors" in msg and "missing weights" in msg and "embeddings.position_embeddings.weight" in msg
  assert "word_embeddings" not in msg  # present (under a prefix), so not reported
  with pytest.raises(ModelLoadError, match="unsupported model_type 'gpt2'"):
    build_model({"model_type": "gpt2"}, {})


def test_key_variants_normalise():
  state = {"roberta.embeddings.LayerNorm.gamma": 1, "0.auto_model.encoder.layer.0.output.LayerNorm.beta": 2,
           "cls.predictions.bias": 3}
  assert normalise_keys(state) == {"embeddings.LayerNorm.weight": 1, "encoder.layer.0.output.LayerNorm.bias": 2,
                                   "cls.predictions.bias": 3}


def test_relative_position_bucket_matches_hf():
  from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
  L = 600  # past max_distance=128 on both sides
  rel = torch.arange(L)[None, :] - torch.arange(L)[:, None]
  np.testing.assert_array_equal(relative_position_bucket(L), MPNetEncoder.relative_position_bucket(rel).numpy())


# ---- Teacher on a tiny BERT folder: vocab.txt tokenizer fallback, pooling metadata, batching and order ----

WORDS = [f"w{i}" for i in range(90)]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny_bert")
  model = save_tiny("bert", folder)
  (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
  (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  return folder, model


TEXTS = ["w5 w6 w7", "", " ".join(WORDS[:25]), "W1", "w2 w3 unknownword"]  # 27 tokens -> bucket 32, rest -> 16


def reference(model, teacher, texts, pooling=("mean",), normalize=False) -> np.ndarray:
  rows = []
  for ids in teacher.encode(texts):
    h = hf_hidden(model, ids[None].astype(np.int64), np.ones((1, len(ids)), np.int64))[0]  # unpadded: (L, d)
    v = np.concatenate([{"mean": h.mean(0), "cls": h[0], "max": h.max(0)}[p] for p in pooling])
    rows.append(v / np.linalg.norm(v) if normalize else v)
  return np.stack(rows)


def test_plain_folder_defaults_and_order(tiny_bert_dir):
  folder, model = tiny_bert_dir
  t = Teacher(folder)
  assert (t.pooling, t.normalize, t.max_seq_length, t.dim, t.buckets) == (("mean",), False, 64, 32, [16, 32, 64])
  ids = t.encode(TEXTS)
  assert ids[1].tolist() == [2, 3] and ids[3].tolist() == [2, 5 + 1, 3]  # empty -> CLS SEP; lower-cased
  assert ids[4].tolist()[-2] == 1  # unknown word -> [UNK]
  assert len(t.encode([" ".join(WORDS)])[0]) == 64  # truncated to max_seq_length, specials included
  got = t.embed(TEXTS, batch_size=2)  # 3 batches (one with a filler row), two buckets, sorted internally
  assert got.dtype == np.float32 and got.shape == (5, 32)
  np.testing.assert_allclose(got, reference(model, t, TEXTS), atol=1e-4)
  assert t.embed([], batch_size=2).shape == (0, 32)
  ids, mask = padded_batch(pad_id=0)  # same shape as test_port_matches_hf: its kernels are reused
  assert_parity(t.hidden_states(ids, mask).numpy(), hf_hidden(model, ids, mask), mask)
  with pytest.raises(ValueError, match="precision"): t.precision = "bf8"
  t.precision = "fp16"  # a new precision must not replay the fp32 captures
  half = t.embed(TEXTS, batch_size=2)
  assert 0 < np.abs(half - got).max() < 2e-2 and t.precision == "fp16" and "precision=fp16" in repr(t)


def test_sentence_transformers_metadata(tiny_bert_dir, tmp_path):
  folder, model = tiny_bert_dir
  for f in folder.iterdir(): (tmp_path / f.name).symlink_to(f)
  (tmp_path / "modules.json").write_text(json.dumps([
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
  (tmp_path / "1_Pooling").mkdir()
  (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
    {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True,
     "pooling_mode_mean_tokens": False}))
  (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
  t = Teacher(tmp_path, cache_dir=tmp_path / "cache")
  assert (t.pooling, t.normalize, t.dim, t.max_seq_length, t.buckets) == (("cls", "max"), True, 64, 24, [16, 24])
  assert len(t.encode([" ".join(WORDS)])[0]) == 24
  got = t.embed(TEXTS[:2] + TEXTS[3:], batch_size=2)
  np.testing.assert_allclose(got, reference(model, t, TEXTS[:2] + TEXTS[3:], ("cls", "max"), True), atol=1e-4)
  assert t.fingerprint == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
  assert len(list((tmp_path / "cache" / "fingerprints").glob("*.json"))) == 1  # remembered for the next load


def test_bulk_precision_is_fp16_on_a_gpu_only():
  from teacher.embedder import bulk_precision
  assert [bulk_precision("auto", d) for d in ("CPU", "CUDA:1", "METAL")] == ["fp32", "fp16", "fp16"]
  assert bulk_precision("fp32", "CUDA") == "fp32" and bulk_precision("fp16", "CPU") == "fp16"
  with pytest.raises(ValueError, match="precision"): bulk_precision("bf16", "CUDA")
