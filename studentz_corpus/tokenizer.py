"""The student's tokenizer: byte-level BPE (HF `tokenizers`) with an NFKC normaliser and fixed special ids.

Byte-level BPE over the full 256-byte alphabet never needs UNK, so `decode(encode(x)) == normalize(x)` for any text
that fits in `max_len`. Saved as ONE JSON file: {"studentz": our metadata, "tokenizer": the tokenizers JSON}.
"""
from __future__ import annotations
import hashlib, itertools, json, os
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # trainer order == the ids above
FORMAT = "studentz-tokenizer/1"
MIN_VOCAB = 64
_BASE_VOCAB = len(SPECIAL_TOKENS) + 256  # specials + every byte: the floor of the real vocabulary


def _check_text(text, what="text") -> str:
  if not isinstance(text, str): raise ValueError(f"{what} must be str, got {type(text).__name__}")
  return without_surrogates(text)


def without_surrogates(text: str) -> str:
  """Lone surrogates -> U+FFFD. Python hands invalid UTF-8 in argv or stdin (LC_ALL=C) over as surrogate escapes, and
  the Rust tokenizers refuse any surrogate with a bare TypeError."""
  try:
    text.encode("utf-8")
    return text
  except UnicodeEncodeError:
    try: raw = text.encode("utf-8", "surrogateescape")  # the original bytes of an escaped argument
    except UnicodeEncodeError: raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _check_max_len(max_len) -> int:
  if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 3:
    raise ValueError(f"max_len must be an int >= 3 (BOS + 1 token + EOS), got {max_len!r}")
  return int(max_len)


def _new_tokenizer() -> Tokenizer:
  tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK]))
  # NFKC folds compatibility forms (ligatures, nbsp, fullwidth) so equivalent texts share tokens; no lowercasing
  tok.normalizer = normalizers.NFKC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  return tok


def _ids(backend: Tokenizer, texts: list[str]) -> list[list[int]]:
  """Content ids per text in one Rust call (it releases the GIL and spreads the texts over cores); without offsets
  where the installed tokenizers can skip them (encode_batch_fast)."""
  if not texts: return []
  encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
  return [e.ids for e in encode(texts, add_special_tokens=False)]


def pack_rows(rows, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Content id lists -> (ids int32 [N, max_len] as BOS + content + EOS, mask float32 [N, max_len], content lengths
  int64 [N]): every row scattered in one vectorised step, what does not fit dropped."""
  n = len(rows)
  lens = np.fromiter(map(len, rows), dtype=np.int64, count=n)
  flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lens.sum()))
  ids = np.zeros((n, max_len), np.int32)
  keep = np.minimum(lens, max_len - 2)
  row = np.repeat(np.arange(n), lens)
  pos = np.arange(flat.size) - np.repeat(np.cumsum(lens) - lens, lens)
  sel = pos < keep[row]
  ids[row[sel], pos[sel] + 1] = flat[sel]
  ids[:, 0] = BOS
  ids[np.arange(n), keep + 1] = EOS
  mask = (np.arange(max_len)[None, :] < (keep + 2)[:, None]).astype(np.float32)
  return ids, mask, lens


class StudentTokenizer:
  """Wraps a `tokenizers.Tokenizer`; ids are BOS + content + EOS, then PAD, with a float mask of real positions."""

  def __init__(self, tokenizer: Tokenizer, meta: dict | None = None):
    self._tok = tokenizer
    # literal "<s>" in a sentence must stay text, not turn into a special id (it would vanish on decode)
    self._tok.encode_special_tokens = True
    self.meta = dict(meta or {})
    for i, s in enumerate(SPECIAL_TOKENS):
      if self._tok.token_to_id(s) != i: raise ValueError(f"tokenizer maps {s!r} to {self._tok.token_to_id(s)}, not {i}")
    self._ascii_tok: Tokenizer | None = None  # _ascii_backend builds it on first use

  # ---- building ----
  @classmethod
  def fit(cls, texts: Iterable[str], vocab_size: int = 16000, min_frequency: int = 2) -> "StudentTokenizer":
    """Train on `texts` (any iterable of str, read once). Deterministic: same texts+settings -> identical JSON.
    vocab_size below 260 (4 specials + 256 bytes) yields exactly those 260 tokens: bytes are never dropped."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < MIN_VOCAB:
      raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB}, got {vocab_size!r}")
    if isinstance(texts, str): raise ValueError("texts must be an iterable of str, not one str")
    count = [0]

    def checked():
      for t in texts:
        count[0] += 1
        yield _check_text(t, "every text")

    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(checked(), trainer)
    if count[0] == 0: raise ValueError("cannot fit a tokenizer on an empty corpus")
    meta = {"format": FORMAT, "vocab_size_requested": int(vocab_size), "min_frequency": int(min_frequency),
            "n_texts": count[0], "normalizer": "NFKC", "specials": dict(zip(SPECIAL_TOKENS, range(4)))}
    return cls(tok, meta)

  # ---- properties ----
  @property
  def vocab_size(self) -> int: return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def backend(self) -> Tokenizer: return self._tok

  @property
  def fingerprint(self) -> str:
    """sha256 of the saved JSON: identifies this exact vocabulary in cache keys."""
    return hashlib.sha256(self.to_json_str().encode("utf-8")).hexdigest()

  def normalize(self, text: str) -> str:
    """What `decode(encode(text))` gives back when nothing is truncated."""
    return self._tok.normalizer.normalize_str(_check_text(text))

  def tokens(self, text: str) -> list[str]:
    return self._tok.encode(_check_text(text), add_special_tokens=False).tokens

  # ---- encoding ----
  def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [max_len], mask float32 [max_len]); truncation keeps BOS and EOS and cuts the content."""
    ids, mask = self.encode_batch([_check_text(text)], max_len)
    return ids[0], mask[0]

  def encode_batch(self, texts, max_len: int, return_truncated: bool = False):
    """-> (ids int32 [N, max_len], mask float32 [N, max_len]) [, truncated bool [N]]; one Rust call for all rows."""
    max_len = _check_max_len(max_len)
    if isinstance(texts, str): raise ValueError("encode_batch takes a list of str; use encode() for one str")
    ids, mask, lens = pack_rows(self._content_ids([_check_text(t, "every text") for t in texts]), max_len)
    return (ids, mask, lens > max_len - 2) if return_truncated else (ids, mask)

  def token_counts(self, texts) -> np.ndarray:
    """Content tokens per text without BOS/EOS or truncation (int64 [N]): plan max_len from this."""
    rows = self._content_ids([_check_text(t, "every text") for t in texts])
    return np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))

  def _content_ids(self, texts: list[str]) -> list[list[int]]:
    """Content ids of each text (no BOS/EOS, not cut), in order. ASCII texts go through a copy without the NFKC
    normaliser, which leaves ASCII unchanged and is a large share of the Rust time; the others through the full one."""
    plain = [t.isascii() for t in texts]
    if all(plain): return _ids(self._ascii_backend(), texts)
    if not any(plain): return _ids(self._tok, texts)
    out: list = [None] * len(texts)
    for want, backend in ((True, self._ascii_backend()), (False, self._tok)):
      where = [i for i, p in enumerate(plain) if p == want]
      for i, r in zip(where, _ids(backend, [texts[i] for i in where])): out[i] = r
    return out

  def _ascii_backend(self) -> Tokenizer:
    if self._ascii_tok is None:  # a race builds two equal copies: harmless
      tok = Tokenizer.from_str(self._tok.to_str())
      tok.normalizer = None
      tok.encode_special_tokens = True
      self._ascii_tok = tok
    return self._ascii_tok

  # ---- decoding ----
  def _content(self, ids) -> list[int]:
    arr = np.asarray(ids)
    if arr.ndim != 1: raise ValueError(f"decode takes a 1-D id sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer): raise ValueError(f"ids must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
      raise ValueError(f"ids must lie in [0, {self.vocab_size}), got range [{arr.min()}, {arr.max()}]")
    eos = np.flatnonzero(arr == EOS)
    if eos.size: arr = arr[:eos[0]]
    return arr[arr > UNK].tolist()

  def decode(self, ids) -> str:
    """Text of `ids` up to the first EOS, specials dropped."""
    return self._tok.decode(self._content(ids), skip_special_tokens=True)

  def decode_batch(self, ids) -> list[str]:
    return self._tok.decode_batch([self._content(row) for row in ids], skip_special_tokens=True)

  # ---- persistence ----
  def to_json_str(self) -> str:
    inner = json.loads(self._tok.to_str())
    # the encode_special_tokens switch is runtime state; keep it out so every save is byte-identical
    return json.dumps({"studentz": self.meta, "tokenizer": inner}, ensure_ascii=False, separators=(",", ":"))

  @classmethod
  def from_json_str(cls, s: str) -> "StudentTokenizer":
    try: obj = json.loads(s)
    except json.JSONDecodeError as e: raise ValueError(f"not a StudentTokenizer JSON file: {e}") from None
    if not isinstance(obj, dict) or "tokenizer" not in obj or "studentz" not in obj:
      raise ValueError("not a StudentTokenizer JSON file (expected keys 'studentz' and 'tokenizer')")
    return cls(Tokenizer.from_str(json.dumps(obj["tokenizer"])), obj["studentz"])

  def save(self, path) -> Path:
    """Write atomically (tmp + rename) so a killed run never leaves a truncated tokenizer file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(self.to_json_str())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    return path

  @classmethod
  def load(cls, path) -> "StudentTokenizer":
    path = Path(path)
    if not path.is_file(): raise FileNotFoundError(f"no tokenizer file at {path}")
    return cls.from_json_str(path.read_text(encoding="utf-8"))

  def __eq__(self, other) -> bool:
    return isinstance(other, StudentTokenizer) and self.to_json_str() == other.to_json_str()

  __hash__ = None

  def __repr__(self) -> str: return f"StudentTokenizer(vocab_size={self.vocab_size})"
