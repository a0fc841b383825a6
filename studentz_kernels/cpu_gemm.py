"""float32 GEMM for tinygrad's CPU backend: one C kernel run as a tinygrad custom kernel, with its gradient.

Why: tinygrad 0.14 renders CPU matmuls as float4 loads and scalar multiply-adds, and runs every kernel on one worker
thread (also across CPU:0, CPU:1), far below what the vector units can do; `python -m bench gemm` compares the two.

C (M, N) = A (M, K) @ B (K, N). B is packed into panels of PANEL columns, each (K, PANEL) contiguous, plus a narrower
tail panel when N is not a multiple of PANEL; a micro-tile keeps MR rows x PANEL columns of C in vector registers and,
per k, loads PANEL consecutive floats of B and broadcasts one float of each of its MR rows of A. Rows are split over
threads that the kernel starts itself through pthread_create, whose address it gets in a small buffer, the way
tinygrad's own CPU runtime hands its kernels libc functions. The backward is the same GEMM twice: dA = dC @ B^T,
dB = A^T @ dC. STUDENTZ_CPU_GEMM=0 turns it off (tinygrad's own matmul everywhere; backend.KERNELS); tinygrad's
NUM_CPU_THREADS caps the threads (default: the CPUs this process may use).
"""
from __future__ import annotations
import ctypes, ctypes.util, functools, platform

from studentz_kernels.backend import (KERNELS, backend_of, gemm_layout, kernel_out, shard_shape, source_program,
                                      split_axis)
from tinygrad import Tensor, dtypes
from tinygrad.helpers import NUM_CPU_THREADS
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import UOp

ENABLED = KERNELS.cpu_gemm
MR = 6          # rows of A per micro-tile
MIN_M = 16      # below this (one streamed token, batch-1 decoding) the packing copy costs more than it saves
ROWS_PER_THREAD = 96  # fewer rows than this per extra thread and starting it costs more than it saves


@functools.cache
def isa() -> tuple[int, int] | None:
  """(floats per vector, vectors per panel) for this CPU, or None where the kernel is not used. AVX-512: 32 zmm
  registers hold 6 x 4 accumulators; AVX2: 16 ymm registers hold 6 x 2. Other CPUs keep tinygrad's matmul."""
  if platform.machine().lower() not in ("x86_64", "amd64"): return None
  try: flags = open("/proc/cpuinfo").read().split()
  except OSError: return None
  if "avx512f" in flags: return (16, 4)
  if "avx2" in flags and "fma" in flags: return (8, 2)
  return None


def _layout(a: Tensor, b: Tensor) -> str | None:
  """How the kernel runs a (M, K) @ b (K, N): CPU, float32, concrete shapes, N a multiple of the vector, on one device
  or over several (data-parallel training on CPU devices) as backend.gemm_layout names them: rows split, the weight
  whole on each, or the contraction split in both (the weight's gradient); None where it cannot."""
  if not ENABLED or isa() is None or a.ndim != 2 or b.ndim != 2: return None
  if a.dtype != dtypes.float32 or b.dtype != dtypes.float32: return None
  if backend_of(a.device) != "CPU" or not all(isinstance(s, int) for s in (*a.shape, *b.shape)): return None
  N = b.shape[1]
  if shard_shape(a)[0] < MIN_M or a.shape[1] < 1 or N <= 0 or N % isa()[0]: return None
  return gemm_layout(a, b)


def usable(a: Tensor, b: Tensor) -> bool:
  """Whether a (M, K) @ b (K, N) can run on this kernel (see _layout)."""
  return _layout(a, b) is not None


def threads(M: int) -> int:
  return max(1, min(NUM_CPU_THREADS.value, M // ROWS_PER_THREAD, 64))


@functools.cache
def _source(name: str, M: int, K: int, N: int, vw: int, nb: int, T: int) -> str:
  panel = vw * nb
  full, tail = N // panel, (N % panel) // vw
  wide = ", min_vector_width(512)" if vw == 16 else ""

  def tile(nv: int) -> str:
    # nv vectors of columns: MR * nv accumulators and nv loads of B live in vector registers
    return f"""
static inline __attribute__((always_inline{wide}))
void tile_{nv}(float* restrict C, const float* restrict A, const float* restrict P, const int mr) {{
  vf acc[{MR}][{nv}];
  for (int i = 0; i < {MR}; i++) for (int j = 0; j < {nv}; j++) acc[i][j] = (vf)0.0f;
  for (int k = 0; k < K; k++) {{
    vf b[{nv}];
    for (int j = 0; j < {nv}; j++) b[j] = *(const vf*)(P + k*{nv * vw} + {vw}*j);
    for (int i = 0; i < {MR}; i++) if (i < mr) {{
      const vf a = (vf)(A[i*K + k]);
      for (int j = 0; j < {nv}; j++) acc[i][j] += a * b[j];
    }}
  }}
  for (int i = 0; i < {MR}; i++) if (i < mr) for (int j = 0; j < {nv}; j++) *(vf*)(C + i*N + {vw}*j) = acc[i][j];
}}"""

  def panel_rows(nv: int, col: str) -> str:
    rest = "".join(f"      case {r}: tile_{nv}(C + m*N + {col}, A + m*K, P, {r}); break;\n" for r in range(1, MR))
    return (f"    int m = m0;\n    for (; m + {MR} <= m1; m += {MR}) tile_{nv}(C + m*N + {col}, A + m*K, P, {MR});\n"
            f"    switch (m1 - m) {{\n{rest}      default: break;\n    }}\n")

  rows = ""
  if full: rows += f"  for (int p = 0; p < {full}; p++) {{\n    const float* P = Pk + p*K*{panel};\n" \
                   + panel_rows(nb, f"p*{panel}") + "  }\n"
  if tail:
    rows += f"  {{\n    const float* P = Pk + {full}*K*{panel};\n" + panel_rows(tail, str(full * panel)) + "  }\n"
  tiles = "".join(tile(nv) for nv in sorted({nb} | ({tail} if tail else set())))
  chunk = -(-M // T // MR) * MR  # rows per thread, whole micro-tiles
  # The entry point must come first in .text (the CPU runtime calls the start of the object): everything before it is
  # inlined, and the thread body comes after it.
  return f"""typedef float vf __attribute__((ext_vector_type({vw}), aligned(4)));
typedef int (*create_fn)(unsigned long*, const void*, void* (*)(void*), void*);
typedef int (*join_fn)(unsigned long, void**);
#define M {M}
#define K {K}
#define N {N}
struct job {{ float* C; const float* A; const float* Pk; int m0, m1; }};
{tiles}
static inline __attribute__((always_inline{wide}))
void rows(float* restrict C, const float* restrict A, const float* restrict Pk, const int m0, const int m1) {{
{rows}}}
static void* work(void* arg);
__attribute__((min_vector_width({vw * 32})))
void {name}(float* restrict C, const float* restrict A, const float* restrict Pk, const unsigned long* restrict F) {{
  struct job jobs[{T}];
  unsigned long tid[{T}];
  int started[{T}];
  for (int t = 0; t < {T}; t++) {{
    jobs[t].C = C; jobs[t].A = A; jobs[t].Pk = Pk;
    jobs[t].m0 = t*{chunk} < M ? t*{chunk} : M; jobs[t].m1 = (t+1)*{chunk} < M ? (t+1)*{chunk} : M;
  }}
  /* a thread that cannot start (a process at its thread limit) leaves its rows to this one */
  for (int t = 1; t < {T}; t++) started[t] = ((create_fn)F[0])(&tid[t], 0, work, &jobs[t]) == 0;
  rows(C, A, Pk, jobs[0].m0, jobs[0].m1);
  for (int t = 1; t < {T}; t++) if (!started[t]) rows(C, A, Pk, jobs[t].m0, jobs[t].m1);
  for (int t = 1; t < {T}; t++) if (started[t]) ((join_fn)F[1])(tid[t], 0);
}}
static void* work(void* arg) {{
  struct job* j = (struct job*)arg;
  rows(j->C, j->A, j->Pk, j->m0, j->m1);
  return 0;
}}
"""


@functools.cache
def _libc_table(device: str | tuple[str, ...]) -> Tensor:
  """pthread_create and pthread_join's addresses, for the kernel to start its threads."""
  lib = ctypes.CDLL(ctypes.util.find_library("c") or None)
  addrs = [ctypes.cast(getattr(lib, f), ctypes.c_void_p).value for f in ("pthread_create", "pthread_join")]
  t = Tensor(addrs, dtype=dtypes.uint64, device=device[0] if isinstance(device, tuple) else device)
  return (t.shard(device) if isinstance(device, tuple) else t).contiguous().realize()


def pack(b: Tensor) -> Tensor:
  """(K, N) -> the kernel's flat panel layout: (N // PANEL, K, PANEL) then the (K, N % PANEL) tail, contiguous. A b
  split over devices on K is packed per device, n blocks of K / n rows each."""
  n = len(b.device) if split_axis(b) == 0 else 1
  K, N = b.shape
  panel = isa()[0] * isa()[1]
  full = N // panel * panel
  b3, parts = b.reshape(n, K // n, N), []                                          # (devices, K per device, N)
  if full: parts.append(b3[:, :, :full].reshape(n, K // n, full // panel, panel).permute(0, 2, 1, 3).reshape(n, -1))
  if full < N: parts.append(b3[:, :, full:].reshape(n, -1))
  return (parts[0] if len(parts) == 1 else parts[0].cat(parts[1], dim=1)).reshape(-1).contiguous()


def unpack(packed: Tensor, K: int, N: int) -> Tensor:
  """The inverse of pack: the flat panels back to (K, N)."""
  panel = isa()[0] * isa()[1]
  full = N // panel * panel
  parts = []
  if full: parts.append(packed[:full * K].reshape(full // panel, K, panel).permute(1, 0, 2).reshape(K, full))
  if full < N: parts.append(packed[full * K:].reshape(K, N - full))
  return parts[0] if len(parts) == 1 else parts[0].cat(parts[1], dim=1)


def _run(a: Tensor, packed: Tensor, N: int, layout: str) -> Tensor:
  M, K = shard_shape(a)                                                            # one device's part
  vw, nb = isa()
  T = threads(M)
  name = f"cpu_gemm_{M}_{K}_{N}_t{T}"
  src = _source(name, M, K, N, vw, nb, T)

  def fxn(*_params: UOp) -> UOp:
    est = Estimates(ops=2 * M * N * K, lds=4 * (M * K * (N // (vw * nb) + 1) + K * N), mem=4 * (M * K + K * N + M * N))
    return source_program(name, src, a.device, 3, est)

  def grad(g: UOp, call: UOp) -> tuple:
    _, a_u, p_u, _ = call.src[1:]
    gt, at = Tensor(g), Tensor(a_u)
    # dB = A^T @ dC reduces over the rows: with rows split over devices a partial on each, summed across them
    da, db = matmul(gt, unpack(Tensor(p_u), K, N).T), matmul(at.T, gt)
    return (None, da.uop, pack(db).uop, None)

  if layout == "k":  # a partial product on each device (n, M, N), summed across them; only ever a gradient itself
    out = kernel_out((1, M, N), dtypes.float32, a.device)
    return out.custom_kernel(a, packed, _libc_table(a.device), fxn=fxn)[0].sum(0)
  out = kernel_out((M, N), dtypes.float32, a.device)                               # rows split like a's
  return out.custom_kernel(a, packed, _libc_table(a.device), fxn=fxn, grad_fxn=grad)[0]


def matmul(a: Tensor, b: Tensor) -> Tensor:
  """a (M, K) @ b (K, N) on this kernel where `usable`, else tinygrad's matmul."""
  if (layout := _layout(a, b)) is None: return a.matmul(b)
  return _run(a, pack(b), b.shape[1], layout)
