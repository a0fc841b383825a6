"""Training mixes: several text sources, each a domain with its own weight and held-out share.

A mix file is JSON: {"sources": [{"domain": "wikipedia", "path": "wikipedia/enwiki-docs.jsonl.gz"}, ...]}, one entry per
source with the fields of `Source`. A relative path is looked up beside the mix file, then in each data root
(STUDENTZ_DATA, ../shared/data, ./data). Sentences of all sources are interleaved round-robin, so a corpus limit (the
CPU profile's 2,000 sentences) still holds every domain; each domain keeps its own hash-split val/test rows, which give
the per-domain figures (val_cos_<domain>).

Opt-in augmentation (augment.py): "augment": {"lower": 0.1, "nopunct": 0.1} on a source, or at the top of the file for
every source without its own, adds that share of the source's training texts again as that variant (training rows of
the same domain, so its weight applies to them too); val and test rows stay as they are without it.
"""
from __future__ import annotations
import json, os, re, unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from studentz_corpus import augment as corpus_augment
from studentz_corpus.text import MAX_WORDS, read_texts, split_of, split_sentences

ROOT = Path(__file__).resolve().parent.parent
# data/ of a checkout, or the copy `pip install .` puts beside this package
DATA = next((p for p in (ROOT / "studentz_data", ROOT / "data") if p.is_dir()), ROOT / "data")
DEFAULT_MIX = DATA / "everyday-mix.json"
MIN_LINE_WORDS = 3  # a typed line ("where is the station?") is often shorter than a Wikipedia sentence
_WS = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Source:
  domain: str                 # short name: val_cos_<domain> in the metrics
  path: str                   # text (one per line) or JSONL with a "text" field, .gz ok
  weight: float = 1.0         # training rows per epoch as a multiple of the domain's count (0.5: a new half each epoch)
  split: str = "sentences"    # "sentences": split articles into clean sentences; "lines": each line is one text
  tag: str = ""               # lines "TAG<TAB>text": keep only those with this TAG (empty: take lines as they are)
  heldout: float = 0.01       # share of the domain's texts in each of val and test
  augment: dict = field(default_factory=dict)  # {variant: share of training texts also added as it} (augment.py)

  def check(self) -> "Source":
    if not _DOMAIN.match(self.domain): raise ValueError(f"domain must match {_DOMAIN.pattern}, got {self.domain!r}")
    if not (isinstance(self.weight, (int, float)) and 0 <= self.weight <= 100):
      raise ValueError(f"{self.domain}: weight must be a number in [0, 100], got {self.weight!r}")
    if self.split not in ("sentences", "lines"):
      raise ValueError(f"{self.domain}: split must be 'sentences' or 'lines', got {self.split!r}")
    if not (isinstance(self.heldout, (int, float)) and 0 < self.heldout <= 0.25):
      raise ValueError(f"{self.domain}: heldout must be in (0, 0.25], got {self.heldout!r}")
    return replace(self, augment=corpus_augment.check(self.augment, self.domain))  # checked and in canonical form

  @property
  def fractions(self) -> tuple: return (1 - 2 * self.heldout, self.heldout, self.heldout)


def data_roots() -> list[Path]:
  return [Path(p) for p in (os.environ.get("STUDENTZ_DATA"), ROOT.parent / "shared" / "data", DATA) if p]


def resolve(path: str, base: Path | None) -> Path:
  """A source path: absolute, beside the mix file, or under a data root (the first that exists)."""
  p = Path(path).expanduser()
  if p.is_absolute(): return p
  for root in ([base] if base else []) + data_roots():
    if (root / p).is_file(): return root / p
  raise FileNotFoundError(f"mix source {path!r} not found beside the mix file or under any data root "
                          f"({', '.join(str(r) for r in data_roots())}); set STUDENTZ_DATA or give an absolute path")


def is_mix(path) -> bool:
  return isinstance(path, (str, os.PathLike)) and str(path).endswith(".json")


def load_mix(path) -> list[Source]:
  """The sources of a mix file, paths resolved, checked; one-line ValueError / FileNotFoundError on a bad file."""
  p = Path(path)
  try: raw = json.loads(p.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
    raise ValueError(f"cannot read mix file {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
  entries = raw.get("sources") if isinstance(raw, dict) else None
  if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
    raise ValueError(f"{p}: a mix file holds {{\"sources\": [{{\"domain\": ..., \"path\": ...}}, ...]}}")
  known = set(Source.__dataclass_fields__)
  default_augment = raw.get("augment", {})
  corpus_augment.check(default_augment, f"{p}: mix-level")
  out = []
  for e in entries:
    e = {"augment": default_augment, **e}
    if unknown := set(e) - known:
      raise ValueError(f"{p}: unknown source field(s) {sorted(unknown)}; known: {sorted(known)}")
    if not isinstance(e.get("path"), str): raise ValueError(f"{p}: every source needs a \"path\" string")
    s = Source(**e).check()
    out.append(replace(s, path=str(resolve(s.path, p.parent))))
  if len({s.domain for s in out}) != len(out): raise ValueError(f"{p}: domains must be distinct")
  return out


def clean_line(s: str) -> str | None:
  """A line kept as one text: NFKC, control characters dropped, whitespace collapsed, a lone double quote at either end
  removed (WordNet quotes its examples), 3-60 words starting with a letter, digit or quote; None otherwise."""
  s = _WS.sub(" ", _CTRL.sub("", unicodedata.normalize("NFKC", s))).strip()
  if s.count('"') % 2: s = s.strip('"').strip() if s[:1] == '"' or s[-1:] == '"' else s
  n = s.count(" ") + 1
  starts_well = s[:1].isalnum() or s[:1] in "\"'\u201c\u2018" and s[1:2].isalnum()  # not a fragment like "') and"
  if not s or n < MIN_LINE_WORDS or n > MAX_WORDS or not starts_well:
    return None
  return s


def source_texts(src: Source, stats: dict) -> Iterator[tuple[str, int]]:
  """(text, split) of one source, cleaned as its `split` says; reader counts land in stats[domain]."""
  reader = read_texts(src.path)
  try:
    for text in reader:
      if src.tag:
        tag, tab, text = text.partition("\t")
        if not tab or tag != src.tag: continue
      pieces = split_sentences(text) if src.split == "sentences" else [clean_line(text)]
      for s in pieces:
        if s is not None: yield s, split_of(s, src.fractions)
  finally:
    stats[src.domain] = dict(reader.stats)


def interleave(iters: list[Iterator]) -> Iterator[tuple[int, object]]:
  """(index of the iterator, item) round-robin until every iterator is exhausted."""
  live = list(enumerate(iters))
  while live:
    nxt = []
    for i, it in live:
      item = next(it, StopIteration)
      if item is StopIteration: continue
      nxt.append((i, it))
      yield i, item
    live = nxt


def fingerprint(sources: list[Source], file_fingerprint) -> list:
  """What a data folder built from these sources depends on (weights excluded: the loader reads them at train time;
  an empty augment too, so folders built before it existed keep their key)."""
  return [{**{k: v for k, v in asdict(s).items() if k not in ("weight", "path") and (k != "augment" or v)},
           "file": file_fingerprint(s.path)} for s in sources]


def augmenter(sources: list[Source]):
  """variants(text, domain index) -> the extra training texts of a training text, per its source's augment field;
  None when no source augments. A variant is kept only where its own hash puts it in train under every source's split,
  so it can never be, or drop as a duplicate, a held-out text of any domain."""
  if not any(s.augment for s in sources): return None
  fractions = sorted({s.fractions for s in sources})
  def is_train(v: str) -> bool: return all(split_of(v, f) == 0 for f in fractions)
  return lambda text, d: corpus_augment.variants(text, sources[d].augment, is_train)
