"""int8 GEMMs for the numpy engine: int8_gemm.c (AVX-512 VNNI), built with clang at first use and loaded with ctypes.

Why: numpy has no int8 GEMM (its int8 matmul is a plain loop), while with VNNI one instruction does 64 int8
multiply-adds where an fp32 FMA does 16. Activations are quantized per row at run time (absmax / 127), weights per
output channel (quantize.py). `lib()` is None where the CPU lacks VNNI, clang is missing, the build fails or
STUDENTZ_INT8_GEMM=0: callers then keep the float path. The library is cached under $STUDENTZ_CACHE (or
~/.cache/studentz), named by the hash of its source, the compiler and the CPU's flags. Calls release the GIL (ctypes),
so threads run them in parallel.
"""
from __future__ import annotations
import ctypes, functools, hashlib, os, platform, shutil, subprocess, tempfile
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("int8_gemm.c")
NEEDED_FLAGS = ("avx512f", "avx512bw", "avx512_vnni")
NR = 64  # int8_gemm.c's panel width


def cpu_flags() -> set[str]:
  try: text = Path("/proc/cpuinfo").read_text()
  except OSError: return set()
  return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def cache_dir() -> Path:
  return Path(os.environ.get("STUDENTZ_CACHE") or Path.home() / ".cache" / "studentz").expanduser() / "int8_gemm"


def _build(clang: str) -> Path:
  """The compiled library's path, building it if the cache lacks it (written to a temporary name, then renamed)."""
  version = subprocess.run([clang, "--version"], capture_output=True, text=True, timeout=60).stdout
  key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(sorted(cpu_flags())).encode())
  out = cache_dir() / f"int8_gemm_{key.hexdigest()[:16]}.so"
  if out.exists(): return out
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    subprocess.run([clang, "-O3", "-march=native", "-shared", "-fPIC", "-o", tmp, str(SOURCE)], check=True,
                   capture_output=True, timeout=300)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp): os.unlink(tmp)
  return out


def _declare(so: ctypes.CDLL) -> ctypes.CDLL:
  P, L = ctypes.c_void_p, ctypes.c_long
  so.pack_weights.argtypes = [P, L, L, P, P]
  so.gemm_s8.argtypes = [P, L, L, P, P, L, P]
  so.linear_f32.argtypes = [P, L, L, P, P, P, P, L, P]
  so.conv_f32.argtypes = [P, P, L, L, L, L, L, L, P, P, P, P, L, P]
  so.pack_weights.restype = None
  for f in (so.gemm_s8, so.linear_f32, so.conv_f32): f.restype = ctypes.c_int  # -1: out of memory
  return so


@functools.cache
def lib() -> ctypes.CDLL | None:
  """The loaded kernel library, or None where it cannot run here (the float path is used then)."""
  if os.environ.get("STUDENTZ_INT8_GEMM", "1") == "0": return None
  if platform.machine().lower() not in ("x86_64", "amd64") or not set(NEEDED_FLAGS) <= cpu_flags(): return None
  clang = shutil.which("clang")
  if clang is None: return None
  try: return _declare(ctypes.CDLL(str(_build(clang))))
  except (OSError, subprocess.SubprocessError): return None


def _ptr(a: np.ndarray | None):
  return None if a is None else a.ctypes.data


def _check(rc: int) -> None:
  if rc != 0: raise MemoryError("the int8 kernel could not allocate its scratch memory")


class PackedWeight:
  """A (K, N) int8 matrix with per-column float scales, packed for the kernel; bias (N,) float32 or None."""

  def __init__(self, q: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None):
    self.so = lib()
    if self.so is None: raise RuntimeError("the int8 GEMM kernel is not available here")
    q = np.ascontiguousarray(q, np.int8)
    self.K, self.N = q.shape
    panels = -(-self.N // NR)
    self.packed = np.empty(panels * ((self.K + 3) // 4) * NR * 4, np.int8)
    self.colsum = np.empty(self.N, np.int32)
    self.so.pack_weights(_ptr(q), self.K, self.N, _ptr(self.packed), _ptr(self.colsum))
    self.scale = np.ascontiguousarray(scale, np.float32)
    self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)

  def int_matmul(self, a: np.ndarray) -> np.ndarray:
    """a (M, K) int8 @ the int8 matrix, exactly, as int32 (M, N)."""
    a = np.ascontiguousarray(a, np.int8)
    out = np.empty((len(a), self.N), np.int32)
    _check(self.so.gemm_s8(_ptr(a), len(a), self.K, _ptr(self.packed), _ptr(self.colsum), self.N, _ptr(out)))
    return out

  def linear(self, x: np.ndarray) -> np.ndarray:
    """x (M, K) float32, quantized per row -> x @ (q * scale) + bias, float32 (M, N)."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty((len(x), self.N), np.float32)
    _check(self.so.linear_f32(_ptr(x), len(x), self.K, _ptr(self.packed), _ptr(self.colsum), _ptr(self.scale),
                              _ptr(self.bias), self.N, _ptr(out)))
    return out

  def conv(self, x: np.ndarray, mask: np.ndarray | None, k: int, dilation: int, left: int) -> np.ndarray:
    """x (B, L, C) float32 -> (B, L, N): the taps x[:, t + j * dilation - left] (j < k, scaled by mask (B, L), zero
    outside) side by side, each row quantized with one scale, @ (q * scale) + bias, where K = k * C."""
    B, L, C = x.shape
    if k * C != self.K: raise ValueError(f"{k} taps of {C} channels do not match K={self.K}")
    x = np.ascontiguousarray(x, np.float32)
    m = None if mask is None else np.ascontiguousarray(mask, np.float32).reshape(B, L)
    out = np.empty((B, L, self.N), np.float32)
    _check(self.so.conv_f32(_ptr(x), _ptr(m), B, L, C, k, dilation, left, _ptr(self.packed), _ptr(self.colsum),
                            _ptr(self.scale), _ptr(self.bias), self.N, _ptr(out)))
    return out
