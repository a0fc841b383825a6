"""The local halves of the GPU workflow: scripts/package_model.py (the shipped model folder from the parts two GPU
stages bring back), scripts/capacity_table.py (the equal-wall-time comparison from scripts/gpu_capacity.sh) and
scripts/run_summary.py (train.py runs side by side)."""
import json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import capacity_table  # noqa: E402
import package_model  # noqa: E402
import run_summary  # noqa: E402

SHAPE = {"vocab_size": 64, "d_model": 8, "hidden": 16, "n_blocks": 2, "kernel_size": 3, "dilation_schedule": [1, 2],
         "max_len": 16, "proj_dim": 384}


def split(blob: bytes, folder: Path, size: int) -> list[Path]:
  """What `split -b SIZE` leaves: parts named so they sort in order."""
  folder.mkdir()
  parts = []
  for i in range(0, len(blob), size):
    parts.append(folder / f"model16.part-a{chr(97 + i // size)}")
    parts[-1].write_bytes(blob[i:i + size])
  return parts


@pytest.fixture
def stages(tmp_path, minilm_dir):
  rng = np.random.default_rng(0)
  enc = {"encoder.embed.weight": rng.standard_normal((64, 8)).astype(np.float16),
         "encoder.proj.bias": rng.standard_normal(4).astype(np.float16)}
  dec = {"decoder.embed.weight": rng.standard_normal((64, 8)).astype(np.float16),
         "proj_b.fc1.bias": rng.standard_normal(4).astype(np.float16)}
  stale = {"encoder.embed.weight": np.zeros((64, 8), np.float32)}  # stage 2's copy must lose to stage 1's
  enc_parts = split(save(enc), tmp_path / "enc", 300)
  dec_parts = split(save({**dec, **stale}), tmp_path / "dec", 300)
  meta = tmp_path / "meta"
  meta.mkdir()
  s2 = {**SHAPE, "freeze": ["encoder"], "dec_output": "tied", "dropout": 0.1}
  (meta / "config.json").write_text(json.dumps({"format_version": 1, "step": 7, "config": s2, "best_val_cos": 0.04,
                                                "bad_evals": 1, "teacher": {"name": ".devcarry/minilm16"}}))
  (meta / "tokenizer.json").write_text('{"tok": 1}')
  (meta / "eval_decoder.json").write_text(json.dumps({"val_cos": 0.5, "step": 7, "samples": [["a", "b"]]}))
  s1 = tmp_path / "stage1.json"
  s1.write_text(json.dumps({"format_version": 1, "step": 100, "config": {**SHAPE, "dropout": 0.0},
                            "best_val_cos": 0.875}))
  args = ["--meta", str(meta), "--decoder-parts", *map(str, dec_parts), "--encoder-parts", *map(str, enc_parts),
          "--stage1-config", str(s1), "--card", "card X", "--stage1-command", "c1", "--stage1-minutes", "14",
          "--stage2-command", "c2", "--stage2-minutes", "3", "--out", str(tmp_path / "out")]  # --teacher: the
  # default, all-MiniLM-L6-v2, which minilm_dir has fetched
  return {"enc": enc, "dec": dec, "args": args, "out": tmp_path / "out", "s1": s1, "parts": enc_parts,
          "teacher": minilm_dir}


def test_package_merges_stages_and_writes_the_folder(stages):
  assert len(stages["parts"]) > 1  # the parts really are split mid-file
  assert package_model.main(stages["args"]) == 0
  w = load_file(stages["out"] / "model.safetensors")
  assert sorted(w) == sorted([*stages["enc"], *stages["dec"]])
  for k, v in {**stages["enc"], **stages["dec"]}.items(): np.testing.assert_array_equal(w[k], v, err_msg=k)
  info = json.loads((stages["out"] / "config.json").read_text())
  from teacher.embedder import file_fingerprint
  assert info["teacher"]["name"] == "all-MiniLM-L6-v2" and info["metrics"] == {"val_cos": 0.5}
  assert info["teacher"]["dim"] == 384
  assert info["teacher"]["fingerprint"] == file_fingerprint(stages["teacher"] / "model.safetensors")
  # each part as it was trained: the decoder stage's best score (1/perplexity) given as a perplexity
  enc_rec, dec_rec = info["training"]["stage1_encoder"], info["training"]["stage2_decoder"]
  assert (enc_rec["steps"], enc_rec["dropout"], enc_rec["best_val_cos"]) == (100, 0.0, 0.875)
  assert (dec_rec["steps"], dec_rec["dropout"], dec_rec["best_perplexity"]) == (7, 0.1, 25.0)
  assert "best_val_cos" not in dec_rec and "best_perplexity" not in enc_rec
  assert not {"step", "best_val_cos", "bad_evals"} & info.keys()                 # no single run made this folder
  assert info["n_params"] == sum(v.size for v in w.values())
  from studentz_runtime.checkpoint import read_checkpoint_info
  assert read_checkpoint_info(stages["out"])["training"] == info["training"]
  tc = json.loads((stages["out"] / "train_config.json").read_text())
  assert tc["stage1"] == {**SHAPE, "dropout": 0.0} and tc["stage2"]["freeze"] == ["encoder"]


def test_package_refuses_another_encoder_and_missing_parts(stages, capsys):
  s1 = json.loads(stages["s1"].read_text())
  stages["s1"].write_text(json.dumps({**s1, "config": {**SHAPE, "hidden": 32}}))
  assert package_model.main(stages["args"]) == 2
  assert "disagree on hidden" in capsys.readouterr().err
  stages["s1"].write_text(json.dumps({**s1, "config": {**SHAPE, "proj_dim": 768}}))
  assert package_model.main(stages["args"]) == 2
  assert "is not" in capsys.readouterr().err
  stages["s1"].write_text(json.dumps(s1))
  stages["parts"][0].unlink()
  assert package_model.main(stages["args"]) == 2
  assert "missing weight parts" in capsys.readouterr().err
  assert not (stages["out"] / "model.safetensors").exists()


def test_package_pairs_a_new_encoder_with_a_shipped_decoder(stages, tmp_path, capsys):
  """--decoder-from: the shipped folder's decoder tensors, config and record, a newer encoder's tensors and shape."""
  assert package_model.main(stages["args"]) == 0
  shipped = stages["out"]
  rng = np.random.default_rng(1)
  enc2 = {"encoder.embed.weight": rng.standard_normal((64, 8)).astype(np.float16),
          "encoder.head_up.weight": rng.standard_normal((8, 4)).astype(np.float16)}
  parts = split(save(enc2), tmp_path / "enc2", 300)
  s1 = tmp_path / "stage1b.json"
  s1.write_text(json.dumps({"format_version": 1, "step": 300, "config": {**SHAPE, "pool_head": 2, "dropout": 0.0}}))
  (tmp_path / "tok.json").write_text('{"tok": 1}')
  (tmp_path / "eval.json").write_text(json.dumps({"val_cos": 0.9}))
  out = tmp_path / "paired"
  args = ["--decoder-from", str(shipped), "--encoder-parts", *map(str, parts), "--encoder-tokenizer",
          str(tmp_path / "tok.json"), "--stage1-config", str(s1), "--card", "card Y", "--stage1-command", "c3",
          "--stage1-minutes", "14.9", "--metrics", str(tmp_path / "eval.json"), "--out", str(out)]
  assert package_model.main(args) == 0
  w = load_file(out / "model.safetensors")
  assert sorted(w) == sorted([*enc2, *stages["dec"]])                            # no tensor of the old encoder
  for k, v in {**enc2, **stages["dec"]}.items(): np.testing.assert_array_equal(w[k], v, err_msg=k)
  info = json.loads((out / "config.json").read_text())
  assert info["config"]["pool_head"] == 2 and info["config"]["freeze"] == ["encoder"]   # encoder shape, decoder's rest
  assert info["config"]["dropout"] == 0.1                                       # not an encoder field: kept as shipped
  assert info["metrics"] == {"val_cos": 0.9} and info["training"]["stage1_encoder"]["steps"] == 300
  stage2 = info["training"]["stage2_decoder"]
  assert (stage2["steps"], stage2["best_perplexity"]) == (7, 25.0) and "earlier encoder" in stage2["note"]
  # paired once more: the decoder's record still names the encoder it was fitted to and its card, not the paired one
  again = [str(out) if x == str(shipped) else x for x in args[:-1]] + [str(tmp_path / "paired2")]
  assert package_model.main(again) == 0
  assert json.loads((tmp_path / "paired2" / "config.json").read_text())["training"]["stage2_decoder"] == stage2
  (tmp_path / "tok.json").write_text('{"tok": 2}')                              # another tokenizer: refused
  assert package_model.main([*args[:-1], str(tmp_path / "again")]) == 2
  assert "not" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_pairing_a_folder_packaged_before_per_stage_records(stages, tmp_path):
  """models/default as first shipped: the decoder's steps and best score (1/perplexity) at the top level; pairing
  moves them into the decoder's record and leaves no top-level step or best_val_cos."""
  assert package_model.main(stages["args"]) == 0
  old = json.loads((stages["out"] / "config.json").read_text())
  old["training"]["stage2_decoder"] = {"command": "c2", "steps": 7, "train_minutes": 3}
  (stages["out"] / "config.json").write_text(json.dumps({**old, "step": 7, "best_val_cos": 0.05, "bad_evals": 0}))
  (tmp_path / "tok.json").write_text('{"tok": 1}')
  out = tmp_path / "paired"
  assert package_model.main(["--decoder-from", str(stages["out"]), "--encoder-parts", *map(str, stages["parts"]),
                             "--encoder-tokenizer", str(tmp_path / "tok.json"), "--stage1-config", str(stages["s1"]),
                             "--card", "card Y", "--stage1-command", "c3", "--stage1-minutes", "1",
                             "--out", str(out)]) == 0
  info = json.loads((out / "config.json").read_text())
  rec = info["training"]["stage2_decoder"]
  assert (rec["steps"], rec["dropout"], rec["best_perplexity"], rec["command"]) == (7, 0.1, 20.0, "c2")
  assert not {"step", "best_val_cos", "bad_evals"} & info.keys()


def test_capacity_table_reads_a_comparison(tmp_path):
  d = tmp_path / "cap"
  (d / "logs").mkdir(parents=True)
  (d / "logs" / "plan.txt").write_text("small: --hidden 512 steps 200\nwide: --hidden 1024 steps 100\n")
  for name, h, ms, done, cos in (("small", 512, 40.0, 200, 0.85), ("wide", 1024, 80.0, 80, 0.84)):
    recs = [{"step": 1, "time": 1000.0, "loss": 1.0}, {"step": done // 2, "time": 1030.0, "val_cos": cos - 0.01},
            {"step": done, "time": 1060.0, "val_cos": cos}]
    (d / f"{name}_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / f"bench_{name}.json").write_text(json.dumps([{"d": 256, "h": h, "card": "card X", "tinygrad_queued_ms": ms}]))
    (d / f"eval_{name}.json").write_text(json.dumps({"val_cos": cos, "retrieval_p_at_10": 0.4, "stsb_spearman": 70.0,
                                                     "teacher_stsb_spearman": 80.0, "stsb_ratio": 0.875}))
  out = tmp_path / "t.json"
  r = subprocess.run([sys.executable, capacity_table.__file__, str(d), "--json", str(out)], capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr
  rows = json.loads(out.read_text())["rows"]
  assert [x["name"] for x in rows] == ["small", "wide"]
  assert rows[1]["steps_run"] == 80 and rows[1]["schedule_done"] == 0.8 and rows[1]["ms_per_step"] == 750.0
  assert rows[0]["val_cos_curve"] == [[100, 0.84], [200, 0.85]]
  assert "| wide | 256 | 1024 | 80.0 | 80 / 100 | 750.0 (-) | - | 0.8400 |" in r.stdout
  (d / "logs" / "plan.txt").unlink()
  r = subprocess.run([sys.executable, capacity_table.__file__, str(d)], capture_output=True, text=True)
  assert r.returncode == 2 and r.stderr.startswith("error: ") and "plan.txt" in r.stderr


def test_capacity_table_finds_each_process_start():
  # a run paused after step 75 and resumed (train.py logs the first step it runs): each start's JIT captures run
  # 7.6 s past the steady 100 ms per step; the pause between the two processes is not part of a start
  recs = [{"step": 1, "time": 0.0, "loss": 1}, {"step": 25, "time": 10.0, "loss": 1},
          {"step": 50, "time": 12.5, "loss": 1}, {"step": 75, "time": 15.0, "loss": 1},
          {"step": 75, "time": 15.5, "val_cos": 0.5},
          {"step": 76, "time": 40.0, "loss": 1}, {"step": 100, "time": 50.0, "loss": 1},
          {"step": 125, "time": 52.5, "loss": 1}, {"step": 150, "time": 55.0, "loss": 1}]
  assert capacity_table.steady_ms(recs) == 100.0
  assert capacity_table.starts(recs) == [{"step": 1, "pause_s": 0.0, "start_s": 7.6},
                                         {"step": 76, "pause_s": 24.5, "start_s": 7.6}]


def test_run_summary_rows_name_what_differs(tmp_path, capsys):
  def run(name, head, vals, rate):
    d = tmp_path / name
    (d / "best").mkdir(parents=True)
    lines = [{"step": s, "time": 100 + s / rate, "loss": 1.0, "cos": 0.5 + s / 1000} for s in (1, 25, 50, 75)]
    lines[0]["time"] = 0.0  # the first line comes after data preparation and the JIT capture: not a rate
    lines += [{"step": 25 * (i + 1), "time": 200.0, "val_cos": v} for i, v in enumerate(vals)]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = {"d_model": 8, "pool_head": head, "optimizer": {"lr": 1e-3}}
    (d / "best" / "config.json").write_text(json.dumps({"config": cfg}))
    return d
  a, b = run("a", 0, [0.5, 0.6], 4.0), run("b", 32, [0.55, 0.7, 0.65], 2.0)
  assert run_summary.main([str(a), str(b), "--json", str(tmp_path / "rows.json")]) == 0
  rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
  assert [r["differs"] for r in rows] == [{"pool_head": 0}, {"pool_head": 32}]  # d_model and lr are the same
  assert [r["best_val_cos"] for r in rows] == [0.6, 0.7] and [r["steps_per_s"] for r in rows] == [4.0, 2.0]
  assert rows[1]["final_train_cos"] == pytest.approx(0.575) and "| b | 32 |" in capsys.readouterr().out
  assert run_summary.main([str(tmp_path / "none")]) == 2
