"""Carry tinygrad's kernel-schedule search results (BEAM) from one machine to another.

  python scripts/beam_cache.py export FILE [--db CACHEDB]   # the beam_search rows of a cache db, alone, into FILE
  python scripts/beam_cache.py import FILE [--db CACHEDB]   # merge them into this machine's cache db
  python scripts/beam_cache.py drop FILE KEY [KEY ...]       # delete the results of these kernels from FILE

A search result is a list of kernel options keyed by the kernel's AST and the device: a card of the same kind then
reuses it instead of searching again (STUDENTZ_GEMM_BEAM, BEAM, JITBEAM). The checks those schedules passed on a card
model (backend.checked_before: the options, keyed by the kernel and the card's name) travel with them. The compiled
binaries in the cache db are left behind, so the file stays small. --db defaults to $CACHEDB, else tinygrad's
default cache path.

tinygrad stores each result pickled and unpickles it when it reads the cache, so `import` first reads every result of
the file through an unpickler that knows only tinygrad's Opt and OptOps (backend.read_kernel_options, which also reads
the bundled beam/ files), and refuses the whole file if any result is something else: a cache file from elsewhere
cannot run code here.

`drop` removes the results of kernels named by the start of their key, as the note of a schedule that failed its
check prints it (backend.verify_schedule: "a cached GEMM schedule (kernel 0b2b4b076095fa7c) computes other values"),
e.g. from a bundle in beam/.
"""
import argparse, os, sqlite3, sys


def default_db() -> str:
  if os.environ.get("CACHEDB"): return os.environ["CACHEDB"]
  from tinygrad.helpers import CACHEDB
  return CACHEDB


def beam_tables(conn) -> list[str]:
  rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'beam_search%'").fetchall()
  return [r[0] for r in rows]


def check_results(path: str) -> None:
  """SystemExit unless every search result in the file is a list of kernel options (backend.read_kernel_options)."""
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from studentz_kernels.backend import read_kernel_options
  with sqlite3.connect(path) as conn:
    for t in beam_tables(conn):
      for i, (val,) in enumerate(conn.execute(f"SELECT val FROM '{t}'")):
        try: read_kernel_options(val)
        except ValueError as e: raise SystemExit(f"error: {path}: result {i} of {t} is {e}; nothing imported")


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


def key_id(ast) -> str:
  """A kernel's cache key as notes print it: the hex of tinygrad's AST key (bytes), or the key itself."""
  return bytes(ast).hex() if isinstance(ast, (bytes, memoryview)) else str(ast)


def drop(path: str, prefixes: list[str]) -> int:
  """Delete the search results whose kernel key starts with one of prefixes; SystemExit if one matches nothing."""
  if not os.path.exists(path): raise SystemExit(f"error: no such cache file: {path}")
  conn = sqlite3.connect(path)
  hits = {p: [] for p in prefixes}
  for t in beam_tables(conn):
    for rowid, ast in conn.execute(f"SELECT rowid, ast FROM '{t}'").fetchall():
      for p in prefixes:
        if key_id(ast).startswith(p.lower()): hits[p].append((t, rowid))
  if missing := [p for p, h in hits.items() if not h]:
    conn.close()
    raise SystemExit(f"error: no result in {path} for kernel {', '.join(missing)}; nothing dropped")
  rows = {r for h in hits.values() for r in h}
  for t, rowid in rows: conn.execute(f"DELETE FROM '{t}' WHERE rowid=?", (rowid,))
  conn.commit()
  conn.execute("VACUUM")
  conn.close()
  return len(rows)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
  ap.add_argument("action", choices=["export", "import", "drop"])
  ap.add_argument("file", help="the small cache file to write (export), read (import) or change (drop)")
  ap.add_argument("keys", nargs="*", help="drop: the kernels, by the start of their key")
  ap.add_argument("--db", default=None, help="tinygrad's cache db (default: $CACHEDB or tinygrad's own path)")
  a = ap.parse_args(argv)
  if (a.action == "drop") != bool(a.keys): ap.error("drop takes one or more kernel keys; export and import take none")
  if a.action == "drop":
    print(f"drop: {drop(a.file, a.keys)} search results removed from {a.file}")
    return 0
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
