"""Assemble the shipped model folder (models/default) from what two GPU stages brought back.

Stage 1 (distillation) and stage 2 (a decoder fitted to the frozen encoder, scripts/gpu_decoder.sh) return their
checkpoints as fp16 safetensors split in 15 MB parts, and stage 2's config, tokenizer and evaluation in a folder
(meta.tgz unpacked). When the encoder is too large to come back twice, stage 2 returns only the decoder's tensors
(DEC_ONLY=1) and the encoder's come from stage 1's parts. Writes OUT/{model.safetensors, config.json, tokenizer.json,
train_config.json}; the teacher block names the teacher given by --teacher, the canonical one (the GPU runs read an
fp16-rounded copy of it, which --teacher-note says). config.json's `training` holds each stage's record (steps,
dropout, best val_cos of the encoder, best perplexity of the decoder); a training run's own top-level fields (step,
best_val_cos: 1/perplexity in a decoder stage) are left out, as no single run made the folder.

  python scripts/package_model.py --meta /tmp/meta --decoder-parts dec/model16.part-* \
      --encoder-parts enc/model16.part-* --stage1-config enc/config.json --stage1-minutes 14.2 --stage2-minutes 3.3 \
      --card "CARD NAME" --stage1-command "..." --stage2-command "..."

A newer encoder of the same tokenizer can also be paired with an already shipped decoder (the decoder reads only z,
which lives in the teacher's space whichever encoder made it): --decoder-from models/default takes that folder's
decoder tensors, stage-2 config and record, --encoder-tokenizer must match its tokenizer, and --metrics gives the
assembled model's own evaluation (train.py --eval OUT --data-dir D --json, run on a first assembly without it).
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_parts(parts: list[Path]) -> dict[str, np.ndarray]:
  """One safetensors file split into parts (split -b, names sort in order)."""
  if not parts: return {}
  missing = [str(p) for p in parts if not p.is_file()]
  if missing: raise FileNotFoundError(f"missing weight parts: {', '.join(missing)}")
  return load(b"".join(p.read_bytes() for p in sorted(parts)))


def assemble(encoder: dict, decoder: dict) -> dict[str, np.ndarray]:
  """Encoder tensors from stage 1 where given (else from stage 2), the rest from stage 2; all stored in fp16."""
  merged = {k: v for k, v in decoder.items() if not (encoder and k.startswith("encoder."))}
  merged.update({k: v for k, v in encoder.items() if k.startswith("encoder.")})
  if not any(k.startswith("encoder.") for k in merged): raise ValueError("no encoder tensors in the given parts")
  if not any(k.startswith("decoder.") for k in merged): raise ValueError("no decoder tensors in the given parts")
  return {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in merged.items()}


# a training checkpoint's record of one run, which a packaged model of two stages holds per stage (training) instead
RUN_FIELDS = ("step", "best_val_cos", "bad_evals", "loader")


def stage_record(ckpt: dict) -> dict:
  """Steps, dropout and best score of one stage's checkpoint record (its config.json). train.py's best score is
  val_cos where the encoder trains and 1/held-out perplexity where it is frozen: given here as what it is."""
  from studentz_runtime.config import Config
  cfg = ckpt["config"]
  rec = {"steps": ckpt["step"], "dropout": cfg.get("dropout", Config.dropout)}
  best = ckpt.get("best_val_cos")
  if isinstance(best, (int, float)) and best > 0:
    if "encoder" in cfg.get("freeze", []): rec["best_perplexity"] = round(1 / best, 3)
    else: rec["best_val_cos"] = best
  return rec


def decoder_record(shipped: dict, info: dict) -> dict:
  """The decoder's stage record of a packaged folder (--decoder-from); one packaged before per-stage records took
  steps, dropout and best score from its top level, which was the decoder's checkpoint."""
  old = stage_record(info) if "step" in info else {}
  return {**old, **shipped["stage2_decoder"]}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  src = ap.add_mutually_exclusive_group(required=True)
  src.add_argument("--meta", type=Path, help="stage 2's folder: config.json, tokenizer.json, "
                   "eval_decoder.json (scripts/gpu_decoder.sh's meta.tgz, unpacked)")
  src.add_argument("--decoder-from", type=Path, help="a packaged model folder whose decoder to keep")
  ap.add_argument("--decoder-parts", type=Path, nargs="*", default=[], help="stage 2's model16.part-* files (--meta)")
  ap.add_argument("--encoder-tokenizer", type=Path, help="with --decoder-from: the new encoder's tokenizer.json")
  ap.add_argument("--metrics", type=Path, help="the assembled model's train.py --eval --json output (default: stage "
                  "2's eval_decoder.json with --meta, none with --decoder-from)")
  ap.add_argument("--encoder-parts", type=Path, nargs="*", default=[], help="stage 1's model16.part-* files")
  ap.add_argument("--stage1-config", type=Path, required=True, help="stage 1's best/config.json")
  ap.add_argument("--card", required=True, help="the GPU both stages ran on")
  ap.add_argument("--stage1-command", required=True)
  ap.add_argument("--stage1-minutes", type=float, required=True)
  ap.add_argument("--stage2-command", help="required with --meta")
  ap.add_argument("--stage2-minutes", type=float, help="required with --meta")
  ap.add_argument("--teacher", default="all-MiniLM-L6-v2",
                  help="the teacher the model is checked against at load: name, hub id or local folder (its name, "
                       "dimension and weights' fingerprint go into config.json)")
  ap.add_argument("--teacher-note", default="trained against an fp16-rounded copy of this teacher (its vectors: "
                  "cosine >= 0.9999995 to these)")
  ap.add_argument("--data-source", default="enwiki-docs.jsonl.gz, all 36,183 articles (392,192 training sentences)")
  ap.add_argument("--out", type=Path, default=ROOT / "models" / "default")
  a = ap.parse_args(argv)
  if a.meta and not (a.decoder_parts and a.stage2_command and a.stage2_minutes is not None):
    ap.error("--meta needs --decoder-parts, --stage2-command and --stage2-minutes")
  if a.decoder_from and not (a.encoder_parts and a.encoder_tokenizer):
    ap.error("--decoder-from needs --encoder-parts and --encoder-tokenizer")
  meta = a.meta or a.decoder_from
  try:
    stage1 = json.loads(a.stage1_config.read_text())
    info = json.loads((meta / "config.json").read_text())
    if a.decoder_from:
      weights = assemble(read_parts(a.encoder_parts), load((a.decoder_from / "model.safetensors").read_bytes()))
      if json.loads(a.encoder_tokenizer.read_text()) != json.loads((meta / "tokenizer.json").read_text()):
        raise ValueError(f"{a.encoder_tokenizer} is not {meta}'s tokenizer: the decoder writes other ids")
      shipped = info["training"]
      from studentz_training.run_folder import ENCODER_SHAPE  # the encoder's fields, as train.py --init-from takes them
      info["config"].update({k: stage1["config"][k] for k in ENCODER_SHAPE if k in stage1["config"]})
    else: weights = assemble(read_parts(a.encoder_parts), read_parts(a.decoder_parts))
    metrics = json.loads((a.metrics or meta / "eval_decoder.json").read_text()) if a.metrics or a.meta else {}
    from teacher import load_teacher
    t = load_teacher(a.teacher)
    teacher = {"name": t.name, "dim": t.dim, "fingerprint": t.fingerprint, "note": a.teacher_note}
  except Exception as e:  # OSError, ValueError, a teacher that cannot be loaded: one line, exit 2
    print(f"error: {e}", file=sys.stderr)
    return 2
  for k in [k for k in metrics if k.startswith("samples") or k in ("checkpoint", "step")]:
    metrics.pop(k)  # example decodes (where and at which step it was evaluated): in the results file
  s1, s2 = stage1["config"], info["config"]
  if s1["proj_dim"] != teacher["dim"]:
    print(f"error: the encoder's proj_dim {s1['proj_dim']} is not {a.teacher}'s dimension {teacher['dim']}",
          file=sys.stderr)
    return 2
  for k in ("vocab_size", "d_model", "hidden", "n_blocks", "kernel_size", "dilation_schedule", "max_len"):
    if s1[k] != s2[k]:
      print(f"error: stage 1 and stage 2 disagree on {k} ({s1[k]} vs {s2[k]}): not the same encoder", file=sys.stderr)
      return 2
  n_params = int(sum(v.size for v in weights.values()))
  if a.decoder_from:  # the decoder's own record, from the folder it was shipped in
    # a folder that was itself paired this way keeps its decoder's first card and note: the decoder was fitted to
    # the encoder named there, not to the one it was last shipped with
    stage2 = {"card": shipped["card"],
              "note": f"fitted to an earlier encoder ({shipped['stage1_encoder']['command']}); kept as shipped",
              **decoder_record(shipped, info)}
  else:
    stage2 = {"command": a.stage2_command, "config": "models/default/train_config.json#stage2", **stage_record(info),
              "train_minutes": a.stage2_minutes}
  for k in RUN_FIELDS: info.pop(k, None)
  info.update({"teacher": teacher, "data_dir": "", "data_source": a.data_source, "n_params": n_params,
               "metrics": metrics, "training": {
                 "card": a.card,
                 "stage1_encoder": {"command": a.stage1_command, "equivalent": "DEV=CUDA python train.py",
                                    "config": "models/default/train_config.json#stage1", **stage_record(stage1),
                                    "train_minutes": a.stage1_minutes},
                 "stage2_decoder": stage2,
                 "weights": "fp16 (trained with fp32 master weights, bf16 activations)"},
               "config_note": "the architecture to load; its training fields (steps, dropout, lr, freeze, loss "
                              "weights) are the decoder stage's: each stage's own are in training and "
                              "train_config.json"})
  a.out.mkdir(parents=True, exist_ok=True)
  save_file(weights, str(a.out / "model.safetensors"))
  (a.out / "tokenizer.json").write_bytes((meta / "tokenizer.json").read_bytes())
  (a.out / "config.json").write_text(json.dumps(info, indent=1) + "\n")
  (a.out / "train_config.json").write_text(json.dumps({
    "stage1": s1, "stage2": s2,
    "note": "stage1 = the encoder's distillation (train.py on a GPU: full profile, mixed precision); stage2 starts "
            "from stage1's best encoder, frozen, and fits the decoder" if a.meta else
            "stage1 = the encoder's distillation (train.py on a GPU: full profile, mixed precision); stage2 = the "
            "decoder's config as shipped before, fitted to an earlier encoder (its encoder fields now stage1's)"},
    indent=2) + "\n")
  print(f"{a.out}: {n_params / 1e6:.2f}M parameters, val_cos {metrics.get('val_cos')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
