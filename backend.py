"""Device selection for every StudentZ entry point; import this module before tinygrad.

tinygrad 0.14 raises on the old `METAL=1` / `CUDA=1` switches and wants `DEV=METAL`. Users (and the design card)
still type the old form, so we translate it here, before tinygrad reads the environment, and reject unknown names
with one clear line instead of a deep traceback.
"""
import os, sys

# Tensor cores also for GEMMs whose sizes are not multiples of the core's tile (padded) and for operands cast on the
# fly: measured on an H100 (B=64, L=128 student step) 86 -> 49 ms in bf16. A user's own TC_OPT wins.
os.environ.setdefault("TC_OPT", "2")

# the backends tinygrad 0.14 knows; GPU/OPENCL are old spellings of CL, CLANG/LLVM old spellings of CPU
KNOWN = ("CPU", "CUDA", "METAL", "NV", "AMD", "CL", "QCOM", "WEBGPU", "DSP")
ALIASES = {"GPU": "CL", "OPENCL": "CL", "CLANG": "CPU", "LLVM": "CPU"}


class DeviceError(ValueError):
  """A device the user asked for that tinygrad cannot give; the message says what to do."""


def select_device(requested: str | None = None) -> str | None:
  """Turn `NAME=1` switches (or an explicit name) into tinygrad's `DEV=NAME`. Returns the chosen name or None (auto)."""
  chosen = requested
  for name in (*KNOWN, *ALIASES):
    if os.environ.get(name, "") in ("1", "true", "True"):
      del os.environ[name]  # tinygrad asserts if it still sees NAME=1
      chosen = chosen or ALIASES.get(name, name)
  dev = (chosen or os.environ.get("DEV", "")).strip()
  if not dev: return None
  base = dev.split(":")[0].split("+")[0].upper()
  base = ALIASES.get(base, base)
  if base not in KNOWN:
    raise DeviceError(f"unknown device {dev!r}: use one of {', '.join(KNOWN)} (e.g. DEV=CUDA or CUDA=1)")
  os.environ["DEV"] = base + dev[len(dev.split(":")[0].split("+")[0]):]
  return os.environ["DEV"]


def device_name() -> str:
  """The device tinygrad will use, resolved (opens the default device)."""
  from tinygrad import Device
  return Device.DEFAULT


try:
  select_device()
except DeviceError as e:  # entry points print this one line and exit non-zero
  PENDING_ERROR: DeviceError | None = e
else:
  PENDING_ERROR = None

# Split-K for reductions whose output is small next to their length: the weight gradients of the conv GEMMs reduce
# over all B*L tokens into a (C_in*k, C_out) tile grid too small to fill a GPU. tinygrad splits such a reduce into two
# kernels when len/out >= REDUCEOP_SPLIT_THRESHOLD and the partial sums fit 2**REDUCEOP_SPLIT_SIZE elements; its
# defaults (32768, 22) never fire here. Measured on an H100 (bf16 step, d=256 h=512): B=128 L=64 45.0 -> 34.0 ms,
# B=512 L=64 112.5 -> 77.9 ms (results/h100_train_step_sweep.json). GPUs only (named, or Metal when auto-selected on a
# Mac): a CPU's few cores are already busy with the unsplit GEMM.
_dev = os.environ.get("DEV", "").split(":")[0].split("+")[0]  # normalised by select_device() (CLANG -> CPU)
if (_dev and _dev != "CPU") or (not _dev and sys.platform == "darwin"):
  os.environ.setdefault("REDUCEOP_SPLIT_THRESHOLD", "4096")
  os.environ.setdefault("REDUCEOP_SPLIT_SIZE", "25")


def check_device() -> str:
  """Call from a CLI: exits with a clear line on a bad device, else returns the device name (and prints nothing)."""
  if PENDING_ERROR is not None:
    print(f"error: {PENDING_ERROR}", file=sys.stderr)
    raise SystemExit(2)
  try:
    return device_name()
  except Exception as e:  # tinygrad raises plain exceptions when a backend is missing
    print(f"error: cannot open device {os.environ.get('DEV', '(auto)')}: {e}", file=sys.stderr)
    raise SystemExit(2)
