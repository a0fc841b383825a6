"""What a teacher's HF / sentence-transformers folder holds, read without tinygrad: its weights (as numpy, under
normalised names, with each architecture's name table), its tokenizer and its pooling config.

Shared by the tinygrad ports (teacher/models.py, teacher/embedder.py) and the numpy one (teacher/numpy_model.py).
"""
import json, math, functools
from pathlib import Path
import numpy as np

# additive attention mask for padded keys: finite so a row never becomes NaN, big enough that exp() underflows to 0
MASK_VALUE = -1e9
# wrappers the weights may sit under (task heads, sentence-transformers' auto_model); stripped before matching
PREFIXES = ("bert.", "distilbert.", "mpnet.", "roberta.", "model.", "encoder_model.", "0.auto_model.", "auto_model.")


class ModelLoadError(ValueError):
  """A checkpoint we cannot turn into one of our ports; the message names the file and what is wrong."""


# upper bounds of what a teacher's config.json may ask for (the largest BERTs: 24 layers, 1024 wide, 4096 inner): a
# hostile or corrupt config must not build 10 million layers before the weights are even looked at
SIZE_LIMITS = {"hidden size": 1 << 14, "attention heads": 256, "intermediate size": 1 << 16, "layers": 256,
               "vocab_size": 1 << 21, "max_position_embeddings": 1 << 16}


def check_sizes(sizes: tuple, config: dict) -> tuple:
  """The (d, heads, d_ff, layers) sizes, each a positive int under its limit (also vocab and positions), or
  ModelLoadError naming the first that is not."""
  extra = tuple(config.get(k, 1) for k in ("vocab_size", "max_position_embeddings"))
  for (name, top), v in zip(SIZE_LIMITS.items(), sizes + extra):
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
      raise ModelLoadError(f"config.json: {name} must be an integer in [1, {top}], got {v!r}")
  return sizes


# our names -> the checkpoint's, per architecture: (layer prefix, per-layer names, top-level names)
_BERT_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "o": "attention.output.dense", "ln1": "attention.output.LayerNorm", "ff1": "intermediate.dense",
               "ff2": "output.dense", "ln2": "output.LayerNorm"}
_BERT_TOP = {"word": "embeddings.word_embeddings", "pos": "embeddings.position_embeddings",
             "type": "embeddings.token_type_embeddings", "emb_ln": "embeddings.LayerNorm"}
_NO_TYPE_TOP = {k: v for k, v in _BERT_TOP.items() if k != "type"}
NAMES = {
  "bert": ("encoder.layer.", _BERT_LAYER, _BERT_TOP),
  "distilbert": ("transformer.layer.", {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                                         "o": "attention.out_lin", "ln1": "sa_layer_norm", "ff1": "ffn.lin1",
                                         "ff2": "ffn.lin2", "ln2": "output_layer_norm"}, _NO_TYPE_TOP),
  "mpnet": ("encoder.layer.", {"q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v",
                               "o": "attention.attn.o", "ln1": "attention.LayerNorm", "ff1": "intermediate.dense",
                               "ff2": "output.dense", "ln2": "output.LayerNorm"},
            {**_NO_TYPE_TOP, "rel_bias": "encoder.relative_attention_bias"}),
}


@functools.lru_cache(maxsize=None)
def relative_position_bucket(L: int, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
  """HF MPNet's bucket of (key - query) for an L x L grid, bidirectional; float32 like torch so edges agree."""
  rel = np.arange(L)[None, :] - np.arange(L)[:, None]  # (L, L) memory - context
  n = -rel
  half = num_buckets // 2
  ret = (n < 0).astype(np.int64) * half
  n = np.abs(n)
  max_exact = half // 2
  log_ratio = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))  # n < max_exact never uses it
  scaled = log_ratio / np.float32(math.log(max_distance / max_exact))
  large = np.minimum(max_exact + (scaled * np.float32(half - max_exact)).astype(np.int64), half - 1)
  return (ret + np.where(n < max_exact, n, large)).astype(np.int32)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """Every tensor in a .safetensors file as numpy (bf16 widened by hand: numpy has no bfloat16)."""
  from safetensors import safe_open
  out, raw = {}, None
  with safe_open(str(path), framework="numpy") as f:
    for key in f.keys():
      try: out[key] = f.get_tensor(key)
      except (TypeError, ValueError):  # bf16: decode from the header offsets below
        raw = raw if raw is not None else _raw_header(path)
        info, data_start = raw[0][key], raw[1]
        if info["dtype"] != "BF16": raise
        start, end = info["data_offsets"]
        with open(path, "rb") as fh:
          fh.seek(data_start + start)
          u16 = np.frombuffer(fh.read(end - start), dtype="<u2")
        out[key] = (u16.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
  return out


def _raw_header(path: Path) -> tuple[dict, int]:
  with open(path, "rb") as fh:
    n = int.from_bytes(fh.read(8), "little")
    return json.loads(fh.read(n)), 8 + n


def normalise_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Strip wrapper prefixes and map old LayerNorm gamma/beta names, so one table matches every variant."""
  out = {}
  for key, value in state.items():
    stripped = True
    while stripped:
      stripped = False
      for p in PREFIXES:
        if key.startswith(p): key, stripped = key[len(p):], True
    if key.endswith(".gamma"): key = key[:-len(".gamma")] + ".weight"
    elif key.endswith(".beta"): key = key[:-len(".beta")] + ".bias"
    out.setdefault(key, value)
  return out


# checkpoints whose position table starts after padding_idx + 1 (fairseq style) lose two usable positions
OFFSET_POSITION_TYPES = ("mpnet", "roberta", "xlm-roberta", "camembert")
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers concatenates them in this order


def _read_json(path: Path, default=None):
  return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def _token_str(tok) -> str | None:
  return tok.get("content") if isinstance(tok, dict) else tok  # special_tokens_map may hold AddedToken dicts


def load_tokenizer(folder: Path, max_seq_length: int):
  """tokenizer.json via `tokenizers`, else vocab.txt as a BERT WordPiece tokenizer; truncating, never padding."""
  from tokenizers import Tokenizer
  from tokenizers.implementations import BertWordPieceTokenizer
  tcfg = {**_read_json(folder / "special_tokens_map.json", {}), **_read_json(folder / "tokenizer_config.json", {})}
  if (folder / "tokenizer.json").is_file():
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
  elif (folder / "vocab.txt").is_file():
    specials = {k: _token_str(tcfg.get(f"{k}_token")) or f"[{k.upper()}]" for k in ("unk", "sep", "cls", "pad", "mask")}
    tok = BertWordPieceTokenizer(
      str(folder / "vocab.txt"), lowercase=bool(tcfg.get("do_lower_case", True)), clean_text=True,
      handle_chinese_chars=bool(tcfg.get("tokenize_chinese_chars", True)), strip_accents=tcfg.get("strip_accents"),
      **{f"{k}_token": v for k, v in specials.items()})
  else:
    raise ModelLoadError(f"{folder}: no tokenizer.json or vocab.txt")
  tok.no_padding()  # we pad to our own length buckets
  tok.enable_truncation(max_length=max_seq_length)  # counts the special tokens, as HF's truncation=True does
  pad = _token_str(tcfg.get("pad_token"))
  pad_id = tok.token_to_id(pad) if pad else None
  return tok, pad_id


def read_pooling(folder: Path) -> tuple[tuple[str, ...], bool, int | None]:
  """(pooling modes, normalise?, max_seq_length) from sentence-transformers metadata; plain HF -> mean, no norm."""
  modules = _read_json(folder / "modules.json", [])
  pool_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
  pcfg = _read_json(folder / pool_dir / "config.json", None) if pool_dir else None
  if pcfg is None: modes = ("mean",)
  elif isinstance(pcfg.get("pooling_mode"), str):  # newer configs may name the single mode directly
    modes = ({"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(pcfg["pooling_mode"],
                                                                                    pcfg["pooling_mode"]),)
  else:
    keys = {m: "pooling_mode_cls_token" if m == "cls" else f"pooling_mode_{m}_tokens" for m in POOLING_MODES}
    modes = tuple(m for m in POOLING_MODES if pcfg.get(keys[m]))
    unsupported = [k for k in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken") if pcfg.get(k)]
    if unsupported: raise ModelLoadError(f"{folder}: unsupported pooling {', '.join(unsupported)}")
  if not modes or any(m not in POOLING_MODES for m in modes):
    raise ModelLoadError(f"{folder}: unsupported pooling config {pcfg}")
  normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
  max_len = (_read_json(folder / "sentence_bert_config.json", {}) or {}).get("max_seq_length")
  return modes, normalize, max_len
