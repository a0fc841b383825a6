"""train.py --init-from into a deeper or wider model: the checkpoint's schedule a prefix of the run's, the added blocks
start as the identity; a --hidden that is a multiple of the checkpoint's copies each unit (the same z and logits as
the checkpoint's models either way); anything else refused in one line naming the field; a training step moves the
added blocks and the copies apart. Tiny shapes: every new one is a clang compile."""
import json

import numpy as np
import pytest
from tinygrad import Tensor

import train
from studentz import Config, Decoder, Encoder, ModeBProjection, joint_loss_fn
from studentz_corpus.tokenizer import BOS, EOS
from studentz_runtime.checkpoint import save_tensors
from studentz_training.trainer import Trainer
from tinygrad.nn.state import get_state_dict

V, D, L, B = 64, 12, 10, 4


class FakeTok:  # init_from_checkpoint compares only the tokenizer's JSON
  def to_json_str(self) -> str: return '{"fake": 1}'


def tiny_cfg(**kw) -> Config:
  base = dict(vocab_size=V, d_model=16, hidden=24, n_blocks=2, kernel_size=3, dilation_schedule=[1, 2], proj_dim=D,
              max_len=L, dec_blocks=2, dec_dilation_schedule=[1, 2], dropout=0.0, batch_size=B, warmup_steps=0,
              loss_weights={"cos": 1.0, "mse": 1.0, "ce": 1.0, "sem": 0.0})
  return Config(**{**base, **kw}).validate()


def rand(t: Tensor, rng, loc=0.0):
  t.assign(Tensor(rng.normal(loc, 0.3, t.shape).astype(np.float32))).realize()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """A checkpoint folder of the tiny models, FiLM and norms made non-trivial so every path of the old blocks counts."""
  Tensor.manual_seed(0)
  cfg, rng = tiny_cfg(), np.random.default_rng(0)
  models = {"encoder": Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  for f in models["decoder"].films: rand(f.weight, rng)
  for blk in models["encoder"].blocks + models["decoder"].blocks: rand(blk.norm.bias, rng)
  d = tmp_path_factory.mktemp("ckpt")
  save_tensors(d / "model.safetensors",
               {f"{k}.{n}": t for k, m in models.items() for n, t in get_state_dict(m).items()})
  (d / "config.json").write_text(json.dumps({"format_version": 1, "step": 0, "config": cfg.to_dict()}))
  (d / "tokenizer.json").write_text(FakeTok().to_json_str())
  return d, cfg, models


def batch(seed=1):
  rng = np.random.default_rng(seed)
  toks, mask = np.zeros((B, L), np.int32), np.zeros((B, L), np.float32)
  for i in range(B):
    n = int(rng.integers(3, L - 2))
    toks[i, 0], toks[i, 1:n + 1], toks[i, n + 1], mask[i, :n + 2] = BOS, rng.integers(4, V, n), EOS, 1
  teacher = rng.normal(size=(B, D)).astype(np.float32)
  return {"tokens": toks, "mask": mask, "teacher": teacher, "mode_b": (np.arange(B) % 2).astype(np.float32)}


def deeper(cfg, *pairs):
  """Fresh models of cfg with the overrides (a schedule alone sets its block count), loaded from the checkpoint."""
  new = cfg.override(*pairs)
  Tensor.manual_seed(5)  # another init than the checkpoint's, so a block that was not loaded would show
  return new, {"encoder": Encoder(new), "decoder": Decoder(new), "proj_b": ModeBProjection(new)}


def test_deeper_encoder_and_decoder_compute_what_the_checkpoint_did(ckpt, capsys):
  d, cfg, old = ckpt
  new, models = deeper(cfg, ("dilation_schedule", "[1, 2, 4]"), ("dec_dilation_schedule", "[1, 2, 1, 2]"))
  assert (new.n_blocks, new.dec_blocks) == (3, 4)
  train.init_from_checkpoint(models, d, FakeTok(), {"dilation_schedule", "dec_dilation_schedule"})
  err = capsys.readouterr().err.splitlines()
  assert "added as identity: encoder blocks [2] (dilations [4]); decoder blocks [2, 3] (dilations [1, 2])" in err[-1]
  b = batch()
  toks, mask = Tensor(b["tokens"]), Tensor(b["mask"])
  z_old, z_new = old["encoder"](toks, mask).numpy(), models["encoder"](toks, mask).numpy()
  np.testing.assert_allclose(z_new, z_old, atol=1e-5, rtol=1e-5)
  args = (toks, Tensor(b["teacher"]), Tensor(b["mode_b"].astype(np.int32)))
  np.testing.assert_allclose(models["decoder"](*args).numpy(), old["decoder"](*args).numpy(), atol=1e-5, rtol=1e-5)
  for blk in models["encoder"].blocks[2:] + models["decoder"].blocks[2:]:  # identity by the zero output only
    assert not blk.out.weight.numpy().any() and not blk.out.bias.numpy().any() and blk.conv.weight.numpy().any()
  assert not any(f.weight.numpy().any() for f in models["decoder"].films[2:])


@pytest.mark.parametrize("pairs,named,says", [
  ((("dilation_schedule", "[2, 1, 4]"),), {"dilation_schedule"},
   "dilation_schedule [2, 1, 4] does not start with the checkpoint's [1, 2]"),
  ((("dilation_schedule", "[1]"),), {"dilation_schedule"}, "dilation_schedule [1] does not start with"),
  ((("dec_dilation_schedule", "[1, 2, 4]"),), set(), "dec_dilation_schedule is [1, 2] in the checkpoint but [1, 2, 4]"),
  ((("hidden", "32"),), set(), "hidden is 24 in the checkpoint but 32 in this run"),
])
def test_other_mismatches_are_refused_in_one_line(ckpt, capsys, pairs, named, says):
  d, cfg, _ = ckpt
  _, models = deeper(cfg, *pairs)
  with pytest.raises(SystemExit) as e: train.init_from_checkpoint(models, d, FakeTok(), named)
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: --init-from: ") and says in err[0], err


def test_a_schedule_on_the_command_line_sets_the_block_count(ckpt, capsys):
  d = ckpt[0]
  assert train.main(["--init-from", str(d), "--dilation_schedule", "[1, 2, 4, 8]", "--print-config"]) == 0
  cfg = json.loads(capsys.readouterr().out)
  assert cfg["n_blocks"] == 4 and cfg["dilation_schedule"] == [1, 2, 4, 8] and cfg["hidden"] == 24


def test_the_decoder_shape_comes_from_a_checkpoint_that_holds_one(ckpt, capsys):
  """No schedule flags: the run takes the checkpoint's decoder (2 blocks, not the default 6), so it loads as it is."""
  d = ckpt[0]
  assert train.main(["--init-from", str(d), "--loss_weights.ce", "1", "--print-config"]) == 0
  out = capsys.readouterr()
  cfg = json.loads(out.out)
  assert cfg["dec_blocks"] == 2 and cfg["dec_dilation_schedule"] == [1, 2], cfg
  assert "decoder shape from the checkpoint" in out.err


def test_a_training_step_moves_the_added_blocks(ckpt):
  d, cfg, _ = ckpt
  new, models = deeper(cfg, ("dilation_schedule", "[1, 2, 4]"), ("dec_dilation_schedule", "[1, 2, 4]"))
  train.init_from_checkpoint(models, d, FakeTok(), {"dilation_schedule", "dec_dilation_schedule"})
  out = Trainer(new, models, joint_loss_fn).step(batch(2))
  assert np.isfinite(out["loss"])
  for name in ("encoder", "decoder"):
    assert np.abs(models[name].blocks[2].out.weight.numpy()).max() > 0, f"the added {name} block did not train"


def test_an_int8_checkpoint_warm_starts_as_its_float_values(ckpt, tmp_path):
  """--init-from models/streaming (shipped int8): the weights load dequantized, the same z as the int8 file computes."""
  from studentz_runtime.quantize import load_float32, quantize_checkpoint
  d, cfg, _ = ckpt
  quantize_checkpoint(d, tmp_path / "q")
  _, models = deeper(cfg)
  train.init_from_checkpoint(models, tmp_path / "q", FakeTok())
  want = load_float32(tmp_path / "q" / "model.safetensors")
  for n, t in get_state_dict(models["encoder"]).items():
    np.testing.assert_allclose(t.numpy(), want[f"encoder.{n}"], atol=1e-6, err_msg=n)


def test_wider_models_compute_what_the_checkpoint_did_then_train_apart(ckpt, capsys):
  """--hidden 48 from a checkpoint of hidden 24: every unit copied twice, the same z and logits; one step later the
  two copies of a unit differ (their output shares differ, so their gradients do)."""
  d, cfg, old = ckpt
  new, models = deeper(cfg, ("hidden", "48"))
  train.init_from_checkpoint(models, d, FakeTok(), {"hidden"})
  assert "widened: hidden 24 -> 48 (each unit copied 2 times)" in capsys.readouterr().err
  b = batch()
  toks, mask = Tensor(b["tokens"]), Tensor(b["mask"])
  np.testing.assert_allclose(models["encoder"](toks, mask).numpy(), old["encoder"](toks, mask).numpy(), atol=1e-5,
                             rtol=1e-5)
  args = (toks, Tensor(b["teacher"]), Tensor(b["mode_b"].astype(np.int32)))
  np.testing.assert_allclose(models["decoder"](*args).numpy(), old["decoder"](*args).numpy(), atol=1e-5, rtol=1e-5)
  Trainer(new, models, joint_loss_fn).step(batch(2))
  for name in ("encoder", "decoder"):
    w = models[name].blocks[0].conv.weight.numpy()                                 # (48, d, k): unit u -> 2u, 2u+1
    assert np.abs(w[0::2] - w[1::2]).max() > 0, f"the {name}'s copies trained alike"


def test_widening_keeps_group_norm_and_block_context():
  """Masked GroupNorm takes its statistics per group of units: the copies stay in their unit's group."""
  from studentz_training import widen
  cfg = tiny_cfg(norm="group", block_context=True, hidden=16)
  Tensor.manual_seed(0)
  enc, rng = Encoder(cfg), np.random.default_rng(3)
  for blk, ctx in zip(enc.blocks, enc.ctx_in): rand(blk.norm.bias, rng), rand(ctx.weight, rng)
  arrays = {f"encoder.{n}": t.numpy() for n, t in get_state_dict(enc).items()}
  wide = Encoder(cfg.override(("hidden", "48")))
  from studentz_runtime.checkpoint import assign_state
  assign_state(wide, widen.widen(arrays, 16, 3), prefix="encoder.")
  b = batch()
  toks, mask = Tensor(b["tokens"]), Tensor(b["mask"])
  np.testing.assert_allclose(wide(toks, mask).numpy(), enc(toks, mask).numpy(), atol=1e-5, rtol=1e-5)


def test_a_width_that_is_not_a_multiple_is_refused(ckpt, capsys):
  d, cfg, _ = ckpt
  _, models = deeper(cfg, ("hidden", "36"))
  with pytest.raises(SystemExit): train.init_from_checkpoint(models, d, FakeTok(), {"hidden"})
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --init-from: hidden is 24 in the checkpoint but 36") and "a multiple" in err, err


def test_a_draft_added_to_a_checkpoint_starts_at_nothing_then_trains(ckpt, capsys, tmp_path):
  """--dec_draft R on a checkpoint without a draft: the same logits at the start, the draft moves after one step; a
  checkpoint with another draft rank is refused in one line."""
  d, cfg, old = ckpt
  new, models = deeper(cfg, ("dec_draft", "3"), ("loss_weights.bow", "0.1"))
  train.init_from_checkpoint(models, d, FakeTok(), {"dec_draft"})
  assert "added as identity: decoder draft_in, decoder draft_out" in capsys.readouterr().err.splitlines()[-1]
  b = batch()
  args = (Tensor(b["tokens"]), Tensor(b["teacher"]), Tensor(b["mode_b"].astype(np.int32)))
  np.testing.assert_allclose(models["decoder"](*args).numpy(), old["decoder"](*args).numpy(), atol=1e-5, rtol=1e-5)
  out = Trainer(new, models, joint_loss_fn).step(batch(2))  # the JIT'd step, the bag-of-words term in it too
  assert np.isfinite(out["bow"]) and out["bow"] > 0
  assert np.abs(models["decoder"].draft_out.weight.numpy()).max() > 0
  save_tensors(tmp_path / "model.safetensors",
               {f"{k}.{n}": t for k, m in models.items() for n, t in get_state_dict(m).items()})
  (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "step": 1, "config": new.to_dict()}))
  (tmp_path / "tokenizer.json").write_text(FakeTok().to_json_str())
  _, other = deeper(cfg, ("dec_draft", "5"))
  with pytest.raises(SystemExit): train.init_from_checkpoint(other, tmp_path, FakeTok(), {"dec_draft"})
  assert "dec_draft is 3 in the checkpoint but 5 in this run" in capsys.readouterr().err
