"""A sentence-embedding teacher: HF folder -> tokenizer + tinygrad encoder + sentence-transformers pooling.

Throughput comes from two things: sentences are sorted by length so a batch holds similar lengths, and every batch
is padded to a fixed batch size and one of a few length buckets, so each (batch, bucket) shape is captured once by
TinyJit and then replayed without re-scheduling.
"""
from studentz_kernels import backend  # noqa: F401  (maps METAL=1 style switches before tinygrad is imported)
import functools, hashlib, json, os
from pathlib import Path
import numpy as np
from tinygrad import Tensor, TinyJit, dtypes
from studentz_kernels.device_inputs import InputSlots
from teacher.folder import (OFFSET_POSITION_TYPES, POOLING_MODES, _read_json, _token_str,  # noqa: F401
                            load_tokenizer, read_pooling)
from teacher.models import Encoder, ModelLoadError, load_model

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
# "fp16": matmuls in half precision with float32 sums (teacher.models.mm), for bulk passes on a GPU; "fp32": parity
PRECISIONS = {"fp32": None, "fp16": dtypes.float16}
# how many sentences are tokenized and length-sorted at a time: big enough for good sorting, bounded memory
SORT_WINDOW_BATCHES = 64


def _cache_root(cache_dir) -> Path:
  return Path(cache_dir or os.environ.get("STUDENTZ_CACHE") or Path.home() / ".cache" / "studentz").expanduser()


def file_fingerprint(path: Path, cache_dir=None) -> str:
  """sha256 hex of a file, remembered in a side file keyed by size + mtime so reloading a teacher is cheap."""
  path, st = Path(path).resolve(), Path(path).stat()
  side = _cache_root(cache_dir) / "fingerprints" / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")
  cached = _read_json(side, None) if side.exists() else None
  if cached and cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
    return cached["sha256"]
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""): h.update(chunk)
  digest = h.hexdigest()
  try:
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}))
  except OSError: pass  # a read-only cache only costs a re-hash next time
  return digest


class Teacher:
  """A loaded teacher: `embed(texts)` -> np.float32 [N, dim], pooled/normalised as its sentence-transformers config."""

  def __init__(self, folder: str | Path, name: str | None = None, cache_dir=None, precision: str = "fp32"):
    self.folder, self.cache_dir = Path(folder), cache_dir
    self.name = name or self.folder.name
    self.model: Encoder = load_model(self.folder)
    self.config = self.model.config
    self.pooling, self.normalize, st_max = read_pooling(self.folder)
    pos_limit = self.config.get("max_position_embeddings", 512)
    pos_limit -= 2 if self.config.get("model_type") in OFFSET_POSITION_TYPES else 0
    self.position_limit = int(pos_limit)  # the most tokens the position table has rows for
    self._jits: dict[tuple, tuple] = {}  # (B, L) sentence vectors; ("hidden", B, L) token vectors: (JIT, its inputs)
    self.tokenizer, pad_id = load_tokenizer(self.folder, self.position_limit)
    self.max_seq_length = int(min(st_max or pos_limit, pos_limit))
    self.pad_id = pad_id if pad_id is not None else int(self.config.get("pad_token_id") or 0)
    self.dim = self.model.dim * len(self.pooling)
    self._empty_ids = np.asarray(self.tokenizer.encode("").ids, dtype=np.int32)  # the filler row: CLS SEP
    self.truncated = 0  # texts cut to max_seq_length by encode(), over this object's life
    self.precision = precision

  @property
  def precision(self) -> str: return self._precision

  @precision.setter
  def precision(self, p: str) -> None:
    if p not in PRECISIONS: raise ValueError(f"teacher precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    if p != getattr(self, "_precision", None): self._jits.clear()  # captured kernels hold the old dtype
    self._precision, self.model.compute_dtype = p, PRECISIONS[p]

  @property
  def max_seq_length(self) -> int: return self._max_seq_length

  @max_seq_length.setter
  def max_seq_length(self, n: int) -> None:
    """Where texts are cut, in tokens with the specials: the sentence-transformers config's value by default (256 for
    all-MiniLM-L6-v2, 384 for all-mpnet-base-v2, the lengths they were tuned at), at most the position table's size, as
    sentence-transformers' `model.max_seq_length = n` allows."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= self.position_limit:
      raise ValueError(f"max_seq_length must be an integer from 2 to {self.position_limit} (the teacher's position "
                       f"table), got {n!r}")
    self._max_seq_length = int(n)
    self.tokenizer.enable_truncation(max_length=self._max_seq_length)
    self.buckets = sorted({min(b, self._max_seq_length) for b in LENGTH_BUCKETS} | {self._max_seq_length})

  def __repr__(self) -> str:
    return (f"Teacher({self.name!r}, {self.config.get('model_type')}, dim={self.dim}, max_seq_length="
            f"{self.max_seq_length}, pooling={'+'.join(self.pooling)}, normalize={self.normalize}, "
            f"precision={self.precision})")

  @functools.cached_property
  def fingerprint(self) -> str: return file_fingerprint(self.folder / "model.safetensors", self.cache_dir)

  # ---- model math -------------------------------------------------------------------------------------------------
  def hidden_states(self, input_ids, attention_mask) -> Tensor:
    """Last hidden state (B, L, d) for given ids/mask (numpy or Tensor); unjitted, for parity tests."""
    ids = input_ids if isinstance(input_ids, Tensor) else Tensor(np.asarray(input_ids, dtype=np.int32))
    mask = attention_mask if isinstance(attention_mask, Tensor) else Tensor(np.asarray(attention_mask, np.float32))
    return self.model(ids.cast(dtypes.int32), mask.float())

  def pool(self, h: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d) hidden, (B, L) mask -> (B, dim) sentence vectors, as sentence-transformers' Pooling + Normalize."""
    m = mask.float().unsqueeze(-1)  # (B, L, 1)
    count = m.sum(1).maximum(1e-9)  # (B, 1)
    parts = {"cls": lambda: h[:, 0], "max": lambda: (m > 0).where(h, -1e9).max(1),
             "mean": lambda: (h * m).sum(1) / count, "mean_sqrt_len": lambda: (h * m).sum(1) / count.sqrt()}
    vecs = [parts[p]() for p in self.pooling]
    out = vecs[0].cat(*vecs[1:], dim=1) if len(vecs) > 1 else vecs[0]
    if self.normalize: out = out / out.square().sum(-1, keepdim=True).sqrt().maximum(1e-12)
    return out  # (B, dim)

  def _sentence_vectors(self, ids: Tensor, mask: Tensor) -> Tensor:
    return self.pool(self.model(ids, mask), mask).realize()

  def _hidden(self, ids: Tensor, mask: Tensor) -> Tensor: return self.model(ids, mask).float().realize()

  def _forward(self, ids: np.ndarray, mask: np.ndarray, hidden: bool = False) -> np.ndarray:
    """Sentence vectors (B, dim), or with hidden the last hidden state (B, L, d), as a numpy copy."""
    # one TinyJit per shape: a jit replays a fixed kernel graph, so a new shape needs its own capture
    key = ("hidden", *ids.shape) if hidden else ids.shape
    if key not in self._jits:
      self._jits[key] = (TinyJit(self._hidden if hidden else self._sentence_vectors), InputSlots([ids, mask]))
    jit, slots = self._jits[key]
    out = jit(*slots.fill(ids, mask))  # copied into the JIT's own input buffers: no scheduler work per batch
    return out.numpy().copy()  # the jit reuses its output buffer on the next call

  # ---- batching -----------------------------------------------------------------------------------------------------
  def bucket(self, n_tokens: int) -> int:
    return next(b for b in self.buckets if b >= n_tokens)

  def _batches(self, ids_list: list, B: int):
    """(rows, ids [B, L], mask [B, L]) over ids_list, longest first (the worst shape early), each batch padded to its
    length bucket; filler rows (CLS SEP) keep the batch shape fixed."""
    order = sorted(range(len(ids_list)), key=lambda i: -len(ids_list[i]))
    for b0 in range(0, len(order), B):
      rows = order[b0:b0 + B]
      L = self.bucket(max(len(ids_list[i]) for i in rows))
      ids = np.full((B, L), self.pad_id, dtype=np.int32)
      mask = np.zeros((B, L), dtype=np.float32)
      for r in range(B):
        seq = ids_list[rows[r]] if r < len(rows) else self._empty_ids
        ids[r, :len(seq)], mask[r, :len(seq)] = seq, 1.0
      yield rows, ids, mask

  @staticmethod
  def _batch_size(batch_size: int, n: int) -> int:
    # few inputs: shrink the batch to a power of two so a 3-sentence call doesn't compute 64 rows
    if batch_size < 1: raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return min(batch_size, 1 << (n - 1).bit_length())

  def encode(self, texts: list[str]) -> list[np.ndarray]:
    """Token ids per text (specials added, truncated to max_seq_length)."""
    encs = self.tokenizer.encode_batch(list(texts))
    # counted so callers can tell the user: a silently cut sentence gets a vector of its first part only
    self.truncated += sum(1 for e in encs if e.overflowing)
    return [np.asarray(e.ids, dtype=np.int32) for e in encs]

  def embed(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """np.float32 [N, dim] for `texts`, in input order."""
    texts = list(texts)
    B = self._batch_size(batch_size, len(texts))
    out = np.zeros((len(texts), self.dim), dtype=np.float32)
    if not texts: return out
    bar = None
    if progress:
      from studentz_corpus.progress import Progress
      bar = Progress(len(texts), desc=f"embed {self.name}", unit="sent")
    window = B * SORT_WINDOW_BATCHES
    for w0 in range(0, len(texts), window):
      for rows, ids, mask in self._batches(self.encode(texts[w0:w0 + window]), B):
        out[[w0 + i for i in rows]] = self._forward(ids, mask)[:len(rows)]
        if bar: bar.update(len(rows))
    if bar: bar.close()
    return out

  def token_vectors(self, texts, batch_size: int = 64) -> list[tuple[np.ndarray, list, list]]:
    """Per text, in input order: (last-layer token vectors float32 [n, d], character offsets [(start, end)] of each
    token in the text, special-token flags [n]) -- what a mean-pooling teacher averages into the sentence vector."""
    texts = list(texts)
    B = self._batch_size(batch_size, len(texts))
    if not texts: return []
    encs = self.tokenizer.encode_batch(texts)
    out: list = [None] * len(texts)
    for rows, ids, mask in self._batches([e.ids for e in encs], B):
      h = self._forward(ids, mask, hidden=True)                                    # (B, L, d)
      for r, i in enumerate(rows): out[i] = (h[r, :len(encs[i].ids)], encs[i].offsets, encs[i].special_tokens_mask)
    return out


def load_teacher(name_or_path, cache_dir=None, precision: str = "fp32") -> Teacher:
  """A Teacher from a local HF folder, a packaged short name ("all-MiniLM-L6-v2") or a hub id (see teacher.hub)."""
  from teacher.hub import resolve  # lazy: resolution may need pip/network, loading a model never does
  folder = Path(resolve(str(name_or_path), cache_dir=cache_dir))
  return Teacher(folder, name=str(name_or_path), cache_dir=cache_dir, precision=precision)


def bulk_precision(choice: str, device: str) -> str:
  """The teacher precision for a bulk pass (corpus vectors, token targets): "auto" is fp16 on a GPU, where it runs on
  the half-precision matrix units, and fp32 on a CPU, where half precision is no faster."""
  if choice == "auto": return "fp32" if device.split(":")[0] == "CPU" else "fp16"
  if choice not in PRECISIONS: raise ValueError(f"teacher precision must be auto or one of {', '.join(PRECISIONS)}")
  return choice
