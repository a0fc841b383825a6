"""Student-teacher cosine per domain on held-out texts, with the teacher run on just those texts (no corpus-wide cache):
the per-domain fidelity of any model on any machine, CPU included.

  python scripts/heldout_eval.py --data D --per-domain 200 --ckpt models/default --json out.json

The texts are the first N test-split rows of each domain of a prepared mix folder (python -m studentz_corpus
prepare --source data/everyday-mix.json); the model re-tokenizes them with its own tokenizer, so any checkpoint can be
compared on the same texts.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def heldout_texts(data_dir, per_domain: int, split: str = "test") -> dict:
  """{domain: [texts]}: the first `per_domain` rows of `split` of each domain of a prepared folder."""
  from studentz_corpus import prepare as corpus
  dd = corpus.open_data_dir(data_dir)
  idx = dd.indices(split)
  dom = np.asarray(dd.domain_of)[idx]
  return {name: dd.texts(idx[dom == d][:per_domain]) for d, name in enumerate(dd.domains) if (dom == d).any()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True, help="a prepared data folder (a mix's: one held-out set per domain)")
  ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  ap.add_argument("--per-domain", type=int, default=200, help="held-out texts per domain (default 200)")
  ap.add_argument("--split", choices=["test", "val", "train"], default="test",
                  help="held-out split (default test); train: texts the model trained on, so the gap to test is its "
                       "fit (over-fitting where it is large)")
  ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
  a = ap.parse_args(argv)
  from studentz_runtime import metrics
  from studentz import StudentZ
  from teacher import load_teacher
  texts = heldout_texts(a.data, a.per_domain, a.split)
  model = StudentZ.load(a.ckpt)
  teacher = load_teacher(model.info["teacher"]["name"])
  t0, res = time.perf_counter(), {}
  for name, tx in texts.items():
    res[f"cos_{name}"] = float(metrics.cosine_rows(model.encode(tx), teacher.embed(tx)).mean())
    print(f"{name:>16}  n={len(tx):5d}  cos {res[f'cos_{name}']:.4f}", file=sys.stderr)
  res["cos_domain_mean"] = float(np.mean([v for k, v in res.items() if k.startswith("cos_")]))
  out = {"checkpoint": a.ckpt or "models/default", "data": str(a.data), "split": a.split, "per_domain": a.per_domain,
         "n": {k: len(v) for k, v in texts.items()}, **res, "seconds": round(time.perf_counter() - t0, 1)}
  print(json.dumps(out))
  if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
