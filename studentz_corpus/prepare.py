"""Data pipeline: text/JSONL(.gz) -> clean deduplicated sentences with a hash split -> memory-mapped tokens ->
teacher-vector cache -> batches. Also JSONL export/import and a CLI (`python -m studentz_corpus --help`).

Helpers live in text.py (reading, sentence splitting), store.py (folder layout, atomic writes), teacher_cache.py
(teacher cache) and loader.py (Loader); everything public is re-exported here.
"""
from __future__ import annotations
import argparse, collections, gzip, hashlib, json, os, sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from studentz_corpus import mix as corpus_mix, token_targets as corpus_tokens
from studentz_corpus.loader import Loader
from studentz_corpus.store import (FORMAT, SPLITS, DataDir, atomic_memmap, atomic_path, atomic_save_npy,
                                   atomic_write_json, open_data_dir, read_json)
from studentz_corpus.teacher_cache import (TeacherCacheIncomplete, compute_teacher_vectors, merge_teacher_shards,
                                           teacher_status, teacher_vectors, write_complete_cache)
from studentz_corpus.text import (SPLITTER_VERSION, TextReader, read_texts, sentence_key, span_crops, split_of,
                                  split_sentences)
from studentz_corpus.progress import Progress
from studentz_corpus.tokenizer import EOS, StudentTokenizer

__all__ = ["read_texts", "split_sentences", "build_sentences", "prepare", "DataDir", "open_data_dir", "Loader",
           "compute_teacher_vectors", "merge_teacher_shards", "teacher_vectors", "teacher_status",
           "TeacherCacheIncomplete", "export_jsonl", "import_jsonl", "source_fingerprint", "SPLITS"]

DEFAULT_FRACTIONS = (0.98, 0.01, 0.01)
_MB = 1 << 20
_ENCODE_CHUNK = 8192


def _is_path(source) -> bool: return isinstance(source, (str, os.PathLike))


def source_fingerprint(source) -> dict:
  """Identity of a source that is the same on every machine: sha256 of size + first and last MB (or of all texts)."""
  if _is_path(source):
    p = Path(source)
    if not p.is_file(): raise FileNotFoundError(f"corpus source not found: {p} (no such file)")
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
      h.update(f.read(_MB))
      if size > _MB:
        f.seek(max(_MB, size - _MB))
        h.update(f.read(_MB))
    return {"kind": "file", "size": size, "sha256": h.hexdigest()}
  if isinstance(source, (list, tuple)):
    h = hashlib.sha256()
    for t in source: h.update(str(t).encode("utf-8") + b"\0")
    return {"kind": "texts", "count": len(source), "sha256": h.hexdigest()}
  raise ValueError("source must be a file path or a list of texts (a one-shot iterator cannot be fingerprinted)")


def _check_fractions(fractions) -> tuple:
  fr = tuple(float(x) for x in fractions)
  if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0 or fr[0] <= 0:
    raise ValueError(f"fractions must be 3 non-negative numbers (train, val, test) with train > 0, got {fractions!r}")
  return fr


def build_sentences(source, limit: int | None = None, *, fractions=DEFAULT_FRACTIONS,
                    stats: dict | None = None, crops: int = 0) -> Iterator[tuple[str, int]]:
  """Yield (sentence, split) in source order: split_sentences of every text, exact dedup (16-byte digests in a set),
  split 0/1/2 from a hash of the sentence. Stops after `limit` kept sentences, so a limit gives a prefix.
  crops: after each training sentence, up to this many of its word spans (span_crops), also split 0 (a span of a
  held-out sentence never becomes a training text; one that repeats a text already seen is dropped as a duplicate).
  `source` is a file path (see read_texts) or an iterable of texts; counts land in `stats` if given."""
  fractions = _check_fractions(fractions)
  stats = stats if stats is not None else {}
  reader = read_texts(source) if _is_path(source) else None
  texts = reader if reader is not None else source

  def stream():
    for text in texts:
      if not isinstance(text, str): raise ValueError(f"texts must be str, got {type(text).__name__}")
      for s in split_sentences(text): yield s, split_of(s, fractions), 0
  try:
    for s, sp, _ in _dedup(stream(), limit, stats, crops): yield s, sp
  finally:
    if reader is not None: stats["reader"] = dict(reader.stats)


def build_mixed(sources: list, limit: int | None = None, *, stats: dict | None = None,
                crops: int = 0) -> Iterator[tuple[str, int, int]]:
  """Yield (text, split, domain index) of a mix (corpus_mix.Source list), sources interleaved round-robin, deduplicated
  across sources (the first source to give a text keeps it), each training text followed by the variants its source's
  augment field picks (corpus_mix.augmenter); the reader counts of each domain land in stats["reader"]."""
  stats = stats if stats is not None else {}
  readers: dict = {}
  its = [corpus_mix.source_texts(src, readers) for src in sources]
  try:
    yield from _dedup(((s, sp, d) for d, (s, sp) in corpus_mix.interleave(its)), limit, stats, crops,
                      corpus_mix.augmenter(sources))
  finally:
    for it in its: it.close()  # the readers' counts are written when their generators close
    stats["reader"] = readers


def _dedup(stream, limit, stats: dict, crops: int, variants=None) -> Iterator[tuple[str, int, int]]:
  """Drop exact repeats of (text, split, domain) items, add word-span crops and, given variants(text, domain), the
  augmented variants of training texts; stop at `limit`."""
  if limit is not None and int(limit) < 1: raise ValueError(f"limit must be >= 1 or None, got {limit!r}")
  seen: set[bytes] = set()
  def fresh(t: str) -> bool:
    k = sentence_key(t)
    if k in seen: return False
    seen.add(k)
    return True
  kept = dups = cropped = augmented = 0
  try:
    for s, sp, d in stream:
      if not fresh(s):
        dups += 1
        continue
      crop_texts = span_crops(s, crops if sp == 0 else 0)
      extra = variants(s, d) if variants is not None and sp == 0 else []
      for t, t_sp in [(s, sp), *((c, 0) for c in crop_texts + extra)]:
        if t is not s and not fresh(t): continue  # a span or variant that repeats a text already kept
        kept, cropped, augmented = kept + 1, cropped + (t in crop_texts), augmented + (t in extra)
        yield t, t_sp, d
        if limit is not None and kept >= limit: return
  finally:
    stats.update({"sentences": kept, "duplicates": dups, **({"crops": cropped} if crops else {}),
                  **({"augmented": augmented} if variants is not None else {})})


# ---------------------------------------------------------------- writing a data folder
def _write_texts(out: Path, pairs: Iterable[tuple], progress: bool) -> tuple[int, np.ndarray, str]:
  """Stream (text, split[, domain]) items into texts.bin; write offsets.npy, split.npy and, for a mix, domain.npy.
  Returns (n, split array, data_id)."""
  offsets, splits, domains = [0], [], []
  h = hashlib.sha256()
  bar = Progress(None, desc="sentences", unit="sent", disable=not progress)
  with atomic_path(out / "texts.bin") as tmp:
    with open(tmp, "wb") as f:
      for s, sp, *d in pairs:
        b = s.encode("utf-8")
        f.write(b)
        # the length prefix makes the digest identify the sentence boundaries too, not only the bytes
        h.update(len(b).to_bytes(8, "little") + b)
        offsets.append(offsets[-1] + len(b))
        splits.append(sp)
        domains.extend(d)
        if len(splits) % 10000 == 0: bar.update(10000)
    bar.update(len(splits) % 10000)
    bar.close()
    if not splits: raise ValueError("no sentences")
  split = np.array(splits, np.uint8)
  atomic_save_npy(out / "offsets.npy", np.array(offsets, np.int64))
  atomic_save_npy(out / "split.npy", split)
  (out / "domain.npy").unlink(missing_ok=True)  # a folder rebuilt from one source keeps no domains of an old mix
  if domains: atomic_save_npy(out / "domain.npy", np.array(domains, np.uint8))
  return len(splits), split, h.hexdigest()


def _iter_file_texts(out: Path, rows: np.ndarray) -> Iterator[str]:
  off = np.load(out / "offsets.npy")
  data = np.memmap(out / "texts.bin", dtype=np.uint8, mode="r")
  for i in rows: yield bytes(data[off[i]:off[i + 1]]).decode("utf-8")


def _token_dtype(vocab_size: int): return np.uint16 if vocab_size <= 1 << 16 else np.int32


def _write_tokens(out: Path, n: int, max_len: int, dtype, chunks: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> int:
  """chunks yields (start, ids [k, max_len], lengths [k]); writes tokens.npy + lengths.npy, returns #truncated."""
  lengths = np.zeros(n, np.int32)
  truncated = 0
  with atomic_memmap(out / "tokens.npy", dtype, (n, max_len)) as mm:
    for start, ids, lens, trunc in chunks:
      mm[start:start + len(ids)] = ids
      lengths[start:start + len(ids)] = lens
      truncated += int(trunc.sum())
  atomic_save_npy(out / "lengths.npy", lengths)
  return truncated


def _encode_chunks(out: Path, tok: StudentTokenizer, n: int, max_len: int, progress: bool):
  bar = Progress(n, desc="tokenize", unit="sent", disable=not progress)
  texts = _iter_file_texts(out, np.arange(n))
  for start in range(0, n, _ENCODE_CHUNK):
    batch = [next(texts) for _ in range(min(_ENCODE_CHUNK, n - start))]
    ids, mask, trunc = tok.encode_batch(batch, max_len, return_truncated=True)
    yield start, ids, mask.sum(1).astype(np.int32), trunc
    bar.update(len(batch))
  bar.close()


def _forget_stale_caches(out: Path, data_id: str, tokens_id: str) -> None:
  """Teacher caches of other texts go; those of the same texts keep their sentence vectors, but token targets
  computed for other student tokens (another max_len or tokenizer) go."""
  import shutil
  for p in out.glob("teacher-*"):
    m = read_json(p / "manifest.json")
    if m is None or m.get("data_id") != data_id: shutil.rmtree(p, ignore_errors=True)
    else: corpus_tokens.forget_stale(p, tokens_id)


def _load_tokenizer(tokenizer) -> StudentTokenizer | None:
  if tokenizer is None or isinstance(tokenizer, StudentTokenizer): return tokenizer
  return StudentTokenizer.load(tokenizer)


def prepare(source, out_dir, *, tokenizer=None, vocab_size: int = 16000, max_len: int = 64, teacher=None,
            limit: int | None = None, teacher_batch_size: int = 64, shard=None, progress: bool = True,
            fractions=DEFAULT_FRACTIONS, min_frequency: int = 2, crops: int = 0) -> DataDir:
  """Build (or reuse, when meta.json records the same source fingerprint and settings) a data folder.

  tokenizer: None (fit one on the train sentences), a StudentTokenizer, or a path to its JSON file.
  teacher: if given, also fill its vector cache (resumable; shard=(i, n) for a slice, see compute_teacher_vectors)."""
  if isinstance(max_len, bool) or int(max_len) < 3: raise ValueError(f"max_len must be >= 3, got {max_len!r}")
  fractions = _check_fractions(fractions)
  out = Path(out_dir)
  tok = _load_tokenizer(tokenizer)
  if tok is None and int(vocab_size) < 64: raise ValueError(f"vocab_size must be >= 64, got {vocab_size!r}")
  tok_key = tok.fingerprint if tok is not None else {"fit": int(vocab_size), "min_frequency": int(min_frequency)}
  mix = corpus_mix.load_mix(source) if corpus_mix.is_mix(source) else None
  src_key = corpus_mix.fingerprint(mix, source_fingerprint) if mix else source_fingerprint(source)
  key = json.loads(json.dumps({"source": src_key, "limit": limit, "max_len": int(max_len),
                               "fractions": fractions, "splitter": SPLITTER_VERSION, "tokenizer": tok_key,
                               **({"crops": int(crops)} if crops else {})}))
  dd = None
  meta = read_json(out / "meta.json")
  if meta is not None and meta.get("key") == key:
    try: dd = DataDir(out)
    except (OSError, ValueError): dd = None
  if dd is None:
    dd = _build(source, out, key, tok, int(vocab_size), int(min_frequency), int(max_len), limit, fractions, progress,
                int(crops), mix)
  if mix: dd = _record_weights(dd, mix)
  if teacher is not None:
    compute_teacher_vectors(dd, teacher, batch_size=teacher_batch_size, shard=shard, progress=progress)
  return dd


def _build(source, out, key, tok, vocab_size, min_frequency, max_len, limit, fractions, progress, crops=0,
           mix=None) -> DataDir:
  out.mkdir(parents=True, exist_ok=True)
  # from here on the folder is unfinished: without meta.json nobody will trust the half-written arrays
  (out / "meta.json").unlink(missing_ok=True)
  stats: dict = {}
  items = (build_mixed(mix, limit, stats=stats, crops=crops) if mix else
           build_sentences(source, limit, fractions=fractions, stats=stats, crops=crops))
  try:
    n, split, data_id = _write_texts(out, items, progress)
  except ValueError as e:
    if str(e) != "no sentences": raise
    raise ValueError(f"no usable sentences in {source if _is_path(source) else 'the given texts'} "
                     f"(reader stats: {stats.get('reader', {})}); need text lines or JSONL with a 'text' field, "
                     f"with sentences of 5-60 words") from None
  if tok is None:
    train = np.flatnonzero(split == 0)
    if train.size == 0: raise ValueError(f"all {n} sentences fell in val/test; need train sentences to fit a tokenizer")
    if progress: print(f"fitting tokenizer (vocab {vocab_size}) on {train.size} train sentences", file=sys.stderr)
    tok = StudentTokenizer.fit(_iter_file_texts(out, train), vocab_size=vocab_size, min_frequency=min_frequency)
  tok.save(out / "tokenizer.json")
  chunks = _encode_chunks(out, tok, n, max_len, progress)
  truncated = _write_tokens(out, n, max_len, _token_dtype(tok.vocab_size), chunks)
  counts = {name: int((split == i).sum()) for name, i in SPLITS.items()}
  _forget_stale_caches(out, data_id, corpus_tokens.tokens_id(tok.fingerprint, max_len))
  atomic_write_json(out / "meta.json", {
    "format": FORMAT, "key": key, "n": n, "max_len": max_len, "vocab_size": tok.vocab_size, "data_id": data_id,
    "token_dtype": np.dtype(_token_dtype(tok.vocab_size)).name, "split_counts": counts, "truncated": truncated,
    "tokenizer_fingerprint": tok.fingerprint, "stats": stats,
    "source": str(source) if _is_path(source) else "<texts>",
    **({"domains": [m.domain for m in mix], "sources": [m.path for m in mix], "weights": _weights(mix)}
       if mix else {})})
  return DataDir(out)


def _weights(mix: list) -> list[float]: return [float(m.weight) for m in mix]


def _record_weights(dd: DataDir, mix: list) -> DataDir:
  """The mix's domain weights into meta.json (read by the training Loader), rewritten when only they changed."""
  weights = _weights(mix)
  if dd.meta.get("weights") == weights: return dd  # as built
  atomic_write_json(dd.path / "meta.json", {**dd.meta, "weights": weights})
  return DataDir(dd.path)


# ---------------------------------------------------------------- interop JSONL
def _open_text_out(tmp: Path, gz: bool):
  return gzip.open(tmp, "wt", encoding="utf-8") if gz else open(tmp, "w", encoding="utf-8")


def export_jsonl(data_dir, path, teacher_key=None, split=None) -> int:
  """Write {"text", "tokens" (BOS..EOS, no padding), "teacher"} per line (gzip if path ends in .gz); returns rows.
  Without teacher_key the "teacher" field is left out."""
  dd = open_data_dir(data_dir)
  vec = teacher_vectors(dd, teacher_key) if teacher_key is not None else None
  rows = dd.indices(split)
  path = Path(path)
  with atomic_path(path) as tmp:
    with _open_text_out(tmp, path.suffix == ".gz") as f:
      for i in rows:
        obj = {"text": dd.text(int(i)), "tokens": np.asarray(dd.tokens[i, :dd.lengths[i]], np.int64).tolist()}
        # float32 -> Python float is exact, and json writes the shortest repr that reads back to the same double
        if vec is not None: obj["teacher"] = np.asarray(vec[i], np.float32).tolist()
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
  return int(rows.size)


def _fit_ids(ids, max_len: int) -> list[int]:
  if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ids):
    raise ValueError("'tokens' must be a list of non-negative ints")
  # keep the final EOS when cutting, as encode() does
  return ids if len(ids) <= max_len else ids[:max_len - 1] + [ids[-1] if ids[-1] == EOS else ids[max_len - 1]]


def import_jsonl(path, out_dir, max_len: int, *, tokenizer=None, teacher_name: str = "imported",
                 teacher_fingerprint: str | None = None, fractions=DEFAULT_FRACTIONS, progress: bool = True) -> DataDir:
  """Build a data folder from interop JSONL. Tokens are re-encoded with `tokenizer` when given, else taken as given
  (cut to max_len keeping EOS). If records carry "teacher", a complete cache is written under teacher_name with
  teacher_fingerprint (default: sha256 of the vectors). Splits come from the text hash, as in prepare."""
  if int(max_len) < 3: raise ValueError(f"max_len must be >= 3, got {max_len!r}")
  fractions, max_len = _check_fractions(fractions), int(max_len)
  tok = _load_tokenizer(tokenizer)
  reader = TextReader(path, fmt="jsonl")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "meta.json").unlink(missing_ok=True)
  ids_list, vecs, has_teacher = [], [], []  # has_teacher: decided by the first record, then required of all

  def pairs():
    for rec in reader.records():
      if tok is None:
        if "tokens" not in rec: raise ValueError(f"{path}: a record has no 'tokens' and no tokenizer was given")
        ids_list.append(_fit_ids(rec["tokens"], max_len))
      if not has_teacher: has_teacher.append(rec.get("teacher") is not None)
      if (rec.get("teacher") is not None) != has_teacher[0]:
        raise ValueError(f"{path}: some records have 'teacher' and some do not")
      if has_teacher[0]:
        if not isinstance(rec["teacher"], list): raise ValueError(f"{path}: 'teacher' must be a list of numbers")
        vecs.append(np.asarray(rec["teacher"], np.float32))
      yield rec["text"], split_of(rec["text"], fractions)

  try: n, split, data_id = _write_texts(out, pairs(), progress)
  except ValueError as e:
    if str(e) != "no sentences": raise
    raise ValueError(f"no records with a 'text' field in {path} (reader stats: {dict(reader.stats)})") from None
  if tok is not None:
    tok.save(out / "tokenizer.json")
    vocab = tok.vocab_size
    chunks = _encode_chunks(out, tok, n, max_len, progress)
  else:
    (out / "tokenizer.json").unlink(missing_ok=True)
    vocab = max((max(x) for x in ids_list if x), default=0) + 1
    lens = np.array([len(x) for x in ids_list], np.int32)
    ids = np.zeros((n, max_len), np.int64)
    for r, x in enumerate(ids_list): ids[r, :len(x)] = x
    chunks = iter([(0, ids, lens, np.zeros(n, bool))])
  truncated = _write_tokens(out, n, max_len, _token_dtype(vocab), chunks)
  _forget_stale_caches(out, data_id, corpus_tokens.tokens_id(tok.fingerprint if tok else None, max_len))
  key = {"import": source_fingerprint(path), "max_len": max_len, "tokenizer": tok.fingerprint if tok else "ids"}
  atomic_write_json(out / "meta.json", {
    "format": FORMAT, "key": key, "n": n, "max_len": max_len, "vocab_size": vocab, "data_id": data_id,
    "token_dtype": np.dtype(_token_dtype(vocab)).name, "truncated": truncated, "stats": {"reader": dict(reader.stats)},
    "split_counts": {name: int((split == i).sum()) for name, i in SPLITS.items()}, "source": str(path),
    "tokenizer_fingerprint": tok.fingerprint if tok else None})
  dd = DataDir(out)
  if vecs:
    dims = {v.shape for v in vecs}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
      raise ValueError(f"{path}: teacher vectors differ in shape: {dims}")
    mat = np.stack(vecs)
    fp = teacher_fingerprint or hashlib.sha256(mat.astype("<f4").tobytes()).hexdigest()
    write_complete_cache(dd, {"name": teacher_name, "dim": int(mat.shape[1]), "fingerprint": fp}, mat)
  return dd


# ---------------------------------------------------------------- CLI
PRECISION_CHOICES = ("auto", "fp32", "fp16")  # teacher.embedder.bulk_precision's choices (that module needs tinygrad)
PRECISION_HELP = ("teacher matmuls: auto (fp16 on a GPU, fp32 on a CPU), fp32, or fp16 (float32 sums; sentence vectors "
                  "within cosine 0.99999 of fp32)")


def _cli_teacher(a) -> None:
  from studentz_kernels import backend
  backend.check_device()  # before tinygrad is imported: a bad DEV= is one line, not a traceback from inside tinygrad
  from teacher import load_teacher  # only these subcommands need tinygrad
  from teacher.embedder import bulk_precision
  try: shard = tuple(int(x) for x in a.shard.split("/")) if a.shard else None
  except ValueError: raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {a.shard!r}") from None
  try: teacher = load_teacher(a.teacher, precision=bulk_precision(a.precision, backend.device_name()))
  except Exception as e:  # TeacherNotFound, ModelLoadError, bad files: all mean "this teacher is not usable"
    raise ValueError(f"cannot load teacher {a.teacher!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
  if a.cmd == "tokens":
    from studentz_corpus import token_targets as corpus_tokens
    print(corpus_tokens.compute_token_targets(a.data, teacher, batch_size=a.batch_size, shard=shard))
  else: compute_teacher_vectors(a.data, teacher, batch_size=a.batch_size, chunk_size=a.chunk_size, shard=shard)


def prepare_report(dd: DataDir) -> list[str]:
  """What prepare kept and dropped, for stderr: skipped lines vanish silently otherwise."""
  st = dd.meta.get("stats", {})
  rd = st.get("reader", {})
  if rd and all(isinstance(v, dict) for v in rd.values()):  # a mix: one reader per domain, summed here
    rd = dict(sum((collections.Counter(v) for v in rd.values()), collections.Counter()))
  skipped = {k: v for k, v in rd.items() if k not in ("lines", "texts", "invalid_utf8") and v}
  out = [f"read {rd.get('lines', 0)} lines: {rd.get('texts', 0)} texts, {st.get('sentences', dd.n)} sentences kept"
         + (f" ({st['crops']} of them word spans of training sentences)" if st.get("crops") else "")
         + (f" ({st['augmented']} of them augmented variants of training texts)" if st.get("augmented") else "")
         + (f", {st['duplicates']} duplicates dropped" if st.get("duplicates") else "")]
  if skipped:
    out.append(f"skipped {sum(skipped.values())} lines: " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())))
  if rd.get("invalid_utf8"):
    out.append(f"{rd['invalid_utf8']} lines had invalid UTF-8 bytes (kept, bad bytes replaced by U+FFFD)")
  if len(dd.domains) > 1:
    counts = np.bincount(np.asarray(dd.domain_of), minlength=len(dd.domains))
    out.append("domains: " + ", ".join(f"{name} {int(c)}" for name, c in zip(dd.domains, counts)))
  if dd.meta.get("truncated"):
    out.append(f"note: {dd.meta['truncated']} sentences were longer than max_len {dd.max_len} tokens and were "
               f"truncated (raise --max-len to keep them whole)")
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m studentz_corpus",
                               description="StudentZ data folders, teacher caches, JSONL interop")
  sub = ap.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("prepare", help="build (or reuse) a data folder from text / JSONL(.gz)")
  p.add_argument("--source", required=True, help="text file (one text per line) or JSONL with a 'text' field; .gz ok")
  p.add_argument("--out", required=True, help="data folder to create or reuse")
  p.add_argument("--limit", type=int, default=None, help="keep only the first N sentences (fast CPU runs)")
  p.add_argument("--vocab-size", type=int, default=16000)
  p.add_argument("--max-len", type=int, default=64)
  p.add_argument("--tokenizer", default=None, help="existing tokenizer.json instead of fitting one")
  p.add_argument("--crops", type=int, default=0,
                 help="extra training texts: up to N word spans (50-90%% of the words) of each training sentence")
  p.add_argument("--quiet", action="store_true")
  p = sub.add_parser("export", help="write interop JSONL {text, tokens, teacher}")
  p.add_argument("--data", required=True)
  p.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
  p.add_argument("--teacher", default=None, help="teacher name / fingerprint of a finished cache (optional)")
  p.add_argument("--split", default=None, choices=sorted(SPLITS) + ["all"])
  p = sub.add_parser("import", help="build a data folder from interop JSONL")
  p.add_argument("--source", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--max-len", type=int, required=True)
  p.add_argument("--tokenizer", default=None, help="re-encode texts with this tokenizer.json (default: ids as given)")
  p.add_argument("--teacher-name", default="imported")
  p = sub.add_parser("teacher", help="compute the teacher-vector cache (resumable; needs teacher/)")
  p.add_argument("--data", required=True)
  p.add_argument("--teacher", required=True, help="teacher name, HF folder or hub id")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--chunk-size", type=int, default=4096)
  p.add_argument("--shard", default=None, help="i/n: compute only chunks c with c %% n == i")
  p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
  p = sub.add_parser("tokens", help="the teacher's per-token targets (token_targets.py); unsharded, it also writes the "
                     "sentence vectors if they are missing; shards need them first (python -m studentz_corpus teacher)")
  p.add_argument("--data", required=True)
  p.add_argument("--teacher", required=True, help="teacher name, HF folder or hub id")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--shard", default=None, help="i/n: only chunks c with c %% n == i, into a shard file in the same "
                 "folder (run all n at once, on n devices); the last one to finish joins them")
  p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
  p = sub.add_parser("merge", help="merge teacher caches computed as shards in copies of a data folder")
  p.add_argument("--dst", required=True, help="data folder to complete")
  p.add_argument("--src", required=True, nargs="+", help="data folders holding other shards")
  p.add_argument("--teacher", required=True, help="teacher name or fingerprint")
  a = ap.parse_args(argv)
  try:
    if a.cmd == "prepare":
      dd = prepare(a.source, a.out, tokenizer=a.tokenizer, vocab_size=a.vocab_size, max_len=a.max_len,
                   limit=a.limit, progress=not a.quiet, crops=a.crops)
      for line in prepare_report(dd): print(line, file=sys.stderr)
      print(dd)
    elif a.cmd == "export": print(f"{export_jsonl(a.data, a.out, a.teacher, a.split)} rows -> {a.out}")
    elif a.cmd == "import":
      print(import_jsonl(a.source, a.out, a.max_len, tokenizer=a.tokenizer, teacher_name=a.teacher_name))
    elif a.cmd in ("teacher", "tokens"): _cli_teacher(a)
    elif a.cmd == "merge": print(merge_teacher_shards(a.dst, a.src, teacher_key=a.teacher))
  except (FileNotFoundError, ValueError, TeacherCacheIncomplete) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
