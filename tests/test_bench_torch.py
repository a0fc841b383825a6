"""bench/torch_twin.py: the PyTorch twins that python -m bench times tinygrad against compute the same losses on the
same weights (the benchmark's ratios are only honest if both sides do the same work)."""
import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict

import studentz as sz
from studentz import Decoder, ModeBProjection, joint_loss_fn

torch = pytest.importorskip("torch")
from bench import torch_twin as bt  # noqa: E402

TINY = dict(vocab_size=300, d_model=16, hidden=32, n_blocks=2, dilation_schedule=[1, 2], kernel_size=3, proj_dim=24,
            max_len=12, dec_blocks=2, dec_dilation_schedule=[1, 2], dropout=0.0, batch_size=6)


def _batch(cfg, rng):
  B, L = cfg.batch_size, cfg.max_len
  lens = rng.integers(3, L + 1, B)
  mask = (np.arange(L)[None] < lens[:, None]).astype(np.float32)
  tokens = (rng.integers(4, cfg.vocab_size, (B, L)) * mask).astype(np.int32)
  teacher = rng.standard_normal((B, cfg.proj_dim)).astype(np.float32)
  return {"tokens": tokens, "mask": mask, "teacher": teacher / np.linalg.norm(teacher, axis=1, keepdims=True),
          "mode_b": (np.arange(B) % 2).astype(np.float32)}


def _joint_models(cfg, rng, seed: int) -> dict:
  """Encoder, decoder and mode-B projection with random weights: FiLM and the mode-B MLP start at zero, and random
  values make the twin check them too."""
  Tensor.manual_seed(seed)
  models = {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
  for m in models.values():
    for t in get_state_dict(m).values(): t.assign(Tensor(rng.standard_normal(t.shape).astype(np.float32) * 0.2))
  return models


@pytest.mark.parametrize("dec_output,extra", [("separate", {}), ("tied", {}),
                                              ("separate", {"pool_head": 8, "block_context": True})])
def test_joint_twin_same_loss_parts(dec_output, extra):
  weights = {"cos": 1.0, "mse": 1.0, "ce": 1.0, "sem": 0.1}
  cfg = sz.Config(**TINY, dec_output=dec_output, loss_weights=weights, **extra).validate()
  rng = np.random.default_rng(1)
  batch = _batch(cfg, rng)
  models = _joint_models(cfg, rng, seed=3)
  with Context(TRAINING=0):
    ours = {k: v.item() for k, v in joint_loss_fn(models, {k: Tensor(v) for k, v in batch.items()}).items()}
  twin = bt.TorchJoint(cfg)
  bt.load_from_tinygrad(twin, {f"{k}.{n}": t.numpy() for k, m in models.items() for n, t in get_state_dict(m).items()})
  twin.eval()
  with torch.no_grad():
    theirs = twin(torch.from_numpy(batch["tokens"]).long(), torch.from_numpy(batch["mask"]),
                  torch.from_numpy(batch["teacher"]), torch.from_numpy(batch["mode_b"]))
  for k in ("cos", "mse", "sem", "ce", "loss"):
    assert ours[k] == pytest.approx(float(theirs[k]), rel=1e-4, abs=1e-5), k
  assert ours["ce"] > 1.0  # a real cross-entropy over 300 tokens, not a zero from an empty mask


def test_joint_twin_same_gradients():
  """Every weight's gradient of the joint loss, tinygrad's against the twin's autograd: the decoder's conditioning (z_in
  and the FiLMs as one GEMM with gathered gradients) and the rest of the backward pass compute what they should."""
  cfg = sz.Config(**TINY, loss_weights={"cos": 1.0, "mse": 1.0, "ce": 1.0, "sem": 0.1}).validate()
  rng = np.random.default_rng(2)
  batch = _batch(cfg, rng)
  models = _joint_models(cfg, rng, seed=4)
  named = {f"{k}.{n}": t for k, m in models.items() for n, t in get_state_dict(m).items()}
  with Context(TRAINING=0):
    loss = joint_loss_fn(models, {k: Tensor(v) for k, v in batch.items()})["loss"]
    ours = dict(zip(named, (g.numpy() for g in loss.gradient(*named.values()))))
  twin = bt.TorchJoint(cfg)
  bt.load_from_tinygrad(twin, {k: t.numpy() for k, t in named.items()})
  twin.eval()
  twin(torch.from_numpy(batch["tokens"]).long(), torch.from_numpy(batch["mask"]), torch.from_numpy(batch["teacher"]),
       torch.from_numpy(batch["mode_b"]))["loss"].backward()
  theirs = {n: p.grad.numpy() for n, p in twin.named_parameters()}
  for k, g in ours.items():
    t = theirs[bt.twin_name(k)]
    np.testing.assert_allclose(g, t, rtol=2e-3, atol=2e-5 * max(1.0, float(np.abs(t).max())), err_msg=k)
  assert any(np.abs(g).max() > 1e-3 for k, g in ours.items() if ".films." in k)  # the FiLMs do get a gradient


def test_twin_refuses_weights_that_do_not_match():
  cfg = sz.Config(**TINY).validate()
  Tensor.manual_seed(0)
  sd = {f"encoder.{n}": t.numpy() for n, t in get_state_dict(sz.Encoder(cfg)).items()}  # no decoder weights
  with pytest.raises(ValueError, match="missing"):
    bt.load_from_tinygrad(bt.TorchJoint(cfg), sd)


def test_bench_checks_several_steps_against_the_twin(tmp_path, monkeypatch):
  """bench train --check-steps 3: both sides' losses over three optimiser steps (the second captures tinygrad's
  JIT, the third replays it) must agree; a twin whose optimiser differs from the second step on is caught, which a
  first-step check alone cannot see (a wrong searched GEMM schedule was found that way on an H100)."""
  import json
  from bench import speed as bench
  from bench.__main__ import main as bench_main
  argv = ["train", "--precision", "fp32", "--batch", "4", "--len", "8", "--d", "16", "--h", "24", "--k", "3",
          "--dilations", "1", "2", "--vocab", "64", "--D", "12", "--check-steps", "3", "--reps", "1", "--warmup", "0"]
  assert bench_main([*argv, "--json", str(tmp_path / "same.json")]) == 0
  row = json.loads((tmp_path / "same.json").read_text())[0]
  assert len(row["tinygrad_losses"]) == len(row["torch_losses"]) == 3 and row["same_loss"], row
  make = bt.make_optimizer
  def faster(model, cfg):  # the twin's learning rate doubled: the same first loss, other losses after it
    opt, sched = make(model, cfg)
    for g in opt.param_groups: g["initial_lr"] = g["lr"] = 2 * g["lr"]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, sched.lr_lambdas[0])
  monkeypatch.setattr(bt, "make_optimizer", faster)
  assert bench_main([*argv, "--json", str(tmp_path / "other.json")]) == 0
  row = json.loads((tmp_path / "other.json").read_text())[0]
  assert row["tinygrad_first_loss"] == pytest.approx(row["torch_first_loss"], rel=1e-4) and not row["same_loss"], row


def test_bench_twin_trains_the_pool_head_and_block_context(tmp_path):
  """The twin of a student with both extras takes the same three optimiser steps (the paths start at zero, so the
  steps after the first are where their gradients show), with token targets (the GPU default's objective) gathered
  from a table on the device (train.py on a GPU); and the pool head's with the targets copied in each step (its CPU
  path)."""
  import json
  from bench.__main__ import main as bench_main
  base = ["train", "--precision", "fp32", "--batch", "4", "--len", "8", "--d", "16", "--h", "24", "--k", "3",
          "--dilations", "1", "2", "--vocab", "64", "--D", "12", "--check-steps", "3", "--reps", "1", "--warmup", "0",
          "--pool-head", "8", "--tok", "0.25", "--json", str(tmp_path / "rows.json")]
  for where, extra in (("device", ["--block-context"]), ("host", [])):
    assert bench_main([*base, "--tok-table", where, *extra]) == 0
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert row["same_loss"] and row["tok"] == 0.25 and row["tok_table"] == where, row
    assert row.get("block_context", False) == bool(extra), row
