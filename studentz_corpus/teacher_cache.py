"""Teacher-vector cache: chunked, resumable, shardable, checksummed.

Layout: <data_dir>/teacher-<name>-<fingerprint[:12]>/vectors.f32.npy (float32 [N, D], .npy memmap) and
manifest.json, which lists every finished chunk with its row count and the sha256 of its bytes. A chunk's rows are
written and flushed BEFORE the manifest names it, and the manifest is replaced atomically, so after a crash the
manifest only ever vouches for bytes that reached the file; resume re-hashes them anyway, in case the file was
damaged. One process per folder copy: shards run in separate copies and are combined by merge_teacher_shards.
"""
from __future__ import annotations
import hashlib, inspect, re, sys
from pathlib import Path

import numpy as np

from studentz_corpus.store import DataDir, atomic_write_json, open_data_dir, read_json, reserve
from studentz_corpus.progress import Progress

FORMAT = "studentz-teacher-cache/1"
VECTORS, MANIFEST = "vectors.f32.npy", "manifest.json"


class TeacherCacheIncomplete(RuntimeError):
  """Raised when teacher vectors are requested before every chunk was computed."""


def teacher_dir_name(name: str, fingerprint: str) -> str:
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:64] or "teacher"
  return f"teacher-{safe}-{str(fingerprint)[:12]}"


def _teacher_info(teacher) -> dict:
  for attr in ("name", "dim", "fingerprint"):
    if not hasattr(teacher, attr): raise ValueError(f"teacher must have .name, .dim and .fingerprint; missing .{attr}")
  if not str(teacher.fingerprint): raise ValueError("teacher.fingerprint must be a non-empty str")
  return {"name": str(teacher.name), "dim": int(teacher.dim), "fingerprint": str(teacher.fingerprint)}


def _sha(arr) -> str:
  return hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest()


def _rows(m: dict, c: int) -> tuple[int, int]:
  a = c * m["chunk_size"]
  return a, min(m["n"], a + m["chunk_size"])


def _base_manifest(dd: DataDir, info: dict, chunk_size: int) -> dict:
  return {"format": FORMAT, "teacher": info, "n": dd.n, "dim": info["dim"], "chunk_size": int(chunk_size),
          "n_chunks": -(-dd.n // int(chunk_size)), "data_id": dd.data_id, "chunks": {}}


_IDENTITY = ("format", "teacher", "n", "dim", "chunk_size", "n_chunks", "data_id")


def _same_cache(a: dict, b: dict) -> bool:
  return all(a.get(k) == b.get(k) for k in _IDENTITY)


def _open_cache(cache: Path, base: dict) -> dict:
  """The manifest of a usable cache at `cache`, (re)creating an empty one when absent or for other data/teacher."""
  m = read_json(cache / MANIFEST)
  vec = cache / VECTORS
  if m is not None and _same_cache(m, base) and vec.is_file():
    try:
      if np.load(vec, mmap_mode="r").shape == (base["n"], base["dim"]): return m
    except (OSError, ValueError):
      pass
  cache.mkdir(parents=True, exist_ok=True)
  # forget the old manifest first: it must never vouch for rows of the freshly zeroed file
  (cache / MANIFEST).unlink(missing_ok=True)
  reserve(vec, base["n"] * base["dim"] * 4 + 4096)  # rows are written through a memmap: a full disk is a SIGBUS
  mm = np.lib.format.open_memmap(vec, mode="w+", dtype=np.float32, shape=(base["n"], base["dim"]))
  mm.flush()
  del mm
  m = dict(base, chunks={})
  atomic_write_json(cache / MANIFEST, m)
  return m


def _verify(m: dict, vec: np.ndarray) -> list[int]:
  """Drop manifest entries whose bytes no longer match; returns the dropped chunk ids."""
  bad = []
  for key, e in sorted(m["chunks"].items(), key=lambda kv: int(kv[0])):
    a, b = _rows(m, int(key))
    if e.get("rows") != b - a or e.get("sha256") != _sha(vec[a:b]): bad.append(int(key))
  for c in bad: del m["chunks"][str(c)]
  return bad


def _check_shard(shard):
  if shard is None: return 0, 1
  i, n = (int(x) for x in shard)
  if n < 1 or not 0 <= i < n: raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
  return i, n


def _embed(teacher, texts: list[str], batch_size: int, dim: int) -> np.ndarray:
  kwargs = {"batch_size": batch_size}
  params = inspect.signature(teacher.embed).parameters
  if "progress" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()): kwargs["progress"] = False
  out = np.asarray(teacher.embed(texts, **kwargs))
  if out.shape != (len(texts), dim):
    raise ValueError(f"teacher.embed returned shape {out.shape} for {len(texts)} texts, expected ({len(texts)}, {dim})")
  out = out.astype(np.float32, copy=False)
  if not np.isfinite(out).all(): raise ValueError("teacher.embed returned NaN/inf vectors; refusing to cache them")
  return out


def compute_teacher_vectors(data_dir, teacher, batch_size: int = 64, chunk_size: int = 4096, shard=None,
                            progress: bool = True, verify: bool = True) -> np.memmap:
  """Embed every text of `data_dir` with `teacher` into the cache, resuming where a previous run stopped.

  shard=(i, n) computes only chunks c with c % n == i (run each shard in its own copy of the folder, then
  merge_teacher_shards). verify re-hashes finished chunks first and recomputes any that no longer match.
  Returns the vectors as a read-only memmap [N, D] float32 (rows of other shards' chunks stay zero)."""
  dd = open_data_dir(data_dir)
  info = _teacher_info(teacher)
  if int(chunk_size) < 1 or int(batch_size) < 1: raise ValueError("chunk_size and batch_size must be >= 1")
  i, n = _check_shard(shard)
  cache = dd.path / teacher_dir_name(info["name"], info["fingerprint"])
  old = read_json(cache / MANIFEST)
  if old and old.get("chunks") and old.get("chunk_size") != int(chunk_size) and \
     _same_cache(old, _base_manifest(dd, info, old.get("chunk_size") or 1)):
    # never throw away finished GPU work over a chunk_size change: keep the cache's own chunking
    print(f"note: {cache.name} uses chunk_size {old['chunk_size']}; keeping it", file=sys.stderr)
    chunk_size = old["chunk_size"]
  m = _open_cache(cache, _base_manifest(dd, info, chunk_size))
  vec = np.load(cache / VECTORS, mmap_mode="r+")
  if verify and m["chunks"] and _verify(m, vec): atomic_write_json(cache / MANIFEST, m)
  todo = [c for c in range(m["n_chunks"]) if c % n == i and str(c) not in m["chunks"]]
  total = sum(b - a for a, b in (_rows(m, c) for c in todo))
  bar = Progress(total, desc=f"teacher {info['name']}" + (f" shard {i}/{n}" if n > 1 else ""), unit="sent",
                 disable=not progress)
  try:
    for c in todo:
      a, b = _rows(m, c)
      # a chunk can take minutes on a CPU: embed it in slices so the bar moves, write it once when complete
      step = max(8 * int(batch_size), 256)
      parts = []
      for s in range(a, b, step):
        parts.append(_embed(teacher, dd.texts(start=s, stop=min(s + step, b)), int(batch_size), info["dim"]))
        if s + step < b: bar.update(len(parts[-1]), chunk=f"{len(m['chunks'])}/{m['n_chunks']}")
      out = np.concatenate(parts)
      vec[a:b] = out
      vec.flush()  # rows reach the file before the manifest names them
      m["chunks"][str(c)] = {"rows": b - a, "sha256": _sha(out)}
      atomic_write_json(cache / MANIFEST, m)
      bar.update(len(parts[-1]), chunk=f"{len(m['chunks'])}/{m['n_chunks']}")
  finally:
    bar.close()
    del vec
  return np.load(cache / VECTORS, mmap_mode="r")


def _resolve_cache(dd: DataDir, key) -> Path:
  """A cache folder from a teacher object, a teacher name, a fingerprint (or its prefix) or a folder name."""
  if hasattr(key, "fingerprint") and hasattr(key, "name"):
    p = dd.path / teacher_dir_name(key.name, key.fingerprint)
    if p.is_dir(): return p
    key = str(key.fingerprint)
  key = str(key)
  found = []
  for p in sorted(dd.path.glob("teacher-*")):
    m = read_json(p / MANIFEST)
    if m is None: continue
    t = m.get("teacher", {})
    if key in (p.name, t.get("name")) or (len(key) >= 8 and str(t.get("fingerprint", "")).startswith(key)):
      found.append(p)
  if not found:
    have = [p.name for p in sorted(dd.path.glob("teacher-*"))]
    raise FileNotFoundError(f"no teacher vectors for {key!r} in {dd.path} (have: {have or 'none'}); "
                            f"run corpus.compute_teacher_vectors(data_dir, teacher) first")
  if len(found) > 1: raise ValueError(f"teacher key {key!r} is ambiguous in {dd.path}: {[p.name for p in found]}; "
                                      f"pass the fingerprint or folder name")
  return found[0]


def teacher_status(data_dir, key) -> dict:
  """{'dir', 'finished', 'n_chunks', 'complete', 'teacher'} for the cache named by `key`."""
  dd = open_data_dir(data_dir)
  cache = _resolve_cache(dd, key)
  m = read_json(cache / MANIFEST)
  done = len(m["chunks"]) if m and m.get("data_id") == dd.data_id else 0
  n_chunks = m["n_chunks"] if m else -1
  return {"dir": cache, "finished": done, "n_chunks": n_chunks, "complete": done == n_chunks, "teacher": m["teacher"]}


def teacher_vectors(data_dir, key, verify: bool = False) -> np.memmap:
  """The complete teacher vectors [N, D] float32 (read-only memmap); TeacherCacheIncomplete if chunks are missing."""
  dd = open_data_dir(data_dir)
  st = teacher_status(dd, key)
  if not st["complete"]:
    raise TeacherCacheIncomplete(
      f"teacher vectors in {st['dir']} are incomplete ({st['finished']}/{st['n_chunks']} chunks); run "
      f"corpus.compute_teacher_vectors(data_dir, teacher) to finish them (it resumes), or merge_teacher_shards")
  vec = np.load(st["dir"] / VECTORS, mmap_mode="r")
  if verify:
    m = read_json(st["dir"] / MANIFEST)
    bad = _verify(m, vec)
    if bad: raise TeacherCacheIncomplete(f"{st['dir']}: chunks {bad[:10]} fail their checksums; "
                                         f"run compute_teacher_vectors to recompute them")
  return vec


def merge_teacher_shards(dst, srcs, teacher_key=None) -> dict:
  """Copy finished, checksum-valid chunks from each src cache into dst; returns counts and completeness.

  dst/srcs are cache folders (teacher-*/), or data folders when teacher_key names the teacher."""
  def cache_of(p):
    p = Path(p)
    return _resolve_cache(open_data_dir(p), teacher_key) if teacher_key is not None else p
  dst_cache = cache_of(dst)
  copied = bad = 0
  dm = read_json(dst_cache / MANIFEST)
  for src in srcs:
    sc = cache_of(src)
    sm = read_json(sc / MANIFEST)
    if sm is None: raise FileNotFoundError(f"no teacher cache manifest in {sc}")
    if dm is None:  # the destination copy never started this teacher: take the identity from the first source
      dm = _open_cache(dst_cache, dict(sm, chunks={}))
    if not _same_cache(dm, sm):
      raise ValueError(f"cannot merge {sc} into {dst_cache}: different data, teacher or chunk_size")
    svec = np.load(sc / VECTORS, mmap_mode="r")
    dvec = np.load(dst_cache / VECTORS, mmap_mode="r+")
    for key, e in sorted(sm["chunks"].items(), key=lambda kv: int(kv[0])):
      a, b = _rows(sm, int(key))
      have = dm["chunks"].get(key)
      if have is not None and have.get("sha256") == _sha(dvec[a:b]): continue
      rows = np.array(svec[a:b])
      if e.get("rows") != b - a or e.get("sha256") != _sha(rows):
        bad += 1
        continue
      dvec[a:b] = rows
      dvec.flush()
      dm["chunks"][key] = {"rows": b - a, "sha256": e["sha256"]}
      atomic_write_json(dst_cache / MANIFEST, dm)
      copied += 1
    del svec, dvec
  done = len(dm["chunks"]) if dm else 0
  return {"dir": dst_cache, "copied": copied, "bad": bad, "finished": done,
          "n_chunks": dm["n_chunks"] if dm else -1, "complete": bool(dm) and done == dm["n_chunks"]}


def write_complete_cache(dd: DataDir, info: dict, vectors: np.ndarray, chunk_size: int = 4096) -> Path:
  """Write a finished cache from in-memory vectors (used by import_jsonl)."""
  m = _base_manifest(dd, info, chunk_size)
  cache = dd.path / teacher_dir_name(info["name"], info["fingerprint"])
  _open_cache(cache, m)
  vec = np.load(cache / VECTORS, mmap_mode="r+")
  vec[:] = vectors
  vec.flush()
  m["chunks"] = {str(c): {"rows": b - a, "sha256": _sha(vec[a:b])} for c in range(m["n_chunks"])
                 for a, b in [_rows(m, c)]}
  atomic_write_json(cache / MANIFEST, m)
  del vec
  return cache
