"""The memory-bound kernels around the GEMMs on tinygrad's CUDA backend, as CUDA C custom kernels with their gradients:
the decoder's cross-entropy over the vocabulary and the dilated convolutions' shifted views ("taps"). cuda_gemm.py does
the GEMMs between them.

Why: tinygrad 0.14 ran the joint step's cross-entropy reductions over its logits, and the taps' concatenation of
shifted, padded views and its gradient, at a small fraction of the memory bandwidth
(results/h200_profile_joint_step_cuda_gemm.txt). Each kernel here reads and writes its tensors once (the
cross-entropy's gradient reads each row twice, the second time from L2), in 16-byte vectors.

- token_ce(logits (R, V), targets (R,), eps) -> (R,) float32: lse - (1 - eps) x[target] - eps mean(x) (PyTorch's label
  smoothing), one block per row, an online max/sum of exponentials; gradient g * (softmax - eps / V - (1 - eps)
  onehot), also one block per row, rows with g = 0 (padding) only written as zeros.
- taps(x (B, L, C), k, dilation, left) -> (B, L, k C): view j at t is x[t + j dilation - left], zero outside 0..L-1;
  gradient: each position's k shifted slices summed (in float32).

Over several devices (data-parallel training, with STUDENTZ_CUDA_MULTI=1: cuda_gemm.MULTI) each runs them on its
rows of the batch.
STUDENTZ_CUDA_OPS=0 turns both off (tinygrad's kernels, as everywhere off CUDA; backend.KERNELS).
"""
from __future__ import annotations
import functools, math

from studentz_kernels.backend import KERNELS, backend_of, kernel_out, shard_shape, source_program, split_axis
from studentz_kernels import cuda_gemm
from studentz_kernels.cuda_gemm import _arch_ok
from tinygrad import Tensor, dtypes
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import UOp

ENABLED = KERNELS.cuda_ops  # the GPU check script flips this one
THREADS = 256
_CTYPE = {dtypes.bfloat16: "bf16", dtypes.float16: "f16", dtypes.float32: "f32"}


def _on_cuda(*ts: Tensor) -> bool:
  """CUDA, concrete shapes, a dtype the kernels convert; one device, or several with every tensor's rows (axis 0) split
  over them (a data-parallel batch: each device runs the kernel on its rows)."""
  dev = ts[0].device
  if not ENABLED or any(t.device != dev for t in ts): return False
  if isinstance(dev, tuple) and (not cuda_gemm.MULTI or any(split_axis(t) != 0 for t in ts)): return False
  if not all(isinstance(s, int) for t in ts for s in t.shape) or backend_of(dev) != "CUDA": return False
  return ts[0].dtype in _CTYPE and _arch_ok(dev if isinstance(dev, str) else dev[0])


def _vec(dtype, n: int) -> int:
  """Elements per 16-byte vector where rows of n elements keep every vector aligned, else 1 (scalar loads)."""
  v = 16 // dtype.itemsize
  return v if n % v == 0 else 1


def _helpers(ct: str, vec: int) -> str:
  """load(p, f): vec elements at p into floats f; store(p, f): vec floats rounded to nearest even into p;
  load1(p): the element at p. A vector is one 16-byte u4: 4 words of one float32 or two 16-bit floats each."""
  e = "float" if ct == "f32" else "unsigned short"
  per = 1 if ct == "f32" else 2                    # elements a 32-bit word
  h = (f"typedef {e} elem;\ntypedef unsigned long long u64;\n#define PER {per}\n"
       "struct __align__(16) u4 { unsigned x, y, z, w; };\n")
  if ct == "f32":
    h += ("__device__ __forceinline__ float e2f(float e) { return e; }\n"
          "__device__ __forceinline__ float f2e(float f) { return f; }\n"
          "__device__ __forceinline__ float w2f(unsigned w, int) { return __uint_as_float(w); }\n"
          "__device__ __forceinline__ unsigned f2w(const float* f) { return __float_as_uint(f[0]); }\n")
  else:
    # bf16 is the top half of a float32; f16 converts in PTX. A word's first element is its low half
    if ct == "bf16":
      h += "__device__ __forceinline__ float e2f(unsigned short u) { return __uint_as_float((unsigned)u << 16); }\n"
    else: h += ("__device__ __forceinline__ float e2f(unsigned short u) {\n"
                "  float f; asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(u)); return f;\n}\n")
    h += ("__device__ __forceinline__ unsigned short f2e(float f) {\n"
          f"  unsigned short u; asm(\"cvt.rn.{ct}.f32 %0, %1;\" : \"=h\"(u) : \"f\"(f)); return u;\n}}\n"
          "__device__ __forceinline__ float w2f(unsigned w, int hi) { return e2f(hi ? w >> 16 : w & 0xffff); }\n"
          "__device__ __forceinline__ unsigned f2w(const float* f) {\n"
          f"  unsigned r; asm(\"cvt.rn.{ct}x2.f32 %0, %1, %2;\" : \"=r\"(r) : \"f\"(f[1]), \"f\"(f[0]));\n"
          "  return r;\n}\n")
  h += "__device__ __forceinline__ float load1(const elem* p) { return e2f(*p); }\n"
  if vec == 1: return h + ("__device__ __forceinline__ void load(const elem* p, float* f) { f[0] = e2f(*p); }\n"
                           "__device__ __forceinline__ void store(elem* p, const float* f) { *p = f2e(f[0]); }\n")
  return h + ("__device__ __forceinline__ void load(const elem* p, float* f) {\n"
              "  const u4 w = *(const u4*)p; const unsigned ws[4] = {w.x, w.y, w.z, w.w};\n"
              "#pragma unroll\n  for (int j = 0; j < 4; j++)\n"
              "#pragma unroll\n    for (int k = 0; k < PER; k++) f[PER * j + k] = w2f(ws[j], k);\n}\n"
              "__device__ __forceinline__ void store(elem* p, const float* f) {\n"
              "  *(u4*)p = u4{f2w(f), f2w(f + PER), f2w(f + 2 * PER), f2w(f + 3 * PER)};\n}\n")


# ----------------------------------------------------------------------------------------------------------------------
# cross-entropy over the vocabulary

_ROW_STATS = """#define NEG_INF __int_as_float(0xff800000)
/* (m, s) <- the max and sum of exp(x - max) of both parts; empty parts are (-inf, 0) */
__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == NEG_INF) return;
  s = s * __expf(m - mn) + s2 * __expf(m2 - mn); m = mn;
}
/* VEC logits at column i of row x: the stored values plus the head's bias (float32) */
__device__ __forceinline__ void load_row(const elem* x, const float* __restrict__ bv, int i, float* f) {
  load(x + i, f);
#pragma unroll
  for (int j = 0; j < VEC; j++) f[j] += bv[i + j];
}
/* this block's row x (+ bias): max, sum of exp(x - max) and sum of x, in every thread */
__device__ void row_stats(const elem* x, const float* __restrict__ bv, float& m, float& s, float& sx) {
  __shared__ float red[3][THREADS / 32];
  m = NEG_INF; s = 0.0f; sx = 0.0f;
  for (int i = threadIdx.x * VEC; i < V; i += THREADS * VEC) {
    float f[VEC]; load_row(x, bv, i, f);
    float cm = f[0];
#pragma unroll
    for (int j = 1; j < VEC; j++) cm = fmaxf(cm, f[j]);
    const float mn = fmaxf(m, cm);
    float cs = 0.0f;
#pragma unroll
    for (int j = 0; j < VEC; j++) { cs += __expf(f[j] - mn); sx += f[j]; }
    s = s * __expf(m - mn) + cs; m = mn;  /* m = -inf only before the first vector: exp(-inf) = 0 */
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    combine(m, s, __shfl_xor_sync(0xffffffff, m, o), __shfl_xor_sync(0xffffffff, s, o));
    sx += __shfl_xor_sync(0xffffffff, sx, o);
  }
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) { red[0][warp] = m; red[1][warp] = s; red[2][warp] = sx; }
  __syncthreads();
  m = red[0][0]; s = red[1][0]; sx = red[2][0];
#pragma unroll
  for (int w = 1; w < THREADS / 32; w++) { combine(m, s, red[0][w], red[1][w]); sx += red[2][w]; }
}
"""


@functools.cache
def _ce_source(name: str, ct: str, V: int, vec: int, eps: float, backward: bool) -> str:
  head = (f"#define V {V}\n#define VEC {vec}\n#define THREADS {THREADS}\n#define EPS {eps!r}f\n"
          + _helpers(ct, vec) + _ROW_STATS)
  if not backward:
    return head + f"""extern "C" __global__ void __launch_bounds__(THREADS) {name}(float* __restrict__ loss,
    const elem* __restrict__ X, const float* __restrict__ Bv, const int* __restrict__ T) {{
  const u64 row = blockIdx.x;
  float m, s, sx;
  row_stats(X + row * V, Bv, m, s, sx);
  if (threadIdx.x == 0) {{
    const int t = T[row];
    float xt = 0.0f;  /* a target outside the vocabulary matches nothing, as tinygrad's one-hot */
    if (t >= 0 && t < V) xt = load1(X + row * V + t) + Bv[t];
    loss[row] = m + __logf(s) - (1.0f - EPS) * xt - EPS * (sx / V);
  }}
}}
"""
  return head + f"""extern "C" __global__ void __launch_bounds__(THREADS) {name}(elem* __restrict__ dX,
    const float* __restrict__ G, const elem* __restrict__ X, const float* __restrict__ Bv,
    const int* __restrict__ T) {{
  const u64 row = blockIdx.x;
  const float g = G[row];
  elem* dx = dX + row * V;
  if (g == 0.0f) {{  /* a padding position: nothing to read */
    const float z[VEC] = {{}};
    for (int i = threadIdx.x * VEC; i < V; i += THREADS * VEC) store(dx + i, z);
    return;
  }}
  const elem* x = X + row * V;
  float m, s, sx;
  row_stats(x, Bv, m, s, sx);
  const float lse = m + __logf(s), off = g * EPS / V, gt = g * (1.0f - EPS);
  const int t = T[row];
  for (int i = threadIdx.x * VEC; i < V; i += THREADS * VEC) {{
    float f[VEC]; load_row(x, Bv, i, f);
#pragma unroll
    for (int j = 0; j < VEC; j++) f[j] = g * __expf(f[j] - lse) - off - (i + j == t ? gt : 0.0f);
    store(dx + i, f);
  }}
}}
"""


def ce_usable(logits: Tensor, targets: Tensor) -> bool:
  """Whether token_ce runs on the kernel: CUDA (rows split over devices or not), logits bf16/fp16/fp32 with a vocabulary
  axis last."""
  return logits.ndim >= 2 and targets.shape == logits.shape[:-1] and _on_cuda(logits, targets)


def token_ce(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0, bias: Tensor | None = None) -> Tensor:
  """Per-position smoothed cross-entropy (...,) float32 of logits (..., V) + bias (V,) against integer targets (...,).
  The bias is added in float32 as the rows are read: a head's output (bf16) goes in as it is, its bias-added float32
  logits (2 GB at the joint step's shape) are never written."""
  V, lead = logits.shape[-1], logits.shape[:-1]
  ct, vec = _CTYPE[logits.dtype], _vec(logits.dtype, V)
  # no .contiguous(): the head's output is a GEMM kernel's, reshaped (backend.kernel_out says why)
  x, t = logits.reshape(math.prod(lead), V), targets.reshape(math.prod(lead)).cast(dtypes.int32)
  R = shard_shape(x)[0]                                                            # rows on each device
  b = Tensor.zeros(V, device=x.device) if bias is None else bias.reshape(V).float()
  eps = float(label_smoothing)
  tag = f"{ct}_{V}_v{vec}_e{str(eps).replace('.', 'p').replace('-', 'm')}"
  fname, bname = f"ce_fwd_{tag}", f"ce_bwd_{tag}"
  row_bytes = R * V * logits.dtype.itemsize

  def fwd(*_params: UOp) -> UOp:
    src = _ce_source(fname, ct, V, vec, eps, False)
    est = Estimates(ops=4 * R * V, lds=row_bytes, mem=row_bytes + 8 * R)
    return source_program(fname, src, x.device, 3, est, global_size=(R, 1, 1), local_size=(THREADS, 1, 1))

  def bwd(*_params: UOp) -> UOp:
    est = Estimates(ops=8 * R * V, lds=3 * row_bytes, mem=3 * row_bytes + 8 * R)
    return source_program(bname, _ce_source(bname, ct, V, vec, eps, True), x.device, 4, est,
                          global_size=(R, 1, 1), local_size=(THREADS, 1, 1))

  def grad(g: UOp, call: UOp) -> tuple:
    _, x_u, b_u, t_u = call.src[1:]
    gt = Tensor(g).float()
    dx = kernel_out((R, V), logits.dtype, x.device).custom_kernel(gt, Tensor(x_u), Tensor(b_u), Tensor(t_u), fxn=bwd)[0]
    return (None, dx.uop, dx.float().sum(0).uop, None)  # d logits (R, V), d bias (V,): summed across devices if split

  loss = kernel_out((R,), dtypes.float32, x.device).custom_kernel(x, b, t, fxn=fwd, grad_fxn=grad)[0]
  return loss.reshape(lead)


# ----------------------------------------------------------------------------------------------------------------------
# the dilated convolution's shifted views

@functools.cache
def _taps_source(name: str, ct: str, B: int, L: int, C: int, k: int, dilation: int, left: int, vec: int,
                 backward: bool) -> str:
  head = (f"#define L {L}\n#define C {C}\n#define KT {k}\n#define DIL {dilation}\n#define LEFT {left}\n"
          f"#define VEC {vec}\n" + _helpers(ct, vec))
  if not backward:
    # one thread a vector of the output (B, L, k, C); its view's source row, or zeros
    return head + f"""extern "C" __global__ void __launch_bounds__({THREADS}) {name}(elem* __restrict__ out,
    const elem* __restrict__ x) {{
  const u64 i = (u64)blockIdx.x * {THREADS} + threadIdx.x;
  if (i >= (u64){B * L * k * C // vec}) return;
  const int c = (int)(i % (C / VEC)) * VEC;
  const u64 rj = i / (C / VEC);
  const int j = (int)(rj % KT);
  const u64 r = rj / KT;
  const int s = (int)(r % L) + j * DIL - LEFT;
  float f[VEC];
  if (s >= 0 && s < L) load(x + (r + j * DIL - LEFT) * C + c, f);
  else {{
#pragma unroll
    for (int e = 0; e < VEC; e++) f[e] = 0.0f;
  }}
  store(out + i * VEC, f);
}}
"""
  # one thread a vector of dx (B, L, C): the k views that read it, summed
  return head + f"""extern "C" __global__ void __launch_bounds__({THREADS}) {name}(elem* __restrict__ dx,
    const elem* __restrict__ dtaps) {{
  const u64 i = (u64)blockIdx.x * {THREADS} + threadIdx.x;
  if (i >= (u64){B * L * C // vec}) return;
  const int c = (int)(i % (C / VEC)) * VEC;
  const u64 r = i / (C / VEC);
  const int t = (int)(r % L);
  float acc[VEC] = {{}};
#pragma unroll
  for (int j = 0; j < KT; j++) {{
    const int u = t - j * DIL + LEFT;  /* the position whose view j reads t */
    if (u >= 0 && u < L) {{
      float f[VEC]; load(dtaps + ((r - t + u) * KT + j) * C + c, f);
#pragma unroll
      for (int e = 0; e < VEC; e++) acc[e] += f[e];
    }}
  }}
  store(dx + i * VEC, acc);
}}
"""


def taps_usable(x: Tensor) -> bool:
  return x.ndim == 3 and _on_cuda(x)


def taps(x: Tensor, k: int, dilation: int, left: int) -> Tensor:
  """(B, L, C) -> (B, L, k*C): [x[t + j*dilation - left] for j < k] side by side, zero outside the sequence."""
  B, L, C = shard_shape(x)                                                         # B: rows on each device
  ct, vec = _CTYPE[x.dtype], _vec(x.dtype, C)
  tag = f"{ct}_{B}_{L}_{C}_k{k}_d{dilation}_l{left}"
  fname, bname = f"taps_fwd_{tag}", f"taps_bwd_{tag}"
  nbytes = B * L * C * x.dtype.itemsize

  def launch(name: str, n_out: int, backward: bool):
    src = _taps_source(name, ct, B, L, C, k, dilation, left, vec, backward)
    est = Estimates(ops=0, lds=(k + 1) * nbytes, mem=(k + 1) * nbytes)
    return source_program(name, src, x.device, 1, est, global_size=((n_out // vec + THREADS - 1) // THREADS, 1, 1),
                          local_size=(THREADS, 1, 1))

  def grad(g: UOp, call: UOp) -> tuple:
    gt = Tensor(g).cast(x.dtype)  # d taps: the conv GEMM's gradient, reshaped (no copy: backend.kernel_out)
    dx = kernel_out((B, L, C), x.dtype, x.device).custom_kernel(gt, fxn=lambda *_: launch(bname, B * L * C, True))[0]
    return (None, dx.uop)

  return kernel_out((B, L, k * C), x.dtype, x.device).custom_kernel(
    x, fxn=lambda *_: launch(fname, B * L * k * C, False), grad_fxn=grad)[0]
