"""Summarise an equal-wall-time capacity comparison (scripts/gpu_capacity.sh) from the files it brings back.

  python scripts/capacity_table.py DIR [--json FILE]

DIR holds the unpacked capN.tgz: NAME_metrics.jsonl (train.py's log), bench_NAME.json (the config's measured step),
eval_NAME.json (train.py --eval --json of its best checkpoint) and logs/plan.txt (the planned step counts). Prints one
row per config: size, step time, steps planned and run, minutes of training, the validation curve and the final
evaluation; --json writes the same rows.
"""
from __future__ import annotations
import argparse, json, re, sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def span_minutes(records: list[dict]) -> float:
  """Minutes from the first logged step to the last: the training stretches of both calls, their JIT captures and
  validations, and the restart between them (~40 s on the lent machine)."""
  t = [r["time"] for r in records if "time" in r]
  return (t[-1] - t[0]) / 60 if len(t) > 1 else 0.0


def steady_ms(records: list[dict]) -> float | None:
  """Median milliseconds per step between logged steps with no pause (validations, starts) in between."""
  r = [x for x in records if "loss" in x]
  d = sorted((b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(r, r[1:])
             if b["step"] > a["step"] and b["time"] - a["time"] < 5)
  return round(1e3 * d[len(d) // 2], 2) if d else None


def starts(records: list[dict]) -> list[dict]:
  """Each train.py process in the log (its first step is logged, then every log_every steps; a resumed one begins
  after a pause): `pause_s` since the record before it (the time between two calls, 0 for the first) and `start_s`,
  the seconds until its logged steps first run at the steady rate, beyond what those steps cost at that rate (the
  JIT's captures and compiles, the schedule checks). A start's setup before its first step (data, weights) is not in
  the log."""
  ms, out = steady_ms(records) or 0.0, []
  for i, x in enumerate(records):
    before = records[i - 1] if i else None
    if "loss" not in x or before and not (x["step"] == before["step"] + 1 and x["time"] - before["time"] > 5):
      continue
    # the start ends where a logged stretch first runs at twice the steady rate or faster (captures go on for a few
    # steps: one per length bucket, then the first validation's)
    later, end = [y for y in records[i + 1:] if "loss" in y and y["step"] > x["step"]], None
    for a, b in zip([x] + later, later):
      if b["time"] - a["time"] < 2 * ms / 1e3 * (b["step"] - a["step"]): break
      end = b
    cost = None if end is None else end["time"] - x["time"] - (end["step"] - x["step"]) * ms / 1e3
    out.append({"step": x["step"], "pause_s": round(x["time"] - before["time"], 1) if before else 0.0,
                "start_s": None if cost is None else round(cost, 1)})
  return out


def summarise(d: Path) -> list[dict]:
  plan_file = d / "logs" / "plan.txt"
  if not plan_file.is_file(): raise FileNotFoundError(f"{plan_file} not found: is {d} an unpacked capN.tgz?")
  rows = []
  for line in plan_file.read_text().splitlines():
    m = re.match(r"(\S+): (.*) steps (\d+)$", line.strip())
    if not m: continue
    name, args, planned = m.group(1), m.group(2), int(m.group(3))
    recs = read_jsonl(d / f"{name}_metrics.jsonl")
    bench = json.loads((d / f"bench_{name}.json").read_text())[0]
    ev_file = d / f"eval_{name}.json"
    ev = json.loads(ev_file.read_text()) if ev_file.is_file() else {}
    done = max(r["step"] for r in recs)
    # train.py --minutes plans the step count in the run: its last plan is the schedule's length
    planned = ([r["planned_steps"] for r in recs if "planned_steps" in r] or [planned])[-1]
    curve = [[r["step"], round(r["val_cos"], 4)] for r in recs if "val_cos" in r]
    rows.append({"name": name, "train_args": args, "d_model": bench["d"], "hidden": bench["h"],
                 "card": bench["card"], "bench_step_ms": round(bench["tinygrad_queued_ms"], 2),
                 "steps_planned": planned, "steps_run": done, "schedule_done": round(done / planned, 3),
                 "span_minutes": round(span_minutes(recs), 2),
                 "ms_per_step": round(span_minutes(recs) * 60e3 / done, 1), "steady_ms_per_step": steady_ms(recs),
                 "starts": starts(recs), "val_cos_curve": curve,
                 **{k: ev[k] for k in ("val_cos", "retrieval_p_at_10", "stsb_spearman", "teacher_stsb_spearman",
                                       "stsb_ratio") if k in ev}})
  if not rows: raise ValueError(f"no config lines in {plan_file}")
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("dir", type=Path)
  ap.add_argument("--json", type=Path, help="also write the rows here")
  a = ap.parse_args(argv)
  try: rows = summarise(a.dir)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("| config | d | h | bench ms/step | steps run / planned | ms/step in the run (steady) | process starts (s) "
        "| val_cos | P@10 | STS-B (% of teacher) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    stsb = f"{r['stsb_spearman']:.2f} ({100 * r['stsb_ratio']:.1f}%)" if "stsb_spearman" in r else "-"
    def fig(k, spec): return "-" if r.get(k) is None else format(r[k], spec)  # P@10 is null on a tiny test split
    print(f"| {r['name']} | {r['d_model']} | {r['hidden']} | {r['bench_step_ms']} | {r['steps_run']:,} / "
          f"{r['steps_planned']:,} | {r['ms_per_step']} ({fig('steady_ms_per_step', '')}) | "
          f"{' + '.join(str(x['start_s']) for x in r['starts'] if x['start_s'] is not None) or '-'} | "
          f"{fig('val_cos', '.4f')} | "
          f"{fig('retrieval_p_at_10', '.3f')} | {stsb} |")
  if a.json:
    a.json.write_text(json.dumps({"card": rows[0]["card"], "command": "PHASE=1 bash scripts/gpu_capacity.sh; PHASE=2 "
                                  "bash scripts/gpu_capacity.sh (again while it says so); train.py --eval "
                                  "runs/cap/NAME/best --json",
                                  "rows": rows}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
