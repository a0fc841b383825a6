"""Carry tinygrad's kernel-schedule search results (BEAM) from one machine to another.

  python scripts/beam_cache.py export FILE [--db CACHEDB]   # the beam_search rows of a cache db, alone, into FILE
  python scripts/beam_cache.py import FILE [--db CACHEDB]   # merge them into this machine's cache db

A search result is a list of kernel options keyed by the kernel's AST and the device: a card of the same kind then
reuses it instead of searching again (STUDENTZ_GEMM_BEAM, BEAM, JITBEAM). The compiled binaries in the cache db are
left behind, so the file stays small. --db defaults to $CACHEDB, else tinygrad's default cache path.

tinygrad stores each result pickled and unpickles it when it reads the cache, so `import` first reads every result of
the file through an unpickler that knows only tinygrad's Opt and OptOps, and refuses the whole file if any result is
something else: a cache file from elsewhere cannot run code here.
"""
import argparse, io, os, pickle, sqlite3, sys


def default_db() -> str:
  if os.environ.get("CACHEDB"): return os.environ["CACHEDB"]
  from tinygrad.helpers import CACHEDB
  return CACHEDB


def beam_tables(conn) -> list[str]:
  rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'beam_search%'").fetchall()
  return [r[0] for r in rows]


class OptsOnly(pickle.Unpickler):
  """Unpickles kernel options (tinygrad.codegen.opt.Opt / OptOps) and the builtins they are made of, nothing else."""
  def find_class(self, module, name):
    if module == "tinygrad.codegen.opt" and name in ("Opt", "OptOps"):
      from tinygrad.codegen import opt
      return getattr(opt, name)
    raise pickle.UnpicklingError(f"{module}.{name} is not a kernel option")


def check_results(path: str) -> None:
  """SystemExit unless every search result in the file is a list of kernel options."""
  from tinygrad.codegen.opt import Opt
  with sqlite3.connect(path) as conn:
    for t in beam_tables(conn):
      for i, (val,) in enumerate(conn.execute(f"SELECT val FROM '{t}'")):
        try: opts = OptsOnly(io.BytesIO(val)).load()
        except Exception as e: raise SystemExit(f"error: {path}: result {i} of {t} is not a search result ({e}); "
                                                "nothing imported")
        if not (isinstance(opts, list) and all(isinstance(o, Opt) for o in opts)):
          raise SystemExit(f"error: {path}: result {i} of {t} is not a list of kernel options; nothing imported")


def copy_tables(src: str, dst: str) -> int:
  """Copy every beam_search table of src into dst (rows of dst with the same key are replaced); returns rows copied."""
  if not os.path.exists(src): raise SystemExit(f"error: no such cache file: {src}")
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  with sqlite3.connect(src) as s: tables = beam_tables(s)
  conn = sqlite3.connect(dst)
  conn.execute("ATTACH DATABASE ? AS src", (src,))
  n = 0
  for t in tables:
    sql = conn.execute("SELECT sql FROM src.sqlite_master WHERE name=?", (t,)).fetchone()[0]
    conn.execute(sql.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
    n += conn.execute(f"REPLACE INTO main.'{t}' SELECT * FROM src.'{t}'").rowcount
  conn.commit()
  conn.close()
  return n


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
  ap.add_argument("action", choices=["export", "import"])
  ap.add_argument("file", help="the small cache file to write (export) or read (import)")
  ap.add_argument("--db", default=None, help="tinygrad's cache db (default: $CACHEDB or tinygrad's own path)")
  a = ap.parse_args(argv)
  db = a.db or default_db()
  if a.action == "export":
    if os.path.exists(a.file): os.remove(a.file)
    n = copy_tables(db, a.file)
  else:
    if not os.path.exists(a.file): raise SystemExit(f"error: no such cache file: {a.file}")
    check_results(a.file)
    n = copy_tables(a.file, db)
  src, dst = (db, a.file) if a.action == "export" else (a.file, db)
  print(f"{a.action}: {n} search results from {src} into {dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
