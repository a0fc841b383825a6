"""Compare train.py runs side by side from their run folders (metrics.jsonl and the best checkpoint's config).

  python scripts/run_summary.py runs/a runs/b ... [--json FILE]

One row per run: the config fields that differ between the runs, steps, steps per second (median over the log
lines' own rates, so the first JIT capture and the data preparation before it do not count), the validation curve,
the best val_cos and the train-batch cosine at the end (the gap between the two is what the run over-fits).
"""
from __future__ import annotations
import argparse, json, statistics, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity_table import read_jsonl  # noqa: E402


def flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict): out.update(flat(v, f"{prefix}{k}."))
    else: out[prefix + k] = v
  return out


def summarise(run: Path) -> dict:
  log = run / "metrics.jsonl"
  if not log.is_file(): raise FileNotFoundError(f"{log} not found: is {run} a train.py run folder?")
  recs = read_jsonl(log)
  train = [r for r in recs if "loss" in r]
  vals = [r for r in recs if "val_cos" in r]
  if not train or not vals: raise ValueError(f"{log}: no training or validation lines yet")
  cfg_file = run / "best" / "config.json"
  cfg = json.loads(cfg_file.read_text())["config"] if cfg_file.is_file() else {}
  times = [(a["step"], a["time"], b["step"], b["time"]) for a, b in zip(train, train[1:])]
  rates = [(s1 - s0) / (t1 - t0) for s0, t0, s1, t1 in times if t1 > t0]
  return {"run": str(run), "config": flat(cfg), "steps": train[-1]["step"],
          "steps_per_s": round(statistics.median(rates), 3) if rates else None,
          "val_cos_curve": [[r["step"], round(r["val_cos"], 4)] for r in vals],
          "best_val_cos": round(max(r["val_cos"] for r in vals), 4), "final_train_cos": train[-1]["cos"]}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("runs", type=Path, nargs="+", help="train.py run folders (--out)")
  p.add_argument("--json", type=Path, help="also write the rows here")
  a = p.parse_args(argv)
  try: rows = [summarise(r) for r in a.runs]
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  keys = sorted({k for r in rows for k in r["config"]})
  differ = [k for k in keys if len({json.dumps(r["config"].get(k)) for r in rows}) > 1]
  for r in rows: r["differs"] = {k: r["config"].get(k) for k in differ}
  print("| run | " + " | ".join(differ) + " | steps | steps/s | best val_cos | final train cos |")
  print("| --- " * (len(differ) + 5) + "|")
  for r in rows:
    cells = [json.dumps(r["differs"][k]) for k in differ]
    print(f"| {Path(r['run']).name} | " + " | ".join(cells) +
          f" | {r['steps']} | {r['steps_per_s']} | {r['best_val_cos']:.4f} | {r['final_train_cos']:.4f} |")
  if a.json:
    a.json.write_text(json.dumps({"rows": [{k: v for k, v in r.items() if k != "config"} for r in rows]}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
