"""StudentZ as a Python library: load a checkpoint, encode text to z, decode z to text, stream z token by token.

  from studentz import StudentZ
  m = StudentZ.load("runs/NAME/best")            # or StudentZ.load() with $STUDENTZ_CKPT set
  z = m.encode(["A man plays a guitar.", "Dogs run."])           # np.float32 [2, D] (a single str gives [D])
  m.decode(z)                                                     # ["a man plays a guitar.", ...] (needs a decoder)
  m.decode_from_teacher(teacher_vecs)                             # mode B: decode the teacher's own vectors
  for z_t in m.encode_stream("A man plays a guitar."): ...        # z after each token (causal checkpoints only)

Every model call runs under one re-entrant lock, so an instance may be shared between threads (calls are serialised,
not parallel: tinygrad's JIT capture and realize are not reentrant).
"""
from __future__ import annotations
import os, threading
from pathlib import Path

import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
import numpy as np
from device_inputs import InputSlots
from student_tokenizer import BOS, EOS, PAD
from tinygrad import Tensor, TinyJit, dtypes

backend.per_thread_cache_db()  # tinygrad's kernel cache db: usable from any thread, not only its opener

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = ROOT / "models" / "default"  # the shipped model: MiniLM student + decoder, fp16 (README)
NO_DEFAULT = ("the shipped default model (models/default) is missing from this install: pass a checkpoint folder, "
              "e.g. StudentZ.load('runs/NAME/best'), or set STUDENTZ_CKPT")
# tinygrad's JIT capture list and scheduler caches are process-wide, so a lock per instance would still let two
# instances race in two threads: every instance shares this one (it is still the lock "of" each instance: .lock)
_TINYGRAD_LOCK = threading.RLock()


def resolve_path(path=None) -> Path:
  """The checkpoint folder for `path` (None: $STUDENTZ_CKPT, then the shipped default); a run folder means its best/."""
  if path is None:
    env = os.environ.get("STUDENTZ_CKPT", "").strip()
    if env: path = env
    elif DEFAULT_MODEL_DIR.exists(): path = DEFAULT_MODEL_DIR
    else: raise FileNotFoundError(NO_DEFAULT)
  p = Path(path).expanduser()
  # runs/NAME is an easy slip for runs/NAME/best (infer.py accepts it too)
  if not (p / "config.json").exists() and (p / "best" / "config.json").exists(): p = p / "best"
  return p


# ----------------------------------------------------------------------------------------------------------------------
# streaming: z after every token with O(1) work per token

def check_streamable(cfg) -> None:
  if cfg.padding != "causal":
    raise ValueError(f"streaming needs a causal encoder but this checkpoint has padding={cfg.padding!r}: the "
                     "checkpoint must be trained with --padding causal")
  if cfg.norm != "layer":
    raise ValueError(f"streaming needs per-token norms but this checkpoint has norm={cfg.norm!r}: GroupNorm "
                     "statistics span the whole sequence, so one new token changes every earlier position "
                     "(train with --norm layer)")


class StreamState:
  """One causal encoder fed one token at a time: `push(token_id)` returns z of everything pushed since `reset()`.

  Per block it keeps the last (k-1)*dilation + 1 inputs of its causal conv (zeros before the start, as the causal pad),
  so a token costs one position through the blocks; pooling keeps running sums (sum of w*x and of w, with w = 1 for
  the masked mean, sigmoid(gate) + 1e-6 for the gated pool, as Encoder.pool; per feature for the pool head). z after
  the t-th push equals the full encoder's z on those t tokens. No max_len applies: the stream may run longer than the
  training length.
  Token ids are pushed as given: start with BOS, as every training sentence did."""

  def __init__(self, encoder, lock=None):
    check_streamable(encoder.cfg)
    self.encoder, self.lock = encoder, lock if lock is not None else _TINYGRAD_LOCK
    cfg, act = encoder.cfg, encoder.act_dtype
    with self.lock:
      self.bufs = [Tensor.zeros(1, blk.conv.span + 1, cfg.d_model, dtype=act).contiguous().realize()
                   for blk in encoder.blocks]
      self.wx = Tensor.zeros(1, cfg.d_model, dtype=dtypes.float32).contiguous().realize()
      self.w = Tensor.zeros(1, 1, dtype=dtypes.float32).contiguous().realize()
      P = max(cfg.pool_head, 1)  # the pool head's running sums (unused, one wide, without a head)
      self.hv = Tensor.zeros(1, P, dtype=dtypes.float32).contiguous().realize()
      self.hg = Tensor.zeros(1, P, dtype=dtypes.float32).contiguous().realize()
      self._slots = InputSlots([np.zeros(1, np.int32)])  # the token, copied in without scheduler work
    # a TinyJit over the persistent buffers above: it reads the encoder's weights as they are at call time
    self._jit = TinyJit(self._step_impl)
    self.n = 0  # tokens pushed since reset

  def _step_impl(self, tok: Tensor) -> Tensor:
    from decoder import conv_last
    enc = self.encoder
    ones, mode = Tensor.ones(1, 1), Tensor.zeros(1, dtype=dtypes.int32)
    x = enc.embed(tok.reshape(1, 1)).cast(enc.act_dtype)                           # (1, 1, d)
    new_bufs = []
    for blk, buf in zip(enc.blocks, self.bufs):
      win = buf[:, 1:].cat(x, dim=1)                                               # (1, span + 1, d)
      new_bufs.append(win)
      # mirrors TCNBlock.__call__ at the last position (no FiLM, no dropout at inference); test_api checks they agree
      y = blk.norm(conv_last(blk.conv, win), ones, mode)                           # (1, 1, h)
      x = x + blk.out(y.gelu())                                                    # (1, 1, d)
    x = enc.norm(x, ones, mode)[:, 0]                                              # (1, d)
    w = Tensor.ones(1, 1) if enc.gate is None else enc.gate(x).float().sigmoid() + 1e-6  # (1, 1)
    wx, ws = self.wx + x.float() * w, self.w + w
    z = enc.proj((wx / ws.maximum(1e-6)).cast(enc.act_dtype)).float()              # (1, D)
    sums = [self.wx.assign(wx), self.w.assign(ws)]
    if enc.cfg.pool_head:  # the same running sums per head feature (Encoder.head)
      v, g = enc.head_terms(x.unsqueeze(1))                                        # (1, 1, P) each
      hv, hg = self.hv + (v * g)[:, 0], self.hg + g[:, 0]
      z = z + enc.head_down((hv / hg.maximum(1e-6)).cast(enc.act_dtype)).float()
      sums += [self.hv.assign(hv), self.hg.assign(hg)]
    z = z.contiguous()
    Tensor.realize(z, *[b.assign(nb) for b, nb in zip(self.bufs, new_bufs)], *sums)
    return z

  def push(self, token_id: int) -> np.ndarray:
    """Feed one token; returns z (D,) float32 of all tokens pushed since reset."""
    V = self.encoder.cfg.vocab_size
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not 0 <= token_id < V:
      raise ValueError(f"token ids must be ints in [0, {V}), got {token_id!r}")
    with self.lock:
      z = self._jit(*self._slots.fill(np.array([token_id], np.int32))).numpy()[0]
    self.n += 1
    return z

  def reset(self) -> "StreamState":
    """Forget every pushed token (the next push starts a new sequence)."""
    with self.lock:
      Tensor.realize(*[b.assign(b.zeros_like()) for b in self.bufs + [self.wx, self.w, self.hv, self.hg]])
    self.n = 0
    return self


# ----------------------------------------------------------------------------------------------------------------------
# the API

def _pow2_at_least(n: int) -> int: return 1 << max(n - 1, 0).bit_length()


class StudentZ:
  """A loaded checkpoint: `encode`, `decode`, `decode_from_teacher`, `encode_stream`, `stream_state`."""

  def __init__(self, models: dict, info: dict, tokenizer, path: Path | None = None):
    self.models, self.info, self.tokenizer, self.path = models, info, tokenizer, path
    self.encoder = models["encoder"]
    self.config = self.encoder.cfg
    self.lock = _TINYGRAD_LOCK
    self._free_streams: list[StreamState] = []  # reused by encode_stream: a new StreamState costs a JIT capture

  @classmethod
  def load(cls, path=None) -> "StudentZ":
    """A checkpoint folder written by train.py (config.json, model.safetensors, tokenizer.json) or a run folder
    holding best/. None: $STUDENTZ_CKPT, else the shipped default model (FileNotFoundError if it is missing)."""
    import evaluate
    p = resolve_path(path)
    with _TINYGRAD_LOCK:
      models, info, tok = evaluate.load_models(p)
    return cls(models, info, tok, p)

  @property
  def dim(self) -> int: return self.config.proj_dim

  @property
  def max_len(self) -> int: return self.config.max_len

  @property
  def has_decoder(self) -> bool: return "decoder" in self.models

  def __repr__(self) -> str:
    return (f"StudentZ(path={str(self.path)!r}, dim={self.dim}, max_len={self.max_len}, "
            f"padding={self.config.padding!r}, decoder={self.has_decoder})")

  # -- encoding
  def _ids(self, rows) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows -> (ids, mask) [N, max_len] exactly as the tokenizer lays them out: trailing PAD dropped, BOS
    prepended and EOS appended where missing, the content cut to max_len - 2."""
    L, V = self.max_len, self.config.vocab_size
    ids = np.zeros((len(rows), L), np.int32)
    mask = np.zeros((len(rows), L), np.float32)
    for i, r in enumerate(rows):
      r = np.asarray(r)
      if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"token ids must be rows of ints, row {i} is {r.dtype} with shape {r.shape}")
      if r.size and (r.min() < 0 or r.max() >= V):
        raise ValueError(f"token ids must lie in [0, {V}), row {i} has range [{r.min()}, {r.max()}]")
      n = len(r)
      while n and r[n - 1] == PAD: n -= 1
      r = r[:n]
      if n and r[0] == BOS: r = r[1:]
      if len(r) and r[-1] == EOS: r = r[:-1]
      r = r[:L - 2]
      ids[i, :len(r) + 2] = [BOS, *r.tolist(), EOS]
      mask[i, :len(r) + 2] = 1
    return ids, mask

  def encode(self, inputs, batch_size: int = 64, normalize: bool = False) -> np.ndarray:
    """Texts or token ids -> z, float32. A str (or one 1-D row of ids) gives [D]; a list of str, a list of id lists or
    a 2-D int array gives [N, D]. Texts longer than max_len tokens are truncated (as in training). Id rows are laid out
    as the tokenizer would: trailing PAD (0) dropped, BOS/EOS added when missing, cut to max_len. `normalize`: unit
    L2 norm per row. Batches of min(batch_size, next power of two >= N) rows share one JIT per size."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(inputs, (bytes, bytearray, memoryview, dict, set, frozenset)) or not hasattr(inputs, "__iter__"):
      # bytes would iterate as token ids, a dict as its keys: neither is what the caller meant
      raise TypeError(f"inputs must be a str, a list of str or token-id rows, got {type(inputs).__name__}"
                      + (": decode bytes first, e.g. data.decode('utf-8')" if isinstance(inputs, bytes) else ""))
    single = isinstance(inputs, str)
    if single:
      inputs = [inputs]
    elif isinstance(inputs, np.ndarray):
      if inputs.ndim not in (1, 2): raise ValueError(f"token ids must be 1-D or 2-D, got shape {inputs.shape}")
      single, inputs = inputs.ndim == 1, (list(inputs[None]) if inputs.ndim == 1 else list(inputs))
    else:
      inputs = list(inputs)
      if inputs and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in inputs):
        single, inputs = True, [inputs]  # one sequence of ids, the token-level spelling of a single str
    if all(isinstance(x, str) for x in inputs):
      ids, mask = self.tokenizer.encode_batch(inputs, self.max_len)
    elif not any(isinstance(x, str) for x in inputs):
      ids, mask = self._ids(inputs)
    else:
      raise ValueError("inputs must be all str or all token-id rows, not a mix")
    z = self._encode_ids(ids, mask, int(batch_size))
    if normalize: z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return z[0] if single else z

  def _encode_ids(self, ids: np.ndarray, mask: np.ndarray, batch_size: int) -> np.ndarray:
    import train
    if len(ids) == 0: return np.zeros((0, self.dim), np.float32)
    # powers of two bound the number of JIT captures while a lone sentence does not pay for batch_size rows
    bs = min(batch_size, _pow2_at_least(len(ids)))
    with self.lock:  # train.encode_ids keeps one JIT per (batch, length) for this encoder
      return np.asarray(train.encode_ids(self.encoder, ids, mask, bs), np.float32)

  # -- decoding
  def _decode(self, z, mode: int, max_len, strategy, top_k, top_p, temperature, beam, seed) -> list[str]:
    import generate
    if not self.has_decoder:
      raise ValueError(f"this checkpoint ({self.path}) has no decoder: train one with --loss_weights.ce 1")
    generate.check_options(strategy, temperature, top_k, top_p, beam, seed, max_len)
    z = np.asarray(z.numpy() if isinstance(z, Tensor) else z)
    z = generate.check_z(z[None] if z.ndim == 1 else z, self.dim)
    if len(z) == 0: return []  # as encode of 0 texts gives 0 rows
    with self.lock:
      if mode == 1: z = self.models["proj_b"](Tensor(z)).numpy()
      return generate.decode(self.models["decoder"], z, self.tokenizer, strategy=strategy, max_len=max_len,
                             temperature=temperature, top_k=top_k, top_p=top_p,
                             beam=beam if strategy == "beam" else 1, seed=seed, mode=mode)

  def decode(self, z, max_len: int | None = None, strategy: str = "greedy", top_k: int = 0, top_p: float = 1.0,
             temperature: float = 1.0, beam: int = 4, seed: int = 0) -> list[str]:
    """Student vectors z ([D] or [N, D], mode A) -> N texts. strategy: "greedy", "sample" (temperature, top_k,
    top_p, seed) or "beam" (width `beam`). max_len: generated tokens at most (default: the checkpoint's max_len - 1)."""
    return self._decode(z, 0, max_len, strategy, top_k, top_p, temperature, beam, seed)

  def decode_from_teacher(self, z_teacher, max_len: int | None = None, strategy: str = "greedy", top_k: int = 0,
                          top_p: float = 1.0, temperature: float = 1.0, beam: int = 4, seed: int = 0) -> list[str]:
    """The teacher's own vectors ([D] or [N, D], mode B: through the checkpoint's proj_b) -> N texts; as `decode`."""
    return self._decode(z_teacher, 1, max_len, strategy, top_k, top_p, temperature, beam, seed)

  # -- streaming
  def stream_state(self) -> StreamState:
    """A fresh StreamState on this model's encoder (ValueError unless the checkpoint is causal with layer norms)."""
    return StreamState(self.encoder, self.lock)

  def encode_stream(self, tokens_or_text):
    """A generator of z (D,) after each incoming token. A str is tokenized to BOS + content + EOS (not truncated), so
    the last z equals encode(text) when the text fits max_len; any other iterable of ids (a live generator too) is
    pushed as given, lazily: start it with BOS. Needs a causal checkpoint (trained with --padding causal)."""
    check_streamable(self.config)
    if isinstance(tokens_or_text, str):
      tokens_or_text = [BOS, *self.tokenizer.backend.encode(tokens_or_text, add_special_tokens=False).ids, EOS]
    return self._stream(tokens_or_text)

  def _stream(self, tokens):
    with self.lock: st = self._free_streams.pop() if self._free_streams else None
    st = (st or self.stream_state()).reset()
    try:
      for t in tokens: yield st.push(t)
    finally:  # also on close() or garbage collection of an unfinished generator: the state goes back to the pool
      with self.lock: self._free_streams.append(st)
