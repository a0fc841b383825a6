"""train.py --init-from into a deeper model: the checkpoint's block schedule must be a prefix of the run's and every
other field that shapes the weights the same; the blocks it lacks start as the identity (their output Linear zero, so
x + out(...) == x), so the deeper model computes what the checkpoint did until training moves them."""
from __future__ import annotations
import json

import numpy as np
from studentz_runtime.checkpoint import CheckpointError, assign_state

# the config fields that shape each model's weights, compared one by one so that a refusal names the field
SHAPE = {"encoder": ("vocab_size", "d_model", "hidden", "kernel_size", "pool", "pool_head", "block_context",
                     "proj_dim"),
         "decoder": ("vocab_size", "d_model", "hidden", "kernel_size", "proj_dim", "dec_output")}
SCHEDULE = {"encoder": "dilation_schedule", "decoder": "dec_dilation_schedule"}
PER_BLOCK = {"encoder": ("blocks", "ctx_in"), "decoder": ("blocks", "films")}  # the lists with one entry per block
# parts a run may add to a checkpoint without them, starting as their fresh init leaves them (the draft: at nothing)
ADDABLE = {"decoder": ("dec_draft", ("draft_in.", "draft_out."))}


def blocks_kept(theirs: dict, mine: dict, name: str, may_grow: bool) -> int:
  """How many of model `name`'s blocks come from the checkpoint whose config is `theirs` (the rest start as the
  identity); a CheckpointError naming the field when its weights cannot load. may_grow: the user set the schedule."""
  for f in SHAPE[name]:
    if f in theirs and theirs[f] != mine[f]:
      raise CheckpointError(f"{f} is {json.dumps(theirs[f])} in the checkpoint but {json.dumps(mine[f])} in this "
                            f"run: the {name}'s weights do not fit")
  if name in ADDABLE and (f := ADDABLE[name][0]) in theirs and theirs[f] not in (0, mine[f]):
    raise CheckpointError(f"{f} is {theirs[f]} in the checkpoint but {mine[f]} in this run: the {name}'s weights do "
                          "not fit (only a checkpoint without one can take a new one)")
  s = SCHEDULE[name]
  old, new = theirs.get(s, mine[s]), mine[s]
  if old == new: return len(new)
  if not may_grow:
    raise CheckpointError(f"{s} is {json.dumps(old)} in the checkpoint but {json.dumps(new)} in this run: give "
                          f"--{s} '{json.dumps(old)}' to load it as it is, or a longer schedule that starts with it "
                          "to add blocks")
  if not isinstance(old, list) or new[:len(old)] != old:
    raise CheckpointError(f"{s} {json.dumps(new)} does not start with the checkpoint's {json.dumps(old)}: only blocks "
                          "after the checkpoint's own can be added (as the identity)")
  return len(old)


def load(model, name: str, arrays: dict, prefix: str, n_old: int) -> str | None:
  """assign_state, the blocks from n_old on new: conv and norm keep their fresh init (so gradients flow), the output
  Linear and the per-block zero paths (FiLM, block context) are zero. Says which blocks it added, if any."""
  from tinygrad.nn.state import get_state_dict
  new = range(n_old, len(model.blocks))
  fresh = {f"{p}.{i}." for p in PER_BLOCK[name] for i in new}
  fill, added = {}, ADDABLE.get(name, ("", ()))[1]
  for k, t in get_state_dict(model).items():
    if k.startswith(added) and prefix + k not in arrays: fill[prefix + k] = t.float().numpy()
    if not any(k.startswith(f) for f in fresh): continue
    zero = not k.startswith("blocks.") or ".out." in k
    fill[prefix + k] = np.zeros(t.shape, np.float32) if zero else t.float().numpy()
  assign_state(model, {**arrays, **fill}, prefix=prefix)
  parts = sorted({k[len(prefix):].split(".")[0] for k in fill if k[len(prefix):].startswith(added)})
  dil = [model.cfg.to_dict()[SCHEDULE[name]][i] for i in new]
  said = ([f"{name} blocks {list(new)} (dilations {dil})"] if new else []) + [f"{name} {p}" for p in parts]
  return ", ".join(said) or None
