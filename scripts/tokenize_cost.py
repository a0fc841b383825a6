"""What the student's from-text path costs on the CPU per sentence at L=128, with and without its two shortcuts.

  python scripts/tokenize_cost.py                      # writes results/cpu_tokenize_cost.json and prints each figure

Paths, each timed on the same texts: `raw` (the full `tokenizers` encode_batch, offsets and NFKC included: what the
wrapper would call without its shortcuts), `no_shortcuts` (raw, then the wrapper's layout), `content` (the wrapper's
Rust part: ASCII texts through a copy without the normaliser, no offsets) and `wrapper` (StudentTokenizer.encode_batch:
content plus the layout). Texts: the bench's (`python -m bench teacher
encode`: one filler sentence of L-2 tokens, repeated) and real ones (STS-B sentences joined into passages of at least L
tokens, cut to L). Each path runs with the Rust tokenizer spreading a batch over the cores (its default) and on one
thread (TOKENIZERS_PARALLELISM=false). The paths run in turns, a figure is the median over rounds of microseconds per
sentence: wall time, and CPU time of the whole process (all threads; steadier than wall time on a shared CPU).
"""
from __future__ import annotations
import argparse, itertools, json, os, platform, statistics, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def no_shortcuts_encode_batch(tok, texts, max_len: int):
  """StudentTokenizer.encode_batch without its two shortcuts (every text normalised, offsets tracked): the baseline."""
  from studentz_corpus.tokenizer import _check_text, pack_rows
  encs = tok.backend.encode_batch([_check_text(t, "every text") for t in texts], add_special_tokens=False)
  ids, mask, _ = pack_rows([e.ids for e in encs], max_len)
  return ids, mask


def real_passages(tok, n: int, L: int) -> list[str]:
  """n passages of consecutive STS-B sentences, each at least L - 2 content tokens."""
  from bench.speed import real_sentences
  sents = real_sentences(4 * n * L // 8) or ["A plain sentence of a few words, for want of STS-B."]
  out, cur = [], []
  for s in itertools.cycle(sents):
    cur.append(s)
    if len(tok.backend.encode(" ".join(cur), add_special_tokens=False).ids) >= L - 2:
      out.append(" ".join(cur))
      cur = []
      if len(out) == n: return out


def paths(tok, texts, L) -> dict:
  return {"raw": lambda: tok.backend.encode_batch(texts, add_special_tokens=False),
          "no_shortcuts": lambda: no_shortcuts_encode_batch(tok, texts, L),
          "content": lambda: tok._content_ids(texts),
          "wrapper": lambda: tok.encode_batch(texts, L)}


def measure(fns: dict, n: int, rounds: int) -> dict:
  wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
  for f in fns.values(): f()  # warm-up: BPE caches, the ASCII copy of the tokenizer
  for _ in range(rounds):
    for k, f in fns.items():
      w, c = time.perf_counter(), time.process_time()
      f()
      wall[k].append(time.perf_counter() - w)
      cpu[k].append(time.process_time() - c)
  us = lambda xs: round(statistics.median(xs) / n * 1e6, 2)
  return {k: {"wall_us_per_sentence": us(wall[k]), "cpu_us_per_sentence": us(cpu[k])} for k in fns}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--L", type=int, default=128)
  p.add_argument("--n", type=int, default=512, help="texts per call (the bench's --teacher-n)")
  p.add_argument("--rounds", type=int, default=15)
  p.add_argument("--json", type=Path, default=ROOT / "results" / "cpu_tokenize_cost.json")
  args = p.parse_args(argv)
  from bench.speed import bench_tokenizer, teacher_texts
  tok = bench_tokenizer(16000)
  sets = {"bench": teacher_texts(args.L, args.n), "real": real_passages(tok, args.n, args.L)}
  for name, texts in sets.items():  # the figures below are of identical outputs
    assert all(np.array_equal(a, b) for a, b in zip(no_shortcuts_encode_batch(tok, texts, args.L),
                                                     tok.encode_batch(texts, args.L))), name
  out = {"command": "python " + " ".join([f"scripts/{Path(__file__).name}", *(argv or sys.argv[1:])]),
         "L": args.L, "n": args.n, "rounds": args.rounds, "cpus": os.cpu_count(), "machine": platform.processor()
         or platform.machine(), "tokenizers": __import__("tokenizers").__version__, "vocab": tok.vocab_size,
         "tokens_per_text": {k: float(np.mean(tok.token_counts(v))) for k, v in sets.items()}, "results": {}}
  for mode, env in (("parallel", None), ("one_thread", "false")):
    os.environ.pop("TOKENIZERS_PARALLELISM", None) if env is None else os.environ.update(TOKENIZERS_PARALLELISM=env)
    for name, texts in sets.items():
      r = out["results"][f"{mode}/{name}"] = measure(paths(tok, texts, args.L), args.n, args.rounds)
      print(f"{mode:10s} {name:5s} " + " ".join(f"{k}={v['wall_us_per_sentence']}us(cpu {v['cpu_us_per_sentence']})"
                                              for k, v in r.items()), flush=True)
  args.json.parent.mkdir(parents=True, exist_ok=True)
  args.json.write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
