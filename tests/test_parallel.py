"""Data-parallel training (parallel.py, studentz.Trainer(devices=N)) on two CPU devices of this host: the same math as
one device, checkpoints that load on one device and resume exactly, and train.py's check of the batch size.

One tiny student (vocab 64, d 16, 1 block, L 8, B 4) keeps the clang compiles to seconds on a 2-core CPU.
"""
import numpy as np
import pytest

import studentz as sz
from studentz_training.trainer import Trainer
import train
from studentz_runtime.checkpoint import assign_state, load_tensors
from studentz_training.run_folder import Checkpointer
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

CFG = dict(vocab_size=64, d_model=16, hidden=24, n_blocks=1, dilation_schedule=[2], kernel_size=3, proj_dim=12,
           max_len=8, batch_size=4, pool="gated", warmup_steps=1, steps=10, dropout=0.0)


def make_batch(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  B, L = CFG["batch_size"], CFG["max_len"]
  mask = (np.arange(L)[None] < rng.integers(3, L + 1, B)[:, None]).astype(np.float32)
  return {"tokens": (rng.integers(4, CFG["vocab_size"], (B, L)) * mask).astype(np.int32), "mask": mask,
          "teacher": rng.standard_normal((B, CFG["proj_dim"])).astype(np.float32)}


BATCHES = [make_batch(0), make_batch(1)]


def weights(enc) -> dict:
  return {k: v.numpy() for k, v in get_state_dict(enc).items()}


def run(devices: int, **over):
  """Two steps from the same seed; (trainer, encoder, per-step figures, per-step weights)."""
  cfg = sz.Config(**{**CFG, **over}).validate()
  Tensor.manual_seed(0)
  enc = sz.Encoder(cfg)
  tr = Trainer(cfg, {"encoder": enc}, sz.distill_loss_fn, devices=devices)
  figs, ws = [], []
  for b in BATCHES:
    figs.append(tr.step(b))
    ws.append(weights(enc))
  return tr, enc, figs, ws


@pytest.fixture(scope="module")
def one():
  return run(1)


@pytest.fixture(scope="module")
def two():
  return run(2)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_two_devices_step_like_one(one, two):
  tr2 = two[0]
  assert len(tr2.devices) == 2 and all(t.device == tr2.devices for t in tr2.named.values())
  assert one[0].devices is None and all(isinstance(t.device, str) for t in one[0].named.values())
  for step in range(2):
    f1, f2 = one[2][step], two[2][step]
    for k in ("loss", "cos", "mse", "sem", "grad_norm"):
      assert f2[k] == pytest.approx(f1[k], rel=1e-5), f"step {step + 1} {k}: {f2[k]} vs {f1[k]}"
    bad = {k: e for k in one[3][step] if (e := rel_err(two[3][step][k], one[3][step][k])) > 1e-5}
    assert not bad, f"step {step + 1}: parameters differ (relative max error): {bad}"
  # the embedding (the CPU default: atomic scatter-add backward, here once per device) does train
  assert not np.array_equal(two[3][0]["embed.weight"], two[3][1]["embed.weight"])


def test_eval_models_are_one_device_and_current(two):
  tr, enc = two[0], two[1]
  ev = tr.eval_models()["encoder"]
  assert ev is not enc and isinstance(ev.embed.weight.device, str)
  b = BATCHES[0]
  z = train.encode_ids(ev, b["tokens"], b["mask"], CFG["batch_size"])
  ref = sz.Encoder(sz.Config(**CFG))
  assign_state(ref, weights(enc))
  np.testing.assert_allclose(z, train.encode_ids(ref, b["tokens"], b["mask"], CFG["batch_size"]), rtol=1e-6,
                             atol=1e-6)


class _Loader:
  def state_dict(self): return {}
  def load_state_dict(self, d): pass


class _Tok:
  def to_json_str(self): return "{}"


def test_checkpoint_loads_on_one_device_and_resumes(tmp_path):
  # dropout > 0: resuming exactly needs every device's RNG counter back
  tr, enc, _, _ = run(2, dropout=0.2)
  cfg = tr.cfg
  ck = Checkpointer(tmp_path, cfg, {}, _Tok())
  tr.step(BATCHES[0])
  d, saved = ck.save("last", tr, _Loader(), -1.0, 0, {}), weights(enc)
  want = tr.step(BATCHES[1])["loss"], weights(enc)
  single = sz.Encoder(cfg)                                    # the checkpoint needs no second device to load
  assign_state(single, load_tensors(d / "model.safetensors"), prefix="encoder.")
  assert isinstance(single.embed.weight.device, str)
  for k, v in weights(single).items(): np.testing.assert_array_equal(v, saved[k], err_msg=k)
  Tensor.manual_seed(0)
  enc2 = sz.Encoder(cfg)
  tr2 = Trainer(cfg, {"encoder": enc2}, sz.distill_loss_fn, devices=2)
  ck.restore({"dir": d, "info": {"loader": {}, "best_val_cos": -1.0, "bad_evals": 0}}, tr2, _Loader())
  assert tr2.step_count == 3
  got = tr2.step(BATCHES[1])["loss"], weights(enc2)
  assert got[0] == pytest.approx(want[0], rel=1e-6)
  for k in want[1]: np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_batch_not_divisible_is_one_line(capsys, monkeypatch):
  monkeypatch.delenv("GPUS", raising=False)
  assert train.main(["--devices", "2", "--batch_size", "3"]) == 2
  err = capsys.readouterr().err.strip()
  assert err == "error: invalid config: batch_size 3 is not divisible by devices 2"
  monkeypatch.setenv("GPUS", "2")                              # GPUS=N stands in for --devices N
  assert train.main(["--batch_size", "5"]) == 2
  assert capsys.readouterr().err.strip() == "error: invalid config: batch_size 5 is not divisible by devices 2"
  cfg = sz.Config(**{**CFG, "batch_size": 6, "grad_accum": 2})  # 6 rows split over 2 devices; micro-batches of 3 don't
  with pytest.raises(ValueError, match="micro-batch .* 3 is not divisible by devices 2"):
    Trainer(cfg, {"encoder": sz.Encoder(cfg)}, sz.distill_loss_fn, devices=2)


def test_grad_accum_steps_like_one_batch():
  # regression: weights and moments left lazy at construction were re-initialised by every replay of the micro-batch
  # JIT (captured in step 1), so from step 2 on the loss was that of the initial weights. InfoNCE off: its in-batch
  # negatives make a half batch a different objective; cos and mse are means, so two halves average to the whole.
  over = dict(loss_weights={"cos": 1.0, "mse": 1.0, "sem": 0.0})
  _, _, f1, w1 = run(1, **over)
  tr, _, f2, w2 = run(1, grad_accum=2, **over)
  assert tr.grad_acc is not None and tr.micro_bs == CFG["batch_size"] // 2
  for step in range(2):
    for k in ("loss", "cos", "mse", "grad_norm", "lr"):
      assert f2[step][k] == pytest.approx(f1[step][k], rel=1e-5), f"step {step + 1} {k}: {f2[step][k]} vs {f1[step][k]}"
    bad = {k: e for k in w1[step] if (e := rel_err(w2[step][k], w1[step][k])) > 1e-5}
    assert not bad, f"step {step + 1}: parameters differ (relative max error): {bad}"
  assert not np.array_equal(w1[0]["proj.weight"], w1[1]["proj.weight"])  # step 2 really ran on updated weights


def test_joint_step_on_two_devices_like_one():
  # the encoder + decoder step (distillation + teacher-forced cross-entropy, half the rows in mode B): its per-row
  # losses and the decoder's head sum over the split batch across devices
  from studentz import Decoder, ModeBProjection, joint_loss_fn
  cfg = sz.Config(**{**CFG, "dec_blocks": 2, "dec_dilation_schedule": [1, 2], "loss_weights": {"cos": 1.0, "ce": 1.0},
                     "mode_b_mix": "row", "label_smoothing": 0.1}).validate()
  figs = {}
  for n in (1, 2):
    Tensor.manual_seed(0)
    models = {"encoder": sz.Encoder(cfg), "decoder": Decoder(cfg), "proj_b": ModeBProjection(cfg)}
    tr = Trainer(cfg, models, joint_loss_fn, devices=n)
    figs[n] = [tr.step({**b, "mode_b": (np.arange(CFG["batch_size"]) % 2).astype(np.float32)}) for b in BATCHES]
  for step in range(2):
    for k in ("loss", "ce", "ce_a", "ce_b", "cos", "grad_norm"):
      assert figs[2][step][k] == pytest.approx(figs[1][step][k], rel=1e-5), f"step {step + 1} {k}"


def test_bench_compares_the_two_device_step_with_one(tmp_path):
  # python -m bench train --devices 2: the losses and gradient norms of its check steps against the one-device row's
  import json
  from bench import speed as bench
  from bench.__main__ import main as bench_main
  argv = ["train", "--devices", "2", "--no-torch", "--precision", "fp32", "--batch", "4", "--len", "8", "--d", "16",
          "--h", "24", "--k", "3", "--dilations", "2", "--vocab", "64", "--D", "12", "--check-steps", "2",
          "--reps", "1", "--warmup", "0", "--json", str(tmp_path / "rows.json")]
  assert bench_main(argv) == 0
  one, two = json.loads((tmp_path / "rows.json").read_text())
  assert one["bench"] == "train_step" and two["bench"] == "train_step_data_parallel" and two["devices"] == 2
  assert two["same_loss"] and two["loss_rel_diff"] <= 1e-5 and two["grad_norm_rel_diff"] <= 1e-5, two
  assert len(two["losses"]) == len(two["grad_norms"]) == 2 and two["losses"][1] != two["losses"][0]
  assert two["speedup_vs_1"] == pytest.approx(one["tinygrad_queued_ms"] / two["tinygrad_queued_ms"])
