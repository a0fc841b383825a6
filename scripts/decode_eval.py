"""Decoder fidelity per domain on held-out texts, on the CPU: one-pass greedy (modes A and B), the repetition controls
and the re-embedding rerank, each scored by semantic cos (the teacher re-embeds the decode), BLEU, token-F1 and time.

  python -m studentz_corpus prepare --source data/everyday-mix.json --out /tmp/mixd \\
    --tokenizer models/default/tokenizer.json \\
      --limit 20000
  python scripts/decode_eval.py --data /tmp/mixd --per-domain 64 --json results/cpu_decode_eval.json

Texts: the first test-split rows of each domain (scripts/heldout_eval.py) of at most --max-tokens student tokens.
Mode A decodes the student's z of each text, mode B the teacher's vector (the model's mode-B projection). Semantic cos
is cos(teacher(x), teacher(decode)) with the numpy teacher; "overall" pools every sentence (BLEU over the pooled
corpus), "domain_mean" averages the domains. ms_per_sentence: the decode alone (rerank: its candidates' encodes too),
one batch per domain on the numpy engine.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PREPARE = ("python -m studentz_corpus prepare --source data/everyday-mix.json --out /tmp/mixd "
           "--tokenizer models/default/tokenizer.json --limit 20000")
# (name, mode, decode options): one pass and each control alone, then the rerank with its default candidates
CONFIGS = [("a_greedy", "a", {}), ("b_greedy", "b", {}),
           ("a_no_repeat_ngram3", "a", {"no_repeat_ngram": 3}), ("b_no_repeat_ngram3", "b", {"no_repeat_ngram": 3}),
           ("a_repetition_penalty1.2", "a", {"repetition_penalty": 1.2}),
           ("b_repetition_penalty1.2", "b", {"repetition_penalty": 1.2}),
           ("a_rerank8", "a", {"strategy": "rerank", "rerank": 8}),
           ("b_rerank8", "b", {"strategy": "rerank", "rerank": 8})]


def short_texts(data_dir, tok, per_domain: int, max_tokens: int, max_len: int) -> dict:
  """{domain: up to per_domain held-out texts of at most max_tokens student tokens, in corpus order}."""
  from heldout_eval import heldout_texts
  out = {}
  for name, texts in heldout_texts(data_dir, 10 ** 9).items():
    _, mask = tok.encode_batch(texts, max_len) if texts else (None, np.zeros((0, 1)))
    keep = [t for t, n in zip(texts, mask.sum(1) - 2) if n <= max_tokens and t.strip()]
    if keep: out[name] = keep[:per_domain]
  return out


def scores(hyps, refs, t_hyp, t_ref, seconds: float) -> dict:
  from studentz_runtime import metrics
  return {"n": len(refs), "semantic_cos": round(float(metrics.cosine_rows(t_hyp, t_ref).mean()), 4),
          "bleu": round(metrics.bleu(hyps, refs), 2), "token_f1": round(metrics.mean_token_f1(hyps, refs), 2),
          "ms_per_sentence": round(1000 * seconds / max(len(refs), 1), 1)}


def run_config(model, teacher, texts: dict, t_ref: dict, z_a: dict, mode: str, opts: dict) -> dict:
  res, all_h, all_r, all_th, all_tr, total_s = {}, [], [], [], [], 0.0
  for dom, refs in texts.items():
    t0 = time.perf_counter()
    hyps = model.decode(z_a[dom], **opts) if mode == "a" else model.decode_from_teacher(t_ref[dom], **opts)
    secs = time.perf_counter() - t0
    th = teacher.embed(hyps)
    res[dom] = scores(hyps, refs, th, t_ref[dom], secs)
    res[dom]["samples"] = [{"input": r, "output": h} for r, h in zip(refs[:3], hyps[:3])]
    all_h, all_r, total_s = all_h + hyps, all_r + refs, total_s + secs
    all_th.append(th), all_tr.append(t_ref[dom])
  res["overall"] = scores(all_h, all_r, np.concatenate(all_th), np.concatenate(all_tr), total_s)
  doms = [d for d in texts]
  res["domain_mean"] = {k: round(float(np.mean([res[d][k] for d in doms])), 4)
                        for k in ("semantic_cos", "bleu", "token_f1", "ms_per_sentence")}
  return res


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True, help="a prepared mix folder (python -m studentz_corpus prepare)")
  ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  ap.add_argument("--per-domain", type=int, default=64, help="held-out texts per domain (default 64)")
  ap.add_argument("--max-tokens", type=int, default=32, help="longest text kept, in student tokens (default 32)")
  ap.add_argument("--configs", default=None, help="comma-separated subset of: " + ", ".join(c[0] for c in CONFIGS))
  ap.add_argument("--json", default=None, help="write the results here")
  a = ap.parse_args(argv)
  from studentz import StudentZ
  from teacher.numpy_model import load_teacher
  model = StudentZ.load(a.ckpt, engine="numpy")
  teacher = load_teacher(model.info["teacher"]["name"])
  texts = short_texts(a.data, model.tokenizer, a.per_domain, a.max_tokens, model.max_len)
  t_ref = {d: teacher.embed(tx) for d, tx in texts.items()}
  z_a = {d: model.encode(tx) for d, tx in texts.items()}
  want = set(a.configs.split(",")) if a.configs else None
  out = {"command": "python scripts/decode_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "data_command": PREPARE,
         "card": "CPU 2-core", "engine": "numpy", "checkpoint": a.ckpt or "models/default", "data": str(a.data),
         "split": "test", "max_tokens": a.max_tokens, "n": {d: len(t) for d, t in texts.items()}, "results": {}}
  for name, mode, opts in CONFIGS:
    if want and name not in want: continue
    t0 = time.perf_counter()
    out["results"][name] = r = run_config(model, teacher, texts, t_ref, z_a, mode, opts)
    o = r["overall"]
    print(f"{name:>26}  cos {o['semantic_cos']:.3f}  BLEU {o['bleu']:5.1f}  F1 {o['token_f1']:5.1f}  "
          f"{o['ms_per_sentence']:6.1f} ms/sent  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
  if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
