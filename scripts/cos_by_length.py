"""Where a student checkpoint falls short of its teacher: cos(z_student, z_teacher) on held-out sentences, grouped by
length in student tokens and by how rare the sentence's tokens are in the student's vocabulary.

  python scripts/cos_by_length.py [--ckpt models/default] [--n 600] [--json results/cos_by_length.json]

Sentences come from the test split (train.py's hash split) of the bundled Wikipedia corpus, or --source FILE; the
teacher is the one named in the checkpoint, unless --teacher is given. On a 2-core CPU the teacher takes ~1 min for
600 sentences.
"""
import argparse, json, sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: the shipped model)")
  ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "wikipedia" / "enwiki-docs.jsonl.gz"))
  ap.add_argument("--teacher", default=None, help="teacher name or folder (default: the checkpoint's)")
  ap.add_argument("--n", type=int, default=600, help="held-out sentences")
  ap.add_argument("--json", type=Path, help="also write the table as JSON")
  a = ap.parse_args(argv)
  from studentz_corpus import prepare as corpus
  from studentz import StudentZ
  from teacher import load_teacher
  m = StudentZ.load(a.ckpt)
  texts = []
  for s, split in corpus.build_sentences(a.source):
    if split == 2: texts.append(s)
    if len(texts) >= a.n: break
  teacher = load_teacher(a.teacher or m.info["teacher"]["name"])
  zt = teacher.embed(texts, progress=True)
  zs = m.encode(texts)
  cos = (zs * zt).sum(1) / (np.linalg.norm(zs, axis=1) * np.linalg.norm(zt, axis=1) + 1e-9)
  ids = [m.tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]
  n_tok = np.array([min(len(i) + 2, m.max_len) for i in ids])                    # with BOS/EOS, as encoded
  # BPE ids are merge-ordered: a large id is a late, rare merge, so the mean id stands in for rarity
  rarity = np.array([np.mean(i) if i else 0 for i in ids])
  rows = []
  def group(name, key, edges):
    for lo, hi in zip(edges[:-1], edges[1:]):
      sel = (key >= lo) & (key < hi)
      if sel.sum(): rows.append({"by": name, "from": float(lo), "to": float(hi), "n": int(sel.sum()),
                                 "cos_mean": float(cos[sel].mean()), "cos_p10": float(np.percentile(cos[sel], 10))})
  group("tokens", n_tok, [0, 16, 24, 32, 48, m.max_len + 1])
  q = np.quantile(rarity, [0, 0.25, 0.5, 0.75, 1.0]); q[-1] += 1
  group("mean_token_id", rarity, q)
  print(f"{len(texts)} held-out sentences, mean cos {cos.mean():.4f} (median {np.median(cos):.4f})")
  print(f"{'by':14s} {'range':>15s} {'n':>5s} {'cos':>7s} {'p10':>7s}")
  for r in rows:
    print(f"{r['by']:14s} {r['from']:7.0f}-{r['to']:<7.0f} {r['n']:5d} {r['cos_mean']:7.4f} {r['cos_p10']:7.4f}")
  worst = np.argsort(cos)[:5]
  for i in worst: print(f"  cos {cos[i]:.3f}: {texts[i][:100]}")
  if a.json: a.json.write_text(json.dumps({"ckpt": str(m.path), "n": len(texts), "cos_mean": float(cos.mean()),
                                            "rows": rows}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
