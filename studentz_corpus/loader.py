"""Batch loader over a prepared data folder: seeded per-epoch order, fixed shapes, length buckets, data-parallel
shards, and a small state dict for exact resume."""
from __future__ import annotations

import numpy as np

from studentz_corpus.store import open_data_dir
from studentz_corpus.teacher_cache import teacher_vectors
from studentz_corpus.tokenizer import EOS


class Loader:
  """Numpy batches {tokens int32 [B, L], mask float32 [B, L], teacher float32 [B, D], index int64 [B],
  valid float32 [B]} from memory-mapped arrays.

  - batch_size is PER RANK: a global batch has batch_size * world rows and rank r takes rows [r*B, (r+1)*B), so
    ranks are disjoint and together cover each global batch, and every rank sees the same shapes at each step.
  - Epoch e is ordered by np.random.default_rng(seed + e); the plan depends only on (seed, epoch, settings).
  - length_buckets=(16, 32, 64): a global batch holds rows of one bucket only (smallest bucket >= its length) and
    is cut to that width, so shapes come from a small fixed set. Rows longer than max_len (or the largest bucket)
    are cut there, keeping EOS.
  - drop_last=False pads the last batch of each bucket by repeating rows; `valid` is 0 for those repeats.
  - Iteration: `next(loader)` / `for b in loader` is INFINITE across epochs; `epoch_batches()` yields the rest of
    the current epoch then moves to the next one. `len(loader)` is batches per epoch.
  - state_dict() -> {epoch, position, seed, ...}; load_state_dict() resumes at exactly the next batch.
  teacher_key=None leaves out "teacher" (for tokenizer-only uses). token_targets=True adds the teacher's per-token
  targets (token_targets.py): tok_target float16 [B, L, D] and tok_mask float32 [B, L] (0 at padding, where no teacher
  token overlaps, and at an EOS written over a cut sentence's token). After give_token_index(), tok_index int32
  [B, L] (rows of `token_table`, 0 where tok_mask is 0) instead of tok_target, for a trainer that holds the whole
  table on its device and gathers there: 128 kB per batch to copy instead of 25 MB (B=512, L=64, D=384)."""

  def __init__(self, data_dir, split, batch_size: int, *, teacher_key, seed: int = 0, shuffle: bool = True,
               drop_last: bool = True, shard=(0, 1), length_buckets=None, max_len: int | None = None,
               token_targets: bool = False, domain_weights: str | list | None = "auto"):
    self.dd = open_data_dir(data_dir)
    self.split = split
    self.rows = self.dd.indices(split)
    rank, world = (int(x) for x in shard)
    if world < 1 or not 0 <= rank < world:
      raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    if int(batch_size) < 1: raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.rank, self.world, self.batch_size = rank, world, int(batch_size)
    self.global_batch = self.batch_size * world
    self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
    stored = self.dd.max_len
    L = stored if max_len is None else int(max_len)
    if not 3 <= L <= stored: raise ValueError(f"max_len must be in [3, {stored}] (the data's max_len), got {max_len}")
    if length_buckets:
      b = sorted({int(x) for x in length_buckets})
      if b[0] < 3 or b[-1] > L: raise ValueError(f"length_buckets must lie in [3, {L}], got {length_buckets}")
      self.buckets = np.array(b, np.int64)
    else:
      self.buckets = np.array([L], np.int64)
    self.max_len = int(self.buckets[-1])
    self.lengths = np.minimum(np.asarray(self.dd.lengths)[self.rows], self.max_len)
    self._bucket_of = np.searchsorted(self.buckets, self.lengths)  # smallest bucket >= length
    self._domain = np.asarray(self.dd.domain_of)[self.rows]
    self.weights = self._domain_weights(domain_weights)
    self.teacher = teacher_vectors(self.dd, teacher_key) if teacher_key is not None else None
    self.tok = None
    if not isinstance(token_targets, bool):
      raise ValueError(f"token_targets must be True or False, got {token_targets!r} (row indices: give_token_index())")
    self.tok_index = False
    if token_targets:
      from studentz_corpus import token_targets as corpus_tokens
      tgt, ok, off = corpus_tokens.token_targets(self.dd, teacher_key)
      self.tok = tgt, np.array(ok), np.asarray(off)  # ok read into memory (a byte per position): gathered every batch
    row_w = np.ones(self.rows.size) if self.weights is None else np.asarray(self.weights)[self._domain]
    counts = np.bincount(self._bucket_of, weights=row_w, minlength=len(self.buckets)).astype(np.int64)
    per = counts // self.global_batch if self.drop_last else -(-counts // self.global_batch)
    self._len = int(per.sum())
    if self._len == 0:
      raise ValueError(f"split {split!r} has {self.rows.size} rows, fewer than one global batch of "
                       f"{self.global_batch} per length bucket (batch_size {batch_size} x world {world})")
    self.epoch = self.position = 0
    self._plan_epoch, self._plan = None, None

  def __len__(self) -> int: return self._len

  def give_token_index(self) -> None:
    """From the next batch on, tok_index instead of tok_target."""
    if self.tok is None: raise ValueError("this loader has no token targets")
    if self.tok[0].shape[0] >= 2 ** 31: raise ValueError("int32 row indices need a table of < 2^31 positions")
    self.tok_index = True

  @property
  def token_table(self) -> np.ndarray:
    """The targets float16 [positions, D] (a memmap) that tok_index rows point into."""
    if self.tok is None: raise ValueError("this loader has no token targets")
    return self.tok[0]

  def _domain_weights(self, given) -> list | None:
    """Per-domain epoch weights: "auto" takes a mix's weights (meta.json) for the train split only; None: each row
    once."""
    if isinstance(given, str):
      if given != "auto": raise ValueError(f"domain_weights must be 'auto', a list or None, got {given!r}")
      given = self.dd.meta.get("weights") if self.split in ("train", 0) else None
    if given is None: return None
    w = [float(x) for x in given]
    if len(w) != len(self.dd.domains) or min(w) < 0:
      raise ValueError(f"domain_weights needs {len(self.dd.domains)} non-negative numbers, got {given!r}")
    return None if all(x == 1 for x in w) else w

  def _epoch_positions(self, rng) -> np.ndarray:
    """Positions into self.rows for one epoch: every row once, or each domain's rows `weight` times (the fraction a
    fresh random subset each epoch)."""
    if self.weights is None: return rng.permutation(self.rows.size) if self.shuffle else np.arange(self.rows.size)
    parts = []
    for d, w in enumerate(self.weights):
      pos = np.flatnonzero(self._domain == d)
      parts += [pos] * int(w)
      if w % 1: parts.append(rng.permutation(pos)[:int(round(w % 1 * pos.size))])
    order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return rng.permutation(order) if self.shuffle else np.sort(order)

  def _make_plan(self, epoch: int) -> list[tuple[np.ndarray, int, int]]:
    """[(positions into self.rows [global_batch], width, n_valid)] for one epoch."""
    rng = np.random.default_rng(self.seed + epoch)
    order = self._epoch_positions(rng)
    G, plan = self.global_batch, []
    for k, width in enumerate(self.buckets):
      members = order[self._bucket_of[order] == k]  # keeps the shuffled order within the bucket
      full = members.size // G
      for j in range(full): plan.append((members[j * G:(j + 1) * G], int(width), G))
      rem = members.size - full * G
      if rem and not self.drop_last:
        plan.append((np.resize(np.concatenate([members[full * G:], members]), G), int(width), rem))
    if self.shuffle and len(self.buckets) > 1:
      plan = [plan[i] for i in rng.permutation(len(plan))]  # interleave buckets instead of short-then-long
    return plan

  def _get_plan(self):
    if self._plan_epoch != self.epoch: self._plan, self._plan_epoch = self._make_plan(self.epoch), self.epoch
    return self._plan

  def _batch(self, pos: np.ndarray, width: int, n_valid: int) -> dict:
    a, b = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
    rows = self.rows[pos[a:b]]
    # memmap fancy indexing reads rows in sorted order anyway; ask only for the columns we keep
    tokens = np.asarray(self.dd.tokens[rows, :width], dtype=np.int32)
    full = np.asarray(self.dd.lengths[rows], np.int64)
    cut = full > width
    if cut.any(): tokens[cut, width - 1] = EOS
    lens = np.minimum(full, width)
    batch = {"tokens": tokens, "mask": (np.arange(width)[None, :] < lens[:, None]).astype(np.float32),
             "index": rows.astype(np.int64), "valid": (np.arange(a, b) < n_valid).astype(np.float32)}
    if self.teacher is not None: batch["teacher"] = np.asarray(self.teacher[rows], dtype=np.float32)
    if self.tok is not None:
      tgt, ok, off = self.tok
      valid = batch["mask"] > 0                                                    # (B, W)
      valid[cut, width - 1] = False  # that EOS replaced a content token: the target there is the token's, not [SEP]
      at = np.where(valid, off[rows][:, None] + np.arange(width)[None, :], 0)     # ragged row start + position
      batch["tok_mask"] = (valid & (ok[at] > 0)).astype(np.float32)
      if self.tok_index: batch["tok_index"] = at.astype(np.int32)
      else:  # each sentence's targets are one contiguous run, read as a slice rather than a fancy index of positions
        t = np.zeros((*valid.shape, tgt.shape[1]), np.float16)
        n = valid.sum(1)
        for i, r in enumerate(rows): t[i, :n[i]] = tgt[off[r]:off[r] + n[i]]
        batch["tok_target"] = t
    return batch

  def __iter__(self): return self

  def __next__(self) -> dict:
    plan = self._get_plan()
    if self.position >= len(plan):
      self.epoch, self.position = self.epoch + 1, 0
      plan = self._get_plan()
    item = plan[self.position]
    self.position += 1
    return self._batch(*item)

  def epoch_batches(self):
    """The remaining batches of the current epoch; afterwards the loader stands at the start of the next one."""
    plan = self._get_plan()
    while self.position < len(plan):
      item = plan[self.position]
      self.position += 1
      yield self._batch(*item)
    self.epoch, self.position = self.epoch + 1, 0

  def state_dict(self) -> dict:
    return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "global_batch": self.global_batch,
            "split": str(self.split), "buckets": self.buckets.tolist()}

  def load_state_dict(self, state: dict) -> None:
    for k in ("global_batch", "buckets"):
      if k in state and state[k] != self.state_dict()[k]:
        raise ValueError(f"cannot resume: saved {k}={state[k]} differs from this loader's {self.state_dict()[k]}")
    self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
    self._plan_epoch = None

