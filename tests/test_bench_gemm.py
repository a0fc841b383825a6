"""python -m bench gemm: the conv-shaped GEMM alone, tinygrad in both weight layouts against numpy, one row each."""
import json

import pytest

from bench import speed as bench
from bench.__main__ import main as bench_main


def test_gemm_rows_and_ratios(tmp_path):
  out = tmp_path / "gemm.json"
  assert bench_main(["gemm", "--batch", "2", "--len", "4", "--d", "8", "--h", "16", "--k", "3", "--reps", "2",
                     "--warmup", "1", "--json", str(out)]) == 0
  rows = json.loads(out.read_text())
  assert [r["impl"] for r in rows] == ["tinygrad rows (N, K) read transposed", "tinygrad (K, N)", "numpy"]
  assert all((r["M"], r["K"], r["N"]) == (8, 24, 16) and r["ms"] > 0 and r["gflops"] > 0 for r in rows)
  assert all(r["ratio_vs_numpy"] == r["ms"] / rows[-1]["ms"] for r in rows[:2])
  # a multiply-add is two floating-point operations: 2 M K N of them in ms milliseconds
  for r in rows:
    assert r["gflops"] == pytest.approx(2 * r["M"] * r["K"] * r["N"] / (r["ms"] / 1e3) / 1e9, rel=1e-9), r
