"""tanh-GELU for tinygrad's CPU backend: one vectorised C kernel run as a tinygrad custom kernel, with its gradient.

Why: with the GEMMs on cpu_gemm's kernel, a large share of the student's CPU encode went to one kernel per block, the
norm's output through tinygrad's tanh-GELU: tinygrad renders
exp2 as a polynomial with range checks per lane, and clang does not vectorise it. This kernel computes the same
function, x * sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3) (tinygrad's 0.5 x (1 + tanh u)), with exp2 as a
degree-6 polynomial on whole vectors; it agrees with tinygrad's to float32 rounding (tests/test_cpu_gemm.py). The
backward is tinygrad's own: the gradient of its gelu at the same input.
"""
from __future__ import annotations
import functools, math

from studentz_kernels import cpu_gemm
from studentz_kernels.backend import backend_of, kernel_out, shard_shape, source_program, split_axis
from tinygrad import Tensor, dtypes
from tinygrad.renderer import Estimates
from tinygrad.uop.ops import UOp


def usable(x: Tensor) -> bool:
  return bool(cpu_gemm.ENABLED) and cpu_gemm.isa() is not None and x.dtype == dtypes.float32 and \
    backend_of(x.device) == "CPU" and all(isinstance(s, int) for s in x.shape) and x.numel() > 0


@functools.cache
def _source(name: str, n: int, vw: int) -> str:
  wide = ", min_vector_width(512)" if vw == 16 else ""
  # 2^f on [-0.5, 0.5]: Taylor-like coefficients of 2^f = e^(f ln2), error < 2e-7 relative there
  return f"""typedef float vf __attribute__((ext_vector_type({vw}), aligned(4)));
typedef int vi __attribute__((ext_vector_type({vw})));
static inline __attribute__((always_inline{wide})) vf gelu(vf x) {{
  const vf u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  vf t = -2.0f * 1.4426950408889634f * u;            /* sigmoid(2u) = 1 / (1 + 2^t) */
  t = t < -126.0f ? -126.0f : t;
  t = t > 126.0f ? 126.0f : t;
  const vf r = (t + 12582912.0f) - 12582912.0f;      /* round to nearest: 1.5 * 2^23 */
  const vf f = t - r;
  vf p = 1.5353362e-4f;
  p = p * f + 1.3398874e-3f; p = p * f + 9.6184144e-3f; p = p * f + 5.5503327e-2f;
  p = p * f + 2.4022652e-1f; p = p * f + 6.9314718e-1f; p = p * f + 1.0f;
  const vi e = (__builtin_convertvector(r, vi) + 127) << 23;
  return x / (1.0f + p * (vf)e);
}}
__attribute__((min_vector_width({vw * 32})))
void {name}(float* restrict out, const float* restrict x) {{
  int i = 0;
  for (; i + {vw} <= {n}; i += {vw}) *(vf*)(out + i) = gelu(*(const vf*)(x + i));
  if (i < {n}) {{
    vf v = 0.0f;
    for (int j = 0; i + j < {n}; j++) v[j] = x[i + j];
    v = gelu(v);
    for (int j = 0; i + j < {n}; j++) out[i + j] = v[j];
  }}
}}
"""


def gelu(x: Tensor) -> Tensor:
  """x.gelu() (tanh approximation), on the kernel where `usable`."""
  if not usable(x): return x.gelu()
  n = shard_shape(x)                                                               # one device's part
  numel = math.prod(n)
  vw = cpu_gemm.isa()[0]
  name = f"cpu_gelu_{numel}"
  src = _source(name, numel, vw)

  def fxn(*_params: UOp) -> UOp:
    return source_program(name, src, x.device, 1, Estimates(ops=20 * numel, lds=8 * numel, mem=8 * numel))

  def grad(g: UOp, call: UOp) -> tuple:
    xt = Tensor(call.src[2])
    return (None, xt.gelu().gradient(xt, gradient=Tensor(g))[0].uop)

  return kernel_out(n, dtypes.float32, x.device, split_axis(x)).custom_kernel(x, fxn=fxn, grad_fxn=grad)[0]
