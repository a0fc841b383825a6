"""INT8 post-training quantisation of a StudentZ checkpoint: int8 matrices with one scale per output channel.

  python -m studentz_runtime.quantize models/default models/default-int8  # writes an int8 checkpoint folder beside it

Every matrix a GEMM reads (conv and linear weights, FiLM, the embedding tables, which the tied decoder head also
multiplies by) is int8 `name` plus float16 scales `name.qscale`, one per output row (w ~ q * scale, symmetric,
|q| <= 127); vectors (biases, norm scales) stay float16. In the file each int8 matrix is deflated (zlib, lossless; its
shape in the metadata): at one byte per value the header, scales and vectors alone keep a file above half the fp16
one, while int8 weights, most of them near zero, deflate well. `load_float32` reads any of these files (and int8 files
written before deflate) back as float32 arrays, `load_arrays` as stored: the numpy engine runs the encoder's int8
matrices on int8_gemm.py's kernel where the CPU has one, and on float32 copies elsewhere.
"""
from __future__ import annotations
import json, math, shutil, sys, zlib
from pathlib import Path

import numpy as np

SCALE_SUFFIX = ".qscale"
FORMAT = "int8-per-output-channel+deflate"
PACKED_KEY = "studentz_int8_deflate"  # file metadata: {name: shape} of the int8 tensors stored deflated
MIN_SIZE = 4096  # smaller tensors (biases, norm scales) stay float16: their bytes do not matter, their values do


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """w (rows, ...) -> (int8 q of w's shape, float16 scales (rows,)) with w ~ q * scale per row."""
  flat = np.asarray(w, np.float32).reshape(len(w), -1)
  # the scale is rounded to float16 first and q fitted to the rounded one, so what is stored is what is used
  scale = (np.abs(flat).max(1) / 127).astype(np.float16)
  s = np.where(scale > 0, scale.astype(np.float32), 1)[:, None]
  q = np.clip(np.rint(flat / s), -127, 127).astype(np.int8)
  return q.reshape(w.shape), scale


def dequantize(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every array as float32 (integer arrays other than quantised ones kept as they are); q * scale where scaled."""
  out = {}
  for k, v in arrays.items():
    if k.endswith(SCALE_SUFFIX): continue
    if (sk := k + SCALE_SUFFIX) in arrays:
      s = arrays[sk].astype(np.float32).reshape(-1, *([1] * (v.ndim - 1)))
      out[k] = v.astype(np.float32) * s
    else:
      out[k] = v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
  return out


def load_arrays(path: Path, int8: bool = False) -> dict[str, np.ndarray]:
  """A checkpoint's model.safetensors as stored (int8 matrices with their scales where quantised); CheckpointError if
  unreadable. int8: a float file is quantised first, so the arrays are those its int8 copy would hold."""
  from studentz_runtime.checkpoint import load_tensors
  arrays = unpack(load_tensors(path), read_metadata(path), path)
  if int8 and not any(k.endswith(SCALE_SUFFIX) for k in arrays): arrays = quantize_arrays(arrays)
  return arrays


def load_float32(path: Path, int8: bool = False) -> dict[str, np.ndarray]:
  """load_arrays's arrays (fp16, fp32 or int8 file) as float32."""
  return dequantize(load_arrays(path, int8))


def read_metadata(path: Path) -> dict[str, str]:
  """The safetensors file's string metadata ({} if none); call after load_tensors has read the file."""
  from safetensors import safe_open
  with safe_open(str(path), framework="numpy") as f: return f.metadata() or {}


def pack(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """The file's arrays and metadata: each int8 array deflated into a uint8 one, its shape kept in the metadata."""
  out, shapes = dict(arrays), {}
  for k, v in arrays.items():
    if v.dtype == np.int8:
      out[k], shapes[k] = np.frombuffer(zlib.compress(v.tobytes(), 9), np.uint8), list(v.shape)
  return out, {"studentz_quantization": FORMAT, PACKED_KEY: json.dumps(shapes, separators=(",", ":"))}


def unpack(arrays: dict[str, np.ndarray], meta: dict[str, str], path: Path) -> dict[str, np.ndarray]:
  """pack undone (arrays without PACKED_KEY metadata are returned as they are); CheckpointError on a bad file."""
  from studentz_runtime.checkpoint import CheckpointError
  if PACKED_KEY not in meta: return arrays
  try:
    for k, shape in json.loads(meta[PACKED_KEY]).items():
      n = math.prod(shape)
      d = zlib.decompressobj()
      raw = d.decompress(arrays[k].tobytes(), n)  # at most n bytes: a hostile stream cannot inflate without bound
      if len(raw) != n or not d.eof or d.unused_data: raise ValueError(f"{k} inflates to other than its {n} bytes")
      arrays[k] = np.frombuffer(raw, np.int8).reshape(shape)
  except (AttributeError, KeyError, TypeError, ValueError, zlib.error) as e:  # json.JSONDecodeError is a ValueError
    raise CheckpointError(f"{path} has a damaged int8 tensor ({type(e).__name__}: {e})") from e
  return arrays


def quantize_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The int8 file's arrays from float ones: matrices int8 + scales, the rest float16."""
  out = {}
  for k, v in arrays.items():
    if v.ndim >= 2 and v.size >= MIN_SIZE and np.issubdtype(v.dtype, np.floating):
      out[k], out[k + SCALE_SUFFIX] = quantize_rows(v)
    else:
      out[k] = v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v
  return out


def quantize_checkpoint(src: Path, dst: Path) -> dict:
  """Write dst (a checkpoint folder) as the int8 copy of src; returns both model files' sizes in bytes."""
  from studentz_runtime.checkpoint import atomic_write_bytes, load_tensors, read_checkpoint_info
  from safetensors.numpy import save
  src, dst = Path(src), Path(dst)
  info = read_checkpoint_info(src)
  if info.get("quantization"): raise ValueError(f"{src} is already quantised ({info['quantization']})")
  arrays = quantize_arrays(load_tensors(src / "model.safetensors"))
  dst.mkdir(parents=True, exist_ok=True)
  atomic_write_bytes(dst / "model.safetensors", save(*pack(arrays)))
  info = {**info, "quantization": FORMAT, "quantized_from": str(src)}
  atomic_write_bytes(dst / "config.json", json.dumps(info, indent=1).encode())
  shutil.copyfile(src / "tokenizer.json", dst / "tokenizer.json")
  size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
  return {"fp_bytes": size(src), "int8_bytes": size(dst)}


def main(argv=None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="quantize.py", description=__doc__.split("\n")[0])
  p.add_argument("src", type=Path, help="checkpoint folder to quantise (config.json, model.safetensors, "
                 "tokenizer.json)")
  p.add_argument("dst", type=Path, help="folder to write the int8 checkpoint to (created)")
  args = p.parse_args(argv)
  try:
    sizes = quantize_checkpoint(args.src, args.dst)
  except (OSError, ValueError) as e:  # CheckpointError is a ValueError: missing or corrupt source
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}: {sizes['int8_bytes'] / 1e6:.2f} MB ({sizes['int8_bytes'] / sizes['fp_bytes']:.1%} of "
        f"{sizes['fp_bytes'] / 1e6:.2f} MB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
