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

from studentz_corpus.store import atomic_memmap, atomic_save_npy, atomic_write_json, open_data_dir, read_json
from studentz_corpus.teacher_cache import (TeacherCacheIncomplete, _check_shard, _resolve_cache, _teacher_info,
                                           teacher_dir_name, teacher_status, write_complete_cache)
from studentz_corpus.progress import Progress

TARGETS, OK, MANIFEST = "tokens.f16.npy", "tokens_ok.u8.npy", "tokens.json"
FORMAT = "studentz-token-targets/1"
CHUNK = 4096  # sentences per chunk: the unit of sharding


def align(hidden: np.ndarray, t_offsets, t_special, s_offsets, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
  """Targets float32 [n_pos, D] and ok bool [n_pos] for one sentence of n_pos student positions (BOS, n_pos - 2
  content tokens with character spans s_offsets, EOS) from the teacher's token vectors hidden [T, D]."""
  return align_many([hidden], [t_offsets], [t_special], [s_offsets], [n_pos])


def align_many(hiddens, t_offsets, t_specials, s_offsets, n_pos) -> tuple[np.ndarray, np.ndarray]:
  """align() for K sentences at once: their targets back to back, float32 [sum(n_pos), D], and ok bool [sum(n_pos)].
  Student token j gets the mean of the teacher tokens whose half-open spans overlap its own; special tokens have
  empty spans (0, 0) and overlap nothing. Where each sentence's content tokens have non-decreasing starts and ends
  (every tokenizer we ship), those are a run lo..hi, found for all K sentences by one binary search and summed row by
  row: numpy calls per batch, not per sentence, and no tiny matrix products (on a many-core host BLAS's threads spent
  most of the token pass's CPU time on them)."""
  K, D = len(hiddens), hiddens[0].shape[1]
  n_pos = np.asarray(n_pos, np.int64)
  T = np.array([len(h) for h in hiddens], np.int64)
  H = np.concatenate(hiddens).astype(np.float32, copy=False)                        # (sum T, D)
  spec = np.concatenate([np.asarray(x, bool).reshape(-1) for x in t_specials])
  t_off = np.concatenate([np.asarray(x, np.int64).reshape(-1, 2) for x in t_offsets])
  s_list = [np.asarray(x, np.int64).reshape(-1, 2)[:max(int(n) - 2, 0)] for x, n in zip(s_offsets, n_pos)]
  S = np.array([len(x) for x in s_list], np.int64)
  s_off = np.concatenate(s_list)                                                     # (sum S, 2)
  # every sentence's characters shifted into a range of its own, so that one sorted search serves all K
  width = int(max(t_off.max(initial=0), s_off.max(initial=0))) + 1
  t_sent, s_sent = np.repeat(np.arange(K), T), np.repeat(np.arange(K), S)
  ns = np.flatnonzero(~spec)                                                         # content rows of H
  nsx = np.append(ns, len(H) - 1)                                                    # (lo is at most len(ns))
  ts, te = t_off[ns, 0] + t_sent[ns] * width, t_off[ns, 1] + t_sent[ns] * width
  lo = np.searchsorted(te, s_off[:, 0] + s_sent * width, "right")
  n = np.maximum(np.searchsorted(ts, s_off[:, 1] + s_sent * width, "left") - lo, 0)  # run lengths
  start = nsx[lo]                                                                    # first row of each run in H
  # a run is rows start..start+n of H when the spans go forwards and no special token sits inside a sentence
  forwards = (np.diff(ts) >= 0).all() and (np.diff(te) >= 0).all()
  if not forwards or ((n > 0) & (nsx[np.maximum(lo + n - 1, 0)] + 1 - start != n)).any():
    return _align_crossing(hiddens, t_offsets, t_specials, s_list, n_pos)
  sums = H[start]                                                                    # (sum S, D)
  sums[n == 0] = 0
  for k in range(1, int(n.max(initial=0))):  # most runs are one or two tokens: each row is read about once
    m = np.flatnonzero(n > k)
    sums[m] += H[start[m] + k]
  t0, p0 = np.cumsum(T) - T, np.cumsum(n_pos) - n_pos                               # each sentence's first row
  out, ok = np.zeros((int(n_pos.sum()), D), np.float32), np.zeros(int(n_pos.sum()), bool)
  rows = p0[s_sent] + 1 + np.arange(len(s_off)) - np.repeat(np.cumsum(S) - S, S)
  sums /= np.maximum(n, 1)[:, None].astype(np.float32)
  out[rows], ok[rows] = sums, n > 0
  bos, eos = spec[t0] & (n_pos > 0), spec[t0 + T - 1] & (n_pos > 1)
  out[p0[bos]], ok[p0[bos]] = H[t0[bos]], True                                      # BOS <- [CLS]
  out[(p0 + n_pos - 1)[eos]], ok[(p0 + n_pos - 1)[eos]] = H[(t0 + T - 1)[eos]], True  # EOS <- [SEP]
  # divided by the norm of the teacher's unnormalised mean over all its tokens (the module doc)
  norm = np.linalg.norm(np.stack([np.asarray(h, np.float32).mean(0) for h in hiddens]), axis=1)
  out *= np.repeat(1.0 / np.maximum(norm, 1e-12), n_pos)[:, None].astype(np.float32)
  return out, ok


def _align_crossing(hiddens, t_offsets, t_specials, s_list, n_pos) -> tuple[np.ndarray, np.ndarray]:
  """align_many() one sentence at a time by the full overlap matrix, for tokenizers whose spans go backwards."""
  outs, oks = [], []
  for h, t_off, spec, s, n in zip(hiddens, t_offsets, t_specials, s_list, n_pos):
    h, spec, n = np.asarray(h, np.float32), np.asarray(spec, bool).reshape(-1), int(n)
    t_off = np.asarray(t_off, np.int64).reshape(-1, 2)
    out, ok = np.zeros((n, h.shape[1]), np.float32), np.zeros(n, bool)
    if spec[0] and n > 0: out[0], ok[0] = h[0], True
    if spec[-1] and n > 1: out[-1], ok[-1] = h[-1], True
    over = (s[:, None, 0] < t_off[None, :, 1]) & (t_off[None, :, 0] < s[:, None, 1]) & ~spec[None, :]  # (S, T)
    cnt = over.sum(1)
    out[1:1 + len(s)], ok[1:1 + len(s)] = (over.astype(np.float32) @ h) / np.maximum(cnt, 1)[:, None], cnt > 0
    outs.append(out / max(float(np.linalg.norm(h.mean(0))), 1e-12)); oks.append(ok)
  return np.concatenate(outs), np.concatenate(oks)


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
                                 f"{st['dir']}: run python -m studentz_corpus teacher (and merge) first")
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
  # shards computed elsewhere (`tokens --shard`) and all there: join them instead of recomputing
  if n == 1 and (joined := _join_complete_shards(dd, cache, st, info["fingerprint"])) is not None: return joined
  off, n_chunks = _layout(dd)
  mine = [c for c in range(n_chunks) if c % n == i]
  rows = [(c * CHUNK, min(dd.n, (c + 1) * CHUNK)) for c in mine]
  size = sum(int(off[b] - off[a]) for a, b in rows)
  bar = Progress(sum(b - a for a, b in rows), desc=f"token targets {info['name']}" + (f" {i}/{n}" if n > 1 else ""),
                 unit="sent", disable=not progress)
  name = TARGETS if n == 1 else _shard_name(i, n) + ".f16.npy"
  with atomic_memmap(cache / name, np.float16, (size, info["dim"])) as tgt:
    ok_all, bad = _fill_targets(tgt, size, dd, teacher, rows, vecs, batch_size, bar)
  bar.close()
  if bad: print(f"note: {bad} sentences re-encoded differently from the stored ids: no token targets for them",
                file=sys.stderr)
  return _save_targets(dd, teacher, info, cache, (i, n), ok_all, size, bad, vecs)


def _join_complete_shards(dd, cache: Path, st: dict, fingerprint: str) -> Path | None:
  """Assemble the first complete set of shard files in `cache`, so a finished sharded run is not recomputed."""
  counts = {int(m.group(1)) for p in st["shards"] if (m := re.match(r"tokens\.shard\d+of(\d+)\.json", p))}
  for k in sorted(counts):
    if all((cache / (_shard_name(j, k) + ".json")).is_file() for j in range(k)):
      return assemble(dd, fingerprint, k)
  return None


def _fill_targets(tgt, size: int, dd, teacher, rows, vecs, batch_size: int, bar) -> tuple[np.ndarray, int]:
  """Teacher token vectors aligned to our tokens for `rows`, written into `tgt`; also fills `vecs` when given.
  Returns the per-position ok mask and how many sentences re-encoded differently from the stored ids."""
  tok = dd.tokenizer.backend
  bad = 0
  ok_all, pos = np.zeros(size, np.uint8), 0
  for a, b in rows:
    for s0 in range(a, b, 1024):
      s1, p0 = min(s0 + 1024, b), pos
      texts = dd.texts(start=s0, stop=s1)
      tv = teacher.token_vectors(texts, batch_size=batch_size)
      encs = tok.encode_batch(texts, add_special_tokens=False)
      n_pos = np.asarray(dd.lengths[s0:s1], np.int64)
      if vecs is not None: vecs[s0:s1] = [np.asarray(h, np.float32).mean(0) for h, _, _ in tv]
      y, ok = align_many([h for h, _, _ in tv], [o for _, o, _ in tv], [sp for _, _, sp in tv],
                         [e.offsets for e in encs], n_pos)
      first = np.cumsum(n_pos) - n_pos
      for k, r in enumerate(range(s0, s1)):  # no target where re-encoding did not give the stored ids
        q, m = int(first[k]), int(n_pos[k])
        if list(encs[k].ids[:m - 2]) != dd.tokens[r, 1:m - 1].tolist(): ok[q:q + m], bad = False, bad + 1
      tgt[pos:pos + len(y)], ok_all[pos:pos + len(y)] = y, ok
      pos += len(y)
      if not np.isfinite(tgt[p0:pos]).all():  # also what overflowed float16
        raise ValueError(f"non-finite token targets for sentences {s0}..{s1 - 1}; refusing to cache them")
      bar.update(s1 - s0)
  return ok_all, bad


def _save_targets(dd, teacher, info: dict, cache: Path, shard: tuple[int, int], ok_all, size: int, bad: int,
                  vecs) -> Path:
  """Write the ok mask and manifest (and the sentence vectors, if this pass made them); returns the cache folder."""
  i, n = shard
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
                            + "; run `python -m studentz_corpus tokens` (train.py does when loss_weights.tok > 0)")
  off, _ = _layout(dd)
  tgt = np.load(st["dir"] / TARGETS, mmap_mode="r")
  ok = np.load(st["dir"] / OK, mmap_mode="r")
  if tgt.shape[0] != off[-1] or ok.shape[0] != off[-1]:
    raise ValueError(f"token targets in {st['dir']} have {tgt.shape[0]} positions, the data {off[-1]}; recompute")
  return tgt, ok, off
