"""student_init.py: the teacher-initialised student is the static (bag-of-token-vectors) model it claims to be, the
ridge fit recovers a teacher that really is one, token vectors are cached, and the PCA table's contract.

The encoder is test_train's tiny student (dropout 0) run through train.encode_ids at its batch and length, so the
forward kernels are the ones test_train compiles; the teacher is test_train's FakeTeacher (a fixed random unit vector
per text), whose vectors of the token texts serve as the synthetic teacher's token vectors.
"""
import numpy as np
import pytest

import train
from studentz_runtime import metrics
from studentz_training import student_init as si
import studentz as sz
from studentz_corpus.tokenizer import UNK, StudentTokenizer
from test_train import BATCH, D, MAX_LEN, STSB_TRAIN, TINY, VOCAB, FakeTeacher
from tinygrad import Tensor

N_FIT, N_HELD = 200, 60


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


@pytest.fixture(scope="module")
def synthetic():
  """STS-B sentences under a tiny tokenizer, and a teacher that is exactly a static model: z = unit(mean of the
  sentence's token vectors @ M), with the FakeTeacher's vector of each token's text as that token's vector."""
  s1, _, _ = metrics.load_stsb(STSB_TRAIN)
  texts = list(dict.fromkeys(s1))[:N_FIT + N_HELD]
  tok = StudentTokenizer.fit(texts, vocab_size=VOCAB)
  ids, mask = tok.encode_batch(texts, MAX_LEN)
  ids, mask = ids.astype(np.int32), mask.astype(np.float32)
  tv = si.token_vectors(tok, FakeTeacher())                                        # (V, D)
  m = np.random.default_rng(0).standard_normal((D, D)).astype(np.float32)
  mean_tv = (tv[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  zt = mean_tv @ m
  zt /= np.linalg.norm(zt, axis=1, keepdims=True)
  cfg = sz.Config(**TINY, dropout=0.0).validate()
  Tensor.manual_seed(0)
  enc = sz.Encoder(cfg)
  fit = si.init_from_teacher(enc, tv, ids[:N_FIT], mask[:N_FIT], zt[:N_FIT])
  return {"tok": tok, "ids": ids, "mask": mask, "tv": tv, "zt": zt, "cfg": cfg, "enc": enc, "fit": fit}


def test_initialised_encoder_is_the_static_model(synthetic):
  s = synthetic
  cfg, enc, ids, mask = s["cfg"], s["enc"], s["ids"][:N_FIT], s["mask"][:N_FIT]
  assert cfg.d_model > D  # the wider-than-teacher case: the table pads the components with noise channels
  table = si.pca_table(s["tv"], cfg.d_model, cfg.seed)
  np.testing.assert_array_equal(enc.embed.weight.numpy(), table)
  feats = si.static_features(table, ids, mask)
  w, b = si.ridge(feats, s["zt"][:N_FIT])
  want = feats @ w + b
  got = train.encode_ids(enc, ids, mask, BATCH)
  # identity blocks, a constant gate (a plain mean) and the final LayerNorm: the forward is static_features exactly
  assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
  assert s["fit"]["n_fit"] == N_FIT
  assert s["fit"]["static_fit_cos"] == pytest.approx(cos_rows(want, s["zt"][:N_FIT]).mean(), abs=1e-6)


def test_ridge_recovers_a_static_teacher(synthetic):
  s = synthetic
  held = slice(N_FIT, None)
  ids, mask, zt = s["ids"][held], s["mask"][held], s["zt"][held]
  cos_init = cos_rows(train.encode_ids(s["enc"], ids, mask, BATCH), zt).mean()
  Tensor.manual_seed(0)
  rand = sz.Encoder(s["cfg"])                                                      # embed_init "random"
  cos_rand = cos_rows(train.encode_ids(rand, ids, mask, BATCH), zt).mean()
  # held-out sentences: the fit generalises because the teacher is a linear function of mean token vectors
  assert cos_init > 0.95 and s["fit"]["static_fit_cos"] > 0.95, (cos_init, s["fit"])
  assert cos_rand < 0.5, cos_rand


class _Tok:
  """Pieces by id: the four specials, real pieces, and pieces that decode to nothing but whitespace."""
  pieces = ["<pad>", "<s>", "</s>", "<unk>", "the", " ", "cat", "", "sat", "\t"]
  vocab_size = len(pieces)

  def decode(self, ids): return self.pieces[ids[0]]


class _CountingTeacher:
  name, fingerprint = "counting", "c0" * 32

  def __init__(self, dim: int = 6):
    self.dim, self.calls, self.texts = dim, 0, []

  def embed(self, texts, batch_size=64, **_):
    self.calls += 1
    self.texts += list(texts)
    return np.stack([np.full(self.dim, len(t), np.float32) for t in texts])


def test_token_vectors_cache_and_zero_rows(tmp_path):
  cache = tmp_path / "tv.npy"
  t = _CountingTeacher()
  tv = si.token_vectors(_Tok(), t, cache)
  assert t.calls == 1 and t.texts == ["the", "cat", "sat"]  # specials and empty pieces never reach the teacher
  assert tv.shape == (_Tok.vocab_size, t.dim) and cache.is_file()
  zero = [i for i in range(_Tok.vocab_size) if i <= UNK or not _Tok.pieces[i].strip()]
  assert zero == [0, 1, 2, 3, 5, 7, 9]
  assert not tv[zero].any() and (tv[[4, 6, 8]] == 3).all()
  again = si.token_vectors(_Tok(), t, cache)
  assert t.calls == 1, "the second call must read the cache, not the teacher"
  np.testing.assert_array_equal(again, tv)
  # a cache of another teacher's width is stale: recomputed, not returned
  wide = _CountingTeacher(dim=8)
  assert si.token_vectors(_Tok(), wide, cache).shape == (_Tok.vocab_size, 8) and wide.calls == 1
  assert np.load(cache).shape == (_Tok.vocab_size, 8)


@pytest.mark.parametrize("d", [4, 16], ids=["narrower", "wider"])
def test_pca_table(d):
  V, Dt = 40, 8
  tv = np.random.default_rng(1).standard_normal((V, Dt)).astype(np.float32) * np.linspace(0.5, 3, Dt)
  tv[[0, 1, 2, 3, 17]] = 0                                                         # specials and an empty piece
  table = si.pca_table(tv, d, seed=0)
  used = np.abs(tv).sum(1) > 0
  assert table.shape == (V, d) and table.dtype == np.float32
  assert not table[~used].any()
  np.testing.assert_allclose(np.sqrt((table[used] ** 2).mean(1)), 1, rtol=1e-5)
  # the first min(d, D) channels are the principal components: per row a rescaling of the centred vector's projection
  k = min(d, Dt)
  x = tv[used] - tv[used].mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  proj = x @ vt[:k].T
  scale = np.linalg.norm(table[used][:, :k], axis=1) / np.linalg.norm(proj, axis=1)
  np.testing.assert_allclose(np.abs(table[used][:, :k]), np.abs(proj) * scale[:, None], rtol=1e-4, atol=1e-5)
  if d > Dt:  # extra channels are small noise, deterministic in the seed
    assert np.abs(table[used][:, Dt:]).max() < 0.1
    np.testing.assert_array_equal(table, si.pca_table(tv, d, seed=0))
