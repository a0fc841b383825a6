"""Speed against fidelity: `python -m bench fidelity` measures a row per checkpoint (and the teacher), `python -m bench
plot` draws them (sentences/s on a log axis against STS-B Spearman or val_cos), like model2vec's speed-vs-quality
plot."""
from __future__ import annotations
import argparse, json, os, sys
from pathlib import Path

from bench.speed import UsageError, card_name, print_row, student_inputs, student_rate, teacher_rate, teacher_texts

# ---- rows ------------------------------------------------------------------------------------------------------------
# A `fidelity` row is one point of the speed-vs-fidelity plot; `python -m bench fidelity` writes them, `... plot` reads:
#   {"bench": "fidelity", "name": str, "kind": "student" | "teacher", "sentences_per_s": float > 0 (encode, measured),
#    "stsb_spearman": float | null (100 x Spearman, STS-B test), "val_cos": float | null, "card": str, "L": int,
#    "B": int, ... and "<metric>_source" naming the file (or definition) each fidelity number came from}
FIDELITY_KEYS = ("name", "kind", "sentences_per_s")
Y_LABELS = {"stsb_spearman": "STS-B test Spearman (x100)", "val_cos": "val_cos (mean cosine to the teacher)"}


def read_json_objects(path) -> list[dict]:
  """The objects of a JSON file: a list of rows (bench/ --json), one object (train.py --eval --json > f), or lines."""
  try: text = Path(path).read_text()
  except (OSError, UnicodeDecodeError) as e: raise UsageError(f"cannot read {path}: {e}")
  try: data = json.loads(text)
  except json.JSONDecodeError:
    try: data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e: raise UsageError(f"{path} is neither JSON nor JSON lines: {e}")
  objs = data if isinstance(data, list) else [data]
  if not all(isinstance(o, dict) for o in objs): raise UsageError(f"{path}: expected JSON objects (rows)")
  return objs


def ckpt_name(path) -> str:
  """runs/a/best -> a/best: the run's folder says more than 'best'."""
  p = Path(path)
  return f"{p.parent.name}/{p.name}" if p.name in ("best", "last") and p.parent.name else p.name


def bench_fidelity(args, device: str) -> list[dict]:
  """A `fidelity` row per checkpoint (encode sentences/s measured here at --len and --batch; val_cos from the
  checkpoint's config.json metrics, overridden by its `train.py --eval --json` file, which also gives STS-B), and one
  for the teacher at the same L and batch."""
  from tinygrad.nn.state import get_state_dict
  from studentz import CheckpointError
  from train import load_encoder
  if args.eval and len(args.eval) != len(args.ckpt or []):
    raise UsageError(f"--eval takes one `train.py --eval --json` file per --ckpt, in the same order: got "
                     f"{len(args.eval)} for {len(args.ckpt or [])}")
  evals = []
  for path in args.eval or []:
    objs = [o for o in read_json_objects(path) if "val_cos" in o and "bench" not in o]
    if len(objs) != 1: raise UsageError(f"{path}: expected one `train.py --eval --json` object, found {len(objs)}")
    evals.append((path, objs[0]))
  L, B = args.len, args.batch
  n = max(args.teacher_n, B)
  rows = []
  for i, ck in enumerate(args.ckpt or []):
    try: enc, info, _ = load_encoder(ck)
    except (CheckpointError, OSError, ValueError, KeyError) as e:
      raise UsageError(f"cannot load checkpoint {ck}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    ids, mask = student_inputs(n, L, enc.cfg.vocab_size)
    row = {"bench": "fidelity", "name": ckpt_name(ck), "kind": "student",
           "sentences_per_s": student_rate(enc, ids, mask, B, args.reps_teacher), "stsb_spearman": None,
           "val_cos": None, "card": card_name(device), "device": device, "L": L, "B": B, "n": n, "ckpt": str(ck),
           "step": info.get("step"), "teacher": info.get("teacher", {}).get("name"),
           "params": sum(int(v.numel()) for v in get_state_dict(enc).values())}
    if (info.get("metrics") or {}).get("val_cos") is not None:
      row.update(val_cos=info["metrics"]["val_cos"], val_cos_source=f"{ck}/config.json")
    if evals:  # held-out test split, measured after training: preferred to the validation figure saved with the weights
      path, ev = evals[i]
      for key in ("val_cos", "stsb_spearman"):
        if ev.get(key) is not None: row.update({key: ev[key], f"{key}_source": str(path)})
    rows.append(row)
    print_row(row)
  if not args.skip_teacher:
    others = sorted({r["teacher"] for r in rows if r.get("teacher") not in (None, args.teacher)})
    if others: print(f"warning: the checkpoints were distilled from {', '.join(others)}; the teacher row measures "
                     f"--teacher {args.teacher}", file=sys.stderr)
    rows.append(fidelity_teacher(args, device, evals, n))
  return rows


def fidelity_teacher(args, device: str, evals: list, n: int) -> dict:
  """The teacher's row: our tinygrad port's sentences/s, its STS-B from an eval file of the same teacher, else
  measured here on the STS-B test set (seconds on a GPU, minutes on a CPU)."""
  import train
  from studentz_runtime import metrics
  from teacher import load_teacher
  try: t = load_teacher(args.teacher)
  except Exception as e: raise UsageError(f"cannot load teacher {args.teacher!r}: {str(e).splitlines()[0]}")
  L = min(args.len, t.max_seq_length)
  # val_cos compares the student with the teacher's own vectors, so the teacher's is 1 by definition
  row = {"bench": "fidelity", "name": t.name, "kind": "teacher",
         "sentences_per_s": teacher_rate(t, teacher_texts(L, n), args.batch, args.reps_teacher),
         "stsb_spearman": None, "val_cos": 1.0, "val_cos_source": "definition", "card": card_name(device),
         "device": device, "L": L, "B": args.batch, "n": n}
  same = [(p, ev) for p, ev in evals if ev.get("teacher_stsb_spearman") is not None
          and ev.get("teacher") in (args.teacher, t.name)]
  if same:
    row.update(stsb_spearman=same[0][1]["teacher_stsb_spearman"], stsb_spearman_source=str(same[0][0]))
  elif (stsb := train.default_stsb()) is not None:
    s1, s2, scores = metrics.load_stsb(stsb)
    print(f"measuring {t.name}'s STS-B Spearman on {len(s1)} test pairs", file=sys.stderr)
    a, b = t.embed(list(s1), batch_size=args.batch), t.embed(list(s2), batch_size=args.batch)
    row.update(stsb_spearman=metrics.stsb_spearman(a, b, scores), stsb_spearman_source=str(stsb))
  else:
    print("warning: no STS-B test file and no eval file of this teacher: its stsb_spearman is null", file=sys.stderr)
  print_row(row)
  return row


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _same_path(a, b) -> bool:
  return str(a) == str(b) or os.path.realpath(a) == os.path.realpath(b)


def load_fidelity_rows(paths) -> list[tuple[str, dict]]:
  """(file, row) for every fidelity row in the files. `train.py --eval --json` objects among them fill a student
  row's missing val_cos / stsb_spearman when their `checkpoint` is the row's `ckpt`; other rows are skipped."""
  rows, evals = [], []
  for path in paths:
    for o in read_json_objects(path):
      if o.get("bench") == "fidelity": rows.append((str(path), dict(o)))
      elif "bench" not in o and "checkpoint" in o: evals.append(o)
  for _, r in rows:
    for ev in evals:
      if r.get("kind") == "student" and r.get("ckpt") and _same_path(r["ckpt"], ev["checkpoint"]):
        for key in ("val_cos", "stsb_spearman"):
          if r.get(key) is None and ev.get(key) is not None: r[key] = ev[key]
  return rows


def plot_fidelity(rows: list[tuple[str, dict]], png: Path, y: str = "auto", title: str | None = None) -> str:
  """Sentences/s (log x) against fidelity (y) as a PNG; returns the y field used. y='auto': STS-B Spearman when every
  row has it, else val_cos (one axis never mixes the two)."""
  from studentz_runtime import plot_png
  if not rows:
    raise UsageError("no fidelity rows to plot: make them with `python -m bench fidelity --ckpt DIR --json FILE`")
  for src, r in rows:
    name = r.get("name", "?")
    for key in FIDELITY_KEYS:
      if r.get(key) in (None, ""): raise UsageError(f"{src}: fidelity row {name!r} lacks {key}")
    if not _number(r["sentences_per_s"]) or r["sentences_per_s"] <= 0:
      raise UsageError(f"{src}: row {name!r} has sentences_per_s={r['sentences_per_s']!r}; need a positive number")
  auto = y == "auto"
  if auto: y = "stsb_spearman" if all(_number(r.get("stsb_spearman")) for _, r in rows) else "val_cos"
  for src, r in rows:
    if not _number(r.get(y)):
      raise UsageError(f"{src}: row {r['name']!r} has " + ("neither stsb_spearman nor val_cos" if auto else f"no {y}"))
  shared = {k: {r.get(k) for _, r in rows} for k in ("card", "L", "B")}
  def label(r: dict) -> str:
    extra = [f"L={r.get('L')}"] if len(shared["L"]) > 1 else []
    if len(shared["card"]) > 1: extra.append(str(r.get("card")))
    return f"{r['name']} ({', '.join(extra)})" if extra else str(r["name"])
  sub = [f"{k}={v}" if k != "card" else str(v) for k, vals in shared.items() if len(vals) == 1
         for v in vals if v is not None]
  points = [{"x": r["sentences_per_s"], "y": r[y], "label": label(r), "group": str(r["kind"])} for _, r in rows]
  try:
    plot_png.scatter_plot(points, png, title or "Encode speed vs fidelity", "sentences/s (log scale)", Y_LABELS[y],
                          subtitle=", ".join(sub).replace("B=", "batch ") or None)
  except OSError as e: raise UsageError(f"cannot write {png}: {e}")
  except ValueError as e: raise UsageError(str(e))
  return y


def plot_main(argv) -> int:
  p = argparse.ArgumentParser(prog="python -m bench plot", description="Encode speed (sentences/s, log scale) against "
                              "fidelity (STS-B Spearman or val_cos) as a PNG, from `fidelity` rows.")
  p.add_argument("--from", dest="sources", type=Path, nargs="+", required=True, metavar="JSON",
                 help="files of bench/ --json rows (only `fidelity` rows are plotted) and train.py --eval --json")
  p.add_argument("--png", type=Path, required=True, help="the PNG to write")
  p.add_argument("--y", choices=["auto", *Y_LABELS], default="auto",
                 help="fidelity axis (auto: stsb_spearman when every row has it, else val_cos)")
  p.add_argument("--title", help="plot title")
  args = p.parse_args(argv)
  try:
    rows = load_fidelity_rows(args.sources)
    y = plot_fidelity(rows, args.png, args.y, args.title)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.png}: {len(rows)} points, y = {y}", file=sys.stderr)
  return 0
