"""On-disk layout of a prepared data folder, and the atomic-write helpers every writer in corpus*.py uses.

A data folder holds: texts.bin (utf-8 bytes) + offsets.npy int64 [N+1], split.npy uint8 [N] (0 train, 1 val,
2 test), tokenizer.json, tokens.npy [N, max_len] (uint16 or int32), lengths.npy int32 [N] (BOS..EOS after
truncation), teacher-*/ caches, and meta.json. meta.json is written last: a folder without it is unfinished.
"""
from __future__ import annotations
import contextlib, errno, json, os, re, shutil
from pathlib import Path

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}
FORMAT = "studentz-data/1"


# ---------------------------------------------------------------- atomic writes
def fsync_dir(d) -> None:
  """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
  try: fd = os.open(str(d), os.O_RDONLY)
  except OSError: return
  try: os.fsync(fd)
  except OSError: pass
  finally: os.close(fd)


def _tmp_for(path: Path) -> Path:
  return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _alive(pid: int) -> bool:
  try: os.kill(pid, 0)
  except ProcessLookupError: return False
  except PermissionError: return True  # someone else's live process
  return True


def remove_stale_tmps(path: Path) -> None:
  """Delete the temp files of `path` left by processes that died (kill -9, SIGBUS): a 50 MB one per crash otherwise
  stays for ever. Only `.NAME.tmpPID` next to `path`, and only of pids no longer running."""
  for f in path.parent.glob(f".{path.name}.tmp*"):
    m = re.fullmatch(rf"\.{re.escape(path.name)}\.tmp(\d+)", f.name)
    if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))) and not f.is_symlink():
      with contextlib.suppress(OSError): f.unlink()


def reserve(path: Path, nbytes: int) -> None:
  """Fail with ENOSPC, naming the sizes, unless `nbytes` fit on path's file system: a memory-mapped write past the
  free space is a SIGBUS that kills the process without a word."""
  free = shutil.disk_usage(path.parent).free
  if nbytes > free:
    raise OSError(errno.ENOSPC, f"not enough disk space for {path.name}: it needs {nbytes / 2**20:,.0f} MiB, "
                                f"{free / 2**20:,.0f} MiB are free", str(path.parent))


@contextlib.contextmanager
def atomic_path(path):
  """Yield a temp path next to `path`; on success fsync it and rename it over `path`, on error delete it."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_tmps(path)
  tmp = _tmp_for(path)
  try:
    yield tmp
    with open(tmp, "rb+") as f: os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
  finally:
    if tmp.exists(): tmp.unlink()


def atomic_write_json(path, obj) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8")


def atomic_save_npy(path, arr) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f: np.save(f, np.ascontiguousarray(arr))


@contextlib.contextmanager
def atomic_memmap(path, dtype, shape):
  """Yield a writable .npy memmap that only appears at `path` once the block finished without error."""
  with atomic_path(path) as tmp:
    reserve(tmp, int(np.prod(shape)) * np.dtype(dtype).itemsize + 4096)
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate") and mm.size:  # the blocks themselves: another writer may fill the disk meanwhile
      with open(tmp, "rb+") as f:
        try: os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
        except OSError as e:  # a file system without fallocate keeps the free-space check alone
          if e.errno in (errno.ENOSPC, errno.EDQUOT): raise
    try:
      yield mm
      mm.flush()
    finally:
      del mm


def read_json(path) -> dict | None:
  """The JSON object at `path`, or None when it is missing or unreadable (treated as 'not there')."""
  try:
    with open(path, encoding="utf-8") as f: obj = json.load(f)
  except (OSError, ValueError):
    return None
  return obj if isinstance(obj, dict) else None


def split_id(split) -> int | None:
  """'train'/'val'/'test' or 0/1/2 -> id; None or 'all' -> None (every row)."""
  if split is None or split == "all": return None
  if isinstance(split, str):
    if split not in SPLITS: raise ValueError(f"split must be one of {sorted(SPLITS)} or 'all', got {split!r}")
    return SPLITS[split]
  if int(split) not in SPLITS.values(): raise ValueError(f"split id must be 0, 1 or 2, got {split!r}")
  return int(split)


# ---------------------------------------------------------------- reading a prepared folder
class DataDir:
  """Read-only view of a prepared data folder; every array is memory-mapped, nothing is loaded eagerly."""

  def __init__(self, path):
    self.path = Path(path)
    meta = read_json(self.path / "meta.json")
    if meta is None or meta.get("format") != FORMAT:
      raise FileNotFoundError(f"{self.path} is not a prepared data folder (no complete meta.json); "
                              f"run `python -m studentz_corpus prepare --source ... --out {self.path}`")
    self.meta = meta
    self.n = int(meta["n"])
    self.max_len = int(meta["max_len"])
    self.offsets = np.load(self.path / "offsets.npy", mmap_mode="r")
    size = (self.path / "texts.bin").stat().st_size
    # np.memmap refuses empty files; an empty corpus never gets this far, but keep the guard cheap
    self._bytes = np.memmap(self.path / "texts.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    self.split = np.load(self.path / "split.npy", mmap_mode="r")
    self.tokens = np.load(self.path / "tokens.npy", mmap_mode="r")
    self.lengths = np.load(self.path / "lengths.npy", mmap_mode="r")
    if not (len(self.offsets) == self.n + 1 and len(self.split) == self.n and len(self.lengths) == self.n
            and self.tokens.shape == (self.n, self.max_len) and int(self.offsets[-1]) == size):
      raise ValueError(f"{self.path}: arrays disagree with meta.json (n={self.n}); delete the folder and prepare again")
    self._tokenizer = None

  def __len__(self) -> int: return self.n

  @property
  def data_id(self) -> str: return self.meta["data_id"]

  def text(self, i: int) -> str:
    a, b = int(self.offsets[i]), int(self.offsets[i + 1])
    return bytes(self._bytes[a:b]).decode("utf-8")

  def texts(self, indices=None, start: int | None = None, stop: int | None = None) -> list[str]:
    """Texts at `indices`, or the contiguous rows start:stop (one read for the whole range)."""
    if indices is not None: return [self.text(int(i)) for i in indices]
    start, stop = start or 0, self.n if stop is None else stop
    off = np.asarray(self.offsets[start:stop + 1]) - int(self.offsets[start])
    blob = bytes(self._bytes[int(self.offsets[start]):int(self.offsets[stop])])
    return [blob[off[k]:off[k + 1]].decode("utf-8") for k in range(stop - start)]

  @property
  def domains(self) -> list[str]:
    """Domain names of a mix's folder (domain_of indexes them); one domain, named after its source, otherwise."""
    return list(self.meta.get("domains") or [Path(str(self.meta.get("source", "corpus"))).name.split(".")[0]])

  @property
  def domain_of(self) -> np.ndarray:
    """uint8 [n]: each row's index into `domains`."""
    p = self.path / "domain.npy"
    return np.load(p, mmap_mode="r") if p.is_file() else np.zeros(self.n, np.uint8)

  def indices(self, split=None) -> np.ndarray:
    sid = split_id(split)
    return np.arange(self.n, dtype=np.int64) if sid is None else np.flatnonzero(np.asarray(self.split) == sid)

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      from studentz_corpus.tokenizer import StudentTokenizer
      p = self.path / "tokenizer.json"
      if not p.is_file(): raise FileNotFoundError(f"{self.path} has no tokenizer.json (imported with raw ids?)")
      self._tokenizer = StudentTokenizer.load(p)
    return self._tokenizer

  def __repr__(self) -> str:
    counts = self.meta.get("split_counts", {})
    return f"DataDir({str(self.path)!r}, n={self.n}, max_len={self.max_len}, splits={counts})"


def open_data_dir(d) -> DataDir:
  return d if isinstance(d, DataDir) else DataDir(d)
