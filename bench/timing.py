"""Median wall time of a call, the one timer of the bench package and the scripts (no imports beyond the stdlib)."""
from __future__ import annotations
import statistics, time


def timed(fn, warmup: int = 1, reps: int = 5, sync=lambda: None) -> float:
  """Median seconds per call after `warmup` untimed calls; fn must block until its work is done (or sync must)."""
  for _ in range(warmup): fn()
  sync()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    sync()
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)
