"""Tinygrad ports of the HF encoders we distill from: BERT, DistilBERT and MPNet (inference only; float32, or float16
matmuls with float32 accumulation, residual stream, LayerNorm and softmax: `Encoder.compute_dtype`).

All three are the same post-LN transformer; they differ in how positions enter (absolute ids, MPNet's
padding-offset ids plus a relative attention bias) and in how the checkpoint names the weights. So there is one
`Encoder` that reads as math, three small subclasses, and a per-architecture table from our names to HF's.
"""
from studentz_kernels import backend  # noqa: F401  (maps METAL=1 style switches before tinygrad is imported)
from studentz_kernels import cpu_gemm
import json, math
from pathlib import Path
import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict
from teacher.folder import (MASK_VALUE, NAMES, PREFIXES, SIZE_LIMITS, ModelLoadError, _raw_header,  # noqa: F401
                            check_sizes, normalise_keys, read_safetensors, relative_position_bucket)

def gelu_erf(x: Tensor) -> Tensor:
  # HF's "gelu" is the exact erf form; tinygrad's default gelu() is the tanh approximation (off by ~1e-3)
  return 0.5 * x * (1.0 + (x / math.sqrt(2.0)).erf())


ACTIVATIONS = {
  "gelu": gelu_erf,
  "gelu_new": lambda x: x.gelu(), "gelu_pytorch_tanh": lambda x: x.gelu(), "gelu_fast": lambda x: x.gelu(),
  "relu": Tensor.relu, "silu": Tensor.silu, "swish": Tensor.silu, "quick_gelu": Tensor.quick_gelu,
}


def mm(a: Tensor, b: Tensor, dt=None) -> Tensor:
  """a @ b, float32 out; with dt (float16) the inputs are cast to dt and the sum accumulates in float32, so the GPU's
  half-precision matrix units do the work while every sum and everything outside the matmuls stays float32. On the
  CPU a float32 product with a weight runs on cpu_gemm's kernel (5-17x tinygrad's matmul there)."""
  if dt is None and b.ndim == 2 and a.ndim >= 2 and cpu_gemm.usable(a2 := a.reshape(-1, a.shape[-1]), b):
    return cpu_gemm.matmul(a2, b).reshape(*a.shape[:-1], b.shape[-1])
  return a @ b if dt is None else a.cast(dt).dot(b.cast(dt), dtype=dtypes.float32)


class Linear:
  def __init__(self, d_in: int, d_out: int):
    self.weight, self.bias = Tensor.empty(d_out, d_in), Tensor.empty(d_out)  # placeholders until weights load

  def __call__(self, x: Tensor, dt=None) -> Tensor: return mm(x, self.weight.T, dt) + self.bias


class LayerNorm:
  def __init__(self, d: int, eps: float):
    self.weight, self.bias, self.eps = Tensor.empty(d), Tensor.empty(d), eps

  def __call__(self, x: Tensor) -> Tensor: return x.layernorm(eps=self.eps) * self.weight + self.bias


class Embedding:
  def __init__(self, n: int, d: int): self.weight = Tensor.empty(n, d)

  def __call__(self, idx: Tensor) -> Tensor: return self.weight[idx]  # tinygrad folds this into a gather


class Layer:
  """One post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

  def __init__(self, d: int, heads: int, d_ff: int, eps: float, act):
    self.heads, self.act = heads, act
    self.q, self.k, self.v, self.o = Linear(d, d), Linear(d, d), Linear(d, d), Linear(d, d)
    self.ln1, self.ff1, self.ff2, self.ln2 = LayerNorm(d, eps), Linear(d, d_ff), Linear(d_ff, d), LayerNorm(d, eps)

  def __call__(self, x: Tensor, bias: Tensor, dt=None) -> Tensor:
    B, L, d = x.shape
    H = self.heads
    q, k, v = [lin(x, dt).reshape(B, L, H, d // H).transpose(1, 2) for lin in (self.q, self.k, self.v)]  # (B, H, L, dh)
    scores = mm(q, k.transpose(-1, -2), dt) / math.sqrt(d // H) + bias  # (B, H, L, L)
    # the probabilities materialised: fused into the second matmul, every exp was recomputed once per output channel
    ctx = mm(scores.softmax(-1).contiguous(), v, dt).transpose(1, 2).reshape(B, L, d)  # (B, L, d)
    x = self.ln1(x + self.o(ctx, dt))
    return self.ln2(x + self.ff2(self.act(self.ff1(x, dt)), dt))


class Encoder:
  """Embeddings + post-LN layers -> last hidden state (B, L, d). Subclasses say where positions come from."""
  model_type = ""
  layer_prefix, layer_names, top_names = NAMES["bert"]  # subclasses: their own row of teacher.folder.NAMES

  def __init__(self, config: dict):
    self.config = config
    d, heads, d_ff, n_layers = check_sizes(self.sizes(config), config)
    if d % heads: raise ModelLoadError(f"hidden size {d} is not a multiple of {heads} heads")
    eps = float(config.get("layer_norm_eps", 1e-12))
    act_name = config.get("hidden_act", config.get("activation", "gelu"))
    if act_name not in ACTIVATIONS: raise ModelLoadError(f"unsupported activation {act_name!r}")
    self.dim, self.heads = d, heads
    self.compute_dtype = None  # None: float32 throughout (parity with HF); dtypes.float16: half-precision matmuls
    self.word = Embedding(config["vocab_size"], d)
    self.pos = Embedding(config["max_position_embeddings"], d)
    self.emb_ln = LayerNorm(d, eps)
    self.layers = [Layer(d, heads, d_ff, eps, ACTIVATIONS[act_name]) for _ in range(n_layers)]

  @staticmethod
  def sizes(c: dict) -> tuple[int, int, int, int]:
    return c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["num_hidden_layers"]

  def embed(self, ids: Tensor, mask: Tensor) -> Tensor:  # (B, L, d)
    return self.word(ids) + self.pos(Tensor.arange(ids.shape[1]).reshape(1, -1).expand(ids.shape))

  def position_bias(self, L: int) -> Tensor | None: return None  # (1, H, L, L) or None

  def __call__(self, ids: Tensor, mask: Tensor) -> Tensor:
    """ids (B, L) int, mask (B, L) 1 for tokens 0 for padding -> last hidden state (B, L, d) float32."""
    x = self.emb_ln(self.embed(ids, mask))  # (B, L, d)
    bias = ((1.0 - mask.float()) * MASK_VALUE).reshape(mask.shape[0], 1, 1, mask.shape[1])  # (B, 1, 1, L)
    if (pb := self.position_bias(ids.shape[1])) is not None: bias = pb + bias  # (B, H, L, L)
    for layer in self.layers: x = layer(x, bias, self.compute_dtype)
    return x

  def hf_name(self, ours: str) -> str:
    """Our state-dict key -> the checkpoint's key (without wrapper prefixes)."""
    head, _, rest = ours.partition(".")
    if head == "layers":
      i, sub, leaf = rest.split(".")
      return f"{self.layer_prefix}{i}.{self.layer_names[sub]}.{leaf}"
    return f"{self.top_names[head]}.{rest}"


class BertModel(Encoder):
  model_type = "bert"

  def __init__(self, config: dict):
    if config.get("position_embedding_type", "absolute") != "absolute":
      raise ModelLoadError(f"BERT position_embedding_type {config['position_embedding_type']!r} is not supported")
    super().__init__(config)
    self.type = Embedding(config.get("type_vocab_size", 2), self.dim)

  def embed(self, ids: Tensor, mask: Tensor) -> Tensor:
    # single-segment input: every token has type 0, as sentence-transformers feeds it
    return super().embed(ids, mask) + self.type.weight[0]


class DistilBertModel(Encoder):
  model_type = "distilbert"
  layer_prefix, layer_names, top_names = NAMES["distilbert"]

  def __init__(self, config: dict):
    super().__init__({**config, "layer_norm_eps": 1e-12})  # DistilBERT hardcodes its LayerNorm eps

  @staticmethod
  def sizes(c: dict) -> tuple[int, int, int, int]: return c["dim"], c["n_heads"], c["hidden_dim"], c["n_layers"]


class MPNetModel(Encoder):
  model_type = "mpnet"
  layer_prefix, layer_names, top_names = NAMES["mpnet"]
  padding_idx = 1  # fixed in HF's MPNetEmbeddings, whatever the config says

  def __init__(self, config: dict):
    super().__init__(config)
    self.num_buckets = config.get("relative_attention_num_buckets", 32)
    self.rel_bias = Embedding(self.num_buckets, self.heads)

  def embed(self, ids: Tensor, mask: Tensor) -> Tensor:
    # fairseq positions: real tokens count up from padding_idx + 1, pad tokens sit at padding_idx
    real = (ids != self.padding_idx).cast(dtypes.int32)
    return self.word(ids) + self.pos(real.cumsum(1) * real + self.padding_idx)

  def position_bias(self, L: int) -> Tensor:
    buckets = Tensor(relative_position_bucket(L, self.num_buckets), device=self.rel_bias.weight.device)  # (L, L)
    return self.rel_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, L, L)


ARCHITECTURES = {cls.model_type: cls for cls in (BertModel, DistilBertModel, MPNetModel)}


def build_model(config: dict, state: dict[str, np.ndarray], source: str = "checkpoint") -> Encoder:
  """An architecture from `config` (HF config.json dict) with weights from `state`; extra keys are ignored."""
  mtype = config.get("model_type")
  if mtype not in ARCHITECTURES:
    raise ModelLoadError(f"{source}: unsupported model_type {mtype!r} (supported: {', '.join(ARCHITECTURES)})")
  model = ARCHITECTURES[mtype](config)
  state = normalise_keys(state)
  wanted = {ours: model.hf_name(ours) for ours in get_state_dict(model)}
  missing = sorted(hf for hf in wanted.values() if hf not in state)
  if missing:
    shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
    raise ModelLoadError(f"{source}: missing weights for {mtype}: {shown}")
  params = get_state_dict(model)
  for ours, hf in wanted.items():
    arr = state[hf]
    if tuple(arr.shape) != params[ours].shape:
      raise ModelLoadError(f"{source}: weight {hf} has shape {tuple(arr.shape)}, config implies {params[ours].shape}")
    # checkpoints may be fp16/bf16; the ports compute in float32 for parity with the HF reference
    params[ours].replace(Tensor(np.ascontiguousarray(arr, dtype=np.float32)).realize())
  return model


def load_model(folder: str | Path) -> Encoder:
  """config.json + model.safetensors in `folder` -> a loaded port (never unpickles .bin files)."""
  folder = Path(folder)
  cfg_path, weights = folder / "config.json", folder / "model.safetensors"
  if not cfg_path.is_file(): raise ModelLoadError(f"{folder}: no config.json")
  if not weights.is_file():
    hint = " (only pytorch_model.bin found: convert it to safetensors; pickles are not loaded)" \
      if (folder / "pytorch_model.bin").exists() else ""
    raise ModelLoadError(f"{folder}: no model.safetensors{hint}")
  config = json.loads(cfg_path.read_text())
  return build_model(config, read_safetensors(weights), source=str(weights))
