"""`python train.py --eval CKPT`: a checkpoint's metric table (val_cos, val_mse, retrieval P@10 on held-out text, STS-B
Spearman of student and teacher, decode metrics when it has a decoder), as text or one JSON object.

heldout.py's helpers (held-out rows, encoding, the teacher loader) are used through the module, so a test's fake
teacher set on `heldout` applies here too.
"""
import json, os, sys
from pathlib import Path

from studentz_training import heldout


def run_eval(ckpt: Path, json_out: bool, stsb_limit: int = 0, decode_limit: int = 512,
             data_dir: Path | None = None, split: str = "test") -> int:
  """val_cos / val_mse / retrieval P@10 on held-out sentences (the first 4,096 of `split`), STS-B Spearman of student
  and teacher. data_dir: the data folder whose split to use instead of the checkpoint's own (same tokenizer
  required)."""
  from studentz_corpus import prepare as corpus
  from studentz_runtime import metrics
  from studentz import CheckpointError
  from studentz_training import evaluate
  try:
    models, info, tok = evaluate.load_models(ckpt)  # loaded once: the decode metrics below reuse them
    enc = models["encoder"]
    cfg = enc.cfg
    data_dir, rows = _heldout_rows(ckpt, info, tok, data_dir, split)
  except (CheckpointError, ValueError, OSError, KeyError, corpus.TeacherCacheIncomplete) as e:
    # a bad config.json, a moved or deleted data folder, a missing teacher cache: one line, not a traceback
    msg = f"{ckpt}/config.json lacks {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
    print(f"error: {msg}", file=sys.stderr)
    return 2
  loaded: dict = {}

  def teacher():  # loaded at most once, and only if the STS-B cache misses or decode metrics need it
    if "t" not in loaded: loaded["t"] = heldout.load_teacher(info["teacher"]["name"])
    return loaded["t"]
  zs, zt = heldout.embed_split(enc, rows, cfg)
  first = rows["domain"] == 0  # retrieval among the first domain's sentences (Wikipedia in the default mix)
  res = {"checkpoint": str(ckpt), "step": info.get("step"), "teacher": info["teacher"]["name"],
         **heldout.vector_metrics(zs, zt, rows, "val"), "eval_n": len(zs), "eval_split": split,
         "retrieval_domain": rows["domains"][0],
         "retrieval_p_at_10": metrics.retrieval_overlap_at_k(zs[first], zt[first], k=10) if first.sum() > 10 else None}
  stsb = heldout.default_stsb()
  if stsb is not None: res.update(_stsb_metrics(stsb, enc, tok, info, data_dir, stsb_limit, teacher))
  if decode_limit > 0 and "decoder" in models:
    res.update(run_decode_eval(models, tok, info, rows, decode_limit, teacher))
  _print_results(res, json_out)
  return 0


def _heldout_rows(ckpt: Path, info: dict, tok, data_dir: Path | None, split: str) -> tuple[Path, dict]:
  """The data folder to evaluate on and its held-out rows; ValueError when it is missing, foreign or empty."""
  from studentz_corpus import prepare as corpus
  data_dir = Path(data_dir or info["data_dir"])
  if not info["data_dir"] and data_dir == Path(""):
    raise ValueError(f"{ckpt} names no data folder (a shipped model): give one with --data-dir")
  if data_dir != Path(info["data_dir"]) and corpus.open_data_dir(data_dir).meta.get("tokenizer_fingerprint") != \
     tok.fingerprint:
    raise ValueError(f"--data-dir {data_dir} was tokenized with another tokenizer than {ckpt}'s")
  rows = heldout.domain_rows(data_dir, split, info["teacher"]["fingerprint"], 4096)
  if not len(rows["index"]): raise ValueError(f"{data_dir} has no {split} sentences")
  return data_dir, rows


def _stsb_metrics(stsb, enc, tok, info: dict, data_dir: Path, stsb_limit: int, teacher) -> dict:
  """STS-B Spearman of the student and of the teacher on the test pairs, and their ratio when both exist."""
  from studentz_runtime import metrics
  cfg = enc.cfg
  res: dict = {}
  s1, s2, scores = metrics.load_stsb(stsb)
  if stsb_limit > 0: s1, s2, scores = s1[:stsb_limit], s2[:stsb_limit], scores[:stsb_limit]
  res["stsb_n"] = len(s1)
  ids1, m1 = tok.encode_batch(s1, cfg.max_len)
  ids2, m2 = tok.encode_batch(s2, cfg.max_len)
  e1, e2 = heldout.encode_ids(enc, ids1, m1, cfg.batch_size), heldout.encode_ids(enc, ids2, m2, cfg.batch_size)
  res["stsb_spearman"] = metrics.stsb_spearman(e1, e2, scores)
  t1, t2 = teacher_stsb_vectors(info, s1, s2, data_dir, teacher)
  res["teacher_stsb_spearman"] = metrics.stsb_spearman(t1, t2, scores) if t1 is not None else None
  if t1 is not None: res["stsb_ratio"] = res["stsb_spearman"] / res["teacher_stsb_spearman"]
  return res


def _print_results(res: dict, json_out: bool) -> None:
  """One JSON object, or one aligned line per metric with decode samples indented below their key."""
  if json_out:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      if k.startswith("samples_"):
        print(f"{k}:")
        for s in v: print(f"    {s['input']!r}\n ->  {s['output']!r}")
      else:
        print(f"{k:>24}  {v:.4f}" if isinstance(v, float) else f"{k:>24}  {v}")


def run_decode_eval(models: dict, tok, info: dict, rows: dict, limit: int, teacher=None) -> dict:
  """Mode A / mode B decode metrics on held-out sentences of at most 32 tokens (the teacher re-embeds decodes)."""
  from studentz_training import evaluate
  try:
    t = teacher() if teacher is not None else heldout.load_teacher(info["teacher"]["name"])
  except Exception as e:
    print(f"warning: teacher unavailable ({e}); no decode metrics", file=sys.stderr)
    return {}
  short = evaluate.short_rows(rows, 32, limit)
  return evaluate.decode_metrics(models, tok, short, lambda texts: t.embed(texts, batch_size=64),
                                 models["encoder"].cfg.batch_size)


def teacher_stsb_vectors(info: dict, s1, s2, data_dir: Path, teacher=None):
  """The teacher's STS-B test vectors, computed once per teacher and cached next to the data."""
  import numpy as np
  cache = data_dir / f"stsb-test-{info['teacher']['fingerprint'][:12]}-{len(s1)}.npz"
  if cache.is_file():
    z = np.load(cache)
    return z["a"], z["b"]
  try:
    t = teacher() if teacher is not None else heldout.load_teacher(info["teacher"]["name"])
  except Exception as e:
    print(f"warning: teacher unavailable ({e}); teacher_stsb_spearman is null", file=sys.stderr)
    return None, None
  a, b = t.embed(list(s1), progress=True), t.embed(list(s2), progress=True)
  tmp = cache.with_suffix(".tmp.npz")
  np.savez(tmp, a=a, b=b)
  os.replace(tmp, cache)
  return a, b
