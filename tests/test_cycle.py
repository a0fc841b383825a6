"""The cycle-consistency term (loss_weights.cycle): z -> the decoder's soft tokens -> the frozen encoder -> ~z.
Tiny shapes (vocab 64, d 16, L 8); every new shape is a clang compile on the CPU."""
import numpy as np
import pytest

import studentz as sz
from studentz import Decoder, ModeBProjection, cycle_loss, joint_loss_fn, soft_tokens, teacher_forcing
from studentz_training.trainer import Trainer
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

B, L, D = 8, 8, 12
TINY = dict(vocab_size=64, d_model=16, hidden=24, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3, max_len=L,
            proj_dim=D, dec_blocks=2, dec_dilation_schedule=[1, 2], batch_size=B, dropout=0.0, pool_head=0,
            freeze=["encoder"], warmup_steps=2, steps=40, optimizer={"type": "adamw", "lr": 3e-3})


def toy(seed=0):
  rng = np.random.default_rng(seed)
  lens = rng.integers(4, L + 1, B)
  tokens = rng.integers(4, 64, (B, L)).astype(np.int32)
  mask = (np.arange(L)[None] < lens[:, None]).astype(np.float32)
  tokens[:, 0] = 1
  tokens[np.arange(B), lens - 1] = 2
  tokens[mask == 0] = 0
  zt = rng.standard_normal((B, D)).astype(np.float32)
  return {"tokens": tokens, "mask": mask, "teacher": zt / np.linalg.norm(zt, axis=1, keepdims=True),
          "mode_b": (np.arange(B) % 2).astype(np.float32)}


def models(cfg):
  Tensor.manual_seed(0)
  return {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}


def test_cycle_needs_a_frozen_encoder():
  with pytest.raises(ValueError, match="loss_weights.cycle"):
    sz.Config(**{**TINY, "freeze": []}, loss_weights={"ce": 1.0, "cycle": 1.0}).validate()
  sz.Config(**TINY, loss_weights={"ce": 1.0, "cycle": 1.0}).validate()
  sz.Config(**{**TINY, "freeze": []}, decoder_share=0.25, loss_weights={"ce": 0.0, "cycle": 1.0}).validate()


def test_cycle_is_finite_and_trains_only_the_decoder():
  cfg = sz.Config(**TINY, loss_weights={"ce": 1.0, "cycle": 1.0}).validate()
  m = models(cfg)
  batch = {k: Tensor(v) for k, v in toy().items()}
  parts = joint_loss_fn(m, batch)
  c = parts["cycle"].item()
  assert np.isfinite(c) and 0 <= c <= 2
  # the soft decode is a mixture of the encoder's embedding rows (each row of probabilities sums to 1)
  inp, _, _ = teacher_forcing(batch["tokens"], batch["mask"])
  feats = m["decoder"].hidden(inp, Tensor(toy()["teacher"]))
  x = soft_tokens(m["encoder"], m["decoder"], feats, batch["tokens"]).numpy()
  table = m["encoder"].embed.weight.numpy()
  assert x.shape == (B, L, cfg.d_model) and np.allclose(x[:, 0], table[1], atol=1e-6)
  assert np.all(x[:, 1:] <= table.max(0) + 1e-5) and np.all(x[:, 1:] >= table.min(0) - 1e-5)
  dec_w = list(get_state_dict(m["decoder"]).values())
  enc_w = [m["encoder"].embed.weight]
  loss = cycle_loss(m["encoder"], m["decoder"], feats, batch["tokens"], batch["mask"], batch["teacher"])
  grads = loss.gradient(*dec_w, *enc_w)
  g_dec = [g.numpy() for g in grads[:len(dec_w)]]
  assert all(np.isfinite(g).all() for g in g_dec) and sum(np.abs(g).sum() for g in g_dec) > 0
  assert np.abs(grads[-1].numpy()).sum() == 0                                      # the table is read, not trained


def test_cycle_cosine_rises_when_weighted():
  """Over 40 steps on one toy batch: with weight 4 the cycle cosine rises well above where it started and ends above
  the run with weight 0 (the term only watched), where the CE alone moves it."""
  def run(weight: float):
    cfg = sz.Config(**TINY, loss_weights={"ce": 1.0, "cycle": max(weight, 1e-9)}).validate()
    trainer = Trainer(cfg, models(cfg), joint_loss_fn)
    batch = toy()
    return [trainer.step(batch)["cycle"] for _ in range(cfg.steps)]
  on, off = run(4.0), run(0.0)
  assert np.isfinite(on).all() and np.isfinite(off).all()
  assert np.mean(on[:3]) - np.mean(on[-3:]) > 0.1 and np.mean(on[-3:]) < np.mean(off[-3:]) - 0.03, (on[-3:], off[-3:])
