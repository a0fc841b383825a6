"""STS-B Spearman of a checkpoint's student with fp32 and with half activations (bf16 by default), on any device.

The GPU encodes in bf16 when asked for speed; this measures what that costs in fidelity. On the CPU, tinygrad
compiles bf16 kernels with clang, and clang 14 (Debian 12's) has no __bf16 on x86-64: there the fp32 figure is still
written and the half one is skipped with a note (--half fp16 compiles there, but ran over 8 minutes on 2 cores).
  python scripts/stsb_precision.py [--ckpt models/default] [--half bf16|fp16] [--json out.json]
"""
import argparse, json, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train
from studentz_runtime import metrics
from studentz_training.evaluate import load_models
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
  from tinygrad import Device
  out = {"checkpoint": str(args.ckpt), "stsb_n": len(s1), "device": Device.DEFAULT,
         "command": "python scripts/stsb_precision.py " + " ".join(sys.argv[1:])}
  for name, dt in (("fp32", dtypes.float32), (args.half, dtypes.bfloat16 if args.half == "bf16" else dtypes.float16)):
    enc.act_dtype = dt
    try:
      e1, e2 = (train.encode_ids(enc, *tok.encode_batch(s, enc.cfg.max_len), enc.cfg.batch_size) for s in (s1, s2))
    except subprocess.CalledProcessError:  # the kernel compiler refused the dtype (see the module doc)
      print(f"note: this device's compiler cannot build {name} kernels; {name} skipped", file=sys.stderr)
      continue
    out[f"stsb_spearman_{name}"] = metrics.stsb_spearman(e1, e2, scores)
    print(f"{name}: STS-B Spearman {out[f'stsb_spearman_{name}']:.2f}", file=sys.stderr)
  print(json.dumps(out))
  if args.json: args.json.write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
