"""Checkpoint files: safetensors + JSON written atomically (temp file, fsync, rename), read without any code
execution, and train.py's step folders with atomically swapped `last`/`best` links.

tinygrad is imported only by the functions that touch tensors: reading a checkpoint's config and arrays (what the numpy
inference path, numpy_infer.py, does) costs no tinygrad import."""
from __future__ import annotations
import json, os, shutil, tempfile
from contextlib import contextmanager
from pathlib import Path

import backend  # noqa: F401
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


class Checkpointer:
  """`out/step-N/` folders written completely, then `out/last` / `out/best` symlinks swapped atomically: a kill at any
  moment leaves the previous checkpoint loadable."""

  def __init__(self, out: Path, cfg, meta: dict, tokenizer):
    self.out, self.cfg, self.meta, self.tok = Path(out), cfg, meta, tokenizer
    self.out.mkdir(parents=True, exist_ok=True)
    self.current: Path | None = None

  def save(self, name: str, trainer, loader, best: float, bad_evals: int, metrics: dict) -> Path:
    from tinygrad import Tensor
    from tinygrad.nn.state import get_state_dict
    step = trainer.step_count
    d = self.out / f"step-{step:07d}"
    d.mkdir(parents=True, exist_ok=True)
    save_tensors(d / "model.safetensors", {f"{name}.{k}": v for name, m in trainer.models.items()
                                              for k, v in get_state_dict(m).items()})
    dev = Tensor._device_rng_counters
    rng = {f"rng.{i}": t for i, t in enumerate(dev.values())}
    save_tensors(d / "train_state.safetensors", {**trainer.state(), **rng})
    info = {"format_version": FORMAT_VERSION, "step": step, "config": self.cfg.to_dict(), **self.meta,
            "metrics": metrics, "best_val_cos": best, "bad_evals": bad_evals, "loader": loader.state_dict()}
    atomic_write_bytes(d / "config.json", json.dumps(info, indent=2).encode())
    atomic_write_bytes(d / "tokenizer.json", self.tok.to_json_str().encode())
    self.current = d
    self.link(name)
    self._prune()
    return d

  def link(self, name: str) -> None:
    """Point out/name at the newest step folder: a relative symlink replaced with one atomic rename."""
    tmp = self.out / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists(): tmp.unlink()
    os.symlink(self.current.name, tmp)
    os.replace(tmp, self.out / name)

  def _prune(self) -> None:
    keep = {os.path.realpath(self.out / n) for n in ("last", "best") if (self.out / n).exists()}
    for d in self.out.glob("step-*"):
      if d.is_symlink():  # a link planted in the run folder: remove the link, never what it points to
        if os.path.realpath(d) not in keep: d.unlink()
      elif d.is_dir() and os.path.realpath(d) not in keep:
        shutil.rmtree(d)  # rmtree never follows a symlink found inside (it unlinks the link)

  def restore(self, state: dict, trainer, loader) -> tuple[float, int]:
    from tinygrad import Tensor
    d = state["dir"]
    arrays = load_tensors(d / "model.safetensors")
    for k, m in trainer.models.items(): assign_state(m, arrays, prefix=f"{k}.")
    ts = load_tensors(d / "train_state.safetensors")
    for k, t in trainer.state().items():
      if k not in ts: raise CheckpointError(f"{d} lacks training state {k}: cannot resume exactly")
      t.assign(Tensor(np.ascontiguousarray(ts[k]), device=t.device).cast(t.dtype)).realize()
    Tensor.rand(1).realize()  # creates the device RNG counters so they can be restored
    # data parallel: dropout draws on every device; created in device order, as the first step of the run did
    for dev in getattr(trainer, "devices", None) or (): Tensor.rand(1, device=dev).realize()
    for i, t in enumerate(Tensor._device_rng_counters.values()):
      if f"rng.{i}" in ts: t.assign(Tensor(ts[f"rng.{i}"], device=t.device)).realize()
    loader.load_state_dict(state["info"]["loader"])
    self.current = d.resolve()
    return float(state["info"]["best_val_cos"]), int(state["info"]["bad_evals"])


class RunFolderError(ValueError):
  """--out cannot be used: a file, or a folder another run holds; the message is one line."""


@contextmanager
def run_lock(out: Path):
  """Own run folder `out` for the block: an exclusive flock on out/.lock, taken before any work; a second run on the
  same folder fails at once instead of interleaving checkpoints and metrics. The kernel drops it at exit, even on
  kill -9."""
  out = Path(out)
  if out.exists() and not out.is_dir(): raise RunFolderError(f"--out {out} is a file, not a folder: pick another --out")
  made = not out.exists()
  out.mkdir(parents=True, exist_ok=True)
  try: import fcntl
  except ImportError: fcntl = None  # Windows: no flock, no guard
  fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
  try:
    if fcntl is not None:
      try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        raise RunFolderError(f"{out} is in use by another run (pid {pid}); wait for it or pick another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield out
  finally:
    if made and {p.name for p in out.iterdir()} == {".lock"}:  # a run that stopped before any output leaves nothing
      (out / ".lock").unlink()
      out.rmdir()
    os.close(fd)  # closing the only descriptor releases the flock


def read_checkpoint_info(ckpt: Path) -> dict:
  ckpt = Path(ckpt)
  cfg_file = ckpt / "config.json"
  if not ckpt.exists(): raise CheckpointError(f"checkpoint not found: {ckpt}")
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


# What an encoder's weights are shaped by, and the data its tokenizer was fitted on: train.py --init-from takes these
# from the checkpoint (unless the user set them), so fitting a decoder to a wider distilled encoder needs no repeat of
# its shape, and the run prepares the same data folder (another one would fit another tokenizer).
ENCODER_SHAPE = ("vocab_size", "d_model", "hidden", "n_blocks", "kernel_size", "dilation_schedule", "norm", "padding",
                 "pool", "pool_head", "block_context", "proj_dim", "max_len", "data_limit", "data_crops")


def with_encoder_shape(cfg, ckpt: Path, keep: set = frozenset()):
  """cfg with the ENCODER_SHAPE fields of checkpoint ckpt's config, except those named in keep; says which it took."""
  import sys
  from studentz import Config
  theirs = read_checkpoint_info(ckpt).get("config", {})
  mine = cfg.to_dict()
  take = {k: theirs[k] for k in ENCODER_SHAPE if k in theirs and k not in keep and theirs[k] != mine[k]}
  if take:
    said = ", ".join(f"{k}={json.dumps(v)}" for k, v in take.items())
    print(f"--init-from: encoder shape from the checkpoint: {said}", file=sys.stderr)
  return Config.from_dict({**mine, **take})
