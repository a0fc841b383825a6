"""STUDENTZ_GEMM_BEAM (studentz_kernels/backend.py): only GEMM kernels of the training step are handed to tinygrad's
BEAM search, the default "cached" mode takes schedules already found (cache db or the bundled beam/ files) and never
searches, and
scripts/beam_cache.py carries search results between cache dbs."""
import os, subprocess, sys
from pathlib import Path

import numpy as np
import tinygrad.codegen.opt.search as search
import tinygrad.engine.jit as jit_module
import tinygrad.engine.realize as realize
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import getenv

from studentz_kernels import backend
from studentz_kernels import cpu_gemm
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tinygrads_own_gemms(monkeypatch):
  """The search works on tinygrad's GEMM kernels, the ones a GPU runs: on the CPU the model's GEMMs would otherwise be
  cpu_gemm's custom kernels, which have no schedule to search."""
  monkeypatch.setattr(cpu_gemm, "ENABLED", 0)


def test_only_gemms_inside_the_scope_are_searched(monkeypatch):
  searched = []
  def fake_search(s, rawbufs, var_vals, amt, *args, **kwargs):  # record instead of timing candidates
    searched.append((amt, backend.gemm_size(s.ast)))
    return s
  monkeypatch.setattr(search, "beam_search", fake_search)
  monkeypatch.setattr(realize, "pm_beam", realize.pm_beam)  # restored after the test, as are the JIT's getenv, globals
  monkeypatch.setattr(jit_module, "getenv", jit_module.getenv)  # install_gemm_beam's JITBEAM read, restored after
  monkeypatch.setattr(backend, "_BEAM", dict(backend._BEAM))
  before = os.environ.get("JITBEAM")
  backend.install_gemm_beam(3, min_size=24 * 40 * 56)
  assert os.environ.get("JITBEAM") == before  # child processes (tools, tests) must not inherit a beam search
  table, idx = Tensor.randn(50, 40).realize(), Tensor([[1, 7, 3]]).realize()

  def step(a, b):  # a GEMM big enough, a smaller GEMM, a gather (sum of a select, not a product) and elementwise work
    big = (a @ b).relu().contiguous()                     # 24*40*56 multiply-adds: searched
    small = (a[:4, :8] @ b[:8, :4]).contiguous()          # 4*8*4: below min_size
    gathered = table[idx].sum().contiguous()
    return (big.sum() + small.sum() + gathered).realize()

  a, b = Tensor.randn(24, 40).realize(), Tensor.randn(40, 56).realize()
  with backend.gemm_beam_scope():
    jit = TinyJit(step)
    for _ in range(3): out = jit(a, b)
  want = (np.maximum(a.numpy() @ b.numpy(), 0).sum() + (a.numpy()[:4, :8] @ b.numpy()[:8, :4]).sum()
          + table.numpy()[[1, 7, 3]].sum())
  np.testing.assert_allclose(out.item(), want, rtol=1e-4)
  assert searched == [(3, 24 * 40 * 56)], searched

  searched.clear()  # outside the scope (encoding, evaluation) nothing is searched
  jit2 = TinyJit(lambda a, b: (a @ b + 1).sum().realize())
  for _ in range(3): jit2(a, b)
  assert searched == []
  getenv.cache_clear()


def test_a_schedule_that_computes_other_values_is_rejected(monkeypatch):
  """verify_schedule runs a schedule and tinygrad's heuristic one of the same kernel on the same random inputs: another
  valid schedule of the kernel passes; a schedule computing other values (here: of the kernel that doubles the GEMM,
  over the same buffers) is named, as a wrong searched schedule would be."""
  from tinygrad.codegen.opt import Opt, OptOps
  kernels = []
  def record(s, rawbufs, var_vals, amt, *args, **kwargs):
    kernels.append((s, rawbufs, var_vals))
    return s
  monkeypatch.setattr(search, "beam_search", record)
  monkeypatch.setattr(realize, "pm_beam", realize.pm_beam)
  monkeypatch.setattr(jit_module, "getenv", jit_module.getenv)  # install_gemm_beam's JITBEAM read, restored after
  monkeypatch.setattr(backend, "_BEAM", dict(backend._BEAM))
  backend.install_gemm_beam(2, min_size=24 * 40 * 56)
  a, b = Tensor.randn(24, 40).realize(), Tensor.randn(40, 56).realize()
  with backend.gemm_beam_scope():
    jit = TinyJit(lambda a, b: ((a @ b).contiguous().sum() + ((a * 2) @ b).contiguous().sum()).realize())
    for _ in range(3): jit(a, b)
  getenv.cache_clear()
  assert len(kernels) == 2, kernels
  (s, bufs, vv), (s2, _, _) = kernels
  other = s.copy()
  other.apply_opt(Opt(OptOps.UPCAST, 0, 4))
  assert other.applied_opts != backend._heuristic(s.copy()).applied_opts
  assert backend.verify_schedule(s, other, bufs, vv) is None
  wrong = s2.copy()
  wrong.apply_opt(Opt(OptOps.UPCAST, 0, 4))
  assert "max difference" in backend.verify_schedule(s, wrong, bufs, vv)


def _tinygrad(code: str, db: Path) -> str:
  env = {**os.environ, "CACHEDB": str(db), "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def _beam_cache(*args: str, db: Path) -> str:
  return subprocess.run([sys.executable, str(ROOT / "scripts" / "beam_cache.py"), *args, "--db", str(db)],
                        capture_output=True, text=True, check=True).stdout


OPTS = "from tinygrad.codegen.opt import Opt, OptOps\n"


def test_beam_cache_export_import_round_trip(tmp_path):
  a, b, small = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "carry.db"
  _tinygrad(OPTS + "from tinygrad.helpers import diskcache_put as put\n"
            "put('beam_search', {'ast': 'k1', 'amt': 2, 'device': 'CUDA'}, [Opt(OptOps.UPCAST, 0, 4)])\n"
            "put('beam_search', {'ast': 'k2', 'amt': 2, 'device': 'CUDA'}, [Opt(OptOps.LOCAL, 1, 16)])\n"
            "put('compile_cuda', 'binary', b'x' * 100000)\n", a)  # a compiled binary: stays behind
  _tinygrad(OPTS + "from tinygrad.helpers import diskcache_put as put\n"
            "put('beam_search', {'ast': 'k0', 'amt': 2, 'device': 'CUDA'}, [])\n", b)
  assert "2 search results" in _beam_cache("export", str(small), db=a)
  assert small.stat().st_size < 50000
  assert "2 search results" in _beam_cache("import", str(small), db=b)
  got = _tinygrad("from tinygrad.helpers import diskcache_get as get\n"
                  "print([get('beam_search', {'ast': k, 'amt': 2, 'device': 'CUDA'}) for k in ('k0', 'k1', 'k2')])\n"
                  "print(get('compile_cuda', 'binary'))\n", b)
  assert got.split("\n")[:2] == ["[[], [Opt(op=OptOps.UPCAST, axis=0, arg=4)], [Opt(op=OptOps.LOCAL, axis=1, arg=16)]]",
                                  "None"]


def test_beam_cache_drop_removes_the_named_kernels_only(tmp_path):
  """`drop` deletes a kernel's result by the start of its key (as a failed check's note names it), keeps the others,
  and refuses a key it does not hold, and a drop without keys, in one line each."""
  db = tmp_path / "bundle.db"
  _tinygrad(OPTS + "from tinygrad.helpers import diskcache_put as put\n"
            "put('beam_search', {'ast': 'k1', 'amt': 2, 'device': 'CUDA'}, [Opt(OptOps.UPCAST, 0, 4)])\n"
            "put('beam_search', {'ast': 'k2', 'amt': 2, 'device': 'CUDA'}, [Opt(OptOps.LOCAL, 1, 16)])\n", db)
  script = [sys.executable, str(ROOT / "scripts" / "beam_cache.py")]
  assert "1 search results removed" in subprocess.run([*script, "drop", str(db), "k2"], capture_output=True,
                                                      text=True, check=True).stdout
  got = _tinygrad("from tinygrad.helpers import diskcache_get as get\n"
                  "print([get('beam_search', {'ast': k, 'amt': 2, 'device': 'CUDA'}) for k in ('k1', 'k2')])\n", db)
  assert got.strip() == "[[Opt(op=OptOps.UPCAST, axis=0, arg=4)], None]"
  for args, words in ((["drop", str(db), "k9"], "no result"), (["drop", str(db)], "one or more kernel keys")):
    r = subprocess.run([*script, *args], capture_output=True, text=True)
    assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def _evil_cache(path: Path, marker: Path) -> None:
  """A cache db with one good result and one whose unpickling would run a command (touch marker)."""
  _tinygrad(OPTS + "from tinygrad.helpers import diskcache_put as put\nimport os, pickle\n"
            "class Evil:\n  def __reduce__(self): return (os.system, ('touch " + str(marker) + "',))\n"
            "put('beam_search', {'ast': 'ok', 'amt': 2, 'device': 'CUDA'}, [Opt(OptOps.UPCAST, 0, 4)])\n"
            "put('beam_search', {'ast': 'bad', 'amt': 2, 'device': 'CUDA'}, pickle.dumps(Evil()), prepickled=True)\n",
            path)


def test_beam_cache_import_refuses_anything_but_kernel_options(tmp_path):
  """tinygrad unpickles cached results: a file whose result is any other object (here one that would run a command
  when unpickled) is refused whole, before a row is copied, and the command never runs."""
  evil, db, marker = tmp_path / "evil.db", tmp_path / "mine.db", tmp_path / "ran"
  _evil_cache(evil, marker)
  r = subprocess.run([sys.executable, str(ROOT / "scripts" / "beam_cache.py"), "import", str(evil), "--db", str(db)],
                     capture_output=True, text=True)
  assert r.returncode != 0 and "not a search result" in r.stderr and "nothing imported" in r.stderr, r.stderr
  assert not marker.exists() and not db.exists()


def test_a_bundled_file_with_anything_else_is_skipped(tmp_path, monkeypatch, capsys):
  d, marker = tmp_path / "beam", tmp_path / "ran"
  d.mkdir()
  _evil_cache(d / "evil.db", marker)
  monkeypatch.setattr(backend, "BEAM_DIR", d)
  backend.bundled_results.cache_clear()
  try: assert backend.bundled_beam_results() == {}
  finally: backend.bundled_results.cache_clear()
  assert "evil.db: no usable search results" in capsys.readouterr().err and not marker.exists()


def test_the_bundled_search_results_are_kernel_options_for_cuda(tmp_path):
  """beam/*.db, the default bf16 step's searched GEMM schedules (keyed for CUDA) and the checks they passed on named
  NVIDIA cards (each for a bundled schedule): importable, and read by backend."""
  import sqlite3
  from tinygrad.helpers import VERSION
  files = sorted((ROOT / "studentz_kernels" / "beam").glob("*.db"))
  assert files
  devices, cards = set(), set()
  for f in files:
    assert "search results" in _beam_cache("import", str(f), db=tmp_path / f"{f.stem}.db")
    with sqlite3.connect(f) as conn:
      for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        col = "card" if t.startswith(backend.CHECKED_TABLE) else "device"
        (devices if col == "device" else cards).update(r[0] for r in conn.execute(f"SELECT {col} FROM '{t}'"))
  assert devices == {"CUDA"} and cards and all(c.startswith("NVIDIA ") for c in cards), (devices, cards)
  backend.bundled_results.cache_clear()
  try:
    schedules, checks = backend.bundled_beam_results(), backend.bundled_results(backend.CHECKED_TABLE)
  finally: backend.bundled_results.cache_clear()
  assert checks and {c for _, c in checks} == cards, f"tables of tinygrad's version {VERSION} only"
  by_kernel = {k[0]: v for k, v in schedules.items()}
  assert all(by_kernel.get(ast) == opts for (ast, _), opts in checks.items())


def test_beam_cache_names_a_missing_file(tmp_path):
  r = subprocess.run([sys.executable, str(ROOT / "scripts" / "beam_cache.py"), "import", str(tmp_path / "nope.db"),
                      "--db", str(tmp_path / "x.db")], capture_output=True, text=True)
  assert r.returncode != 0 and "no such cache file" in r.stderr

STEP = """
import sys, numpy as np
from studentz_kernels import backend
import tinygrad.codegen.opt.search as search
from tinygrad import Tensor, TinyJit
timed = []
real_time = search._time_program
search._time_program = lambda *a, **k: timed.append(1) or real_time(*a, **k)
ran = []  # kernels compiled and run by a schedule's check (two per check: the heuristic schedule and the checked one)
real_run = backend._run_kernel
backend._run_kernel = lambda *a: ran.append(1) or real_run(*a)
a, b = Tensor.randn(24, 40).realize(), Tensor.randn(40, 56).realize()
backend.GEMM_BEAM_MIN = 24 * 40 * 56  # this tiny GEMM counts as large
with backend.gemm_beam_scope():
  jit = TinyJit(lambda a, b: (a @ b).relu().sum().realize())
  for _ in range(3): out = jit(a, b)
np.testing.assert_allclose(out.item(), np.maximum(a.numpy() @ b.numpy(), 0).sum(), rtol=1e-4)
print(len(timed), backend._BEAM["found"], backend._BEAM["not_found"], len(ran))
"""


def _step(tmp_path: Path, db: str, mode: str, beam_dir: Path, runs: bool = False) -> tuple[int, ...]:
  """The JIT'd GEMM step in a fresh process: (candidate schedules timed, GEMMs given a found schedule, not found), and
  with runs, the kernels its schedule checks ran."""
  env = {**os.environ, "DEV": "CPU", "CACHEDB": str(tmp_path / db), "STUDENTZ_GEMM_BEAM": mode,
         "STUDENTZ_BEAM_DIR": str(beam_dir), "PYTHONPATH": str(ROOT)}
  r = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  got = tuple(int(x) for x in r.stdout.split()[-4:])
  return got if runs else got[:3]


def _table(conn, prefix: str) -> str:
  """The table of a cache db whose name is prefix and a version (beam_search_22, beam_search_checked_22)."""
  names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
           if n.startswith(prefix) and n[len(prefix):].isdigit()]
  assert len(names) == 1, names
  return names[0]


def test_cached_mode_takes_found_schedules_and_never_searches(tmp_path):
  """A real search (BEAM=2, CPU) of one GEMM; its result exported as a bundle file; then, with fresh cache dbs, the
  default "cached" mode gives the GEMM that schedule without timing a single candidate, and without the bundle
  falls back to the heuristics, again without searching."""
  empty, bundle = tmp_path / "none", tmp_path / "bundle"
  empty.mkdir()
  bundle.mkdir()
  timed, found, not_found = _step(tmp_path, "search.db", "2", empty)
  assert timed > 0 and (found, not_found) == (0, 1)
  _beam_cache("export", str(bundle / "cpu.db"), db=tmp_path / "search.db")
  assert _step(tmp_path, "fresh1.db", "cached", bundle) == (0, 1, 0)
  assert _step(tmp_path, "fresh2.db", "cached", empty) == (0, 0, 1)
  assert _step(tmp_path, "search.db", "2", empty) == (0, 1, 0)  # search mode reads its own cache db first
  # a found schedule this kernel cannot take (an upcast by 7 of an axis of 24 or 56): the heuristics, no crash
  import pickle, sqlite3
  from tinygrad.codegen.opt import Opt, OptOps
  with sqlite3.connect(bundle / "cpu.db") as conn:
    conn.execute(f"UPDATE '{_table(conn, 'beam_search_')}' SET val=?", (pickle.dumps([Opt(OptOps.UPCAST, 0, 7)]),))
  assert _step(tmp_path, "fresh3.db", "cached", bundle) == (0, 0, 1)


def test_a_passed_check_is_remembered_per_card(tmp_path):
  """A found schedule other than the heuristic one is checked (two kernels run) in a card's first process only: the
  pass is kept in the cache db, and where beam/ ships it (exported with the search results) a fresh cache db skips
  the check too; a pass recorded for another card model does not count."""
  import pickle, shutil, sqlite3
  from tinygrad.codegen.opt import Opt, OptOps
  bundle, shipped, empty = tmp_path / "bundle", tmp_path / "shipped", tmp_path / "none"
  for d in (bundle, shipped, empty): d.mkdir()
  _step(tmp_path, "search.db", "2", empty)
  _beam_cache("export", str(bundle / "cpu.db"), db=tmp_path / "search.db")
  with sqlite3.connect(bundle / "cpu.db") as conn:  # an unroll by 8 of the reduction: valid, not the heuristic's 4
    conn.execute(f"UPDATE '{_table(conn, 'beam_search_')}' SET val=?", (pickle.dumps([Opt(OptOps.UNROLL, 2, 8)]),))
    conn.execute(f"DROP TABLE '{_table(conn, backend.CHECKED_TABLE + '_')}'")  # the search's own pass
  assert _step(tmp_path, "first.db", "cached", bundle, runs=True) == (0, 1, 0, 2)
  assert _step(tmp_path, "first.db", "cached", bundle, runs=True) == (0, 1, 0, 0)
  shutil.copy(bundle / "cpu.db", shipped / "cpu.db")
  assert "1 search results" in _beam_cache("export", str(shipped / "checks.db"), db=tmp_path / "first.db")
  assert _step(tmp_path, "fresh.db", "cached", shipped, runs=True) == (0, 1, 0, 0)
  with sqlite3.connect(shipped / "checks.db") as conn:
    conn.execute(f"UPDATE '{_table(conn, backend.CHECKED_TABLE + '_')}' SET card='another card'")
  assert _step(tmp_path, "fresh2.db", "cached", shipped, runs=True) == (0, 1, 0, 2)


def test_a_bad_gemm_beam_setting_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, "-c", "from studentz_kernels import backend"], capture_output=True, text=True,
                     env={**os.environ, "STUDENTZ_GEMM_BEAM": "fast", "PYTHONPATH": str(ROOT)})
  assert r.returncode != 0 and r.stderr.strip().startswith("error: STUDENTZ_GEMM_BEAM must be") and "fast" in r.stderr
  assert "Traceback" not in r.stderr


_SEEN = {"which": None, "keys": {}}  # a pattern matcher's function takes no closures: it records here


def _spy_mark(ctx, call, sink):
  out = backend._mark_gemm(ctx, call, sink)
  if out is not None: _SEEN["keys"].setdefault(_SEEN["which"], set()).add(sink.key)
  return out


def test_bench_times_the_step_train_py_runs(monkeypatch):
  """Searched schedules are keyed by the kernel: bench/'s timed step (searched by scripts/gpu_gemm_beam.sh) must
  compile the GEMMs train.py's step compiles. Dropout changes them (its mask fuses into the 1x1 conv's GEMMs), so the
  bench's loss check runs without it and the timed step with the config's again (bench.set_dropout)."""
  from bench import speed as bench
  import studentz as sz
  from tinygrad.uop.ops import Ops, UPat, PatternMatcher
  from studentz_training.trainer import Trainer
  monkeypatch.setattr(realize, "pm_beam", realize.pm_beam)
  monkeypatch.setattr(jit_module, "getenv", jit_module.getenv)  # install_gemm_beam's JITBEAM read, restored after
  monkeypatch.setattr(backend, "_BEAM", dict(backend._BEAM))
  monkeypatch.setattr(search, "beam_search", lambda s, *a, **k: s)  # the kernels' keys only: no schedules
  backend.install_gemm_beam(2, min_size=1 << 14)
  realize.pm_beam = PatternMatcher([(UPat(Ops.CALL, src=(UPat(Ops.SINK, name="sink"),), name="call",
                                          allow_any_len=True), _spy_mark)])
  _SEEN["keys"].clear()
  cfg = sz.Config(vocab_size=300, d_model=16, hidden=32, n_blocks=2, dilation_schedule=[1, 2], proj_dim=16, max_len=8,
                  batch_size=8, dropout=0.1, steps=50, warmup_steps=5).validate()
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(4, 300, (8, 8)).astype(np.int32), "mask": np.ones((8, 8), np.float32),
           "teacher": rng.standard_normal((8, 16)).astype(np.float32)}
  def run(models, name):
    _SEEN["which"] = name
    tr = Trainer(cfg, models, sz.distill_loss_fn)
    with backend.gemm_beam_scope():
      for _ in range(3): tr.step(batch)
  run({"encoder": sz.Encoder(cfg)}, "train")
  models = {"encoder": sz.Encoder(cfg)}
  bench.set_dropout(models.values(), 0.0)
  run(models, "check")
  bench.set_dropout(models.values(), cfg.dropout)
  run(models, "bench")
  keys = _SEEN["keys"]
  assert keys["bench"] == keys["train"] and len(keys["train"]) >= 4, {k: len(v) for k, v in keys.items()}
  assert keys["check"] != keys["train"]  # without dropout the GEMMs differ: why the bench restores it
  getenv.cache_clear()
