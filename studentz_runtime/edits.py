"""Word edits of the best decode so far: the correction rounds' local search, judged by re-embedding.

Decoding again from a corrected condition mostly gives back the texts a round already had; editing the best text moves
it toward the target a word at a time. Each word of it is deleted, replaced by one of the decoder's best single-token
words at its place, or preceded by one of them, and a word is appended at its end: the decoder reads the text teacher-
forced from the z being decoded, so the words it proposes fit that meaning. A one-word edit cannot repair the words
after it, so the decoder also rewrites the rest of the text greedily after each word and after each word's best
replacements (regenerations). The judge re-embeds all of these beside the round's decoded candidates; the edits that
improved on the best text are then tried together (combine). The round keeps the best, so its score never falls.
"""
from __future__ import annotations

import numpy as np
from studentz_corpus.tokenizer import BOS, EOS, PAD
from studentz_runtime.fluency import forced_inputs
from studentz_runtime.logits import _mask_specials, shortlist

ALTERNATIVES = 6  # replacements tried per word: the decoder's best single-token words there
INSERTIONS = 3  # words tried before each word and after the last
REWRITES = 2  # a word's best replacements the decoder continues the text after (besides the word itself)
MAX_WORDS = 64  # words edited per text at most: the candidates grow with the words, the judge's cost with them
_STARTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
Move = tuple[int, int, list[int]]  # (p, e, new): the edited text is x[:p] + new + x[e:]


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


def text_moves(x: list[int], top: np.ndarray, starts: np.ndarray, firsts: np.ndarray) -> list[Move]:
  """Every one-word edit of x (token ids) from the decoder's shortlist `top` (len(x) + 1, m) of each position; no
  edit puts a word beside itself ("will will"): the judge, close to a bag of words, barely tells such a text apart."""
  out = []
  spans = _spans(x, starts)
  words = [x[p:e] for p, e in spans]
  for k, (p, e) in enumerate(spans):
    fits = [int(a) for a in top[p] if (starts[a] or p == 0 and firsts[a]) and a != EOS]
    before, after = words[k - 1] if k else None, words[k + 1] if k + 1 < len(words) else None
    out += [(p, e, [a]) for a in [a for a in fits if [a] not in (words[k], before, after)][:ALTERNATIVES]]
    if len(spans) > 1 and before != after: out.append((p, e, []))
    if p: out += [(p, p, [a]) for a in [a for a in fits if starts[a] and [a] not in (before, words[k])][:INSERTIONS]]
  n = len(x)
  last = words[-1] if words else None
  out += [(n, n, [int(a)]) for a in [a for a in top[n] if starts[a] and a != EOS and [a] != last][:INSERTIONS]]
  return out


def edited(x: list[int], moves: list[Move]) -> list[list[int]]:
  """x with each of moves made, one text a move."""
  return [x[:p] + new + x[e:] for p, e, new in moves]


def combine(x: list[int], moves: list[Move], gains: np.ndarray, starts: np.ndarray) -> list[list[int]]:
  """The moves that improved x (gain > 0) made together: in order of gain, each whose place no better one touches;
  the best two and, where more fit, all of them. A text that would put a word beside itself loses its last moves."""
  taken: list[Move] = []
  for g in np.argsort(-gains, kind="stable"):
    if gains[g] <= 0: break
    p, e, _ = moves[g]
    if all(max(e, p + 1) <= q or max(f, q + 1) <= p for q, f, _ in taken): taken.append(moves[g])
  out = []
  for n in sorted({2, len(taken)}) if len(taken) > 1 else []:
    y = next((y for y in (_applied(x, taken[:m]) for m in range(n, 1, -1)) if not _repeats(y, starts)), None)
    if y is not None and y not in out: out.append(y)
  return out


def _applied(x: list[int], moves: list[Move]) -> list[int]:
  for p, e, new in sorted(moves, key=lambda m: -m[0]): x = x[:p] + new + x[e:]  # right to left: places stay valid
  return x


def _repeats(x: list[int], starts: np.ndarray) -> bool:
  words = [x[p:e] for p, e in _spans(x, starts)]
  return any(a == b for a, b in zip(words, words[1:]))


def continuations(decoder, z: np.ndarray, mode, prefixes: list[list[int]], T: int) -> list[list[int]]:
  """Each prefix (token ids, no BOS) teacher-forced, then continued greedily from its row of z (N, D) until EOS or T
  tokens in all: one decoder state of N rows, one step a position."""
  n = N = len(prefixes)
  if not n: return []
  modes = np.broadcast_to(np.asarray(mode), (N,))
  if hasattr(decoder, "logits"):  # tinygrad: a state (a compiled step) per row count, so few counts
    N = max(64, 1 << (N - 1).bit_length())
    z, modes = (np.concatenate([a, np.repeat(a[:1], N - n, 0)]) for a in (np.asarray(z), modes))
    prefixes = prefixes + [[]] * (N - n)
  state = decoder.new_state(N).reset(z, modes)
  out, live = [list(p) for p in prefixes], np.ones(N, bool)
  feed = np.full(N, BOS, np.int32)
  for t in range(T):
    if getattr(state, "shortlist_on_device", False): pred = state.step_top(feed, None, 1)[1][:, 0]
    else: pred = _mask_specials(state.step(feed)).argmax(-1)
    for i, p in enumerate(prefixes):
      if t < len(p): feed[i] = p[t]
      elif live[i] and pred[i] != EOS: out[i].append(int(pred[i])); feed[i] = pred[i]
      else: live[i], feed[i] = False, PAD
    if not live.any(): break
  return out[:n]


def regenerations(decoder, z: np.ndarray, mode, texts: list[tuple[list[int], list[Move]]], T: int
                  ) -> list[list[list[int]]]:
  """Rewrites of each text (token ids with its moves, from candidates()) by the decoder: the text up to the end of a
  word, or up to a word replaced by one of its REWRITES best replacements, continued greedily from its row of z.
  One edit then lets the rest of the text follow it. New texts only, each once."""
  prefixes, owner = [], []
  for i, (x, moves) in enumerate(texts):
    if not x: continue
    ends = sorted({e for p, e, new in moves if new and e > p} - {len(x)})  # a word's end: its replacements' e
    got = [x[:e] for e in ends]
    count: dict[int, int] = {}
    for p, e, new in moves:
      if new and e > p and count.get(p, 0) < REWRITES: got.append(x[:p] + new); count[p] = count.get(p, 0) + 1
    prefixes += got
    owner += [i] * len(got)
  done = continuations(decoder, z[owner], np.broadcast_to(np.asarray(mode), (len(z),))[owner], prefixes, T)
  out: list[list[list[int]]] = [[] for _ in texts]
  for i, y in zip(owner, done):
    if y != texts[i][0] and y not in out[i]: out[i].append(y)
  return out


def candidates(decoder, z: np.ndarray, mode, tokenizer, texts: list[str], max_tokens: int
               ) -> list[tuple[list[int], list[Move]]]:
  """Each of texts (decoded from z, (N, D)) as token ids with its one-word edits as moves (none for an empty text);
  padded() turns them into the ids the strategies hand decodes over."""
  starts, firsts = word_starts(tokenizer)
  ids = [tokenizer.backend.encode(t, add_special_tokens=False).ids[:max_tokens] for t in texts]
  keep = [i for i, x in enumerate(ids) if x]
  out = [(x, []) for x in ids]
  if not keep: return out
  # room for the shortlist's tokens that cannot stand as a word there
  m = min(4 * (ALTERNATIVES + INSERTIONS), decoder.cfg.vocab_size)
  top = forced_shortlists(decoder, z[keep], np.broadcast_to(np.asarray(mode), (len(texts),))[keep],
                          [ids[i] for i in keep], m)
  for j, i in enumerate(keep): out[i] = (ids[i], text_moves(ids[i], top[j], starts, firsts))
  return out


def padded(rows: list[list[int]], max_tokens: int) -> np.ndarray:
  """Token id lists as int32 (n, T): each cut to max_tokens, then EOS, then PAD."""
  rows = [r[:max_tokens] for r in rows]
  ids = np.full((len(rows), max(map(len, rows), default=0) + 1), PAD, np.int32)
  for r, e in enumerate(rows): ids[r, :len(e) + 1] = e + [EOS]
  return ids
