"""Text ingestion for prepare.py: robust readers for text/JSONL(.gz) and a Wikipedia-aware sentence splitter.

Everything here is pure Python and deterministic: the same bytes give the same sentences on every machine.
"""
from __future__ import annotations
import collections, gzip, hashlib, json, re, unicodedata, zlib
from pathlib import Path
from typing import Iterator

MIN_WORDS, MAX_WORDS = 5, 60
_CTRL_BYTES = bytes(c for c in range(32) if c not in (9, 10, 13))
SPLITTER_VERSION = 1  # bump when split_sentences changes output, so prepared data dirs get rebuilt


# ---------------------------------------------------------------- reading
class TextReader:
  """Iterate the texts of a plain-text (one text per line) or JSONL (`text` field) file, gzipped or not.

  Never raises on bad content: undecodable bytes are replaced (counted as `invalid_utf8`), and binary lines,
  unparsable JSON, records without a str `text`, and empty lines are skipped and counted in `.stats`.
  A gzip stream that ends early stops the iteration (counted as `truncated_gzip`)."""

  SAMPLE_LINES = 20

  def __init__(self, path, fmt: str | None = None):
    self.path = Path(path)
    if not self.path.is_file(): raise FileNotFoundError(f"corpus source not found: {self.path} (no such file)")
    with open(self.path, "rb") as f: self.gzipped = f.read(2) == b"\x1f\x8b"
    if fmt not in (None, "text", "jsonl"): raise ValueError(f"fmt must be None, 'text' or 'jsonl', got {fmt!r}")
    self.stats: collections.Counter = collections.Counter()
    self.format = fmt or self._detect()
    self.stats.clear()

  def _open(self):
    return gzip.open(self.path, "rb") if self.gzipped else open(self.path, "rb")

  def _lines(self) -> Iterator[bytes]:
    with self._open() as f:
      try:
        yield from f
      except (EOFError, gzip.BadGzipFile, zlib.error):  # a cut-off download: keep what was readable
        self.stats["truncated_gzip"] += 1

  def _detect(self) -> str:
    # JSONL when some of the first lines are JSON objects and most look like one: a few bad lines at the top
    # must not flip the format, and a plain-text line that happens to be valid JSON must not either
    seen = objs = braces = 0
    for raw in self._lines():
      if not raw.strip(): continue
      seen += 1
      braces += raw.lstrip().startswith(b"{")
      try: objs += isinstance(json.loads(raw.decode("utf-8", errors="replace")), dict)
      except (ValueError, RecursionError): pass  # deeply nested: not a record either
      if seen >= self.SAMPLE_LINES: break
    return "jsonl" if objs and braces * 2 > seen else "text"

  @staticmethod
  def _is_binary(raw: bytes) -> bool:
    if b"\x00" in raw: return True
    ctrl = len(raw) - len(raw.translate(None, _CTRL_BYTES))
    return ctrl > max(2, len(raw) // 20)

  def _decode(self, raw: bytes) -> str | None:
    try: return raw.decode("utf-8")
    except UnicodeDecodeError:
      text = raw.decode("utf-8", errors="replace")
      if text.count("\ufffd") * 4 > len(text):  # mostly undecodable: garbage, not a mis-encoded sentence
        self.stats["binary"] += 1
        return None
      self.stats["invalid_utf8"] += 1
      return text

  def records(self) -> Iterator[dict]:
    """Like iteration, but yields {"text": ...} dicts: the whole JSON object for JSONL (for extra fields)."""
    for raw in self._lines():
      self.stats["lines"] += 1
      if not raw.strip():
        self.stats["empty"] += 1
        continue
      if self._is_binary(raw):
        self.stats["binary"] += 1
        continue
      text = self._decode(raw)
      if text is None: continue
      if self.format == "jsonl":
        try: obj = json.loads(text)
        except (ValueError, RecursionError):  # a line nested thousands deep is no record: counted as bad JSON
          self.stats["bad_json"] += 1
          continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
          self.stats["no_text_field"] += 1
          continue
      else:
        obj = {"text": text.rstrip("\r\n")}
      if not obj["text"].strip():
        self.stats["empty"] += 1
        continue
      self.stats["texts"] += 1
      yield obj

  def __iter__(self) -> Iterator[str]:
    for obj in self.records(): yield obj["text"]

  @property
  def skipped(self) -> dict:
    return {k: v for k, v in self.stats.items() if k not in ("lines", "texts", "invalid_utf8") and v}


def read_texts(path, fmt: str | None = None) -> TextReader:
  """Iterable of texts from `path`; inspect `.stats` (Counter of lines, texts and skip reasons) after iterating."""
  return TextReader(path, fmt)


# ---------------------------------------------------------------- sentence splitting
# words that end with "." without ending a sentence (compared lowercased, without the final dot)
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr rev gen col lt sgt capt cmdr adm maj gov sen rep pres hon fr messrs mme mlle
e.g i.e etc vs cf al approx ca c fl b d no nos vol vols pp p ch fig figs ed eds op cit ibid viz est inc ltd co corp
bros assn dept univ jan feb mar apr jun jul aug sep sept oct nov dec mt ft ave blvd rd hwy
""".split())
# verbs that make a short "." line a sentence rather than a section heading
_VERBISH = frozenset("""
is was are were be been being has had have do does did will would can could shall should may might must
became become began won made took went came left lost led held saw gave wrote found built ran met grew fell sold
bought died married played served joined moved lived worked received released published
""".split())

_WS = re.compile(r"\s+")
_WIKILINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]|]*)\]\]")
# a sentence end: terminal punctuation, optional closing quotes/brackets, whitespace, then the next sentence
_BOUNDARY = re.compile(r"([.!?]+)([\"'\u201d\u2019)\]]*)\s+([\"'\u201c\u2018(\[]?)(?=\w)")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.){2,}$")
_END_OK = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
# signs of text lost when WikiExtractor dropped templates, or markup it left behind
_HOLES = re.compile(
  r"\(\s*\)|\(\s*[,;:.]|[,;:]\s*\)|,\s*,|\s[,.;:!?](?:\s|$)|\b(?:formula|codice)_\d|&[a-z]+;|&#\d+;|\[\[|\]\]|\{\{|\}\}"
  r"|<[a-z/]|\s\)")


def _is_heading(line: str) -> bool:
  """Section headings are short lines ending in "." with no other sentence punctuation and, if 5+ words, no verb."""
  if not line.endswith(".") or line.endswith(".."): return False
  body = line[:-1]
  if re.search(r"[.!?;]", body): return False
  words = body.split()
  if len(words) <= 4: return True
  if len(words) > 10: return False
  return not any(w.lower().strip(",:()\"'") in _VERBISH for w in words)


def _no_split_before(left: str) -> bool:
  """True when the word that ends at a candidate boundary is an abbreviation, an initial or a dotted acronym."""
  word = left.rsplit(None, 1)[-1] if left.strip() else ""
  word = word.lstrip("(\"'\u201c\u2018[")
  if not word.endswith("."): return False
  core = word[:-1]
  if len(core) == 1 and core.isalpha(): return True  # initials: "J. R. R. Tolkien", "Vitamin A." is rare
  if core.lower() in ABBREVIATIONS: return True
  return bool(_DOTTED_ACRONYM.search(word))  # "U.S.", "D.C.": may end a sentence, but merging is the safe error


def _split_paragraph(par: str) -> list[str]:
  out, start = [], 0
  for m in _BOUNDARY.finditer(par):
    nxt = par[m.end()]
    if not (nxt.isupper() or nxt.isdigit()): continue  # "approx. the": a lower-case word continues the sentence
    if m.group(1) == "." and _no_split_before(par[start:m.start() + 1]): continue
    out.append(par[start:m.start(3)])
    start = m.start(3)
  out.append(par[start:])
  return out


def _paragraphs(text: str) -> Iterator[str]:
  """Lines of `text`, re-joining a line that starts in lower case onto an unfinished previous line."""
  prev = None
  for line in text.split("\n"):
    if not line.strip():
      if prev is not None: yield prev
      prev = None
      continue
    if prev is not None and line[:1].islower() and (prev.rstrip()[-1:].isalnum() or prev.rstrip().endswith(",")):
      prev = prev.rstrip() + " " + line
      continue
    if prev is not None: yield prev
    prev = line
  if prev is not None: yield prev


def clean_sentence(s: str) -> str | None:
  """The kept form of a raw sentence (NFKC, whitespace collapsed), or None when it is a fragment or has holes."""
  # a leading space or lower-case start means the subject was a template that got dropped (" wrote a review...")
  if not s or not (s[0].isupper() or s[0].isdigit() or s[0] in "\"'\u201c\u2018("): return None
  s = _WS.sub(" ", unicodedata.normalize("NFKC", s)).strip()
  if not _END_OK.search(s): return None
  if _HOLES.search(s): return None
  if s.count("(") != s.count(")") or s.count("[") != s.count("]"): return None
  n = s.count(" ") + 1
  if n < MIN_WORDS or n > MAX_WORDS: return None
  return s


def split_sentences(text: str) -> list[str]:
  """Clean sentences of one article (paragraphs = lines) or one plain-text line; deterministic."""
  if not isinstance(text, str): raise ValueError(f"text must be str, got {type(text).__name__}")
  out = []
  pars = list(_paragraphs(text))
  for k, par in enumerate(pars):
    # a heading always has text after it; this also keeps one-line (plain-text) inputs safe from the heuristic
    if k + 1 < len(pars) and _is_heading(par.strip()): continue
    if "[[" in par: par = _WIKILINK.sub(r"\1", par)
    # a paragraph that starts with whitespace lost its first words; keep that visible to clean_sentence
    lead = " " if par[:1].isspace() else ""
    for i, raw in enumerate(_split_paragraph(par.strip())):
      s = clean_sentence((lead if i == 0 else "") + raw.strip())
      if s is not None: out.append(s)
  return out


def sentence_key(s: str) -> bytes:
  """16-byte digest used for exact dedup (sentences are already NFKC + whitespace-normalised)."""
  return hashlib.blake2b(s.encode("utf-8"), digest_size=16).digest()


def split_of(s: str, fractions=(0.98, 0.01, 0.01)) -> int:
  """0 train, 1 val, 2 test from a hash of the text: a sentence lands in the same split for any corpus or limit."""
  u = int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8, person=b"studentz-split").digest(), "big")
  u /= 2.0 ** 64
  total = float(sum(fractions))
  return 0 if u < fractions[0] / total else 1 if u < (fractions[0] + fractions[1]) / total else 2


def span_crops(s: str, n: int) -> list[str]:
  """Up to n contiguous word spans of a sentence, each 50-90% of its words and at least 5, drawn from a generator seeded
  by the sentence (the same crops on every machine); sentences under 10 words give none. Extra training texts: each
  gets its own teacher vector, so the student sees more distinct (text, vector) pairs from the same articles."""
  words = s.split()
  if n <= 0 or len(words) < 10: return []
  import numpy as np
  rng = np.random.default_rng(int.from_bytes(sentence_key(s)[:8], "little"))
  lo, hi = max(5, -(-len(words) // 2)), min(len(words) - 1, (9 * len(words)) // 10)
  out = []
  for _ in range(n):
    k = int(rng.integers(lo, hi + 1))
    a = int(rng.integers(0, len(words) - k + 1))
    out.append(" ".join(words[a:a + k]))
  return out
