"""Word edits of the best decode so far: the correction rounds' local search, judged by re-embedding.

Decoding again from a corrected condition mostly gives back the texts a round already had; editing the best text moves
it toward the target a word at a time. Each word of it is deleted, replaced by one of the decoder's best single-token
words at its place, or preceded by one of them, and a word is appended at its end: the decoder reads the text teacher-
forced from the z being decoded, so the words it proposes fit that meaning. The judge re-embeds the
edits beside the round's decoded candidates; the round keeps the closest, so its cosine never falls.
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import EOS, PAD
from studentz_runtime.fluency import forced_inputs
from studentz_runtime.logits import _mask_specials, shortlist

ALTERNATIVES = 6  # replacements tried per word: the decoder's best single-token words there
INSERTIONS = 3  # words tried before each word and after the last
MAX_WORDS = 64  # words edited per text at most: the candidates grow with the words, the judge's cost with them
_STARTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def word_starts(tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(starts, firsts), bool over the vocabulary: tokens that begin a word after another (a byte-level BPE's space mark,
  or punctuation), and tokens that can begin a text (a letter first, no space mark)."""
  backend = tokenizer.backend
  if id(backend) not in _STARTS:
    names = [backend.id_to_token(i) or "" for i in range(backend.get_vocab_size())]
    marked = np.array([n.startswith("\u0120") for n in names])  # the mark is a letter to str.isalpha
    punct = np.array([n != "" and not any(c.isalnum() for c in n) for n in names])
    _STARTS[id(backend)] = marked | punct, ~marked & np.array([n[:1].isalpha() for n in names])
  return _STARTS[id(backend)]


def forced_shortlists(decoder, z: np.ndarray, mode, ids: list[list[int]], m: int) -> np.ndarray:
  """The decoder's m best token ids (N, T + 1, m) at each position of each text teacher-forced (ids without BOS/EOS;
  position t predicts token t, the last the one after the text), specials left out."""
  N, T = len(ids), max(len(x) for x in ids)
  forced = forced_inputs(ids, T + 1)[0]
  state = decoder.new_state(N).reset(z, mode)
  out = np.zeros((N, T + 1, m), np.int32)
  for t in range(T + 1):
    if getattr(state, "shortlist_on_device", False):
      out[:, t] = state.step_top(forced[:, t], None, m)[1]
    else:
      out[:, t] = shortlist(_mask_specials(state.step(forced[:, t])), m, slice(0))[1]
  return out


def _spans(x: list[int], starts: np.ndarray) -> list[tuple[int, int]]:
  """(first, end) token index of each word of x."""
  heads = [p for p in range(len(x)) if p == 0 or starts[x[p]]][:MAX_WORDS]
  return list(zip(heads, heads[1:] + [len(x)]))


def text_edits(x: list[int], top: np.ndarray, starts: np.ndarray, firsts: np.ndarray) -> list[list[int]]:
  """Every one-word edit of x (token ids) from the decoder's shortlist `top` (len(x) + 1, m) of each position; no
  edit puts a word beside itself ("will will"): the judge, close to a bag of words, barely tells such a text apart."""
  out = []
  spans = _spans(x, starts)
  words = [x[p:e] for p, e in spans]
  for k, (p, e) in enumerate(spans):
    fits = [int(a) for a in top[p] if (starts[a] or p == 0 and firsts[a]) and a != EOS]
    before, after = words[k - 1] if k else None, words[k + 1] if k + 1 < len(words) else None
    out += [x[:p] + [a] + x[e:] for a in [a for a in fits if [a] not in (words[k], before, after)][:ALTERNATIVES]]
    if len(spans) > 1 and before != after: out.append(x[:p] + x[e:])
    if p: out += [x[:p] + [a] + x[p:] for a in [a for a in fits if starts[a] and [a] not in (before, words[k])]
                                                [:INSERTIONS]]
  n = len(x)
  last = words[-1] if words else None
  out += [x + [int(a)] for a in [a for a in top[n] if starts[a] and a != EOS and [a] != last][:INSERTIONS]]
  return out


def candidates(decoder, z: np.ndarray, mode, tokenizer, texts: list[str], max_tokens: int) -> list[np.ndarray]:
  """The one-word edits of each of texts (decoded from z, (N, D)) as the strategies hand decodes over: int32 ids
  (n, T), EOS then PAD after each; an empty text gets none (0 rows)."""
  starts, firsts = word_starts(tokenizer)
  ids = [tokenizer.backend.encode(t, add_special_tokens=False).ids[:max_tokens] for t in texts]
  keep = [i for i, x in enumerate(ids) if x]
  out = [np.zeros((0, 1), np.int32) for _ in texts]
  if not keep: return out
  # room for the shortlist's tokens that cannot stand as a word there
  m = min(4 * (ALTERNATIVES + INSERTIONS), decoder.cfg.vocab_size)
  top = forced_shortlists(decoder, z[keep], np.broadcast_to(np.asarray(mode), (len(texts),))[keep],
                          [ids[i] for i in keep], m)
  for j, i in enumerate(keep):
    out[i] = _padded([e[:max_tokens] for e in text_edits(ids[i], top[j], starts, firsts)])
  return out


def _padded(rows: list[list[int]]) -> np.ndarray:
  ids = np.full((len(rows), max(map(len, rows), default=0) + 1), PAD, np.int32)
  for r, e in enumerate(rows): ids[r, :len(e) + 1] = e + [EOS]
  return ids
