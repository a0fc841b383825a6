"""'As typed' variants of a text (lower case, no final punctuation, one typo, a headline-like crop) and the opt-in mix
augmentation that adds them as extra training rows: {"augment": {"lower": 0.1, "crop": 0.05}} on a source (or on the
whole mix) means about that share of the source's training texts also appear as that variant.

Everything is deterministic: whether a text gets a variant, and the variant itself, come from hashes of the text.
"""
from __future__ import annotations
import hashlib, re

import numpy as np

_TRAILING = re.compile(r"[^\w]+$")  # final punctuation, closing quotes and brackets
_LETTERS = re.compile(r"[^\W\d_]{3}")


def lower(s: str) -> str:
  """All lower case."""
  return s.lower()


def nopunct(s: str) -> str:
  """Final punctuation (and closing quotes or brackets) removed."""
  return _TRAILING.sub("", s)


def lower_nopunct(s: str) -> str:
  """Lower case and no final punctuation."""
  return nopunct(s.lower())


def _rng(kind: str, s: str) -> np.random.Generator:
  return np.random.default_rng(int.from_bytes(_digest(kind, s), "little"))


def typo(s: str) -> str:
  """One swap of two adjacent letters inside one word of 4+ characters (a letter before them: never the word's first
  letter); the text itself when no word has such a pair."""
  words = s.split(" ")
  spots = [(w, i) for w, word in enumerate(words) if len(word) >= 4
           for i in range(1, len(word) - 1) if _LETTERS.fullmatch(word[i - 1:i + 2]) and word[i] != word[i + 1]]
  if not spots: return s
  w, i = spots[int(_rng("typo", s).integers(len(spots)))]
  word = words[w]
  words[w] = word[:i] + word[i + 1] + word[i] + word[i + 2:]
  return " ".join(words)


def crop(s: str) -> str:
  """The first 3-8 words (fewer than all of them), final punctuation removed: a headline-like fragment; the text
  itself when it has 3 words or fewer."""
  words = s.split()
  if len(words) <= 3: return s
  k = int(_rng("crop", s).integers(3, min(8, len(words) - 1) + 1))
  return nopunct(" ".join(words[:k])) or s


VARIANTS = {"lower": lower, "nopunct": nopunct, "lower_nopunct": lower_nopunct, "typo": typo, "crop": crop}


def _digest(kind: str, s: str) -> bytes:
  return hashlib.blake2b(s.encode("utf-8"), digest_size=8, key=kind.encode(), person=b"studentz-augment").digest()


def check(spec, where: str) -> dict:
  """A source's "augment" field, checked: {variant: share in (0, 1]}; one-line ValueError otherwise."""
  if not isinstance(spec, dict):
    raise ValueError(f"{where}: augment must be an object {{variant: share}}, got {spec!r}")
  for kind, share in spec.items():
    if kind not in VARIANTS:
      raise ValueError(f"{where}: unknown augment variant {kind!r}; known: {sorted(VARIANTS)}")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
      raise ValueError(f"{where}: augment share of {kind!r} must be a number in (0, 1], got {share!r}")
  return {k: float(v) for k, v in sorted(spec.items())}


def chosen(kind: str, s: str, share: float) -> bool:
  """Whether training text s also appears as this variant: a hash of (variant, text) below the share."""
  return int.from_bytes(_digest(kind, s), "big") / 2.0 ** 64 < share


def variants(s: str, spec: dict, is_train) -> list[str]:
  """The variants of training text s that its augment spec picks, in variant-name order; a variant equal to s, or one
  that `is_train(variant)` rejects (a text whose hash would put it in a held-out split), is left out."""
  out = []
  for kind, share in sorted(spec.items()):
    if not chosen(kind, s, share): continue
    v = VARIANTS[kind](s)
    if v != s and v not in out and is_train(v): out.append(v)
  return out
