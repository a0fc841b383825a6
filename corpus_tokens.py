"""Token-level distillation targets: the teacher's last-layer token vectors, carried onto the student's tokens.

A mean-pooling teacher's sentence vector is the normalised mean of its last-layer token vectors, so the teacher knows
far more about each sentence than the one vector the student is trained against: one target per token instead of one
per sentence (loss_weights.tok, studentz.token_loss). Tokenizers differ (WordPiece vs the student's BPE), so the
targets are aligned by character spans: student token j gets the mean of the teacher tokens whose spans overlap its
own, BOS gets [CLS] and EOS gets [SEP]. Every target is divided by the norm of the teacher's unnormalised mean, so
that the mean of the teacher's scaled token vectors is exactly the cached unit sentence vector: a student whose
per-token projections met their targets would pool (uniformly, per teacher token) into the sentence target.

Stored ragged in the teacher's cache folder, the rows of every sentence back to back (row r at positions
offsets[r]..offsets[r+1], offsets the running sum of lengths.npy): tokens.f16.npy float16 [sum(lengths), D] and
tokens_ok.u8.npy uint8 [sum(lengths)] (0 where no teacher token overlaps, or where re-encoding the text did not give
the stored ids: no target there). A shard (i, n) computes the chunks c % n == i into its own compact file in the same
folder; assemble() joins them once all are there (train.py does it when it finds them).
"""
from __future__ import annotations
import os, re, sys
from pathlib import Path

import numpy as np

from corpus_store import atomic_memmap, atomic_save_npy, atomic_write_json, open_data_dir, read_json
from corpus_teacher import (TeacherCacheIncomplete, _check_shard, _resolve_cache, _teacher_info, teacher_dir_name,
                            teacher_status, write_complete_cache)
from progress import Progress

TARGETS, OK, MANIFEST = "tokens.f16.npy", "tokens_ok.u8.npy", "tokens.json"
FORMAT = "studentz-token-targets/1"
CHUNK = 4096  # sentences per chunk: the unit of sharding


def align(hidden: np.ndarray, t_offsets, t_special, s_offsets, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
  """Targets float32 [n_pos, D] and ok bool [n_pos] for one sentence of n_pos student positions (BOS, n_pos - 2
  content tokens with character spans s_offsets, EOS) from the teacher's token vectors hidden [T, D]."""
  T = hidden.shape[0]
  special = np.asarray(t_special, bool)
  t_off = np.asarray(t_offsets, np.int64).reshape(T, 2)
  scale = 1.0 / max(float(np.linalg.norm(hidden.mean(0))), 1e-12)
  out, ok = np.zeros((n_pos, hidden.shape[1]), np.float32), np.zeros(n_pos, bool)
  if special[0]: out[0], ok[0] = hidden[0], True                                  # BOS <- [CLS]
  if special[-1] and n_pos > 1: out[-1], ok[-1] = hidden[-1], True                # EOS <- [SEP]
  s = np.asarray(s_offsets, np.int64).reshape(-1, 2)[:max(n_pos - 2, 0)]         # (S, 2) content spans
  if len(s):
    # overlap of half-open spans; special tokens have empty spans (0, 0) and overlap nothing
    over = (s[:, None, 0] < t_off[None, :, 1]) & (t_off[None, :, 0] < s[:, None, 1]) & ~special[None, :]  # (S, T)
    cnt = over.sum(1)
    mean = (over.astype(np.float32) @ hidden) / np.maximum(cnt, 1)[:, None]
    out[1:1 + len(s)], ok[1:1 + len(s)] = mean, cnt > 0
  return out * scale, ok


def unsupported(teacher) -> str | None:
  """Why `teacher` cannot give token targets, or None when it can."""
  if not callable(getattr(teacher, "token_vectors", None)):
    return f"teacher {teacher.name} gives no token vectors: token targets need a mean-pooling teacher"
  if tuple(getattr(teacher, "pooling", ("mean",))) != ("mean",):
    return f"token targets need a mean-pooling teacher; {teacher.name} pools {'+'.join(teacher.pooling)}"
  return None


def _cache(dd, teacher) -> Path:
  info = _teacher_info(teacher)
  st = teacher_status(dd, info["fingerprint"])
  if not st["complete"]:
    raise TeacherCacheIncomplete(f"sharded token targets come after the teacher vectors, which are incomplete in "
                                 f"{st['dir']}: run corpus.py teacher (and merge) first")
  return st["dir"]


def _layout(dd) -> tuple[np.ndarray, int]:
  off = np.zeros(dd.n + 1, np.int64)
  np.cumsum(np.asarray(dd.lengths, np.int64), out=off[1:])
  return off, -(-dd.n // CHUNK)


def tokens_id(tokenizer_fingerprint, max_len) -> str:
  """What the targets depend on beyond the texts (data_id): the student's tokens. A folder prepared again with another
  max_len or tokenizer keeps its texts and teacher vectors, but not these."""
  return f"{tokenizer_fingerprint}/{int(max_len)}"


def _identity(dd, info: dict) -> dict:
  return {"format": FORMAT, "data_id": dd.data_id, "tokens_id": tokens_id(dd.meta.get("tokenizer_fingerprint"),
          dd.max_len), "teacher": info, "n": dd.n, "chunk": CHUNK}


def forget_stale(cache: Path, current_tokens_id: str) -> None:
  """Delete token targets (and shards) in a teacher cache folder that were computed for other tokens."""
  for m in cache.glob("tokens*.json"):
    if (read_json(m) or {}).get("tokens_id") != current_tokens_id:
      stem = m.name[:-len(".json")]
      for f in (m, cache / TARGETS, cache / OK) if m.name == MANIFEST else \
               (m, cache / f"{stem}.f16.npy", cache / f"{stem}.u8.npy"):
        f.unlink(missing_ok=True)


def status(data_dir, teacher_key) -> dict:
  """{'complete': bool, 'dir': cache folder, 'shards': [done shard files]}."""
  dd = open_data_dir(data_dir)
  cache = _resolve_cache(dd, teacher_key)
  m = read_json(cache / MANIFEST)
  done = bool(m and m.get("data_id") == dd.data_id and m.get("tokens_id") == _identity(dd, {})["tokens_id"]
              and (cache / TARGETS).is_file() and (cache / OK).is_file())
  return {"complete": done, "dir": cache, "shards": sorted(p.name for p in cache.glob("tokens.shard*.json"))}


def _shard_name(i: int, n: int) -> str: return f"tokens.shard{i}of{n}"


def compute_token_targets(data_dir, teacher, batch_size: int = 64, shard=None, progress: bool = True) -> Path:
  """Token targets for every sentence of `data_dir` (see the module doc); a no-op when already complete.
  shard=(i, n): only chunks c % n == i, into a shard file; assemble() once all n are done. Returns the cache folder.
  Unsharded, and with the teacher's sentence vectors not yet cached, the same pass writes them too (the normalised
  mean of the token vectors is the sentence vector): one teacher pass instead of two, which on a CPU is minutes."""
  dd = open_data_dir(data_dir)
  info = _teacher_info(teacher)
  if (why := unsupported(teacher)): raise ValueError(why)
  i, n = _check_shard(shard)
  try: vectors_done = teacher_status(dd, info["fingerprint"])["complete"]
  except FileNotFoundError: vectors_done = False
  if n > 1 or vectors_done:
    cache = _cache(dd, teacher)
    st = status(dd, info["fingerprint"])
    if st["complete"]: return cache
  else:  # written next to the data, moved into the teacher's folder once the sentence vectors have made it
    cache, st = dd.path, {"shards": []}
  vecs = None if vectors_done else np.zeros((dd.n, info["dim"]), np.float32)
  if n == 1:  # shards computed elsewhere (corpus.py tokens --shard) and all there: join them instead of recomputing
    counts = {int(m.group(1)) for p in st["shards"] if (m := re.match(r"tokens\.shard\d+of(\d+)\.json", p))}
    for k in sorted(counts):
      if all((cache / (_shard_name(j, k) + ".json")).is_file() for j in range(k)):
        return assemble(dd, info["fingerprint"], k)
  off, n_chunks = _layout(dd)
  mine = [c for c in range(n_chunks) if c % n == i]
  rows = [(c * CHUNK, min(dd.n, (c + 1) * CHUNK)) for c in mine]
  size = sum(int(off[b] - off[a]) for a, b in rows)
  tok = dd.tokenizer.backend
  bar = Progress(sum(b - a for a, b in rows), desc=f"token targets {info['name']}" + (f" {i}/{n}" if n > 1 else ""),
                 unit="sent", disable=not progress)
  name = TARGETS if n == 1 else _shard_name(i, n) + ".f16.npy"
  bad = 0
  with atomic_memmap(cache / name, np.float16, (size, info["dim"])) as tgt:
    ok_all, pos = np.zeros(size, np.uint8), 0
    for a, b in rows:
      for s0 in range(a, b, 1024):
        s1, p0 = min(s0 + 1024, b), pos
        texts = dd.texts(start=s0, stop=s1)
        tv = teacher.token_vectors(texts, batch_size=batch_size)
        encs = tok.encode_batch(texts, add_special_tokens=False)
        for k, r in enumerate(range(s0, s1)):
          n_pos = int(dd.lengths[r])
          h, t_off, t_spec = tv[k]
          h = np.asarray(h, np.float32)
          if vecs is not None: vecs[r] = h.mean(0)
          y, ok = align(h, t_off, t_spec, encs[k].offsets, n_pos)
          if list(encs[k].ids[:n_pos - 2]) != dd.tokens[r, 1:n_pos - 1].tolist(): ok[:], bad = False, bad + 1
          tgt[pos:pos + n_pos], ok_all[pos:pos + n_pos] = y, ok
          pos += n_pos
        if not np.isfinite(tgt[p0:pos]).all():  # also what overflowed float16
          raise ValueError(f"non-finite token targets for sentences {s0}..{s1 - 1}; refusing to cache them")
        bar.update(s1 - s0)
  bar.close()
  if bad: print(f"note: {bad} sentences re-encoded differently from the stored ids: no token targets for them",
                file=sys.stderr)
  ok_name = OK if n == 1 else _shard_name(i, n) + ".u8.npy"
  atomic_save_npy(cache / ok_name, ok_all)
  meta = {**_identity(dd, info), "shard": [i, n], "positions": size, "ok": int(ok_all.sum()), "mismatched_rows": bad}
  if vecs is not None:  # the targets move first, so a crash leaves no stray 10 GB next to the data
    if getattr(teacher, "normalize", True): vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    vec_dir = dd.path / teacher_dir_name(info["name"], info["fingerprint"])
    vec_dir.mkdir(exist_ok=True)
    for f in (TARGETS, OK): os.replace(cache / f, vec_dir / f)
    cache = write_complete_cache(dd, info, vecs)
  if n == 1: atomic_write_json(cache / MANIFEST, meta)
  else:
    atomic_write_json(cache / (_shard_name(i, n) + ".json"), meta)
    if all((cache / (_shard_name(j, n) + ".json")).is_file() for j in range(n)): assemble(dd, info["fingerprint"], n)
  return cache


def assemble(data_dir, teacher_key, n: int) -> Path:
  """Join the n shard files of compute_token_targets(shard=(i, n)) into the complete targets, then drop them."""
  dd = open_data_dir(data_dir)
  cache = _resolve_cache(dd, teacher_key)
  if status(dd, teacher_key)["complete"]: return cache
  metas = [read_json(cache / (_shard_name(j, n) + ".json")) for j in range(n)]
  missing = [j for j, m in enumerate(metas) if m is None]
  if missing: raise FileNotFoundError(f"token target shards {missing} of {n} are not finished in {cache}")
  info = metas[0]["teacher"]
  if any({k: m.get(k) for k in _identity(dd, info)} != _identity(dd, info) for m in metas):
    raise ValueError(f"token target shards in {cache} belong to other data or another teacher; recompute them")
  off, n_chunks = _layout(dd)
  parts = [np.load(cache / (_shard_name(j, n) + ".f16.npy"), mmap_mode="r") for j in range(n)]
  oks = [np.load(cache / (_shard_name(j, n) + ".u8.npy")) for j in range(n)]
  at, ok_all = [0] * n, np.zeros(int(off[-1]), np.uint8)
  with atomic_memmap(cache / TARGETS, np.float16, (int(off[-1]), int(info["dim"]))) as tgt:
    for c in range(n_chunks):
      j = c % n
      a, b = int(off[c * CHUNK]), int(off[min(dd.n, (c + 1) * CHUNK)])
      tgt[a:b], ok_all[a:b] = parts[j][at[j]:at[j] + b - a], oks[j][at[j]:at[j] + b - a]
      at[j] += b - a
  atomic_save_npy(cache / OK, ok_all)
  atomic_write_json(cache / MANIFEST, {**_identity(dd, info), "shard": [0, 1], "positions": int(off[-1]),
                                       "ok": int(ok_all.sum()),
                                       "mismatched_rows": sum(m["mismatched_rows"] for m in metas)})
  del parts
  for j in range(n):
    for ext in (".f16.npy", ".u8.npy", ".json"): (cache / (_shard_name(j, n) + ext)).unlink(missing_ok=True)
  return cache


def token_targets(data_dir, teacher_key) -> tuple[np.memmap, np.ndarray, np.ndarray]:
  """(targets float16 memmap [P, D], ok uint8 [P], row offsets int64 [N + 1]) of a complete cache."""
  dd = open_data_dir(data_dir)
  st = status(dd, teacher_key)
  if not st["complete"]:
    raise FileNotFoundError(f"no complete token targets in {st['dir']}"
                            + (f" (shards done: {st['shards']})" if st["shards"] else "")
                            + "; run corpus.py tokens (train.py computes them when loss_weights.tok > 0)")
  off, _ = _layout(dd)
  tgt = np.load(st["dir"] / TARGETS, mmap_mode="r")
  ok = np.load(st["dir"] / OK, mmap_mode="r")
  if tgt.shape[0] != off[-1] or ok.shape[0] != off[-1]:
    raise ValueError(f"token targets in {st['dir']} have {tgt.shape[0]} positions, the data {off[-1]}; recompute")
  return tgt, ok, off
