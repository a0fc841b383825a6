"""A training run's folder: step checkpoints written whole, then `last`/`best` links swapped atomically (`best` moved
into the decoder's stage once it ends); the lock that keeps a second run out; the encoder shape --init-from takes
from a checkpoint. Reading checkpoints is studentz_runtime/checkpoint.py (inference needs it, and nothing here)."""
from __future__ import annotations
import json, os, shutil, sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from studentz_runtime.checkpoint import (FORMAT_VERSION, CheckpointError, assign_state, atomic_write_bytes,
                                         load_tensors, read_checkpoint_info, save_tensors)


class Checkpointer:
  """`out/step-N/` folders written completely, then `out/last` / `out/best` symlinks swapped atomically: a kill at any
  moment leaves the previous checkpoint loadable."""

  def __init__(self, out: Path, cfg, meta: dict, tokenizer):
    self.out, self.cfg, self.meta, self.tok = Path(out), cfg, meta, tokenizer
    self.out.mkdir(parents=True, exist_ok=True)
    self.current: Path | None = None

  def save(self, name: str, trainer, loader, best: float, bad_evals: int, metrics: dict, is_best: bool = False) -> Path:
    """Write step-N/ and point out/name at it. is_best: this step is the new best, linked as best/ right after."""
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
            "metrics": metrics, "best_val_cos": best, "bad_evals": bad_evals, "is_best": is_best,
            "loader": loader.state_dict()}
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
    best = self.out / "best"
    # a kill between writing last/ and linking best/ left the best step unlinked: link it now
    if state["info"].get("is_best") and not (best.exists() and best.resolve() == self.current): self.link("best")
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


DECODER_DIR = "decoder"  # the decoder's stage's run folder inside the encoder's (train.fit_decoder)


def publish_decoder(out: Path) -> None:
  """Point out/best at the decoder stage's best (encoder and decoder), replacing the encoder-only best."""
  dec_best = out / DECODER_DIR / "best"
  if not dec_best.exists(): return
  tmp = out / ".best.tmp"
  if tmp.is_symlink() or tmp.exists(): tmp.unlink()
  os.symlink(f"{DECODER_DIR}/{os.readlink(dec_best)}", tmp)
  os.replace(tmp, out / "best")
  keep = os.path.realpath(out / "last")  # the encoder's stage's own best, now in the decoder's: its folder goes
  for d in out.glob("step-*"):
    if d.is_dir() and not d.is_symlink() and os.path.realpath(d) != keep: shutil.rmtree(d)
  print(f"encoder and decoder: {out / 'best'}", file=sys.stderr)


# What an encoder's weights are shaped by, and the data its tokenizer was fitted on: train.py --init-from takes these
# from the checkpoint (unless the user set them), so fitting a decoder to a wider distilled encoder needs no repeat of
# its shape, and the run prepares the same data folder (another one would fit another tokenizer).
ENCODER_SHAPE = ("vocab_size", "d_model", "hidden", "n_blocks", "kernel_size", "dilation_schedule", "norm", "padding",
                 "pool", "pool_head", "block_context", "proj_dim", "max_len", "data_limit", "data_crops")


# What a decoder's weights are shaped by beyond the encoder's fields: taken too when the checkpoint holds a decoder, so
# `--init-from models/default --loss_weights.ce 1` goes on training the decoder it ships
DECODER_SHAPE = ("dec_blocks", "dec_dilation_schedule", "dec_draft", "dec_output", "mode_b_proj")


def holds_decoder(ckpt: Path) -> bool:
  from safetensors import safe_open
  try:
    with safe_open(str(Path(ckpt) / "model.safetensors"), "np") as f:
      return any(k.startswith("decoder.") for k in f.keys())
  except Exception:  # a missing or damaged file: loading the weights says so, with its one-line error
    return False


def with_encoder_shape(cfg, ckpt: Path, keep: set = frozenset()):
  """cfg with the ENCODER_SHAPE fields of checkpoint ckpt's config (and DECODER_SHAPE's where it holds a decoder),
  except those named in keep; says which it took."""
  from studentz import Config
  theirs = read_checkpoint_info(ckpt).get("config", {})
  mine = cfg.to_dict()
  def take(fields): return {k: theirs[k] for k in fields if k in theirs and k not in keep and theirs[k] != mine[k]}
  enc, dec = take(ENCODER_SHAPE), (take(DECODER_SHAPE) if holds_decoder(ckpt) else {})
  for what, got in (("encoder", enc), ("decoder", dec)):
    if got: print(f"--init-from: {what} shape from the checkpoint: "
                  f"{', '.join(f'{k}={json.dumps(v)}' for k, v in got.items())}", file=sys.stderr)
  return Config.from_dict({**mine, **enc, **dec})
