"""StudentZ as a Python library: load a checkpoint, encode text to z, decode z to text, stream z token by token.

  from studentz import StudentZ
  m = StudentZ.load("runs/NAME/best")            # or StudentZ.load() with $STUDENTZ_CKPT set
  z = m.encode(["A man plays a guitar.", "Dogs run."])           # np.float32 [2, D] (a single str gives [D])
  m.decode(z)                                                     # ["a man plays a guitar.", ...] (needs a decoder)
  m.decode_from_teacher(teacher_vecs)                             # mode B: decode the teacher's own vectors
  for z_t in m.encode_stream("A man plays a guitar."): ...        # z after each token (causal checkpoints only)
  StudentZ.load(engine="tinygrad")   StudentZ.load(int8=True)      # force an engine; int8 weights (quantize.py)

Two engines run the same math: "numpy" (numpy_infer.py: nothing to compile, no tinygrad import; the default where
tinygrad would run on the CPU) and "tinygrad" (GPUs; JIT-compiled kernels). backend.inference_engine picks one;
$STUDENTZ_ENGINE or `engine=` overrides it.

Every model call runs under one re-entrant lock, so an instance may be shared between threads (calls are serialised,
not parallel: tinygrad's JIT capture and realize are not reentrant).
"""
from __future__ import annotations
from pathlib import Path

from studentz_kernels import backend  # noqa: F401  (maps METAL=1 / CUDA=1 to DEV=... before tinygrad is imported)
from studentz_kernels.backend import TINYGRAD_LOCK
import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD
from studentz_runtime.checkpoint import resolve_path
from studentz_runtime.config import check_streamable

# ----------------------------------------------------------------------------------------------------------------------
# the API

def _pow2_at_least(n: int) -> int: return 1 << max(n - 1, 0).bit_length()


def __getattr__(name):  # the tinygrad StreamState lives in stream_tinygrad.py, imported only when asked for
  if name == "StreamState":
    from studentz_runtime.stream_tinygrad import StreamState
    return StreamState
  raise AttributeError(name)


class StudentZ:
  """A loaded checkpoint: `encode`, `decode`, `decode_from_teacher`, `encode_stream`, `stream_state`."""

  tinygrad_loader = None  # studentz.StudentZ sets it: (checkpoint folder, int8) -> (models, info, tokenizer)

  def __init__(self, models: dict, info: dict, tokenizer, path: Path | None = None):
    self.models, self.info, self.tokenizer, self.path = models, info, tokenizer, path
    self.encoder = models["encoder"]
    self.config = self.encoder.cfg
    self.lock = TINYGRAD_LOCK
    self._free_streams: list = []  # reused by encode_stream: a new tinygrad StreamState costs a JIT capture
    self._teacher = None  # rerank's judge="teacher": the checkpoint's teacher, loaded on first use
    if self.engine == "tinygrad": backend.per_thread_cache_db()  # its kernel cache db: usable from any thread

  @classmethod
  def load(cls, path=None, engine: str | None = None, int8: bool = False) -> "StudentZ":
    """A checkpoint folder written by train.py (config.json, model.safetensors, tokenizer.json) or a run folder
    holding best/. None: $STUDENTZ_CKPT, else the shipped default model (FileNotFoundError if it is missing).
    engine: "numpy", "tinygrad" or None (backend.inference_engine). int8: weights through int8 with per-channel
    scales (a checkpoint written by quantize.py is int8 already)."""
    p = resolve_path(path)
    if backend.inference_engine(engine) == "numpy":
      from studentz_runtime import numpy_infer
      return cls(*numpy_infer.load_models(p, int8=int8), p)
    if cls.tinygrad_loader is None: raise TypeError("load through studentz.StudentZ: it knows the tinygrad model")
    with TINYGRAD_LOCK:
      models, info, tok = cls.tinygrad_loader(p, int8=int8)
    return cls(models, info, tok, p)

  @property
  def engine(self) -> str:
    return "numpy" if type(self.encoder).__module__.endswith("numpy_infer") else "tinygrad"

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
    if inputs and all(isinstance(x, str) for x in inputs):
      z = self._encode_texts(inputs, int(batch_size))
    elif not any(isinstance(x, str) for x in inputs):
      z = self._encode_ids(*self._ids(inputs), int(batch_size))
    else:
      raise ValueError("inputs must be all str or all token-id rows, not a mix")
    if normalize: z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return z[0] if single else z

  def _encode_texts(self, texts: list[str], batch_size: int) -> np.ndarray:
    if self.engine == "numpy" or len(texts) <= batch_size:  # one batch: nothing to overlap the tokenizer with
      return self._encode_ids(*self.tokenizer.encode_batch(texts, self.max_len), batch_size)
    from studentz_runtime.encode_tinygrad import encode_texts
    with self.lock:  # the next batch's texts are tokenized in a background thread while the device runs this one
      return np.asarray(encode_texts(self.encoder, self.tokenizer, texts, batch_size), np.float32)

  def _encode_ids(self, ids: np.ndarray, mask: np.ndarray, batch_size: int) -> np.ndarray:
    if len(ids) == 0: return np.zeros((0, self.dim), np.float32)
    if self.engine == "numpy":
      from studentz_runtime import numpy_infer
      with self.lock: return numpy_infer.encode_batches(self.encoder, ids, mask, batch_size)
    from studentz_runtime.encode_tinygrad import encode_ids
    # powers of two bound the number of JIT captures while a lone sentence does not pay for batch_size rows
    bs = min(batch_size, _pow2_at_least(len(ids)))
    with self.lock:  # encode_ids keeps one JIT per (batch, length) for this encoder
      return np.asarray(encode_ids(self.encoder, ids, mask, bs), np.float32)

  # -- decoding
  def _decode(self, z, mode: int, max_len, strategy, top_k, top_p, temperature, beam, seed, judge="student",
              **extra) -> list[str]:
    from studentz_runtime import blas_threads, decoding
    if not self.has_decoder:
      raise ValueError(f"this checkpoint ({self.path}) has no decoder: train one with --loss_weights.ce 1")
    decoding.check_options(strategy, temperature, top_k, top_p, beam, seed, max_len, **extra)
    if judge not in ("student", "teacher"): raise ValueError(f"judge must be 'student' or 'teacher', not {judge!r}")
    embed_fn = self._teacher_embed if judge == "teacher" and strategy == "rerank" else self.encode
    z = np.asarray(z.numpy() if hasattr(z, "numpy") else z)  # a tinygrad Tensor too
    z = decoding.check_z(z[None] if z.ndim == 1 else z, self.dim)
    if len(z) == 0: return []  # as encode of 0 texts gives 0 rows
    # one BLAS thread across all of the numpy engine's steps (numpy_infer.SMALL_TOKENS says why)
    with self.lock, blas_threads.limit(1 if self.engine == "numpy" else None):
      # rerank: the judge embeds candidates and compares them with the vector given, in the teacher's space for both
      target, zc = z, (self._proj_b(z) if mode == 1 else z)
      return decoding.decode(self.models["decoder"], zc, self.tokenizer, strategy=strategy, max_len=max_len,
                             temperature=temperature, top_k=top_k, top_p=top_p,
                             beam=beam if strategy == "beam" else 1, seed=seed, mode=mode, **extra,
                             embed_fn=embed_fn, target=target, proj=self._proj_b if mode == 1 else None)

  def _teacher_embed(self, texts) -> np.ndarray:
    """The checkpoint's teacher (numpy, loaded once on first use) embeds texts: rerank's judge="teacher"."""
    if self._teacher is None:
      name = (self.info.get("teacher") or {}).get("name")
      if not name: raise ValueError(f"judge='teacher': the checkpoint {self.path} names no teacher")
      from teacher.numpy_model import load_teacher
      self._teacher = load_teacher(name)
    return np.asarray(self._teacher.embed(list(texts), batch_size=32), np.float32)

  def _proj_b(self, z: np.ndarray) -> np.ndarray:
    if self.engine == "numpy": return self.models["proj_b"](z)
    from tinygrad import Tensor
    return self.models["proj_b"](Tensor(z)).numpy()

  def decode(self, z, max_len: int | None = None, strategy: str = "greedy", top_k: int = 0, top_p: float = 1.0,
             temperature: float = 1.0, beam: int = 4, seed: int = 0, no_repeat_ngram: int = 0,
             repetition_penalty: float = 1.0, rerank: int = 16, rounds: int = 1, judge: str = "student") -> list[str]:
    """Student vectors z ([D] or [N, D], mode A) -> N texts. strategy: "greedy", "sample" (temperature, top_k,
    top_p, seed), "beam" (width `beam`) or "rerank" (`rerank` candidates per row: greedy, beam and samples, re-embedded
    by the judge, "student" or "teacher" (the checkpoint's teacher, in numpy: slower, the embedder that defines the
    space); the one closest to z wins; `rounds` > 1 decodes again from a condition corrected by the best text's
    error and judges one-word edits of the best text too, decoding.rerank_decode). max_len: generated tokens at
    most (default: the checkpoint's max_len - 1). no_repeat_ngram: n-grams of this size never repeat within a
    row's text (0 = off); repetition_penalty: already generated tokens' logits divided (positive) or multiplied
    (negative) by it (1 = off)."""
    return self._decode(z, 0, max_len, strategy, top_k, top_p, temperature, beam, seed, judge,
                        no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty, rerank=rerank,
                        rounds=rounds)

  def decode_from_teacher(self, z_teacher, max_len: int | None = None, strategy: str = "greedy", top_k: int = 0,
                          top_p: float = 1.0, temperature: float = 1.0, beam: int = 4, seed: int = 0,
                          no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, rerank: int = 16,
                          rounds: int = 1, judge: str = "student") -> list[str]:
    """The teacher's own vectors ([D] or [N, D], mode B: through the checkpoint's proj_b) -> N texts; as `decode`
    (rerank compares the judge's vector of each candidate with the teacher vector itself; judge="teacher" is
    vec2text's setting, the inverted embedder re-embedding every hypothesis)."""
    return self._decode(z_teacher, 1, max_len, strategy, top_k, top_p, temperature, beam, seed, judge,
                        no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty, rerank=rerank,
                        rounds=rounds)

  # -- streaming
  def stream_state(self):
    """A fresh StreamState on this model's encoder (ValueError unless the checkpoint is causal with layer norms)."""
    if self.engine == "numpy":
      from studentz_runtime import numpy_infer
      return numpy_infer.StreamState(self.encoder)
    from studentz_runtime.stream_tinygrad import StreamState
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
