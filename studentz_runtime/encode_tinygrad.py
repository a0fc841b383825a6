"""The tinygrad engine's encoding: token ids (or texts, tokenized a batch ahead) -> the student's z in fixed-size
batches, one TinyJit per batch shape (the numpy engine's is numpy_infer.encode_batches)."""
from __future__ import annotations
import weakref

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from studentz_kernels.device_inputs import InputSlots
from studentz_runtime import prefetch
from tinygrad import TinyJit

# encoder -> {(batch, length): TinyJit}. Kept off the model object: a JIT stored as a model attribute would be walked
# by get_state_dict and its captured buffers written into checkpoints.
_ENCODE_JITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def encode_ids(enc, tokens, mask, batch_size: int):
  """Student vectors for token ids, in fixed-size batches under one JIT per shape (the last batch is padded), each
  batch copied into the JIT's own input buffers (device_inputs: no scheduler work per batch)."""
  batches = ((tokens[i:i + batch_size], mask[i:i + batch_size]) for i in range(0, len(tokens), batch_size))
  return _encode_batches(enc, batches, batch_size, tokens.shape[1])


def encode_texts(enc, tokenizer, texts: list[str], batch_size: int):
  """Student vectors for texts, as encode_ids of tokenizer.encode_batch(texts, enc.cfg.max_len) gives them, with the
  texts of batch i+1 tokenized in a background thread while the device runs batch i."""
  L = enc.cfg.max_len
  chunks = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
  return _encode_batches(enc, prefetch.ahead(lambda c: tokenizer.encode_batch(c, L), chunks), batch_size, L)


def _encode_batches(enc, batches, batch_size: int, L: int):
  jits = _ENCODE_JITS.setdefault(enc, {})
  key = (batch_size, L, enc.act_dtype)  # a JIT replays the dtype it captured
  if key not in jits:
    jits[key] = (TinyJit(lambda t, m: enc(t, m).realize()),
                 InputSlots([np.zeros((batch_size, L), np.int32), np.zeros((batch_size, L), np.float32)]))
  jit, slots = jits[key]
  out = []
  for t, m in batches:
    n = len(t)
    if n < batch_size:
      t = np.concatenate([t, np.zeros((batch_size - n, L), t.dtype)])
      m = np.concatenate([m, np.zeros((batch_size - n, L), m.dtype)])
    out.append(jit(*slots.fill(np.asarray(t, np.int32), np.asarray(m, np.float32))).numpy()[:n])
  return np.concatenate(out) if out else np.zeros((0, enc.cfg.proj_dim), np.float32)
