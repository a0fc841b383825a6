"""Two-stage training through train.main: distil an encoder, then fit a tied-output decoder to it with
--init-from CKPT --freeze '["encoder"]' --loss_weights.ce 1, and --init-from's refusal of another tokenizer.

Reuses test_train's data folder, run config (the tiny student) and fake teacher; both runs take two steps and the
decoder has two blocks, because each decoder shape (training, greedy decoding, perplexity) is a clang compile here.
"""
import json, shutil

import numpy as np
import pytest

import studentz as sz
from studentz_training.trainer import Trainer
import train
from studentz_runtime.checkpoint import load_tensors
from test_train import BATCH, run_args, run_main
from tinygrad.nn.state import get_state_dict

STEPS = 2
DECODER = ["--loss_weights.ce", "1", "--freeze", '["encoder"]', "--dec_output", "tied", "--dec_blocks", "2",
           "--dec_dilation_schedule", "[1, 2]", "--steps", str(STEPS)]


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


@pytest.fixture(scope="module")
def stages(work):
  """Stage 1: a 2-step distillation. Stage 2: the decoder on its frozen best encoder, with the models' weights right
  after --init-from loaded them and every training step's batch and figures recorded."""
  first, second = work["base"] / "stage1", work["base"] / "stage2"
  assert run_main(run_args(work, first, "--steps", str(STEPS))) == 0
  start, steps = {}, []
  init, launch = train.init_from_checkpoint, Trainer.launch

  def spy_init(models, ckpt, tok, *rest):
    init(models, ckpt, tok, *rest)
    start.update({f"{k}.{n}": t.numpy().copy() for k, m in models.items() for n, t in get_state_dict(m).items()})

  def spy_launch(self, batch):  # the figures are read here, at once, since the run reads them later
    out = launch(self, batch)
    steps.append((batch, self.read(out)))
    return out
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train, "init_from_checkpoint", spy_init)
    mp.setattr(Trainer, "launch", spy_launch)
    assert run_main(run_args(work, second, "--init-from", first / "best", *DECODER)) == 0
  return {"first": first, "second": second, "start": start, "steps": steps}


def test_frozen_encoder_kept_and_decoder_trained(stages):
  a = load_tensors(stages["first"] / "best" / "model.safetensors")
  b = load_tensors(stages["second"] / "best" / "model.safetensors")
  enc_keys = sorted(k for k in a if k.startswith("encoder."))
  assert enc_keys and enc_keys == sorted(k for k in b if k.startswith("encoder."))
  for k in enc_keys:
    np.testing.assert_array_equal(stages["start"][k], a[k], err_msg=f"--init-from did not load {k}")
    np.testing.assert_array_equal(b[k], a[k], err_msg=f"frozen {k} moved")
  dec_keys = [k for k in b if k.startswith("decoder.")]
  # tied output: logits through the input embedding, so no head matrix, only its bias
  assert "decoder.head_bias" in dec_keys and not any(k.startswith("decoder.head.") for k in dec_keys)
  unchanged = [k for k in dec_keys if np.array_equal(b[k], stages["start"][k])]
  assert not unchanged, f"decoder tensors that did not train: {unchanged}"
  # the frozen model has no optimiser state at all
  state = load_tensors(stages["second"] / "best" / "train_state.safetensors")
  assert any(k.startswith("opt.m.decoder.") for k in state)
  assert not any(k.startswith(("opt.m.encoder.", "opt.v.encoder.")) for k in state)


def test_frozen_encoder_runs_in_eval_mode(stages):
  # dropout is 0.2 in the run config: the logged cosine equals the eval-mode forward only if dropout was off
  enc, _, _ = train.load_encoder(stages["first"] / "best")
  assert enc.cfg.dropout > 0 and len(stages["steps"]) == STEPS
  for batch, figs in stages["steps"]:
    assert len(batch["tokens"]) == BATCH
    cos = cos_rows(train.encode_ids(enc, batch["tokens"], batch["mask"], BATCH), batch["teacher"]).mean()
    assert 1 - figs["cos"] == pytest.approx(cos, abs=1e-5)
    assert figs["ce"] > 0 and np.isfinite(figs["ce"])


def test_best_is_picked_by_perplexity(stages):
  recs = [json.loads(line) for line in (stages["second"] / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in recs if "val_perplexity_a" in r]
  assert [r["step"] for r in evals] == [STEPS]
  ppl = evals[0]["val_perplexity_a"]
  assert np.isfinite(ppl) and ppl > 1
  info = train.read_checkpoint_info(stages["second"] / "best")
  assert info["best_val_cos"] == pytest.approx(1 / ppl)  # the score of a frozen encoder's run: val_cos cannot move
  assert info["config"]["freeze"] == ["encoder"] and info["config"]["dec_output"] == "tied"


def test_init_from_another_tokenizer_is_refused(work, stages, tmp_path, capsys):
  other = tmp_path / "other"
  shutil.copytree((stages["first"] / "best").resolve(), other)
  tj = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
  vocab = tj["tokenizer"]["model"]["vocab"]
  a, b = [p for p, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i > 10][:2]
  vocab[a], vocab[b] = vocab[b], vocab[a]                  # same size and pieces, two ids swapped: another tokenizer
  (other / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    run_main(run_args(work, tmp_path / "run", "--init-from", other, *DECODER))
  assert e.value.code == 2
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
  assert errors[0].startswith("error: --init-from: ") and "another tokenizer" in errors[0], errors[0]
  assert not (tmp_path / "run" / "last").exists()


def test_init_from_takes_the_encoder_shape(stages, tmp_path, capsys):
  """A decoder fitted to a wider encoder: --init-from reads the encoder's shape from its checkpoint (a default-shaped
  model would not load it), while a shape set on the command line still wins."""
  wide = tmp_path / "wide"
  shutil.copytree((stages["first"] / "best").resolve(), wide)
  info = json.loads((wide / "config.json").read_text())
  info["config"]["hidden"], info["config"]["dilation_schedule"], info["config"]["data_crops"] = 72, [1, 3], 1
  info["config"]["pool_head"], info["config"]["block_context"] = 24, True
  (wide / "config.json").write_text(json.dumps(info))

  def printed(*args):
    capsys.readouterr()
    assert train.main(["--init-from", str(wide), "--print-config", *args]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err
  cfg, err = printed()
  assert cfg["hidden"] == 72 and cfg["dilation_schedule"] == [1, 3] and cfg["d_model"] == info["config"]["d_model"]
  assert cfg["data_crops"] == 1  # the data its tokenizer was fitted on comes along too
  assert cfg["pool_head"] == 24 and cfg["block_context"] is True  # the encoder's extra weights too
  assert "encoder shape from the checkpoint" in err and "hidden=72" in err
  assert printed("--hidden", "40")[0]["hidden"] == 40


def test_one_run_trains_both_directions(work, tmp_path, capsys):
  """train.py with decoder_share > 0 (both profiles set it): the encoder's steps, then a decoder fitted to its best
  encoder in RUN/decoder; RUN/best then holds both, so infer.py --ckpt RUN/best decodes. --resume after the end
  continues the decoder's stage (nothing left to do) and keeps RUN/best."""
  import infer
  out = tmp_path / "both"
  argv = run_args(work, out, "--decoder_share", "0.5", *DECODER[4:-2], "--steps", "4", "--eval_every", "2")
  assert run_main(argv) == 0
  enc_run, dec_run = train.read_checkpoint_info(out / "last"), train.read_checkpoint_info(out / "decoder" / "last")
  assert enc_run["step"] == 2 and dec_run["step"] == 2                                   # the steps, shared out
  assert dec_run["config"]["freeze"] == ["encoder"] and dec_run["config"]["loss_weights"]["ce"] == 1
  best = load_tensors(out / "best" / "model.safetensors")
  enc_best = load_tensors(out / "decoder" / "best" / "model.safetensors")
  assert any(k.startswith("decoder.") for k in best) and best.keys() == enc_best.keys()
  first = load_tensors(out / "step-0000002" / "model.safetensors")                      # the encoder's stage's best
  for k in (k for k in first if k.startswith("encoder.")): np.testing.assert_array_equal(best[k], first[k])
  capsys.readouterr()
  assert infer.main(["--ckpt", str(out / "best"), "--no-teacher", "--json", "The cat sat on the mat."]) == 0
  row = json.loads(capsys.readouterr().out.splitlines()[0])
  assert isinstance(row["text"], str)                                                    # None: "(no decoder)"
  assert run_main(["--resume", out, "--quiet"]) == 0
  assert (out / "best").resolve() == (out / "decoder" / "best").resolve()
  capsys.readouterr()  # --eval decodes held-out rows of a checkpoint with a decoder (a mix's domain names came along)
  assert run_main(["--eval", out / "best", "--json", "--decode-limit", "4", "--stsb-limit", "4"]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["decode_n"] > 0 and -1 <= ev["semantic_cos_a"] <= 1 and -1 <= ev["semantic_cos_b"] <= 1, sorted(ev)
