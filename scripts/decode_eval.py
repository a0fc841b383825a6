"""Decoder fidelity per domain on held-out texts, on the CPU: one-pass greedy (modes A and B), the repetition controls
and the re-embedding correction (rerank over rounds, scored after each round), each scored by semantic cos (the
teacher re-embeds the decode), BLEU, token-F1 and time.

  python -m studentz_corpus prepare --source data/everyday-mix.json --out /tmp/mixd \\
    --tokenizer models/default/tokenizer.json      # the whole mix: a --limit would hold other held-out rows
  python scripts/decode_eval.py --data /tmp/mixd --per-domain 16 --json results/cpu_decode_eval_rounds.json
  python scripts/decode_eval.py --data /tmp/mixd --samples 10 --configs a_greedy,b_greedy --samples-md samples.md

Texts: the first test-split rows of each domain (scripts/heldout_eval.py) of at most --max-tokens student tokens.
Mode A decodes the student's z of each text, mode B the teacher's vector (the model's mode-B projection). Semantic cos
is cos(teacher(x), teacher(decode)) with the numpy teacher; "overall" pools every sentence (BLEU over the pooled
corpus), "domain_mean" averages the domains. ms_per_sentence: the decode alone (rerank: its candidates' encodes too;
a correction round: all rounds up to it), one batch per domain on the numpy engine. --samples N keeps each domain's
first N texts with their decodes (not picked: good and bad alike).
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PREPARE = ("python -m studentz_corpus prepare --source data/everyday-mix.json --out /tmp/mixd "
           "--tokenizer models/default/tokenizer.json")
# (name, mode, decode options): one pass and each control alone, then the correction: the rerank with its default
# candidates (16) for up to 3 rounds (later rounds also search around the best text: edits.py), each round's best scored
# (results name_round1 .. name_round3); _teacher: the teacher judges the candidates (it is also the scorer of
# semantic cos: BLEU and token-F1 are the independent figures)
CONFIGS = [("a_greedy", "a", {}), ("b_greedy", "b", {}),
           ("a_no_repeat_ngram3", "a", {"no_repeat_ngram": 3}), ("b_no_repeat_ngram3", "b", {"no_repeat_ngram": 3}),
           ("a_repetition_penalty1.2", "a", {"repetition_penalty": 1.2}),
           ("b_repetition_penalty1.2", "b", {"repetition_penalty": 1.2}),
           ("a_correct16", "a", {"strategy": "rerank", "rerank": 16, "rounds": 3}),
           ("b_correct16", "b", {"strategy": "rerank", "rerank": 16, "rounds": 3}),
           ("a_correct16_teacher", "a", {"strategy": "rerank", "rerank": 16, "rounds": 3, "judge": "teacher"}),
           ("b_correct16_teacher", "b", {"strategy": "rerank", "rerank": 16, "rounds": 3, "judge": "teacher"})]


def short_texts(data_dir, tok, per_domain: int, max_tokens: int, max_len: int, split: str = "test") -> dict:
  """{domain: up to per_domain held-out texts of at most max_tokens student tokens, in corpus order}."""
  from heldout_eval import heldout_texts
  out = {}
  for name, texts in heldout_texts(data_dir, 10 ** 9, split).items():
    _, mask = tok.encode_batch(texts, max_len) if texts else (None, np.zeros((0, 1)))
    keep = [t for t, n in zip(texts, mask.sum(1) - 2) if n <= max_tokens and t.strip()]
    if keep: out[name] = keep[:per_domain]
  return out


def scores(hyps, refs, t_hyp, t_ref, seconds: float) -> dict:
  from studentz_runtime import metrics
  return {"n": len(refs), "semantic_cos": round(float(metrics.cosine_rows(t_hyp, t_ref).mean()), 4),
          "bleu": round(metrics.bleu(hyps, refs), 2), "token_f1": round(metrics.mean_token_f1(hyps, refs), 2),
          "ms_per_sentence": round(1000 * seconds / max(len(refs), 1), 1)}


def decode_rounds(model, z: np.ndarray, mode: str, opts: dict) -> list[tuple[list[str], float]]:
  """(texts, seconds since the start) after each round: one for a plain decode, `rounds` for the correction."""
  if opts.get("strategy") != "rerank":
    t0 = time.perf_counter()
    hyps = model.decode(z, **opts) if mode == "a" else model.decode_from_teacher(z, **opts)
    return [(hyps, time.perf_counter() - t0)]
  from studentz_runtime import blas_threads, decoding
  with blas_threads.limit(1):  # as StudentZ.decode runs the numpy engine
    zc = z if mode == "a" else model._proj_b(z)
    judge = model._teacher_embed if opts.get("judge") == "teacher" else model.encode
    res = decoding.rerank_decode(model.models["decoder"], zc, model.tokenizer, judge, z, opts["rerank"],
                                 mode=int(mode == "b"), rounds=opts["rounds"], seed=opts.get("seed", 0),
                                 proj=model._proj_b if mode == "b" else None,
                                 fluency_weight=opts.get("fluency"))
  return [(r["texts"], r["seconds"]) for r in res["rounds"]]


def run_config(model, teacher, texts: dict, t_ref: dict, z_a: dict, mode: str, opts: dict, n_samples: int) -> list:
  """Scores per domain, pooled ("overall") and averaged ("domain_mean"): one dict, or one per correction round."""
  per_dom = {dom: decode_rounds(model, z_a[dom] if mode == "a" else t_ref[dom], mode, opts) for dom in texts}
  out = []
  for r in range(len(next(iter(per_dom.values())))):
    res, all_h, all_r, all_th, all_tr, total_s = {}, [], [], [], [], 0.0
    for dom, refs in texts.items():
      hyps, secs = per_dom[dom][r]
      th = teacher.embed(hyps)
      res[dom] = scores(hyps, refs, th, t_ref[dom], secs)
      res[dom]["samples"] = [{"input": x, "output": h} for x, h in zip(refs[:n_samples], hyps[:n_samples])]
      all_h, all_r, total_s = all_h + hyps, all_r + refs, total_s + secs
      all_th.append(th), all_tr.append(t_ref[dom])
    res["overall"] = scores(all_h, all_r, np.concatenate(all_th), np.concatenate(all_tr), total_s)
    res["domain_mean"] = {k: round(float(np.mean([res[d][k] for d in texts])), 4)
                          for k in ("semantic_cos", "bleu", "token_f1", "ms_per_sentence")}
    out.append(res)
  return out


def samples_markdown(results: dict, texts: dict, n: int) -> str:
  """Per domain, its first n held-out texts and each configuration's decode of them, verbatim (code spans)."""
  def cell(t: str) -> str: return "`" + " ".join(t.split()).replace("`", "'").replace("|", "\\|") + "`"
  names = list(results)
  lines = []
  for dom in texts:
    lines += [f"**{dom}**", "", "| held-out text | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for i, ref in enumerate(texts[dom][:n]):
      outs = [cell(results[c][dom]["samples"][i]["output"]) for c in names]
      lines.append(f"| {cell(ref)} | " + " | ".join(outs) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True, help="a prepared mix folder (python -m studentz_corpus prepare)")
  ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  ap.add_argument("--per-domain", type=int, default=64, help="held-out texts per domain (default 64)")
  ap.add_argument("--split", choices=["test", "val"], default="test",
                  help="held-out split (default test); val: for choosing decoding settings without reading test")
  ap.add_argument("--max-tokens", type=int, default=32, help="longest text kept, in student tokens (default 32)")
  ap.add_argument("--configs", default=None, help="comma-separated subset of: " + ", ".join(c[0] for c in CONFIGS))
  ap.add_argument("--json", default=None, help="write the results here")
  ap.add_argument("--fluency", type=float, default=None,
                  help="the correction's weight on the decoder's log-probability of a candidate (default "
                       "decoding.FLUENCY; 0: the judge's cosine alone)")
  ap.add_argument("--rounds", type=int, default=None,
                  help="correction rounds (default 3; each round's figures are reported)")
  ap.add_argument("--rerank", type=int, default=None, help="the correction's candidates decoded a round (default 16)")
  ap.add_argument("--samples", type=int, default=3,
                  help="decodes kept per domain and configuration: the domain's first held-out texts (default 3)")
  ap.add_argument("--seed", type=int, default=0, help="the correction's sampling seed (default 0): rerun with others "
                  "to see how much of a difference between two runs sampling alone makes")
  ap.add_argument("--samples-md", default=None,
                  help="also write the samples as markdown tables, one per domain (original, then each decode)")
  a = ap.parse_args(argv)
  from studentz import StudentZ
  from teacher.numpy_model import load_teacher
  model = StudentZ.load(a.ckpt, engine="numpy")
  teacher = load_teacher(model.info["teacher"]["name"])
  texts = short_texts(a.data, model.tokenizer, a.per_domain, a.max_tokens, model.max_len, a.split)
  t_ref = {d: teacher.embed(tx) for d, tx in texts.items()}
  z_a = {d: model.encode(tx) for d, tx in texts.items()}
  want = set(a.configs.split(",")) if a.configs else None
  out = {"command": "python scripts/decode_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
         "data_command": PREPARE,
         "card": "CPU 2-core", "engine": "numpy", "checkpoint": a.ckpt or "models/default", "data": str(a.data),
         "split": a.split, "max_tokens": a.max_tokens, "n": {d: len(t) for d, t in texts.items()}, "results": {}}
  for name, mode, opts in CONFIGS:
    if want and name not in want: continue
    t0 = time.perf_counter()
    if opts.get("strategy") == "rerank":
      given = {"fluency": a.fluency, "rounds": a.rounds, "rerank": a.rerank}
      opts = {**opts, "seed": a.seed, **{k: v for k, v in given.items() if v is not None}}
    rounds = run_config(model, teacher, texts, t_ref, z_a, mode, opts, a.samples)
    for r, res in enumerate(rounds, 1):
      key = f"{name}_round{r}" if len(rounds) > 1 else name
      out["results"][key] = res
      o = res["overall"]
      print(f"{key:>26}  cos {o['semantic_cos']:.3f}  BLEU {o['bleu']:5.1f}  F1 {o['token_f1']:5.1f}  "
            f"{o['ms_per_sentence']:6.1f} ms/sent  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
  if a.samples_md: Path(a.samples_md).write_text(samples_markdown(out["results"], texts, a.samples))
  if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
