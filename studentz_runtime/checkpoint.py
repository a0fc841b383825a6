"""Checkpoint files: safetensors + JSON written atomically (temp file, fsync, rename) and read without any code
execution; which folder a checkpoint argument means. A training run's step folders and links:
studentz_training/run_folder.py.

tinygrad is imported only by the functions that touch tensors: reading a checkpoint's config and arrays (what the numpy
inference path, numpy_infer.py, does) costs no tinygrad import."""
from __future__ import annotations
import json, os, tempfile
from pathlib import Path

from studentz_kernels import backend  # noqa: F401
import numpy as np

FORMAT_VERSION = 1



def _fsync_dir(path: Path) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
    try: os.fsync(fd)
    finally: os.close(fd)
  except OSError: pass


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


UMASK = _umask()  # read once at import: os.umask can only be read by setting it


def atomic_write_bytes(path: Path, data: bytes) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; a checkpoint is an ordinary file (0644 under umask 022)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
  except BaseException:
    if os.path.exists(tmp): os.unlink(tmp)
    raise


def host(t) -> np.ndarray:
  """numpy copy of a tensor; a replicated (data-parallel) one leaves from its first device, because tinygrad would
  stage a multi-device tensor through a CPU buffer, and opening the CPU device compiles with clang (GPU hosts may
  have no clang)."""
  return (t.to(t.device[0]) if isinstance(t.device, tuple) else t).numpy()


def save_tensors(path: Path, tensors: dict, dtype=None, metadata: dict | None = None) -> None:
  """safetensors via a temp file + fsync + rename; `dtype` casts float tensors (fp16 for shipped weights).

  Tensors leave the device through numpy, so saving never compiles a CPU kernel (GPU hosts may have no clang)."""
  from safetensors.numpy import save
  from tinygrad import dtypes
  arrays = {}
  for k, t in tensors.items():
    if dtype is not None and dtypes.is_float(t.dtype): t = t.cast(dtype)
    arrays[k] = np.ascontiguousarray(host(t))
  atomic_write_bytes(Path(path), save(arrays, metadata={k: str(v) for k, v in (metadata or {}).items()}))


class CheckpointError(ValueError):
  """A checkpoint that is missing, corrupt or made for another model; the message says which and what to do."""


def load_tensors(path: Path) -> dict[str, np.ndarray]:
  """safetensors -> numpy (no code execution possible); corrupt or truncated files raise CheckpointError."""
  from safetensors.numpy import load_file
  path = Path(path)
  if not path.is_file(): raise CheckpointError(f"checkpoint file not found: {path}")
  try:
    return load_file(str(path))
  except Exception as e:
    raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def assign_state(model, arrays: dict[str, np.ndarray], prefix: str = "", strict: bool = True) -> None:
  """Copy arrays into a model's tensors, casting to each tensor's own dtype (never adopting the file's)."""
  from tinygrad import Tensor, dtypes
  from tinygrad.nn.state import get_state_dict
  sd = get_state_dict(model)
  missing = [k for k in sd if prefix + k not in arrays]
  if strict and missing: raise CheckpointError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
  # every shape is checked before any tensor is written, so a refused checkpoint leaves the model as it was
  bad = [f"tensor {k} has shape {tuple(arrays[prefix + k].shape)} in the checkpoint but {tuple(t.shape)} in the model"
         for k, t in sd.items() if prefix + k in arrays and tuple(arrays[prefix + k].shape) != tuple(t.shape)]
  if bad: raise CheckpointError("; ".join(bad) + ": the checkpoint was made with another config (vocabulary or "
                                "teacher dimension)")
  for k, t in sd.items():
    if prefix + k not in arrays: continue
    a = arrays[prefix + k]
    t.assign(Tensor(np.ascontiguousarray(a.astype(np.float32 if dtypes.is_float(t.dtype) else a.dtype)),
                    device=t.device).cast(t.dtype)).realize()


def read_checkpoint_info(ckpt: Path) -> dict:
  ckpt = Path(ckpt)
  cfg_file = ckpt / "config.json"
  if not ckpt.exists():
    names = ", ".join(shipped_models())
    raise CheckpointError(f"checkpoint not found: {ckpt}" + (f" (shipped models by name: {names})" if names else ""))
  if not cfg_file.is_file(): raise CheckpointError(f"{ckpt} is not a StudentZ checkpoint (no config.json)")
  try: info = json.loads(cfg_file.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e: raise CheckpointError(f"{cfg_file} is corrupt: {e}")
  except RecursionError: raise CheckpointError(f"{cfg_file} is corrupt: nested too deeply") from None
  if not isinstance(info, dict): raise CheckpointError(f"{cfg_file} is corrupt: not a JSON object")
  if info.get("format_version") != 1: raise CheckpointError(f"{ckpt}: unsupported format {info.get('format_version')}")
  required = ("config",) if "training" in info else ("config", "step")  # a packaged model has per-stage records
  if wrong := [k for k, t in INFO_TYPES.items() if k in info and not isinstance(info[k], t) or
               k in required and k not in info]:  # a KeyError or TypeError later, deep in a run
    raise CheckpointError(f"{cfg_file} is corrupt: wrong or missing {', '.join(wrong)}")
  teacher = info.get("teacher")
  want = (("name", str), ("dim", int), ("fingerprint", str))
  if teacher is not None and not (isinstance(teacher, dict) and all(isinstance(teacher.get(k), t) for k, t in want)):
    raise CheckpointError(f"{cfg_file} is corrupt: teacher must hold name, dim and fingerprint")
  return info


# what each field of a checkpoint's config.json must be, where present (config is required, and step unless the
# folder is a packaged model, whose `training` holds a record per stage: scripts/package_model.py)
INFO_TYPES = {"step": int, "config": dict, "teacher": dict, "data_dir": str, "data_source": str, "metrics": dict,
              "best_val_cos": (int, float), "bad_evals": int, "loader": dict, "training": dict}


# the shipped model: models/default of a checkout, or the copy `pip install .` puts beside this package
_HERE = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = next((p for p in (_HERE / "studentz_models" / "default", _HERE / "models" / "default")
                          if p.is_dir()), _HERE / "models" / "default")
NO_DEFAULT = ("the shipped default model (models/default) is missing from this install: pass a checkpoint folder, "
              "e.g. StudentZ.load('runs/NAME/best'), or set STUDENTZ_CKPT")


def shipped_models() -> list[str]:
  """The names of the model folders shipped beside the default one (e.g. "default", "streaming")."""
  root = DEFAULT_MODEL_DIR.parent
  return sorted(d.name for d in root.iterdir() if (d / "config.json").is_file()) if root.is_dir() else []


def resolve_path(path=None) -> Path:
  """The checkpoint folder for `path` (None: $STUDENTZ_CKPT, then the shipped default; a bare name that is no folder
  here, such as "streaming": that shipped model); a run folder means its best/."""
  if path is None:
    env = os.environ.get("STUDENTZ_CKPT", "").strip()
    if env: path = env
    elif DEFAULT_MODEL_DIR.exists(): path = DEFAULT_MODEL_DIR
    else: raise FileNotFoundError(NO_DEFAULT)
  p = Path(path).expanduser()
  if not p.exists() and len(p.parts) == 1 and (DEFAULT_MODEL_DIR.parent / p.name / "config.json").is_file():
    p = DEFAULT_MODEL_DIR.parent / p.name  # a shipped model by name, as sentence-transformers takes model names
  # runs/NAME is an easy slip for runs/NAME/best (infer.py accepts it too)
  if not (p / "config.json").exists() and (p / "best" / "config.json").exists(): p = p / "best"
  return p
