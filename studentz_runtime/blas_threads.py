"""How many threads numpy's OpenBLAS uses, switchable at run time (no threadpoolctl dependency).

Why: the numpy inference path's GEMMs are small (a sentence is ~10 rows), and between them run numpy's single-threaded
elementwise ops. OpenBLAS's worker threads spin-wait after each GEMM, so on a 2-core machine they take the core the
main thread needs, and small calls run many times slower than on one thread. Where the library is not
OpenBLAS (MKL, Apple's Accelerate) every call here does nothing.
"""
from __future__ import annotations
import contextlib, ctypes, functools, glob, os


@functools.cache
def _openblas():
  """(set, get) of the OpenBLAS numpy loaded, or None."""
  import numpy as np
  root = os.path.dirname(np.__file__)
  for path in sorted(glob.glob(os.path.join(root, "..", "numpy.libs", "*openblas*")) +
                     glob.glob(os.path.join(root, ".dylibs", "*openblas*"))):
    try: lib = ctypes.CDLL(path)  # already loaded by numpy: this returns the same library, not a second copy
    except OSError: continue
    for prefix in ("scipy_openblas_", "openblas_"):
      for suffix in ("64_", ""):
        s = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
        g = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
        if s is not None and g is not None: return s, g
  return None


def get() -> int | None:
  fns = _openblas()
  return int(fns[1]()) if fns else None


@contextlib.contextmanager
def limit(n: int | None):
  """Run the block with at most n BLAS threads (None: leave as is), then restore the previous count."""
  fns = _openblas()
  if n is None or fns is None:
    yield
    return
  before = int(fns[1]())
  fns[0](min(n, before))
  try: yield
  finally: fns[0](before)
