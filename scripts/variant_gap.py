"""Student-teacher cosine per domain on held-out texts and on their 'as typed' variants (studentz_corpus/augment.py:
lower case, no final punctuation, both, one typo, a 3-8 word headline-like crop): how far the student falls behind on
text typed the way people type it.

  python scripts/variant_gap.py --data D --per-domain 150 --json results/cpu_variant_gap.json

D is a prepared mix folder (python -m studentz_corpus prepare --source data/everyday-mix.json); without --data the test
rows are read straight from the mix's sources, as prepare would split them (--mix, default data/everyday-mix.json).
Per domain and variant: mean cosine over all texts, and over the texts the variant changes, next to the originals'
cosine on those same texts (the paired gap).
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def mix_test_texts(mix_path, per_domain: int) -> dict:
  """{domain: [texts]}: the first `per_domain` test rows of each domain, in the order prepare would write them."""
  from studentz_corpus import mix as corpus_mix, prepare as corpus
  sources = corpus_mix.load_mix(mix_path)
  out = {s.domain: [] for s in sources}
  for text, split, d in corpus.build_mixed(sources):
    if split == 2 and len(out[sources[d].domain]) < per_domain: out[sources[d].domain].append(text)
    if all(len(v) >= per_domain for v in out.values()): break
  return {k: v for k, v in out.items() if v}


def paired(cos_orig: np.ndarray, cos_var: np.ndarray, changed: np.ndarray, teacher_moved: np.ndarray) -> dict:
  """A variant's cosine, and on the texts it changes: the originals' cosine, the gap, and how far the variant moves
  the teacher's own vector (1 - cos(teacher(text), teacher(variant)); 0 where the teacher cannot see the change)."""
  r = {"cos": float(cos_var.mean()), "changed": int(changed.sum())}
  if changed.any():
    r.update(cos_changed=float(cos_var[changed].mean()), orig_cos_changed=float(cos_orig[changed].mean()),
             gap_changed=float(cos_orig[changed].mean() - cos_var[changed].mean()),
             teacher_moved=float(teacher_moved[changed].mean()))
  return r


def domain_gaps(texts: list, model, teacher, metrics, augment) -> dict:
  """{"orig": {...}, variant: {...}} for one domain's texts."""
  t_orig = teacher.embed(texts)
  cos_orig = metrics.cosine_rows(model.encode(texts), t_orig)
  res = {"orig": {"cos": float(cos_orig.mean()), "n": len(texts)}}
  for kind, fn in augment.VARIANTS.items():
    var = [fn(t) for t in texts]
    t_var = teacher.embed(var)
    cos = metrics.cosine_rows(model.encode(var), t_var)
    moved = 1 - metrics.cosine_rows(t_orig, t_var)
    res[kind] = paired(cos_orig, cos, np.array([v != t for v, t in zip(var, texts)]), moved)
  return res


def summary(per_domain: dict, variants) -> dict:
  """Mean over domains of each variant's cosine, and the worst domain."""
  out = {}
  for kind in ["orig", *variants]:
    vals = {d: r[kind]["cos"] for d, r in per_domain.items()}
    worst = min(vals, key=vals.get)
    out[kind] = {"domain_mean": float(np.mean(list(vals.values()))), "worst_domain": worst, "worst_cos": vals[worst],
                 "domains_below_0.92": sorted(d for d, v in vals.items() if v < 0.92)}
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", default=None, help="a prepared mix folder (its test split); default: read --mix")
  ap.add_argument("--mix", default="data/everyday-mix.json", help="mix file whose test rows to read without --data")
  ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  ap.add_argument("--per-domain", type=int, default=150, help="held-out texts per domain (default 150)")
  ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
  a = ap.parse_args(argv)
  from studentz_corpus import augment
  from studentz_runtime import metrics
  from studentz import StudentZ
  from teacher import load_teacher
  from heldout_eval import heldout_texts
  texts = heldout_texts(a.data, a.per_domain) if a.data else mix_test_texts(a.mix, a.per_domain)
  model = StudentZ.load(a.ckpt)
  teacher = load_teacher(model.info["teacher"]["name"])
  t0, res = time.perf_counter(), {}
  for name, tx in texts.items():
    res[name] = domain_gaps(tx, model, teacher, metrics, augment)
    print(f"{name:>16} n={len(tx):4d} " + " ".join(f"{k} {v['cos']:.4f}" for k, v in res[name].items()),
          file=sys.stderr)
  out = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
         "checkpoint": a.ckpt or "models/default", "teacher": teacher.name, "teacher_precision": teacher.precision,
         "texts": f"test split of {a.data}" if a.data else f"test split of {a.mix} (read from its sources)",
         "per_domain": a.per_domain, "variants": {k: f.__doc__.split("\n")[0] for k, f in augment.VARIANTS.items()},
         "summary": summary(res, augment.VARIANTS), "domains": res, "seconds": round(time.perf_counter() - t0, 1)}
  print(json.dumps(out["summary"], indent=1))
  if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
