"""Time per sentence of the decoder's re-embedding correction (rerank over rounds) on this machine's engine.

  DEV=CUDA python scripts/correction_time.py --engine tinygrad --batch 64 --json results/h100_correction_time.json
  python scripts/correction_time.py --batch 8                       # the CPU's numpy engine, a smaller batch

Texts: the first --batch lines of the bundled everyday sentences (data/text/ding.txt.gz), encoded by the student;
each of greedy and rerank with 1..--rounds rounds (mode A, 16 candidates a round) decodes the whole batch once after
an untimed warm-up of the same call (JIT captures, kernel compilation), --reps times; the figure is the median
wall time divided by the batch. Quality is not measured here (scripts/decode_eval.py scores it per round).
"""
from __future__ import annotations
import argparse, gzip, json, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.timing import timed  # noqa: E402


def texts(n: int) -> list[str]:
  with gzip.open(ROOT / "data" / "text" / "ding.txt.gz", "rt", encoding="utf-8") as f:
    return [line.strip() for _, line in zip(range(n), f)]


def device_name(engine: str) -> str:
  if engine == "numpy": return "CPU (numpy)"
  from tinygrad import Device
  return Device.DEFAULT


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  p.add_argument("--engine", default="auto", choices=["auto", "numpy", "tinygrad"])
  p.add_argument("--batch", type=int, default=64, help="sentences decoded together")
  p.add_argument("--rounds", type=int, default=3, help="time rerank with 1..ROUNDS correction rounds")
  p.add_argument("--reps", type=int, default=3, help="timed calls per row (median)")
  p.add_argument("--json", type=Path, default=None, help="also write the rows here")
  args = p.parse_args(argv)
  from studentz import StudentZ
  m = StudentZ.load(args.ckpt, engine=args.engine)
  z = m.encode(texts(args.batch))
  calls = {"greedy": lambda: m.decode(z)}
  for r in range(1, args.rounds + 1):
    calls[f"rerank16_round{r}"] = lambda r=r: m.decode(z, strategy="rerank", rerank=16, rounds=r)
  rows = {}
  for name, fn in calls.items():
    rows[name] = round(timed(fn, reps=args.reps) / len(z) * 1e3, 2)
    print(f"{name:18s} {rows[name]:8.2f} ms/sentence (batch {len(z)}, engine {m.engine})", flush=True)
  if args.json:
    out = {"command": "python " + " ".join([f"scripts/{Path(__file__).name}", *(argv or sys.argv[1:])]),
           "engine": m.engine, "device": device_name(m.engine), "batch": len(z), "ms_per_sentence": rows,
           "load_average": [round(x, 2) for x in os.getloadavg()]}  # a shared CPU: what else was running
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
