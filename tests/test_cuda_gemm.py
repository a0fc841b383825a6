"""cuda_gemm without a GPU: where it is used (CUDA devices only), how it splits K, its generated source for every
operand layout, and how a data-parallel step's GEMMs are spread over two devices (built, not run: CPU devices
posing as CUDA ones). Its results and speed are checked on a GPU by scripts/gpu_cuda_gemm_check.py (every layout, the
split gradients and the vocab head against tinygrad's matmul: results/h200_cuda_gemm_check.json), and the training
step's losses against PyTorch's over 20 steps by `python -m bench train --check-steps 20`."""
import re

import numpy as np
import pytest

from studentz_kernels import cuda_gemm
from tinygrad import Tensor, dtypes


def test_not_used_off_cuda_and_falls_back_to_the_same_product():
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal(s).astype(np.float32) for s in ((128, 32), (32, 128)))
  ta, tb = Tensor(a).cast(dtypes.bfloat16), Tensor(b).cast(dtypes.bfloat16)
  assert not cuda_gemm.usable(ta, tb)  # the CPU device, though the shapes are whole tiles
  ref = ta.float().numpy() @ tb.float().numpy()
  assert np.abs(cuda_gemm.matmul(ta, tb).float().numpy() - ref).max() <= 2e-2 * np.abs(ref).max()


@pytest.mark.parametrize("M,K,N,want", [(1280, 32768, 512, 16), (512, 32768, 256, 16), (256, 32768, 16000, 1),
                                        (1280, 2048, 512, 8), (32768, 1280, 512, 1), (128, 256, 128, 1)])
def test_k_is_split_only_for_few_output_tiles_and_deep_slices(M, K, N, want):
  # 250 output tiles of the vocab head's weight gradient fill the SMs unsplit; K = 2048 allows 8 slices of 256
  got = cuda_gemm.splits(M, K, N)
  assert got == want and K % (got * cuda_gemm.BK) == 0 and (got == 1 or K // got >= cuda_gemm.MIN_SLICE)


def _c_eval(stmts: str, env: dict) -> dict:
  """Runs the kernel source's integer index statements (`const int a = ..., b = ...;`, `x[i] = ...;`) in Python:
  C and Python agree on the precedence of * + << >> & ^, and (u64) casts change nothing at these sizes."""
  for st in filter(None, (x.strip() for x in stmts.split(";"))):
    for decl in re.split(r",\s*(?=\w+ = )", st.removeprefix("const int ")):
      name, expr = decl.split(" = ", 1)
      env[name.split("[")[0]] = eval(expr.replace("(u64)", ""), {}, env)
  return env


LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize("trans_a,trans_b", LAYOUTS)
def test_source_names_its_entry_point_for_every_layout(trans_a, trans_b):
  name = cuda_gemm._name(256, 64, 256, trans_a, trans_b, False, 2, True)
  src = cuda_gemm._source(name, 256, 64, 256, trans_a, trans_b, False, 2, True)
  assert f"void __launch_bounds__(256, 2) {name}(" in src and 'extern "C" __global__' in src
  assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in src and "cp.async" in src
  # deterministic: one compile a shape
  assert src == cuda_gemm._source(name, 256, 64, 256, trans_a, trans_b, False, 2, True)


@pytest.mark.parametrize("trans_a,trans_b", LAYOUTS)
def test_source_index_math_moves_every_chunk_where_the_mma_reads_it(trans_a, trans_b):
  """The kernel's own index expressions, evaluated for every thread of block (0, 0, 0): each operand's cp.async
  writes put the tile's 512 16-byte chunks at 512 distinct shared offsets, each K step moves one tile on, every
  ldmatrix lane reads the chunk that mma.m16n8k16's fragment order wants there (through the swizzle the writes used),
  and the C stores cover the 128 x 128 tile exactly once. A wrong swizzle, lane map, step or store fails it."""
  M = K = N = 256
  src = cuda_gemm._source("k", M, K, N, trans_a, trans_b, False, 1, False)
  frags = {"A": re.search(r"for \(int mi = 0; mi < 4; mi\+\+\) \{\n(.*?)\n\s*\}", src, re.S).group(1),
           "B": re.search(r"unsigned r\[4\];\n(.*?)\n\s*bfr\[", src, re.S).group(1)}
  for op, kcontig, ld in (("A", not trans_a, M if trans_a else K), ("B", trans_b, K if trans_b else N)):
    load = re.search(rf"(const int r = [^;]*;\s*g{op}\[i\] = [^;]*;\s*s{op}_\[i\] = [^;]*;)", src).group(1)
    chunk_at = {}  # shared byte offset -> (stored row, first stored column) of the 8 elements written there
    for tid in range(cuda_gemm.THREADS):
      for i in range(2):
        env = _c_eval(load, {"tid": tid, "i": i, "bm": 0, "bn": 0, "k0": 0, op: 0})
        chunk_at[env[f"s{op}_"]] = divmod(env[f"g{op}"], ld)
    rows, cols = (128, 32) if kcontig else (32, 128)   # [rows][cols] as stored in shared memory
    assert sorted(chunk_at) == list(range(0, rows * cols * 2, 16))
    assert sorted(chunk_at.values()) == [(r, c) for r in range(rows) for c in range(0, cols, 8)]
    step = re.search(rf"g{op}\[i\] \+ \(u64\)\(s\) \* (\d+)\)", src).group(1)
    assert int(step) == (cuda_gemm.BK if kcontig else cuda_gemm.BK * ld)
    body, call = frags[op].rsplit("\n", 1)
    fn, addr = re.search(r"(ldsm_x4\w*)\(\w+(?:\[mi\])?, s[AB] \+ (.*)\);", call).groups()
    assert fn == ("ldsm_x4" if kcontig else "ldsm_x4_t")
    for warp in range(8):
      for lane in range(32):
        for kk in (0, 16):
          for t in range(4 if op == "A" else 2):  # mi: A's four m16 fragments; p: B's two n16 pairs
            env = _c_eval(body, {"lane": lane, "kk": kk, "mi": t, "p": t, "wm": (warp >> 2) * 64,
                                 "wn": (warp & 3) * 32})
            j, r8 = lane >> 3, lane & 7          # 8x8 matrix j of ldmatrix.x4, its row r8
            if op == "A":  # a0..a3: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)
              mn, kq = (warp >> 2) * 64 + t * 16 + 8 * (j & 1), kk + 8 * (j >> 1)
            else:          # two n8 x k16 fragments: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, ...)
              mn, kq = (warp & 3) * 32 + t * 16 + 8 * (j >> 1), kk + 8 * (j & 1)
            want = (mn + r8, kq) if kcontig else (kq + r8, mn)
            assert chunk_at[eval(addr, {}, env)] == want, (op, warp, lane, kk, t)
  store = re.search(r"const int row = (bm [^;]*;)", src).group(1)
  cells = []
  for warp in range(8):
    for lane in range(32):
      for mi in range(4):
        for ni in range(4):
          env = _c_eval("const int row = " + store, {"bm": 0, "bn": 0, "wm": (warp >> 2) * 64, "wn": (warp & 3) * 32,
                                                      "mi": mi, "ni": ni, "lane": lane})
          cells += [(env["row"] + dr, env["col"] + dc) for dr in (0, 8) for dc in (0, 1)]
  assert sorted(cells) == [(r, c) for r in range(128) for c in range(128)]


def test_partial_products_are_float32_and_named_apart():
  src = cuda_gemm._source("k", 256, 64, 256, True, False, False, 1, True)
  assert "float* __restrict__ C" in src and "blockIdx.z * M * N" in src
  assert "unsigned short* __restrict__ C" in cuda_gemm._source("k", 256, 64, 256, True, False, False, 1, False)
  assert cuda_gemm._name(256, 64, 256, True, False, False, 1, True) != cuda_gemm._name(256, 64, 256, True, False,
                                                                                         False, 1, False)


DEVS = ("CPU:0", "CPU:1")


def _bf16(*shape: int, axis: int | None = None, devs=DEVS) -> Tensor:
  return Tensor.ones(*shape, dtype=dtypes.bfloat16).contiguous().shard(devs, axis=axis)


def test_gemm_layouts_over_devices():
  from studentz_kernels.backend import gemm_layout
  x, w = _bf16(256, 128, axis=0), _bf16(128, 384)
  assert gemm_layout(x, w) == "rows" and gemm_layout(Tensor.ones(4, 4), Tensor.ones(4, 4)) == "one"
  assert gemm_layout(x, _bf16(384, 128), False, True) == "rows"
  assert gemm_layout(x, _bf16(256, 384, axis=0), True, False) == "k"       # x.T @ dC: the weight gradient
  assert gemm_layout(_bf16(128, 256, axis=1), _bf16(256, 384, axis=0)) == "k"
  assert gemm_layout(_bf16(256, 128, axis=1), w) is None                   # the contraction split, b whole
  assert gemm_layout(x, _bf16(128, 384, axis=1)) is None                   # b's columns split
  assert gemm_layout(x, _bf16(128, 384, devs=("CPU:0", "CPU:2"))) is None


def test_a_data_parallel_gemm_and_its_gradients_run_per_device(monkeypatch):
  # CPU devices posing as CUDA ones: the graph is built (never run) and each kernel call's layout and per-device
  # shape recorded. Forward: rows split like the batch's; dA = dC @ W^T likewise; dW = X^T @ dC a partial product on
  # each device, summed across them (replicated, as the weight is).
  monkeypatch.setattr(cuda_gemm, "backend_of", lambda d: "CUDA")
  monkeypatch.setattr(cuda_gemm, "_arch_ok", lambda d: True)
  x, w = _bf16(512, 256, axis=0), _bf16(256, 384)
  monkeypatch.setattr(cuda_gemm, "MULTI", 0)
  assert not cuda_gemm.usable(x, w)                                        # STUDENTZ_CUDA_MULTI unset: tinygrad's
  monkeypatch.setattr(cuda_gemm, "MULTI", 1)
  calls, run = [], cuda_gemm._run
  def record(a, b, trans_a, trans_b, layout):
    calls.append((layout, trans_a, trans_b, cuda_gemm._dims(a, b, trans_a, trans_b)[:3]))
    return run(a, b, trans_a, trans_b, layout)
  monkeypatch.setattr(cuda_gemm, "_run", record)
  g = Tensor.ones(512, 384).contiguous().shard(DEVS, axis=0)
  assert cuda_gemm.usable(x, w)
  out = cuda_gemm.matmul(x, w)
  dx, dw = (out.float() * g).sum().gradient(x, w)
  assert out.shape == (512, 384) and out.uop.axis == 0
  assert dx.shape == (512, 256) and dx.uop.axis == 0 and dw.shape == (256, 384) and dw.uop.axis is None
  assert calls == [("rows", False, False, (256, 256, 384)), ("rows", False, True, (256, 384, 256)),
                   ("k", True, False, (256, 256, 384))]
  assert not cuda_gemm.usable(_bf16(384, 256, axis=0), w)                  # 192 rows a device: no whole tiles
