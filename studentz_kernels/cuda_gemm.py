"""bf16/fp16 tensor-core GEMM for tinygrad's CUDA backend: one CUDA C kernel run as a tinygrad custom kernel, with its
gradient. The CUDA twin of cpu_gemm.py.

Why: tinygrad 0.14 renders CUDA matmuls with mma.sync tensor cores but feeds them straight from global memory (no
shared-memory staging, no pipelining), far below what the tensor cores can do (docs/RESULTS.md has both rates).

C (M, N) = op(A) (M, K) @ op(B) (K, N), float32 accumulation, output in the inputs' dtype. op(A) is A as stored (M, K)
or the transpose of a stored (K, M); op(B) is B as stored (K, N) or the transpose of a stored (N, K) (a Linear weight's
rows), so no transpose is ever materialised: the stored layout only decides whether a tile sits in shared memory
K-contiguous ([128][32]) or M/N-contiguous ([32][128]) and whether ldmatrix loads it with .trans. A block of 256
threads (8 warps, 2 x 4, each 64 x 32) computes a 128 x 128 tile of C, staging 32-deep K tiles of A and B into shared
memory through 16-byte cp.async in a 3-stage pipeline (3 x 16 KB: tinygrad launches with no dynamic shared memory, so
the 48 KB static limit is the budget), read by ldmatrix.x4 (XOR-swizzled 16-byte chunks, no bank conflicts for either
the cp.async writes or the ldmatrix reads) into mma.sync.m16n8k16. When C has fewer tiles than the GPU has SMs (the
weight gradients: 1280 x 512 reduced over 32768 tokens is 40 tiles) K is split over grid.z into float32 partials that
tinygrad sums. The backward is the same GEMM with other transpose flags: dA = dC @ op(B)^T, dB = op(A)^T @ dC.
Over several devices (data-parallel training, with STUDENTZ_CUDA_MULTI=1: see MULTI) each runs it on its part: the
batch's rows, or for a weight gradient its rows' share of the contraction, summed across the devices
(backend.gemm_layout). STUDENTZ_CUDA_GEMM=0 turns it off (tinygrad's matmul everywhere; backend.KERNELS).
"""
from __future__ import annotations
import functools

from studentz_kernels.backend import KERNELS, backend_of, gemm_layout, kernel_out, shard_shape, source_program
from tinygrad import Tensor, Device, dtypes
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import UOp

ENABLED = KERNELS.cuda_gemm
BM, BN, BK = 128, 128, 32  # block tile of C, K tile
STAGES = 3                 # (BM + BN) * BK * 2 bytes = 16 KB a stage: three fill the 48 KB of static shared memory
THREADS = 256
SMS = 132                  # streaming multiprocessors of the sm_90 SXM cards this was tuned on
MIN_SLICE = 256            # K per split slice: 8 K tiles, enough to fill the pipeline
MAX_SPLIT = 16             # the float32 partials are S x M x N: more slices cost more in the sum than they gain
FORCE_SPLIT = 0           # S > 0: S slices wherever K allows them (scripts/gpu_cuda_gemm_check.py checks each split)
# Our CUDA kernels (this GEMM, cuda_ops') in data-parallel steps over several GPUs: checked on CPU devices only, so off
# until measured on GPUs (scripts/gpu_data_parallel.sh). One GPU is not affected.
MULTI = KERNELS.cuda_multi


@functools.cache
def _arch_ok(device: str) -> bool:
  """A CUDA device whose renderer compiles CUDA C (not CUDA_PTX=1's PTX renderer) for sm_80 or later (cp.async,
  ldmatrix, bf16 mma)."""
  from tinygrad.renderer.cstyle import CUDARenderer
  ren = Device[device].renderer
  if not isinstance(ren, CUDARenderer): return False
  try: return int(ren.target.arch.removeprefix("sm_").rstrip("a")) >= 80
  except ValueError: return False


def _layout(a: Tensor, b: Tensor, trans_a: bool = False, trans_b: bool = False) -> str | None:
  """How the kernel runs op(a) @ op(b) from these stored operands: CUDA, 2-D, concrete, both bf16 or fp16, on one
  device or spread over several as backend.gemm_layout names ("one", "rows", "k"), each device's part in whole tiles;
  None where it cannot."""
  if not ENABLED or a.ndim != 2 or b.ndim != 2: return None
  if a.dtype != b.dtype or a.dtype not in (dtypes.bfloat16, dtypes.float16): return None
  if not all(isinstance(s, int) for s in (*a.shape, *b.shape)) or backend_of(a.device) != "CUDA": return None
  layout = gemm_layout(a, b, trans_a, trans_b)
  if layout is None or (layout != "one" and not MULTI): return None
  M, K, N, Kb = _dims(a, b, trans_a, trans_b)
  if K != Kb or not _fits(M, K, N): return None
  return layout if _arch_ok(a.device if isinstance(a.device, str) else a.device[0]) else None


def _dims(a: Tensor, b: Tensor, trans_a: bool, trans_b: bool) -> tuple[int, int, int, int]:
  """M, K, N of one device's op(a) @ op(b), and op(b)'s K (to check against K)."""
  sa, sb = shard_shape(a), shard_shape(b)
  M, K = (sa[1], sa[0]) if trans_a else sa
  Kb, N = (sb[1], sb[0]) if trans_b else sb
  return M, K, N, Kb


def _fits(M: int, K: int, N: int) -> bool:
  # whole tiles only: no bounds checks in the kernel (16-byte cp.async rows also need K, M, N multiples of 8)
  return M > 0 and N > 0 and K > 0 and M % BM == 0 and N % BN == 0 and K % BK == 0


def usable(a: Tensor, b: Tensor) -> bool:
  """Whether a (M, K) @ b (K, N) can run on this kernel: CUDA, bf16/fp16, concrete shapes, whole tiles (of each
  device's part where they are spread over several)."""
  return _layout(a, b) is not None


def splits(M: int, K: int, N: int) -> int:
  """Slices of K over grid.z, each whole K tiles. Only while C has fewer tiles than SMs: from one tile per SM on, two
  blocks fit an SM (128 registers a thread, 48 KB shared) and halving each block's K only doubles the waves. Then 16
  slices (fewer where K is too short for MIN_SLICE-deep ones): the best of 1 to 64 measured at both weight gradients
  of the training step (results/h200_cuda_gemm_check.json, results/h200_cuda_gemm_check_earlier_split_rule.json)."""
  if FORCE_SPLIT > 0: return FORCE_SPLIT if K % (FORCE_SPLIT * BK) == 0 else 1
  if (M // BM) * (N // BN) >= SMS: return 1
  s = 1
  while s < MAX_SPLIT and K % (2 * s * BK) == 0 and K // (2 * s) >= MIN_SLICE: s *= 2
  return s


def _loader(op: str, kcontig: bool, base: str, ld: int) -> tuple[str, int]:
  """Per-thread setup of one operand's two 16-byte cp.async chunks per stage: its global pointers g{op}[i] (at k tile
  0 of this block's slice), shared byte offsets s{op}_[i], and the global step in elements from one K tile to the next.
  [128][32] tiles: 4 chunks a row, chunk c of row r stored at c ^ ((r >> 1) & 3); [32][128] tiles: 16 chunks a row,
  chunk c of row r at c ^ (r & 7). Either way the 8 rows one ldmatrix 8x8 reads fall in 8 different 16-byte bank
  groups, and so do the 8 chunks each quarter-warp writes."""
  if kcontig:
    code = (f"    const int r = (tid >> 2) + 64 * i, c = tid & 3;\n"
            f"    g{op}[i] = {op} + (u64)({base} + r) * {ld} + k0 + c * 8;\n"
            f"    s{op}_[i] = (r * 32 + ((c ^ ((r >> 1) & 3)) << 3)) * 2;\n")
    return code, BK
  code = (f"    const int r = (tid >> 4) + 16 * i, c = tid & 15;\n"
          f"    g{op}[i] = {op} + (u64)(k0 + r) * {ld} + {base} + c * 8;\n"
          f"    s{op}_[i] = (r * 128 + ((c ^ (r & 7)) << 3)) * 2;\n")
  return code, BK * ld


@functools.cache
def _source(name: str, M: int, K: int, N: int, trans_a: bool, trans_b: bool, half: bool, S: int, partial: bool) -> str:
  """The kernel for one shape, layout, dtype and split. A is stored (M, K), or (K, M) when trans_a; B is stored (K, N),
  or (N, K) when trans_b. With `partial`, block z reduces K slice z of S into float32 partials out[z] (S, M, N), to be
  summed by the caller (S > 1, or a product whose K is split over devices)."""
  KT = K // S // BK                      # K tiles per block
  a_kc, b_kc = not trans_a, trans_b      # K-contiguous in memory: [128][32] tiles, plain ldmatrix
  a_load, a_step = _loader("A", a_kc, "bm", K if not trans_a else M)
  b_load, b_step = _loader("B", b_kc, "bn", K if trans_b else N)
  ab = "f16" if half else "bf16"
  out_t = "float" if partial else "unsigned short"

  # ldmatrix.x4 gives a m16 x k16 fragment of A as a0..a3 = (rows 0-7, k 0-7), (8-15, k 0-7), (0-7, k 8-15),
  # (8-15, k 8-15), the order mma.m16n8k16 takes them; lane l names the row address of 8x8 matrix l / 8.
  if a_kc: a_frag = """        const int row = wm + mi * 16 + (lane & 15), c = (kk >> 3) + (lane >> 4);
        ldsm_x4(af[mi], sA + (row * 32 + ((c ^ ((row >> 1) & 3)) << 3)) * 2);"""
  else: a_frag = """        const int k = kk + (lane & 7) + ((lane >> 4) << 3);
        const int m = wm + mi * 16 + (((lane >> 3) & 1) << 3);
        ldsm_x4_t(af[mi], sA + (k * 128 + (((m >> 3) ^ (k & 7)) << 3)) * 2);"""
  # and two n8 x k16 fragments of B: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
  if b_kc: b_frag = """        const int n = wn + p * 16 + ((lane >> 4) << 3) + (lane & 7);
        const int c = (kk >> 3) + ((lane >> 3) & 1);
        ldsm_x4(r, sB + (n * 32 + ((c ^ ((n >> 1) & 3)) << 3)) * 2);"""
  else: b_frag = """        const int k = kk + (lane & 7) + (((lane >> 3) & 1) << 3);
        const int n = wn + p * 16 + ((lane >> 4) << 3);
        ldsm_x4_t(r, sB + (k * 128 + (((n >> 3) ^ (k & 7)) << 3)) * 2);"""

  if partial: store = """      float* P = C + (u64)blockIdx.z * M * N + (u64)row * N + col;
      *(f2*)P = f2{acc[mi][ni][0], acc[mi][ni][1]};
      *(f2*)(P + 8 * N) = f2{acc[mi][ni][2], acc[mi][ni][3]};"""
  else: store = """      unsigned short* P = C + (u64)row * N + col;
      *(unsigned*)P = pack2(acc[mi][ni][0], acc[mi][ni][1]);
      *(unsigned*)(P + 8 * N) = pack2(acc[mi][ni][2], acc[mi][ni][3]);"""

  def load(stage: str, kt: str) -> str:
    return (f"{{ const unsigned st = sbase + ({stage}) * 16384;\n"
            f"#pragma unroll\n      for (int i = 0; i < 2; i++) {{\n"
            f"        cp_async16(st + sA_[i], gA[i] + (u64)({kt}) * {a_step});\n"
            f"        cp_async16(st + 8192 + sB_[i], gB[i] + (u64)({kt}) * {b_step});\n      }}\n    }}")

  return f"""#define M {M}
#define N {N}
#define K {K}
#define KT {KT}
#define STAGES {STAGES}
typedef unsigned long long u64;
struct __align__(8) f2 {{ float x, y; }};
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {{
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(src) : "memory");
}}
__device__ __forceinline__ void cp_async_commit() {{ asm volatile("cp.async.commit_group;" ::: "memory"); }}
template <int n> __device__ __forceinline__ void cp_async_wait() {{
  asm volatile("cp.async.wait_group %0;" :: "n"(n) : "memory");
}}
__device__ __forceinline__ void ldsm_x4(unsigned* r, unsigned addr) {{
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%0, %1, %2, %3}}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}}
__device__ __forceinline__ void ldsm_x4_t(unsigned* r, unsigned addr) {{
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{%0, %1, %2, %3}}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}}
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b) {{
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32 "
               "{{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, {{%0, %1, %2, %3}};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}}
/* two floats to two {ab} with round-to-nearest-even; the first (lower column) in the low half */
__device__ __forceinline__ unsigned pack2(float lo, float hi) {{
  unsigned r;
  asm("cvt.rn.{ab}x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}}
extern "C" __global__ void __launch_bounds__({THREADS}, 2) {name}({out_t}* __restrict__ C,
    const unsigned short* __restrict__ A, const unsigned short* __restrict__ B) {{
  /* per stage: A's tile then B's, 4096 elements each */
  __shared__ __align__(128) unsigned short smem[STAGES * 8192];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
  const int bm = blockIdx.y * {BM}, bn = blockIdx.x * {BN}, k0 = blockIdx.z * (KT * {BK});
  const unsigned sbase = (unsigned)__cvta_generic_to_shared(smem);  /* a constant: immediates in the addresses */
  const unsigned short* gA[2]; const unsigned short* gB[2];
  unsigned sA_[2], sB_[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {{
    {{
{a_load}    }}
    {{
{b_load}    }}
  }}
  float acc[4][4][4];
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[mi][ni][j] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {{
    if (s < KT) {load("s", "s")}
    cp_async_commit();
  }}
  int stage = 0, next = STAGES - 1;
  for (int kt = 0; kt < KT; kt++) {{
    /* tile kt has landed for this thread; the barrier makes it everyone's, and frees the stage read at kt - 1 */
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (kt + STAGES - 1 < KT) {load("next", "kt + STAGES - 1")}
    cp_async_commit();  /* an empty group at the tail keeps wait_group's count aligned with the tiles */
    const unsigned sA = sbase + stage * 16384, sB = sA + 8192;
#pragma unroll
    for (int kk = 0; kk < {BK}; kk += 16) {{
      unsigned af[4][4], bfr[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {{
{a_frag}
      }}
#pragma unroll
      for (int p = 0; p < 2; p++) {{
        unsigned r[4];
{b_frag}
        bfr[2 * p][0] = r[0]; bfr[2 * p][1] = r[1]; bfr[2 * p + 1][0] = r[2]; bfr[2 * p + 1][1] = r[3];
      }}
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) mma16816(acc[mi][ni], af[mi], bfr[ni]);
    }}
    stage = stage == STAGES - 1 ? 0 : stage + 1;
    next = next == STAGES - 1 ? 0 : next + 1;
  }}
  /* mma's C fragment: c0, c1 at (lane / 4, 2 * (lane % 4) + 0, 1), c2, c3 eight rows below */
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++) {{
      const int row = bm + wm + mi * 16 + (lane >> 2), col = bn + wn + ni * 8 + ((lane & 3) << 1);
{store}
    }}
}}
"""


def _name(M: int, K: int, N: int, trans_a: bool, trans_b: bool, half: bool, S: int, partial: bool) -> str:
  lay = ("t" if trans_a else "n") + ("t" if trans_b else "n")
  return f"cuda_gemm_{M}_{K}_{N}_{lay}_{'f16' if half else 'bf16'}" + (f"_s{S}" if partial else "")


def _run(a: Tensor, b: Tensor, trans_a: bool, trans_b: bool, layout: str) -> Tensor:
  """The kernel on the stored operands that `_layout` accepted. Over several devices each runs it on
  its part: "rows" gives the output's rows split like op(a)'s (never split over K: the batch's rows are thousands),
  "k" a float32 partial product on each device, summed across them."""
  M, K, N, _ = _dims(a, b, trans_a, trans_b)                                       # one device's
  half, dt = a.dtype == dtypes.float16, a.dtype
  S = splits(M, K, N) if layout != "rows" else 1
  partial = S > 1 or layout == "k"
  name = _name(M, K, N, trans_a, trans_b, half, S, partial)
  src = _source(name, M, K, N, trans_a, trans_b, half, S, partial)

  def fxn(*_params: UOp) -> UOp:
    # with local_size given, CUDAProgram hands global_size to cuLaunchKernel as the grid, in blocks
    # (runtime/ops_cuda.py); engine/realize.py divides global_size by a local size only when it picks that local size
    # itself, for a local_size of None. The entry point is found by name: ProgramInfo.function_name, which is `name`.
    out_bytes = M * N * (4 * S if partial else 2)
    est = Estimates(ops=2 * M * N * K, lds=2 * (M * K * (N // BN) + K * N * (M // BM)) + out_bytes,
                    mem=2 * (M * K + K * N) + out_bytes)
    return source_program(name, src, a.device, 2, est, global_size=(N // BN, M // BM, S), local_size=(THREADS, 1, 1))

  def grad(g: UOp, call: UOp) -> tuple:
    _, a_u, b_u = call.src[1:]
    at, bt, gt = Tensor(a_u), Tensor(b_u), Tensor(g)
    if S == 1:
      dc = gt.cast(dt)
      # dA = dC @ op(B)^T stored as op(A) is; dB = op(A)^T @ dC stored as op(B) is
      da = gemm(bt, dc, trans_b, True) if trans_a else gemm(dc, bt, False, not trans_b)
      db = gemm(dc, at, True, trans_a) if trans_b else gemm(at, dc, not trans_a, False)
      return (None, da.uop, db.uop)
    # the partials' own gradient (only reached when something differentiates through a split GEMM, which the
    # gradients' GEMMs are not): out[z] = op(A)[:, slice z] @ op(B)[slice z, :], as tinygrad's batched matmul
    opa, opb = (at.T if trans_a else at).float(), (bt.T if trans_b else bt).float()
    a3, b3 = opa.reshape(M, S, K // S).permute(1, 0, 2), opb.reshape(S, K // S, N)
    da = (gt.float() @ b3.transpose(1, 2)).permute(1, 0, 2).reshape(M, K)
    db = (a3.transpose(1, 2) @ gt.float()).reshape(K, N)
    return (None, (da.T if trans_a else da).cast(dt).uop, (db.T if trans_b else db).cast(dt).uop)

  if not partial: return kernel_out((M, N), dt, a.device).custom_kernel(a, b, fxn=fxn, grad_fxn=grad)[0]
  # (S, M, N) on each device, one tensor (n S, M, N) over n devices: the sum adds slices and devices (an all-reduce).
  # A product split over devices is only ever a gradient (dB), never differentiated itself: it has no grad_fxn.
  res = kernel_out((S, M, N), dtypes.float32, a.device).custom_kernel(
    a, b, fxn=fxn, grad_fxn=grad if layout == "one" else None)[0]
  return res.sum(0).cast(dt)


def gemm(a: Tensor, b: Tensor, trans_a: bool = False, trans_b: bool = False) -> Tensor:
  """op(a) @ op(b) from the stored operands: op(a) = a.T when trans_a, op(b) = b.T when trans_b, never materialised.
  On this kernel where it fits, else tinygrad's matmul of the transposed views."""
  if (layout := _layout(a, b, trans_a, trans_b)) is not None:
    return _run(a, b, trans_a, trans_b, layout)  # the operands as they are: backend.kernel_out
  return (a.T if trans_a else a).matmul(b.T if trans_b else b)


def matmul(a: Tensor, b: Tensor) -> Tensor:
  """a (M, K) @ b (K, N) on this kernel where `usable`, else tinygrad's matmul."""
  if not usable(a, b): return a.matmul(b)
  return gemm(a, b)


def linear(x: Tensor, w_rows: Tensor) -> Tensor:
  """x (M, K) @ w_rows (N, K).T (a weight stored as rows, PyTorch's Linear layout) without materialising the
  transpose; tinygrad's matmul where the kernel does not fit."""
  return gemm(x, w_rows, False, True)
