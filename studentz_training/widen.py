"""train.py --init-from into a wider model: --hidden a multiple r of the checkpoint's (Net2WiderNet). Each block's
hidden unit becomes r adjacent copies: the conv's output row and bias, the norm's scale and shift, the block-context
row (encoder) and the FiLM rows (decoder) are repeated, and the output Linear's column for the unit is split among
its copies by random shares that sum to 1. A norm over r equal copies (per token, or per group: the copies stay in
their unit's group) has the same mean and variance, so the wider model computes what the checkpoint did; the unequal
shares give the copies unequal gradients, so training can tell them apart."""
from __future__ import annotations
import re

import numpy as np
from studentz_runtime.checkpoint import CheckpointError

# the tensors whose rows (axis 0) or columns (axis -1) are the hidden units, by name within a model
_ROWS = re.compile(r"^(encoder|decoder)\.(blocks\.\d+\.conv\.(weight|bias)|ctx_in\.\d+\.(weight|bias))$")
_NORM = re.compile(r"^(encoder|decoder)\.blocks\.\d+\.norm\.(weight|bias)$")   # (n_modes, h)
_OUT = re.compile(r"^(encoder|decoder)\.blocks\.\d+\.out\.weight$")            # (d, h)
_FILM = re.compile(r"^decoder\.films\.\d+\.(weight|bias)$")                     # rows: gamma (h) then beta (h)


def factor(theirs: dict, mine: dict, may_grow: bool) -> int:
  """How many copies of each hidden unit the run makes of the checkpoint's (1: the same width); a CheckpointError
  when the widths differ and cannot be grown. may_grow: the user set --hidden."""
  old, new = theirs.get("hidden", mine["hidden"]), mine["hidden"]
  if old == new: return 1
  if not may_grow or new < old or new % old:
    raise CheckpointError(f"hidden is {old} in the checkpoint but {new} in this run: give --hidden {old} to load it "
                          "as it is, or a multiple of it to widen every block (each unit copied)")
  return new // old


def widen(arrays: dict[str, np.ndarray], h: int, r: int, seed: int = 0) -> dict[str, np.ndarray]:
  """The checkpoint's float arrays with every block's h hidden units copied r times (unit u -> units u*r .. u*r+r-1);
  other tensors as they are."""
  if r == 1: return arrays
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in arrays.items():
    if _ROWS.match(k): v = np.repeat(v, r, axis=0)
    elif _NORM.match(k): v = np.repeat(v, r, axis=-1)
    elif _FILM.match(k): v = np.concatenate([np.repeat(part, r, axis=0) for part in np.split(v, 2, axis=0)])
    elif _OUT.match(k):
      shares = 1 + rng.uniform(-0.5, 0.5, (h, r))                                 # (h, r), each row sums to 1 below
      shares = (shares / shares.sum(1, keepdims=True)).reshape(h * r)
      v = np.repeat(v, r, axis=-1) * shares.astype(v.dtype)                       # (d, h*r)
    out[k] = v
  return out


def describe(h: int, r: int) -> str:
  return f"hidden {h} -> {h * r} (each unit copied {r} times)"
