"""Decoder evaluation: does the text decoded from a vector mean what the vector means?

For held-out sentences of at most 32 tokens we decode z in both modes (A: the student's z_s of the sentence, B: the
teacher's z_t through the mode-B projection), let the teacher re-embed each decode, and report
`semantic_cos` = cos(z_t(x), z_t(x_hat)) next to surface scores (BLEU, token-F1, exact match) and distinct-2 (a
collapse alarm: everything decoding to the same few phrases drives it down).
"""
from __future__ import annotations
from pathlib import Path

from studentz_kernels import backend  # noqa: F401
import numpy as np
from studentz import load_models  # noqa: F401  (evaluate.load_models: the model file's loader)


def short_rows(rows: dict, max_tokens: int = 32, limit: int = 512) -> dict:
  """The held-out rows whose sentence has at most `max_tokens` tokens (BOS/EOS not counted)."""
  n_tok = rows["mask"].sum(1) - 2
  keep = np.nonzero(n_tok <= max_tokens)[0][:limit]
  per_row = {k: v for k, v in rows.items() if k != "domains"}  # "domains": a mix's domain names, not one per row
  return {**rows, **{k: (v[keep] if isinstance(v, np.ndarray) else [v[i] for i in keep]) for k, v in per_row.items()}}


def teacher_forced_scores(dec, rows: dict, z: np.ndarray, mode: str, batch_size: int) -> dict:
  """Perplexity of the reference sentences under the decoder (teacher forcing) and the mean entropy of its
  next-token distributions: low entropy with high perplexity means confidently wrong."""
  from studentz_runtime import metrics
  from tinygrad import Tensor
  from studentz import teacher_forcing
  from tinygrad import dtypes
  nll, n_tok, ent = 0.0, 0, []
  for i in range(0, len(z), batch_size):
    tok_t, mask_t = Tensor(rows["tokens"][i:i + batch_size]), Tensor(rows["mask"][i:i + batch_size])
    inp, tgt, tmask = teacher_forcing(tok_t, mask_t)
    m = Tensor.full((inp.shape[0],), 0 if mode == "a" else 1, dtype=dtypes.int32)
    logits = dec(inp, Tensor(z[i:i + batch_size]), m).float()
    lp = logits.log_softmax(-1).numpy()
    t, tm = tgt.numpy(), tmask.numpy()
    nll -= float((np.take_along_axis(lp, t[..., None].astype(np.int64), -1)[..., 0] * tm).sum())
    n_tok += int(tm.sum())
    ent.append(metrics.token_entropy(lp, tm, logits=True) * tm.sum())
  return {f"perplexity_{mode}": metrics.perplexity(nll, n_tok),
          f"token_entropy_{mode}": float(sum(ent) / max(n_tok, 1))}


def decode_metrics(models: dict, tok, rows: dict, teacher_embed, batch_size: int, samples: int = 10) -> dict:
  """Metrics for mode A and mode B (keys suffixed _a / _b) plus a few (input, output) samples per mode."""
  from studentz_runtime import metrics
  from tinygrad import Tensor
  from studentz_runtime.generate import decode
  from studentz_runtime.encode_tinygrad import encode_ids
  enc, dec, proj = models["encoder"], models["decoder"], models["proj_b"]
  refs = [tok.decode(r) for r in rows["tokens"]]
  zt = np.asarray(rows["teacher"], np.float32)
  zs = encode_ids(enc, rows["tokens"], rows["mask"], batch_size)
  zb = proj(Tensor(zt)).numpy()
  out: dict = {"decode_n": len(refs)}
  for mode, z in (("a", zs), ("b", zb)):
    out.update(teacher_forced_scores(dec, rows, z, mode, batch_size))
    hyps = []
    for i in range(0, len(z), batch_size):
      hyps += decode(dec, z[i:i + batch_size], tok, strategy="greedy", mode=0 if mode == "a" else 1)
    re = teacher_embed(hyps)
    out[f"semantic_cos_{mode}"] = float(metrics.cosine_rows(re, zt).mean())
    out[f"bleu_{mode}"] = metrics.bleu(hyps, refs)
    out[f"token_f1_{mode}"] = metrics.mean_token_f1(hyps, refs)
    out[f"exact_match_{mode}"] = metrics.exact_match(hyps, refs)
    out[f"distinct2_{mode}"] = metrics.distinct_n(hyps, 2)
    out[f"samples_{mode}"] = [{"input": r, "output": h} for r, h in zip(refs[:samples], hyps[:samples])]
  return out


def held_out_sentences(source, limit: int | None, n: int, tok, max_len: int, max_tokens: int = 32) -> list[str]:
  """The first n test-split sentences (hash split, so the same ones training held out) of at most max_tokens."""
  from studentz_corpus import prepare as corpus
  out = []
  for sent, split in corpus.build_sentences(source, limit):
    if split not in (2, "test"): continue
    ids, mask = tok.encode(sent, max_len)
    if mask.sum() - 2 <= max_tokens and ids[int(mask.sum()) - 1] == 2: out.append(sent)
    if len(out) == n: break
  return out


def text_scores(hyps: list[str], refs: list[str], z_hyp: np.ndarray, z_ref: np.ndarray) -> dict:
  from studentz_runtime import metrics
  return {"semantic_cos": float(metrics.cosine_rows(z_hyp, z_ref).mean()), "bleu": metrics.bleu(hyps, refs),
          "token_f1": metrics.mean_token_f1(hyps, refs), "exact_match": metrics.exact_match(hyps, refs),
          "distinct2": metrics.distinct_n(hyps, 2)}


def main(argv=None) -> int:
  """One-pass decoding and re-embedding correction rounds for a checkpoint with a decoder."""
  import argparse, json
  from tinygrad import Tensor
  from studentz_runtime.generate import decode, rerank_decode, student_embed_fn
  from studentz_runtime.encode_tinygrad import encode_ids
  from studentz_training.heldout import default_corpus, load_teacher
  p = argparse.ArgumentParser(description=main.__doc__)
  p.add_argument("ckpt", type=Path, help="checkpoint folder with a decoder (trained with --loss_weights.ce > 0)")
  p.add_argument("--source", type=Path, default=None, help="corpus the checkpoint was trained on (default: bundled)")
  p.add_argument("--limit", type=int, default=None, help="the run's data_limit (default: from the checkpoint)")
  p.add_argument("--teacher", default=None, help="teacher (default: the one named in the checkpoint)")
  p.add_argument("--n", type=int, default=64, help="held-out sentences (<= 32 tokens)")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--candidates", type=int, default=8)
  p.add_argument("--samples", type=int, default=10)
  p.add_argument("--json", type=Path, default=None, help="write the results here")
  args = p.parse_args(argv)
  backend.check_device()
  models, info, tok = load_models(args.ckpt)
  if "decoder" not in models: raise SystemExit("error: this checkpoint has no decoder (train with --loss_weights.ce 1)")
  enc, dec, proj = models["encoder"], models["decoder"], models["proj_b"]
  cfg = enc.cfg
  teacher = load_teacher(args.teacher or info["teacher"]["name"])
  refs = held_out_sentences(args.source or default_corpus(), args.limit or info["config"]["data_limit"] or None,
                            args.n, tok, cfg.max_len)
  zt = teacher.embed(refs, batch_size=32)
  ids, mask = tok.encode_batch(refs, cfg.max_len)
  zs = encode_ids(enc, ids, mask, cfg.batch_size)
  res: dict = {"checkpoint": str(args.ckpt), "n": len(refs), "teacher": teacher.name}
  one = {"a": decode(dec, zs, tok, mode=0), "b": decode(dec, proj(Tensor(zt)).numpy(), tok, mode=1)}
  rows = {"tokens": ids, "mask": mask}
  for m, hyps in one.items():
    res[f"one_pass_{m}"] = text_scores(hyps, refs, teacher.embed(hyps, batch_size=32), zt)
    z = zs if m == "a" else proj(Tensor(zt)).numpy()
    res[f"one_pass_{m}"].update(teacher_forced_scores(dec, rows, z, m, cfg.batch_size))
  if args.rounds < 1:
    print(json.dumps(res, indent=1))
    if args.json: args.json.write_text(json.dumps(res, indent=1))
    return 0
  # vec2text's setting: only the target vector is known; mode B conditions on it, the teacher judges candidates
  cb = rerank_decode(dec, proj(Tensor(zt)).numpy(), tok, lambda t: teacher.embed(t, batch_size=32), zt,
                     args.candidates, rounds=args.rounds, mode=1, proj=lambda c: proj(Tensor(c)).numpy())
  res["corrected_b"] = {**text_scores(cb["texts"], refs, teacher.embed(cb["texts"], batch_size=32), zt),
                        "round_cos": [r["cos"] for r in cb["rounds"]],
                        "round_new_cos": [r["new_cos"] for r in cb["rounds"]]}
  # attention-free all the way: mode A from z_s, the student encoder judges (no teacher in the loop)
  ca = rerank_decode(dec, zs, tok, student_embed_fn(enc, tok), k=args.candidates, rounds=args.rounds, mode=0)
  res["corrected_a"] = {**text_scores(ca["texts"], refs, teacher.embed(ca["texts"], batch_size=32), zt),
                        "round_student_cos": [r["cos"] for r in ca["rounds"]]}
  res["samples"] = [{"input": r, "mode_a": a, "mode_b": b, "corrected_b": c}
                    for r, a, b, c in zip(refs, one["a"], one["b"], cb["texts"])][:args.samples]
  print(json.dumps(res, indent=1))
  if args.json: args.json.write_text(json.dumps(res, indent=1))
  return 0


if __name__ == "__main__":
  import sys
  sys.exit(main())
