"""The teacher (BERT, DistilBERT, MPNet + sentence-transformers pooling) in plain numpy, for small CPU calls.

Why: infer.py's cos-to-teacher figure embeds one or a few sentences; through tinygrad that costs a model build and
seconds of kernel compiles on a CPU, here none. Mirrors teacher/models.py (the math) and
teacher/embedder.Teacher (truncation, pooling, normalisation); tests/test_numpy_infer.py compares them. Bulk passes
(corpus vectors, training) stay on tinygrad's Teacher.
"""
from __future__ import annotations
import json, math
from pathlib import Path

import numpy as np
from teacher.folder import (MASK_VALUE, NAMES, OFFSET_POSITION_TYPES, ModelLoadError, check_sizes, load_tokenizer,
                            normalise_keys, read_pooling, read_safetensors, relative_position_bucket)


def erf(x: np.ndarray) -> np.ndarray:
  """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and HF's "gelu" is the exact erf form."""
  t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
  p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
  return np.sign(x) * (1.0 - p * np.exp(-x * x))


def _sigmoid(x): return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {  # as teacher.models.ACTIVATIONS
  "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
  "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3))),
  "relu": lambda x: np.maximum(x, 0), "silu": lambda x: x * _sigmoid(x),
  "quick_gelu": lambda x: x * _sigmoid(1.702 * x),
}
ACTIVATIONS.update(gelu_pytorch_tanh=ACTIVATIONS["gelu_new"], gelu_fast=ACTIVATIONS["gelu_new"],
                   swish=ACTIVATIONS["silu"])


def _sizes(mtype: str, c: dict) -> tuple[int, int, int, int]:
  if mtype == "distilbert": return c["dim"], c["n_heads"], c["hidden_dim"], c["n_layers"]
  return c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["num_hidden_layers"]


class Model:
  """teacher.models.Encoder in numpy: __call__(ids (B, L) int, mask (B, L)) -> last hidden state (B, L, d) float32."""

  def __init__(self, config: dict, state: dict[str, np.ndarray], source: str = "checkpoint"):
    self.type = config.get("model_type")
    if self.type not in NAMES:
      raise ModelLoadError(f"{source}: unsupported model_type {self.type!r} (supported: {', '.join(NAMES)})")
    self.dim, self.heads, _, n_layers = check_sizes(_sizes(self.type, config), config)
    # DistilBERT hardcodes its LayerNorm eps (as teacher.models.DistilBertModel)
    self.eps = 1e-12 if self.type == "distilbert" else float(config.get("layer_norm_eps", 1e-12))
    act = config.get("hidden_act", config.get("activation", "gelu"))
    if act not in ACTIVATIONS: raise ModelLoadError(f"unsupported activation {act!r}")
    self.act = ACTIVATIONS[act]
    prefix, layer_names, top = NAMES[self.type]
    state = normalise_keys(state)

    def get(hf: str) -> np.ndarray:
      if hf not in state: raise ModelLoadError(f"{source}: missing weight {hf} for {self.type}")
      return np.asarray(state[hf], np.float32)
    self.top = {k: get(f"{v}.weight") for k, v in top.items()}
    self.emb_ln_b = get(f"{top['emb_ln']}.bias")
    self.layers = [{k: (get(f"{prefix}{i}.{v}.weight"), get(f"{prefix}{i}.{v}.bias")) for k, v in layer_names.items()}
                   for i in range(n_layers)]
    self.num_buckets = config.get("relative_attention_num_buckets", 32)

  def _ln(self, x, wb):
    y = x - x.mean(-1, keepdims=True)
    return y / np.sqrt((y * y).mean(-1, keepdims=True) + self.eps) * wb[0] + wb[1]

  def embed(self, ids: np.ndarray) -> np.ndarray:
    if self.type == "mpnet":  # fairseq positions: real tokens count up from padding_idx + 1 = 2, pads sit at 1
      real = (ids != 1).astype(np.int64)
      return self.top["word"][ids] + self.top["pos"][np.cumsum(real, 1) * real + 1]
    x = self.top["word"][ids] + self.top["pos"][np.arange(ids.shape[1])]
    return x + self.top["type"][0] if self.type == "bert" else x  # single segment: token type 0

  def __call__(self, ids, mask) -> np.ndarray:
    from studentz_runtime import blas_threads
    # small calls on one BLAS thread (blas_threads: a spin-waiting second thread costs more than it gives)
    with blas_threads.limit(1 if np.size(ids) < 2048 else None): return self._forward(ids, mask)

  def _forward(self, ids, mask) -> np.ndarray:
    ids, mask = np.asarray(ids, np.int64), np.asarray(mask, np.float32)
    B, L = ids.shape
    H, dh = self.heads, self.dim // self.heads
    x = self._ln(self.embed(ids), (self.top["emb_ln"], self.emb_ln_b))
    bias = ((1.0 - mask) * MASK_VALUE).reshape(B, 1, 1, L).astype(np.float32)
    if self.type == "mpnet":
      bias = bias + self.top["rel_bias"][relative_position_bucket(L, self.num_buckets)].transpose(2, 0, 1)[None]
    lin = lambda t, wb: t @ wb[0].T + wb[1]  # noqa: E731
    for p in self.layers:
      q, k, v = (lin(x, p[n]).reshape(B, L, H, dh).transpose(0, 2, 1, 3) for n in ("q", "k", "v"))
      s = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(dh)) + bias            # (B, H, L, L)
      s = np.exp(s - s.max(-1, keepdims=True))
      ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(B, L, self.dim)
      x = self._ln(x + lin(ctx, p["o"]), p["ln1"])
      x = self._ln(x + lin(self.act(lin(x, p["ff1"])), p["ff2"]), p["ln2"])
    return x.astype(np.float32)


class Teacher:
  """teacher.embedder.Teacher's `embed` in numpy: texts -> np.float32 [N, dim], pooled and normalised alike."""

  def __init__(self, folder, name: str | None = None):
    self.folder = Path(folder)
    self.name = name or self.folder.name
    cfg_path, weights = self.folder / "config.json", self.folder / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
      raise ModelLoadError(f"{self.folder}: needs config.json and model.safetensors")
    self.config = json.loads(cfg_path.read_text())
    self.model = Model(self.config, read_safetensors(weights), source=str(weights))
    self.pooling, self.normalize, st_max = read_pooling(self.folder)
    pos_limit = self.config.get("max_position_embeddings", 512)
    pos_limit -= 2 if self.config.get("model_type") in OFFSET_POSITION_TYPES else 0
    self.max_seq_length = int(min(st_max or pos_limit, pos_limit))
    self.tokenizer, pad_id = load_tokenizer(self.folder, self.max_seq_length)
    self.pad_id = pad_id if pad_id is not None else int(self.config.get("pad_token_id") or 0)
    self.dim = self.model.dim * len(self.pooling)

  def pool(self, h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    count = np.maximum(m.sum(1), 1e-9)
    parts = {"cls": lambda: h[:, 0], "max": lambda: np.where(m > 0, h, -1e9).max(1),
             "mean": lambda: (h * m).sum(1) / count, "mean_sqrt_len": lambda: (h * m).sum(1) / np.sqrt(count)}
    out = np.concatenate([parts[p]() for p in self.pooling], 1)
    if self.normalize: out = out / np.maximum(np.sqrt((out * out).sum(-1, keepdims=True)), 1e-12)
    return out

  def embed(self, texts, batch_size: int = 64) -> np.ndarray:
    """np.float32 [N, dim] in input order; batches of similar lengths, each padded to its longest."""
    ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
    out = np.zeros((len(ids), self.dim), np.float32)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for b0 in range(0, len(order), batch_size):
      rows = order[b0:b0 + batch_size]
      L = max(len(ids[i]) for i in rows)
      x, m = np.full((len(rows), L), self.pad_id, np.int64), np.zeros((len(rows), L), np.float32)
      for r, i in enumerate(rows): x[r, :len(ids[i])], m[r, :len(ids[i])] = ids[i], 1
      out[rows] = self.pool(self.model(x, m), m)
    return out


def load_teacher(name_or_path) -> Teacher:
  """teacher.load_teacher's resolution (local folder, packaged name, hub id), the numpy model."""
  from teacher.hub import resolve
  return Teacher(resolve(str(name_or_path)), name=str(name_or_path))
