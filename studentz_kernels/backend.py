"""Device selection for every StudentZ entry point; import this module before tinygrad.

tinygrad 0.14 raises on the old `METAL=1` / `CUDA=1` switches and wants `DEV=METAL`. Users (and the design card)
still type the old form, so we translate it here, before tinygrad reads the environment, and reject unknown names
with one clear line instead of a deep traceback.
"""
import contextlib, functools, io, math, os, pickle, sys, threading
from dataclasses import dataclass
import numpy as np
from pathlib import Path

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

def tinygrad_defaults(device: str) -> dict[str, str]:
  """The tinygrad settings StudentZ's entry points run with on a GPU (docs/KNOBS.md); none on the CPU."""
  if device.split(":")[0] == "CPU": return {}  # no tensor cores; a CPU's few cores are busy with the unsplit GEMM
  # TC_OPT=2: tensor cores also for GEMMs padded to the core's tile and for operands cast on the fly.
  # REDUCEOP_SPLIT_*: split-K for the conv weight gradients, whose small output cannot fill a GPU.
  return {"TC_OPT": "2", "REDUCEOP_SPLIT_THRESHOLD": "4096", "REDUCEOP_SPLIT_SIZE": "25"}


def apply_tinygrad_defaults(device: str) -> dict[str, str]:
  """Set tinygrad_defaults(device) where the user's environment has no value of its own (never overriding one); works
  after tinygrad's import too. Returns what it set. check_device() calls it: the CLIs' one place for it."""
  from tinygrad import helpers
  applied = {k: v for k, v in tinygrad_defaults(device).items() if k not in os.environ}
  os.environ.update(applied)
  if "TC_OPT" in applied: helpers.TC_OPT.value = int(applied["TC_OPT"])  # a ContextVar, read at tinygrad's import
  helpers.getenv.cache_clear()  # tinygrad caches every getenv it has read
  return applied


def check_device() -> str:
  """Call from a CLI: exits with a clear line on a bad device, else applies apply_tinygrad_defaults and returns the
  device name (and prints nothing)."""
  if PENDING_ERROR is not None:
    print(f"error: {PENDING_ERROR}", file=sys.stderr)
    raise SystemExit(2)
  try:
    from tinygrad import Device
    name = Device.DEFAULT
    Device[name]  # open it now: a named backend (DEV=METAL) is otherwise only found missing at the first tensor
  except Exception as e:  # tinygrad raises plain exceptions when a backend is missing
    print(f"error: {missing_backend(os.environ.get('DEV', '(auto)'), e)}", file=sys.stderr)
    raise SystemExit(2)
  apply_tinygrad_defaults(name)
  return name


def missing_backend(dev: str, err: Exception) -> str:
  """One line for a backend this machine cannot open: which, tinygrad's reason, and what does work here."""
  from tinygrad import Device
  base = dev.split(":")[0]
  usable = [d for d in Device.get_available_devices() if d.split(":")[0] != base]
  why = str(err).splitlines()[0] if str(err) else type(err).__name__
  instead = (f"run with {' or '.join(f'DEV={d}' for d in usable)} instead, or with no device switch at all to let "
             f"StudentZ choose" if usable else "this machine has no usable tinygrad backend")
  return f"the {base} backend is not available on this machine ({why}): {instead}"


# The inference engine (StudentZ, infer.py): "numpy" runs numpy_infer.py (no kernels to compile, no tinygrad import:
# a CPU process starts encoding at once; docs/RESULTS.md), "tinygrad" the JIT'd models. "auto" takes numpy where
# tinygrad would run on the CPU: DEV=CPU, or no DEV and no GPU in sight. $STUDENTZ_ENGINE (or an explicit argument)
# overrides it.
ENGINES = ("auto", "numpy", "tinygrad")


def likely_gpu() -> bool:
  """Whether tinygrad's automatic choice would find a GPU, judged without importing it (its device probe costs
  a noticeable part of a start): a Mac (METAL), an NVIDIA or an AMD device node."""
  return sys.platform == "darwin" or any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def inference_engine(requested: str | None = None) -> str:
  """"numpy" or "tinygrad" for `requested` (None: $STUDENTZ_ENGINE, else "auto"); DeviceError on a bad choice."""
  choice = (requested or os.environ.get("STUDENTZ_ENGINE", "") or "auto").strip().lower()
  if choice not in ENGINES:
    raise DeviceError(f"unknown engine {choice!r}: use one of {', '.join(ENGINES)} (STUDENTZ_ENGINE or --engine)")
  if choice != "auto": return choice
  if PENDING_ERROR is not None: raise PENDING_ERROR
  dev = os.environ.get("DEV", "").split(":")[0].split("+")[0].upper()
  if dev: return "numpy" if dev == "CPU" else "tinygrad"
  return "tinygrad" if likely_gpu() else "numpy"


@dataclass(frozen=True)
class KernelSettings:
  """The kernel switches, read once from the environment (KERNELS below; docs/KNOBS.md)."""
  cuda_gemm: bool = True     # STUDENTZ_CUDA_GEMM=0: tinygrad's matmul on CUDA instead of cuda_gemm
  cuda_ops: bool = True      # STUDENTZ_CUDA_OPS=0: tinygrad's cross-entropy and conv taps instead of cuda_ops
  cuda_multi: bool = False   # STUDENTZ_CUDA_MULTI=1: our CUDA kernels in data-parallel steps too (not yet run on GPUs)
  cpu_gemm: bool = True      # STUDENTZ_CPU_GEMM=0: tinygrad's matmul and GELU on the CPU instead of cpu_gemm/cpu_gelu
  gemm_beam: str = "cached"  # STUDENTZ_GEMM_BEAM: "cached", 0 (off) or a search width (see GEMM_BEAM)
  beam_dir: Path = Path(__file__).resolve().parent / "beam"  # STUDENTZ_BEAM_DIR: the bundled schedules

  @classmethod
  def from_env(cls, env=None) -> "KernelSettings":
    """The settings of `env` (None: os.environ); SystemExit with one line on a value they cannot take."""
    env = os.environ if env is None else env

    def switch(name: str, default: bool) -> bool:
      value = env.get(name, "").strip()
      if value not in ("", "0", "1"): raise SystemExit(f"error: {name} must be 0 or 1, got {value!r}")
      return default if value == "" else value == "1"
    beam = env.get("STUDENTZ_GEMM_BEAM", "cached").strip().lower()
    if beam != "cached" and not beam.isdigit():
      raise SystemExit(f"error: STUDENTZ_GEMM_BEAM must be 'cached', 0 (off) or a search width such as 2, got {beam!r}")
    return cls(cuda_gemm=switch("STUDENTZ_CUDA_GEMM", True), cuda_ops=switch("STUDENTZ_CUDA_OPS", True),
               cuda_multi=switch("STUDENTZ_CUDA_MULTI", False), cpu_gemm=switch("STUDENTZ_CPU_GEMM", True),
               gemm_beam=beam, beam_dir=Path(env.get("STUDENTZ_BEAM_DIR") or cls.beam_dir))


KERNELS = KernelSettings.from_env()

# GEMM_BEAM: tinygrad's kernel-schedule search (BEAM) for the GEMM kernels of the training step only. The few kernels
# that carry the FLOPs get searched schedules; the hundreds of small elementwise/norm kernels keep tinygrad's
# heuristics, whose search (JITBEAM=2 on the whole step) takes too long to be worth it.
#   "cached" (the default): a GEMM takes the schedule already found for it, from tinygrad's cache db (CACHEDB) or the
#            files in BEAM_DIR (beam/: the default bf16 step's GEMMs), and tinygrad's heuristics otherwise; it never
#            searches. Each found schedule is checked against the heuristic one once per card model (verify_schedule,
#            checked_before): beam/checked_<card>.db ship the checks passed on the cards it was searched for
#   N >= 1:  search (BEAM=N) every GEMM found in neither: minutes per kernel, once per card kind
#   0:       off
# GEMM_BEAM_MIN: the fewest multiply-adds a GEMM must have to be searched.
GEMM_BEAM_SETTING = KERNELS.gemm_beam
GEMM_BEAM = 2 if GEMM_BEAM_SETTING == "cached" else int(GEMM_BEAM_SETTING)  # the bundled results were searched at 2
GEMM_BEAM_MIN = 1 << 26
BEAM_DIR = KERNELS.beam_dir


def gemm_size(sink) -> int:
  """Multiply-adds of the largest dot-product reduction in a kernel AST (0 if it has none): a REDUCE of a product,
  counted over the ranges it runs on. Gathers (a reduce of a select) and sums of many terms do not count."""
  from tinygrad.uop.ops import Ops
  best = 0
  for r in sink.toposort():
    if r.op is not Ops.REDUCE: continue
    body = r.src[0]
    while body.op is Ops.CAST: body = body.src[0]
    if body.op is not Ops.MUL: continue
    ranges = {u for u in r.toposort() if u.op is Ops.RANGE}
    if len(ranges) > 5: continue
    best = max(best, math.prod(int(u.vmax) + 1 for u in ranges))
  return best


# tinygrad's pattern matchers run a snapshot of their function's globals (uop/ops.py deconstruct_function): a plain
# global flipped later would stay at the value it had when the matcher first ran, so the state lives in one dict
_BEAM = {"amount": 0, "min": 0, "active": False, "cached_only": False, "found": 0, "not_found": 0, "rejected": 0}


@contextlib.contextmanager
def gemm_beam_scope():
  """Where GEMM_BEAM applies: the training step (trainer.Trainer) compiles inside this scope; encoding and
  evaluation, whose shapes vary with the data, keep the heuristics instead of searching every shape they meet."""
  # installed on first use, not at import: backend is imported before tinygrad reads DEV (check_device)
  if GEMM_BEAM > 0 and _BEAM["amount"] == 0:
    install_gemm_beam(GEMM_BEAM, min_size=GEMM_BEAM_MIN, cached_only=GEMM_BEAM_SETTING == "cached")
  prev, _BEAM["active"] = _BEAM["active"], True
  try: yield
  finally: _BEAM["active"] = prev


def _mark_gemm(ctx, call, sink):
  from dataclasses import replace
  from tinygrad.helpers import DEBUG
  if not _BEAM["active"] or sink.arg.beam != 0 or (n := gemm_size(sink)) < _BEAM["min"]: return None
  if DEBUG >= 1: print(f"GEMM_BEAM={_BEAM['amount']}: a GEMM of {n:.3g} multiply-adds takes a searched schedule")
  return call.replace(src=(sink.replace(arg=replace(sink.arg, beam=_BEAM["amount"])), *call.src[1:]))


def install_gemm_beam(amount: int, min_size: int = GEMM_BEAM_MIN, cached_only: bool = False) -> None:
  """Mark GEMM kernels for BEAM=amount when a JIT compiles its kernels (tinygrad 0.14's engine.realize.pm_beam hook,
  which otherwise marks every kernel: JITBEAM). cached_only: schedules already found, never a search."""
  from tinygrad.uop.ops import Ops, UPat, PatternMatcher
  import tinygrad.engine.realize as realize
  import tinygrad.codegen.opt.search as search
  _BEAM.update(amount=amount, min=min_size, cached_only=cached_only)
  kernel_call = UPat(Ops.CALL, src=(UPat(Ops.SINK, name="sink"),), name="call", allow_any_len=True)
  realize.pm_beam = PatternMatcher([(kernel_call, _mark_gemm)])  # matchers take no closures: hence _BEAM
  if not getattr(search.beam_search, "wrapped", False):
    search.beam_search = _with_bundled(search.beam_search)  # apply_opts imports it from the module at each call
  import tinygrad.engine.jit as jit
  if not getattr(jit.getenv, "jitbeam_on", False):  # the JIT's JITBEAM reads 1, so it runs the hook; not set in
    # os.environ, which processes started later would inherit: they would beam-search every kernel they JIT
    read = jit.getenv
    def getenv(key: str, default=0): return 1 if key == "JITBEAM" else read(key, default)
    getenv.jitbeam_on = True
    jit.getenv = getenv


def _with_bundled(beam_search):
  """beam_search that first takes a result already found: tinygrad's cache db, then the bundled files. Only what
  neither holds is searched, and in cached-only mode nothing is: such a kernel gets tinygrad's heuristic schedule, as
  an unmarked one does. IGNORE_BEAM_CACHE=1 searches again, as in tinygrad."""
  def beam_search_with_bundled(s, rawbufs, var_vals, amt, allow_test_size=True, *args, **kwargs):
    from tinygrad.codegen.opt import KernelOptError
    from tinygrad.helpers import IGNORE_BEAM_CACHE, diskcache_get
    if IGNORE_BEAM_CACHE.value and not _BEAM["cached_only"]:
      return beam_search(s, rawbufs, var_vals, amt, allow_test_size, *args, **kwargs)
    # the key tinygrad 0.14's beam_search reads and writes (codegen/opt/search.py)
    key = {"ast": s.ast.key, "amt": amt, "allow_test_size": allow_test_size, "device": s.ren.target.device,
           "suffix": s.ren.suffix}
    opts = diskcache_get("beam_search", key)
    if opts is None: opts = bundled_beam_results().get(tuple(key.values()))
    if opts is not None:
      try:
        ret = s.copy()  # as beam_search applies a cached result
        for o in opts[len(s.applied_opts):]: ret.apply_opt(o)
        if (checked := _checked(s, ret, rawbufs, var_vals, "cached")) is ret: _BEAM["found"] += 1
        return checked  # a cached schedule that fails: searching again would likely find the same fast, wrong one
      except KernelOptError as e:  # a result this card cannot run (e.g. found on a card with more shared memory)
        print(f"note: a cached GEMM schedule does not apply here ({e}); not using it", file=sys.stderr)
    _BEAM["not_found"] += 1
    if _BEAM["cached_only"]: return _heuristic(s)
    return _checked(s, beam_search(s, rawbufs, var_vals, amt, allow_test_size, *args, **kwargs), rawbufs, var_vals,
                    "searched")
  beam_search_with_bundled.wrapped = True
  return beam_search_with_bundled


def _checked(s, sched, rawbufs, var_vals, what: str):
  """sched if verify_schedule passes it, else (with a note naming the kernel) tinygrad's heuristic schedule. A pass is
  remembered per card model (checked_before), so only a card's first process pays the check."""
  if checked_before(s, sched): return sched
  if (bad := verify_schedule(s, sched, rawbufs, var_vals)) is None:
    remember_check(s, sched)
    return sched
  print(f"note: a {what} GEMM schedule (kernel {s.ast.key.hex()[:16]}) computes other values than tinygrad's "
        f"heuristic one ({bad}); not using it", file=sys.stderr)
  _BEAM["rejected"] += 1
  return _heuristic(s)


# A passed check, kept where tinygrad keeps its search results (the cache db; beam/ files for those shipped): the
# options that passed, keyed by the kernel and the card's model name (cards of one architecture have disagreed on a
# schedule), so only a card's first process pays the check. scripts/beam_cache.py exports, imports and drops it.
CHECKED_TABLE = "beam_search_checked"


def backend_of(device: str | tuple[str, ...]) -> str:
  """The backend name: CUDA for "CUDA:1" and for a multi-device tuple such as ("CUDA", "CUDA:1")."""
  return (device if isinstance(device, str) else device[0]).split(":")[0]


def split_axis(t) -> int | None:
  """The axis a multi-device tensor is split on (None: whole on every device, or one device)."""
  if not isinstance(t.device, tuple): return None
  try: return t.uop.axis
  except RuntimeError: return -1  # split on several axes: no custom kernel takes that


def shard_shape(t) -> tuple[int, ...]:
  """The shape of one device's part of t (t's own shape on one device or when whole on each)."""
  return tuple(t.uop.max_shard_shape) if isinstance(t.device, tuple) else tuple(t.shape)


def gemm_layout(a, b, trans_a: bool = False, trans_b: bool = False) -> str | None:
  """How op(a) @ op(b) (op: the transpose where trans_*) lies on the devices, for the GEMM kernels: "one" (one device),
  "rows" (op(a)'s rows split over the devices, b whole on each: a data-parallel batch meeting a weight), "k" (the
  contraction axis split in both: a weight's gradient over that batch, a partial product on each device, summed across
  them); None for anything else (tinygrad's matmul)."""
  if a.device != b.device: return None
  if not isinstance(a.device, tuple): return "one"
  rows_a, k_b = (1 if trans_a else 0), (1 if trans_b else 0)                        # as stored
  ax_a, ax_b = split_axis(a), split_axis(b)
  if ax_a == rows_a and ax_b is None: return "rows"
  if ax_a == 1 - rows_a and ax_b == k_b: return "k"
  return None


def kernel_out(shape: tuple[int, ...], dtype, device: str | tuple[str, ...], axis: int | None = 0):
  """A custom kernel's output: `shape` on one device; with several, `shape` on each, read as one tensor split on
  `axis` (n times longer there; None: whole on each). Rows split like a batch's, or n per-device partial results that
  sum(0) adds up (tinygrad turns that sum into an all-reduce), as the GEMMs' weight gradients over a split batch are.

  The inputs go to custom_kernel as they are, without .contiguous(): tinygrad hands a kernel a dense buffer either way
  (the tensor's own where it is one, a reshape of one included; a copy otherwise: transposes, slices, expressions),
  but .contiguous() of a reshaped kernel output copies it (the conv taps' (B, L, k C) reshaped into the GEMM)."""
  from tinygrad import Tensor
  out = Tensor.empty(*shape, dtype=dtype, device=device)
  return Tensor(out.uop.unshard(axis)) if isinstance(device, tuple) and axis is not None else out


def source_program(name: str, src: str, device: str | tuple[str, ...], n_in: int, estimates, **launch):
  """The PROGRAM of a custom kernel written as source (tinygrad compiles it for the device like its own): buffer 0 is
  the output, 1..n_in the inputs, in the entry point's argument order; `launch` takes ProgramInfo's global_size and
  local_size where the kernel sets them itself. The `fxn` of Tensor.custom_kernel returns it."""
  from tinygrad import Device
  from tinygrad.uop.ops import UOp, Ops, KernelInfo, ProgramInfo
  dev = Device[device if isinstance(device, str) else device[0]]
  info = ProgramInfo(name=name, globals=tuple(range(n_in + 1)), outs=(0,), ins=tuple(range(1, n_in + 1)),
                     target=dev.renderer.target, **launch)
  return UOp(Ops.PROGRAM, src=(UOp.sink(arg=KernelInfo(name=name, estimates=estimates)), UOp(Ops.LINEAR, src=()),
                               UOp(Ops.SOURCE, arg=src)), arg=info)


@functools.cache
def card_name(device: str) -> str:
  """The model of the card behind a tinygrad device (the name the driver reports); the backend and machine type where
  it has none."""
  import platform
  from tinygrad import Device
  dev = Device[device]
  if (cu := getattr(dev, "cu_device", None)) is not None:
    import ctypes
    from tinygrad.runtime.autogen import cuda
    name = ctypes.create_string_buffer(256)
    if cuda.cuDeviceGetName(name, len(name), cu) == 0: return name.value.decode()
  return " ".join(x for x in (device.split(":")[0], str(getattr(dev, "arch", "") or ""), platform.machine()) if x)


def _check_key(s) -> dict: return {"ast": s.ast.key, "card": card_name(s.ren.target.device)}


def checked_before(s, sched) -> bool:
  """Whether these options of kernel s passed verify_schedule on this card model before (cache db or beam/)."""
  from tinygrad.helpers import diskcache_get
  key = _check_key(s)
  opts = diskcache_get(CHECKED_TABLE, key)
  if opts is None: opts = bundled_results(CHECKED_TABLE).get(tuple(key.values()))
  return opts is not None and list(opts) == list(sched.applied_opts)


def remember_check(s, sched) -> None:
  from tinygrad.helpers import diskcache_put
  diskcache_put(CHECKED_TABLE, _check_key(s), list(sched.applied_opts))


def _run_kernel(sched, bufs, var_vals) -> None:
  """Compile one schedule of a kernel and run it once on bufs (as beam_search's candidates are compiled and run)."""
  from dataclasses import replace
  from tinygrad.codegen import to_program
  from tinygrad.engine.realize import time_call
  from tinygrad.uop.ops import Ops, UOp
  ast, dev = sched.copy().get_optimized_ast(name_override="test"), sched.ren.target.device
  prg = to_program(ast.substitute({p: p.replace(arg=replace(p.arg, device=dev)) for p in ast.toposort()
                                   if p.op is Ops.PARAM}), sched.ren)
  next(time_call(prg.call(*[UOp.from_buffer(b) for b in bufs]), var_vals))


def _as_numpy(buf, raw: bytes) -> np.ndarray:
  """raw, bytes of buf's dtype, as float32 values."""
  from tinygrad import dtypes
  from tinygrad.dtype import _to_np_dtype
  if buf.dtype == dtypes.bfloat16: return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
  return np.frombuffer(raw, _to_np_dtype(buf.dtype)).astype(np.float32)


def _random_bytes(buf, rng) -> bytes:
  """Inputs for a check run: floats ~N(0, 1) in the buffer's dtype; integers and bools 0/1 (valid as any index)."""
  from tinygrad import dtypes
  from tinygrad.dtype import _to_np_dtype
  if dtypes.is_float(buf.dtype):
    x = rng.standard_normal(buf.size, dtype=np.float32)
    if buf.dtype == dtypes.bfloat16: return (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return x.astype(_to_np_dtype(buf.dtype)).tobytes()
  return rng.integers(0, 2, buf.size).astype(_to_np_dtype(buf.dtype)).tobytes()


def verify_schedule(s, sched, rawbufs, var_vals, tol: float = 0.05) -> str | None:
  """None if `sched` (a searched or cached schedule of kernel s) computes what tinygrad's heuristic schedule does on
  random inputs, else what differs: a schedule found on one card model has computed wrong values on another of the
  same architecture, so each one is checked before use.
  Both run on the full size; bf16 and a different summation order differ by far less than tol of the largest value."""
  if sched.applied_opts == (heuristic := _heuristic(s.copy())).applied_opts: return None
  from tinygrad.codegen.opt.search import _ensure_buffer_alloc
  from tinygrad.device import Buffer
  bufs = _ensure_buffer_alloc(rawbufs)
  inputs = [_random_bytes(b, np.random.default_rng(i)) for i, b in enumerate(bufs)]
  written = []  # per schedule: {buffer index: its bytes} for the buffers the kernel changed (its outputs)
  for sc in (heuristic, sched):
    for b, data in zip(bufs, inputs): b.copy_from(Buffer("PYTHON", b.size, b.dtype, opaque=memoryview(bytearray(data))))
    _run_kernel(sc, bufs, var_vals)
    written.append({i: raw for i, b in enumerate(bufs) if (raw := bytes(b.as_memoryview())) != inputs[i]})
  for i in sorted(written[0].keys() | written[1].keys()):
    ref, got = (_as_numpy(bufs[i], w.get(i, inputs[i])) for w in written)
    if np.array_equal(ref, got, equal_nan=True): continue
    scale = float(np.nanmax(np.abs(ref))) if ref.size and not np.isnan(ref).all() else 0.0
    err = float(np.nanmax(np.abs(ref - got))) if not np.isnan(ref - got).all() else float("inf")
    if np.isnan(ref).sum() != np.isnan(got).sum() or err > tol * max(scale, 1e-6):
      return f"buffer {i}: max difference {err:.3g} where values reach {scale:.3g}"
  return None


def _heuristic(s):
  """What tinygrad's apply_opts does for a kernel it does not search (codegen/opt/postrange.py)."""
  from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
  from tinygrad.helpers import NOOPT
  from tinygrad.uop.ops import Ops
  if NOOPT or s.applied_opts or any(u.op is Ops.STAGE for u in s.ast.backward_slice): return s
  return hand_coded_optimizations(s)


def bundled_beam_results() -> dict[tuple, list]:
  """{(ast key, amt, allow_test_size, device, suffix): kernel options} from the files in BEAM_DIR."""
  return bundled_results("beam_search")


_BUNDLED_KEYS = {"beam_search": ("ast", "amt", "allow_test_size", "device", "suffix"), CHECKED_TABLE: ("ast", "card")}


@functools.cache
def bundled_results(table: str) -> dict[tuple, list]:
  """{key columns: kernel options} of one table (this tinygrad version's) of the files in BEAM_DIR, each value read as
  kernel options alone (read_kernel_options); a file that is unreadable or holds anything else is skipped whole, with
  a note. A file without the table adds nothing (search results alone, or checks alone)."""
  import sqlite3
  from tinygrad.helpers import VERSION
  found: dict[tuple, list] = {}
  for f in sorted(BEAM_DIR.glob("*.db")) if BEAM_DIR.is_dir() else []:
    try:
      with contextlib.closing(sqlite3.connect(f"file:{f}?mode=ro", uri=True)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (f"{table}_{VERSION}",)).fetchone(): continue
        cols = _BUNDLED_KEYS[table]
        rows = conn.execute(f"SELECT {', '.join(cols)}, val FROM '{table}_{VERSION}'").fetchall()
        # sqlite gives back tinygrad's bool key column as 0/1; lookups use the bool
        found.update({tuple(bool(k) if c == "allow_test_size" else k for c, k in zip(cols, r[:-1])):
                      read_kernel_options(r[-1]) for r in rows})
    except (sqlite3.Error, ValueError) as e:
      print(f"note: {f}: no usable search results ({e}); skipped", file=sys.stderr)
  return found


class _OptsOnly(pickle.Unpickler):
  """Unpickles kernel options (tinygrad.codegen.opt.Opt / OptOps) and the builtins they are made of, nothing else."""
  def find_class(self, module, name):
    if module == "tinygrad.codegen.opt" and name in ("Opt", "OptOps"):
      from tinygrad.codegen import opt
      return getattr(opt, name)
    raise pickle.UnpicklingError(f"{module}.{name} is not a kernel option")


def read_kernel_options(blob: bytes) -> list:
  """A pickled search result (tinygrad unpickles what its cache holds) read as a list of Opt, or ValueError: a cache
  file from elsewhere cannot run code here."""
  from tinygrad.codegen.opt import Opt
  try: opts = _OptsOnly(io.BytesIO(blob)).load()
  except Exception as e: raise ValueError(f"not a search result ({e})") from None
  if not (isinstance(opts, list) and all(isinstance(o, Opt) for o in opts)):
    raise ValueError("not a list of kernel options")
  return opts




_DB_LOCAL = None  # threading.local holding each thread's connection to tinygrad's kernel cache db


def per_thread_cache_db() -> None:
  """tinygrad 0.14 opens its sqlite kernel cache once (helpers.db_connection) and sqlite3 refuses that connection in any
  other thread (ProgrammingError on the first kernel compiled there). Give each thread its own connection to the same
  file instead: sqlite's WAL mode lets them share it. Call after tinygrad's import; idempotent."""
  global _DB_LOCAL
  import sqlite3, threading
  from tinygrad import helpers
  if _DB_LOCAL is not None: return
  _DB_LOCAL = threading.local()

  def db_connection():
    conn = getattr(_DB_LOCAL, "conn", None)
    if conn is None:
      os.makedirs(os.path.dirname(helpers.CACHEDB), exist_ok=True)
      conn = sqlite3.connect(helpers.CACHEDB, timeout=60, isolation_level="IMMEDIATE")
      with contextlib.suppress(sqlite3.OperationalError): conn.execute("PRAGMA journal_mode=WAL").fetchone()
      conn.execute("PRAGMA synchronous=NORMAL")
      _DB_LOCAL.conn = conn
    return conn
  helpers.db_connection = db_connection  # diskcache_get/put look the name up in helpers' globals on every call


# tinygrad's JIT capture list and scheduler caches are process-wide, so a lock per model instance would still let two
# instances race in two threads: every StudentZ (and tinygrad StreamState) shares this one
TINYGRAD_LOCK = threading.RLock()
