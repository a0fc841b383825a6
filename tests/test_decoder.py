"""Decoder, joint loss and generation on a tiny config: cached steps == full forward, causality, CE masking and
smoothing, strategy equivalences, and an overfit run (both modes) through studentz.Trainer.

Shapes are kept to a few (B=2 and B=8, L=10) because every new tinygrad shape costs a clang compile on the CPU."""
from types import SimpleNamespace
import numpy as np
import pytest
from tinygrad import Tensor

from studentz_runtime import generate as G
from studentz import Decoder, ModeBProjection, decoder_ce, joint_loss_fn, teacher_forcing
from studentz_corpus.tokenizer import BOS, EOS, PAD
from studentz import Config, Encoder
from studentz_training.trainer import Trainer

V, D, L = 64, 12, 10  # Config.validate wants vocab_size >= 64


def tiny_cfg(**kw) -> Config:
  base = dict(vocab_size=V, d_model=16, hidden=24, n_blocks=2, kernel_size=3, dilation_schedule=[1, 2], proj_dim=D,
              max_len=L, dec_blocks=2, dec_dilation_schedule=[1, 2], dropout=0.0)
  return Config(**{**base, **kw}).validate()


def _rand_assign(t: Tensor, rng, loc=0.0, scale=0.3):
  t.assign(Tensor(rng.normal(loc, scale, t.shape).astype(np.float32))).realize()


@pytest.fixture(scope="module")
def dec():
  """A random decoder whose FiLM and per-mode norms are non-trivial, so the tests exercise every conditioning path."""
  Tensor.manual_seed(0)
  d = Decoder(tiny_cfg())
  rng = np.random.default_rng(0)
  for f in d.films: _rand_assign(f.weight, rng)
  for blk in d.blocks:
    _rand_assign(blk.norm.weight, rng, 1.0)
    _rand_assign(blk.norm.bias, rng)
  _rand_assign(d.norm.bias, rng)
  return d


def _prefix(rng, B=2):
  toks = rng.integers(4, V, (B, L)).astype(np.int32)
  toks[:, 0] = BOS
  return toks


def test_incremental_equals_full_forward(dec):
  rng = np.random.default_rng(1)
  toks, z, mode = _prefix(rng), rng.normal(size=(2, D)).astype(np.float32), np.array([0, 1], np.int32)
  full = dec(Tensor(toks), Tensor(z), Tensor(mode)).numpy()                       # (2, L, V)
  st = G.DecoderState(dec, 2).reset(z, mode)
  inc = np.stack([st.step(toks[:, t]) for t in range(L)], 1)                      # JIT captured at t=1, replayed after
  assert np.abs(full - inc).max() < 1e-4
  # reset really restarts: a second pass over the same prefix gives the same logits
  st.reset(z, mode)
  again = np.stack([G.step(toks[:, t], st)[0] for t in range(L)], 1)
  assert np.abs(full - again).max() < 1e-4
  # parents hand each row another row's cache (beam search): swapping rows mid-prefix continues the swapped rows
  st.reset(z, mode)
  for t in range(5): st.step(toks[:, t])
  swapped = [st.step(toks[::-1, 5], parents=[1, 0])] + [st.step(toks[::-1, t]) for t in range(6, L)]
  assert np.abs(full[::-1, 5:] - np.stack(swapped, 1)).max() < 1e-4


def test_draft_steps_equal_full_forward_and_stay_causal():
  """z's per-position draft (dec_draft): the cached steps add each position's own row, as the full forward does, beam
  reordering carries it, and a position still never sees a later token."""
  Tensor.manual_seed(1)
  d = Decoder(tiny_cfg(dec_draft=3))
  rng = np.random.default_rng(7)
  _rand_assign(d.draft_out.weight, rng)                                           # zero at init: made non-trivial
  toks, z, mode = _prefix(rng), rng.normal(size=(2, D)).astype(np.float32), np.array([0, 1], np.int32)
  draft = d.draft(Tensor(z), L).numpy()                                           # (2, L, d)
  assert np.abs(draft[:, 0] - draft[:, 1]).max() > 1e-3                           # one row per position
  full = d(Tensor(toks), Tensor(z), Tensor(mode)).numpy()
  st = G.DecoderState(d, 2).reset(z, mode)
  for t in range(5): st.step(toks[:, t])
  swapped = [st.step(toks[::-1, 5], parents=[1, 0])] + [st.step(toks[::-1, t]) for t in range(6, L)]
  assert np.abs(full[::-1, 5:] - np.stack(swapped, 1)).max() < 1e-4
  toks2 = toks.copy()
  toks2[:, 6] = np.where(toks[:, 6] == 4, 5, 4)
  out2 = d(Tensor(toks2), Tensor(z), Tensor(mode)).numpy()
  assert np.abs(out2[:, :6] - full[:, :6]).max() == 0 and np.abs(out2[:, 6:] - full[:, 6:]).max() > 1e-3


def test_causal(dec):
  rng = np.random.default_rng(2)
  toks = _prefix(rng)
  toks[1] = toks[0]
  toks[1, 6] = 4 if toks[0, 6] != 4 else 5                                        # rows differ only at position 6
  z = np.repeat(rng.normal(size=(1, D)).astype(np.float32), 2, 0)
  out = dec(Tensor(toks), Tensor(z)).numpy()
  assert np.abs(out[0, :6] - out[1, :6]).max() == 0
  assert np.abs(out[0, 6:] - out[1, 6:]).max() > 1e-3


def test_group_norm_refused_for_incremental():
  with pytest.raises(ValueError, match="layer"): G.DecoderState(Decoder(tiny_cfg(), norm="group"), 2)


def _np_ce(logits, targets, mask, eps):
  x = logits - logits.max(-1, keepdims=True)
  logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  tok = (1 - eps) * nll - eps * logp.mean(-1)
  return (tok * mask).sum() / mask.sum()


def test_ce_ignores_pad_and_matches_numpy_smoothing():
  rng = np.random.default_rng(3)
  toks = _prefix(rng)
  mask = np.ones((2, L), np.float32)
  toks[0, 7:], mask[0, 7:] = PAD, 0
  _, targets, tmask = teacher_forcing(Tensor(toks), Tensor(mask))
  targets, tmask = targets.numpy(), tmask.numpy()
  assert tmask[0].sum() == 6 and tmask[1].sum() == L - 1 and targets[0, 6] == PAD
  logits = rng.normal(size=(2, L, V)).astype(np.float32)
  loss = lambda lg, eps: decoder_ce(Tensor(lg), Tensor(targets), Tensor(tmask), eps).item()  # noqa: E731
  base = loss(logits, 0.1)
  moved = logits.copy()
  moved[tmask == 0] = rng.normal(size=(int((tmask == 0).sum()), V)) * 10        # only pad positions change
  assert loss(moved, 0.1) == pytest.approx(base, abs=1e-6)
  for eps in (0.0, 0.1, 0.3):
    assert loss(logits, eps) == pytest.approx(_np_ce(logits.astype(np.float64), targets, tmask, eps), rel=1e-5)
  assert loss(logits, 0.3) != pytest.approx(loss(logits, 0.0), rel=1e-3)


def test_greedy_deterministic_and_stops_at_eos(dec):
  z = np.random.default_rng(4).normal(size=(2, D)).astype(np.float32)
  a, b = G.greedy(dec, z), G.greedy(dec, z)
  assert a.shape == (2, L - 1) and (a == b).all()
  assert not np.isin(a, [BOS]).any()
  bias = dec.head.bias.numpy()
  try:  # EOS made the argmax everywhere: each row stops after one token, the rest is PAD
    dec.head.bias.assign(Tensor(np.where(np.arange(V) == EOS, 100.0, bias).astype(np.float32))).realize()
    out = G.greedy(dec, z)
    assert (out[:, 0] == EOS).all() and (out[:, 1:] == PAD).all()
  finally:
    dec.head.bias.assign(Tensor(bias)).realize()
  assert (G.greedy(dec, z) == a).all()


def test_sampling_seeded_and_strategy_equivalences(dec):
  z = np.random.default_rng(5).normal(size=(2, D)).astype(np.float32)
  s0, s0b, s1 = (G.sample(dec, z, temperature=1.5, seed=s) for s in (0, 0, 1))
  assert (s0 == s0b).all() and not (s0 == s1).all()
  g = G.greedy(dec, z)
  assert (G.sample(dec, z, top_k=1, seed=7) == g).all()
  assert (G.sample(dec, z, top_p=1e-6, seed=7) == g).all()                       # nucleus of one token
  assert (G.beam_search(dec, z, beam=1) == g).all()
  p = G.filter_logits(np.array([[0.0, 1.0, 2.0, 3.0]]), top_k=2)
  assert (p[0, :2] == 0).all() and p.sum() == pytest.approx(1)
  p = G.filter_logits(np.log(np.array([[0.5, 0.3, 0.15, 0.05]])), top_p=0.75)    # 0.5 + 0.3 reaches 0.75
  np.testing.assert_allclose(p[0], [0.625, 0.375, 0, 0])


class WordBackend:
  """What the correction's edits read of a tokenizer: every id i >= 4 a word of its own ("Ġ" marks a word start)."""

  def encode(self, text, add_special_tokens=False): return SimpleNamespace(ids=[int(w[1:]) for w in text.split()])

  def id_to_token(self, i): return f"\u0120w{i}"

  def get_vocab_size(self): return V


class WordTokenizer:
  """Stand-in for StudentTokenizer in the generation plumbing: id i >= 4 <-> the word "w{i}"."""
  backend = WordBackend()

  def decode_batch(self, ids):
    out = []
    for row in np.asarray(ids):
      row = row[:np.flatnonzero(row == EOS)[0]] if (row == EOS).any() else row
      out.append(" ".join(f"w{i}" for i in row if i > 3))
    return out

  def encode_batch(self, texts, max_len):
    ids, mask = np.zeros((len(texts), max_len), np.int32), np.zeros((len(texts), max_len), np.float32)
    for r, t in enumerate(texts):
      row = [BOS] + [int(w[1:]) for w in t.split()][:max_len - 2] + [EOS]
      ids[r, :len(row)], mask[r, :len(row)] = row, 1
    return ids, mask


@pytest.fixture(scope="module")
def trained():
  """Joint encoder + decoder + mode-B projection overfit on 8 made-up sentences, rows alternating modes A/B."""
  cfg = tiny_cfg(batch_size=8, steps=150, warmup_steps=10, label_smoothing=0.0,
                 optimizer={"type": "adamw", "lr": 1e-2, "weight_decay": 0.0},
                 loss_weights={"cos": 1.0, "mse": 0.1, "ce": 1.0, "sem": 0.0})
  Tensor.manual_seed(1)
  rng = np.random.default_rng(6)
  toks, mask = np.zeros((8, L), np.int32), np.zeros((8, L), np.float32)
  for i in range(8):
    n = int(rng.integers(3, 8))
    toks[i, 0], toks[i, 1:n + 1], toks[i, n + 1], mask[i, :n + 2] = BOS, rng.integers(4, V, n), EOS, 1
  teacher = rng.normal(size=(8, D)).astype(np.float32)
  teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
  models = {"encoder": Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  tr = Trainer(cfg, models, joint_loss_fn)
  for s in range(cfg.steps):
    out = tr.step({"tokens": toks, "mask": mask, "teacher": teacher,
                   "mode_b": ((np.arange(8) + s) % 2).astype(np.float32)})
  return models, toks, mask, teacher, out


def test_overfit_both_modes(trained):
  models, toks, mask, teacher, last = trained
  assert set(last) >= {"loss", "cos", "mse", "ce", "ce_a", "ce_b"} and last["ce"] < 0.1
  assert last["ce_a"] < 0.1 and last["ce_b"] < 0.1
  enc, dec, proj = models["encoder"], models["decoder"], models["proj_b"]
  want = toks[:, 1:]                                                              # content, EOS, then PAD
  zs = enc(Tensor(toks), Tensor(mask)).numpy()
  assert (G.greedy(dec, zs, mode=0) == want).all()
  assert (G.greedy(dec, proj(Tensor(teacher)).numpy(), mode=1) == want).all()
  tok = WordTokenizer()
  texts = G.decode(dec, zs, tok, strategy="beam", beam=2)
  assert texts == tok.decode_batch(want)


def test_step_top_is_the_host_shortlist(dec):
  """The device's shortlist (values, ids, log-normaliser) is logits.shortlist of the step's masked logits, also
  across a beam's reordering of the rows."""
  from studentz_runtime.logits import _mask_specials, shortlist
  rng = np.random.default_rng(3)
  z, mode, toks = rng.normal(size=(4, D)).astype(np.float32), np.array([0, 1, 0, 1], np.int32), _prefix(rng, 4)
  a, b = G.DecoderState(dec, 4).reset(z, mode), G.DecoderState(dec, 4).reset(z, mode)
  for t in range(4):
    par = np.array([0, 0, 3, 2], np.int32) if t == 2 else None
    vals, idx, lse = shortlist(_mask_specials(a.step(toks[:, t], par)), 6)
    got = b.step_top(toks[:, t], par, 6)
    np.testing.assert_allclose(got[0], vals, atol=1e-5)
    assert (got[1] == idx).all()
    np.testing.assert_allclose(got[2], lse, atol=1e-4)


@pytest.mark.parametrize("on_device", [False, True])
def test_correct_rounds(trained, on_device, monkeypatch):
  """on_device: candidates choose from step_top's shortlist, as on a GPU (a CPU device copies the logits)."""
  from tinygrad.codegen import to_program_cache  # every kernel tinygrad has compiled
  monkeypatch.setattr(G.DecoderState, "shortlist_on_device", on_device, raising=False)
  models, toks, mask, _, _ = trained
  enc, dec = models["encoder"], models["decoder"]
  tok = WordTokenizer()
  zs = enc(Tensor(toks), Tensor(mask)).numpy()
  embed, seen = G.student_embed_fn(enc, tok), []

  def judge(texts):  # after each round's decode: what the rounds have compiled and captured so far
    out = embed(texts)
    seen.append((len(to_program_cache), {b: (st._jit.captured, *(j.captured for j in st._top_jits.values()))
                                         for b, st in G._STATES[dec].items()}))
    return out
  res = G.rerank_decode(dec, zs, tok, judge, k=3, rounds=3, seed=0)
  score = [r["score"] for r in res["rounds"]]
  assert len(score) == 3 and score[2] >= score[1] >= score[0]
  assert res["rounds"][1]["seconds"] >= res["rounds"][0]["seconds"]
  # every round replays round 1's captured pass (one state of k*N rows) and its fluency pass (one shape); round 2 adds
  # the edits' teacher-forced pass (one state of N rows), which round 3 replays: nothing new compiles after round 2
  captured = seen[0][1][3 * len(zs)]
  assert seen[1][1][3 * len(zs)] == captured and (captured[-1] if on_device else captured[0]) is not None
  assert seen[1] == seen[2] and len(zs) in seen[1][1]
  # greedy already reproduces each sentence, and re-embedding it gives z_target back
  assert res["texts"] == tok.decode_batch(toks[:, 1:]) and (res["cos"] > 0.999).all()
  assert res["rounds"][0]["texts"] == res["texts"]


def test_bow_loss_is_the_bag_of_words_nll_of_the_input_bias(dec):
  """loss_weights.bow: z_in(z) read by the output head as one distribution, -log p of each real target token."""
  from studentz import bow_loss
  rng = np.random.default_rng(11)
  z, targets = rng.normal(size=(2, D)).astype(np.float32), rng.integers(4, V, (2, L)).astype(np.int32)
  mask = (np.arange(L)[None] < np.array([[L], [4]])).astype(np.float32)
  got = bow_loss(dec, Tensor(z), Tensor(targets), Tensor(mask)).numpy()
  zb = z @ dec.z_in.weight.numpy().T + dec.z_in.bias.numpy()
  logits = zb @ dec.head.weight.numpy().T + dec.head.bias.numpy()                # the fixture's separate head
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  want = -(np.take_along_axis(logp, targets, 1) * mask).sum() / mask.sum()
  assert abs(float(got) - want) < 1e-4


def test_bow_needs_a_decoder_objective():
  with pytest.raises(ValueError, match="loss_weights.bow trains the decoder"):
    tiny_cfg(loss_weights={"cos": 1.0, "ce": 0.0, "bow": 0.5})
  assert tiny_cfg(loss_weights={"ce": 1.0, "bow": 0.5}).loss_weights["bow"] == 0.5
