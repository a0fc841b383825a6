"""Speed-vs-fidelity points from measured results files, then the PNG (python -m bench plot).

Speed: results/h100_encode_student_teacher.json (python -m bench teacher encode, one GPU process, L=128,
batch 128; the student rows use random weights of the shipped model's architecture: speed does not depend on the
values). Fidelity: STS-B Spearman from results/h100_default_encoder_eval.json (train.py --eval, fp32) and
results/default_stsb_fp32_vs_bf16.json (scripts/stsb_precision.py: the same student, bf16 activations).
The PyTorch twin computes the same function as the tinygrad student (python -m bench checks equal losses), so it
shares the fp32 student's fidelity.
  python scripts/speed_vs_fidelity.py   # -> results/h100_speed_vs_fidelity.json and .png
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
R = ROOT / "results"


def main() -> int:
  speed_file, eval_file, prec_file = (R / "h100_encode_student_teacher.json", R / "h100_default_encoder_eval.json",
                                      R / "default_stsb_fp32_vs_bf16.json")
  speed = json.loads(speed_file.read_text())["rows"]
  ev, prec = json.loads(eval_file.read_text()), json.loads(prec_file.read_text())
  L = 128
  teacher = next(r for r in speed if r["bench"] == "teacher_encode" and r["L"] == L)
  st32 = next(r for r in speed if r["bench"] == "student_encode" and r["L"] == L and r["precision"] == "fp32")
  st16 = next(r for r in speed if r["bench"] == "student_encode" and r["L"] == L and r["precision"] != "fp32")
  base = {"bench": "fidelity", "card": teacher["card"], "L": L, "B": teacher["B"],
          "sentences_per_s_source": speed_file.name}
  rows = [
    {**base, "name": "teacher, ours fp32", "kind": "teacher",
     "sentences_per_s": teacher["tinygrad_sent_per_s"], "stsb_spearman": ev["teacher_stsb_spearman"]},
    {**base, "name": "teacher, HF fp32", "kind": "teacher",
     "sentences_per_s": teacher["hf_sent_per_s"], "stsb_spearman": ev["teacher_stsb_spearman"]},
    {**base, "name": "fp32", "kind": "student",
     "sentences_per_s": st32["student_sent_per_s"], "stsb_spearman": prec["stsb_spearman_fp32"]},
    {**base, "name": "bf16", "kind": "student",
     "sentences_per_s": st16["student_sent_per_s"], "stsb_spearman": prec["stsb_spearman_bf16"]},
    {**base, "name": "torch twin", "kind": "student",
     "sentences_per_s": st32["torch_sent_per_s"], "stsb_spearman": prec["stsb_spearman_fp32"]},
  ]
  for r in rows: r["stsb_spearman_source"] = eval_file.name if r["kind"] == "teacher" else prec_file.name
  out = R / "h100_speed_vs_fidelity.json"
  out.write_text(json.dumps(rows, indent=1) + "\n")
  return subprocess.call([sys.executable, "-m", "bench", "plot", "--from", str(out), "--png",
                          str(out.with_suffix(".png")), "--title", "Encode speed vs STS-B: MiniLM teacher vs StudentZ"])


if __name__ == "__main__":
  raise SystemExit(main())
