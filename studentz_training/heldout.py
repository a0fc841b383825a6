"""Held-out data for validation and --eval: where the default corpus and STS-B live, the teacher loader, a split's
rows (ids, mask, teacher vectors) overall and per domain, and the vector metrics on them."""
from __future__ import annotations
import os
from pathlib import Path

from studentz_runtime.encode_tinygrad import encode_ids

ROOT = Path(__file__).resolve().parent.parent


def default_corpus() -> Path | None:
  for base in (os.environ.get("STUDENTZ_DATA"), ROOT.parent / "shared" / "data", ROOT / "data"):
    if base and (p := Path(base) / "wikipedia" / "enwiki-docs.jsonl.gz").is_file(): return p
  return None


def default_source() -> Path | None:
  """The default training corpus: the everyday mix (data/everyday-mix.json) when all its sources are here, else the
  Wikipedia shard alone."""
  from studentz_corpus import mix as corpus_mix
  try:
    corpus_mix.load_mix(corpus_mix.DEFAULT_MIX)
    return corpus_mix.DEFAULT_MIX
  except (FileNotFoundError, ValueError):
    return default_corpus()


def default_stsb() -> Path | None:
  for base in (os.environ.get("STUDENTZ_DATA"), ROOT.parent / "shared" / "data", ROOT / "data"):
    if base and (p := Path(base) / "stsb" / "sts-test.csv").is_file(): return p
  return None


def load_teacher(name: str):
  """The teacher for `name`. Looked up as a module attribute on every use, so tests can swap in a fake teacher
  (anything with .name, .dim, .fingerprint and .embed(texts, batch_size)) without loading real weights."""
  from teacher import load_teacher as load
  return load(name)


def vector_metrics(zs, zt, rows: dict, prefix: str) -> dict:
  """{prefix}_cos, {prefix}_mse, {prefix}_cos_<domain> for each domain of `rows`, {prefix}_cos_domain_mean."""
  import numpy as np
  cos = (zs * zt).sum(-1) / (np.linalg.norm(zs, axis=-1) * np.linalg.norm(zt, axis=-1) + 1e-12)
  out = {f"{prefix}_cos": float(cos.mean()), f"{prefix}_mse": float(((zs - zt) ** 2).sum(-1).mean())}
  names, dom = rows.get("domains", ["all"]), rows.get("domain", np.zeros(len(cos), np.int64))
  per = {n: float(cos[dom == d].mean()) for d, n in enumerate(names) if (dom == d).any()}
  if len(names) > 1: out.update({f"{prefix}_cos_{n}": v for n, v in per.items()})
  out[f"{prefix}_cos_domain_mean"] = float(np.mean(list(per.values())))
  return out


def split_rows(data_dir: Path, split: str, teacher_key: str, limit: int, index=None) -> dict:
  """The first `limit` sentences of a split (a fixed, deterministic held-out set), or the rows `index`: ids, mask and
  teacher vectors."""
  import numpy as np
  from studentz_corpus import prepare as corpus
  dd = corpus.open_data_dir(data_dir)
  idx = dd.indices(split)[:limit] if index is None else np.asarray(index, np.int64)
  tokens = np.asarray(dd.tokens[idx], dtype=np.int32)
  mask = (np.arange(tokens.shape[1])[None] < np.asarray(dd.lengths[idx])[:, None]).astype(np.float32)
  return {"tokens": tokens, "mask": mask, "teacher": np.asarray(corpus.teacher_vectors(dd, teacher_key)[idx]),
          "index": idx, "texts": dd.texts(idx)}


def domain_rows(data_dir: Path, split: str, teacher_key: str, per_domain: int) -> dict:
  """split_rows of the first `per_domain` sentences of each domain of the folder, with "domain" (index per row) and
  "domains" (names): a held-out set per domain of a mix (one domain for a single corpus)."""
  import numpy as np
  from studentz_corpus import prepare as corpus
  dd = corpus.open_data_dir(data_dir)
  idx = dd.indices(split)
  dom = np.asarray(dd.domain_of)[idx]
  keep = np.concatenate([idx[dom == d][:per_domain] for d in range(len(dd.domains))])
  rows = split_rows(data_dir, split, teacher_key, 0, index=np.sort(keep))
  return {**rows, "domain": np.asarray(dd.domain_of)[rows["index"]].astype(np.int64), "domains": dd.domains}


def embed_split(enc, rows: dict, cfg):
  return encode_ids(enc, rows["tokens"], rows["mask"], cfg.batch_size), rows["teacher"]
