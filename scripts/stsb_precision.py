"""STS-B Spearman of a checkpoint's student with fp32 and with half activations (bf16 by default), on any device.

The GPU encodes in bf16 when asked for speed; this measures what that costs in fidelity, with the same rounding the
GPU applies (bf16 arithmetic is emulated where the device lacks it, so the CPU gives the same figure, slowly).
  python scripts/stsb_precision.py [--ckpt models/default] [--half bf16|fp16] [--json out.json]
"""
import argparse, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metrics, train
from evaluate import load_models
from tinygrad import dtypes


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--ckpt", type=Path, default=Path("models/default"))
  p.add_argument("--half", choices=["bf16", "fp16"], default="bf16")
  p.add_argument("--json", type=Path)
  args = p.parse_args()
  models, info, tok = load_models(args.ckpt)
  enc = models["encoder"]
  s1, s2, scores = metrics.load_stsb(train.default_stsb())
  out = {"checkpoint": str(args.ckpt), "stsb_n": len(s1)}
  for name, dt in (("fp32", dtypes.float32), (args.half, dtypes.bfloat16 if args.half == "bf16" else dtypes.float16)):
    enc.act_dtype = dt
    e1, e2 = (train.encode_ids(enc, *tok.encode_batch(s, enc.cfg.max_len), enc.cfg.batch_size) for s in (s1, s2))
    out[f"stsb_spearman_{name}"] = metrics.stsb_spearman(e1, e2, scores)
    print(f"{name}: STS-B Spearman {out[f'stsb_spearman_{name}']:.2f}", file=sys.stderr)
  print(json.dumps(out))
  if args.json: args.json.write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
