import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# tests run on the CPU backend unless the caller says otherwise: small shapes, clang-compiled kernels
os.environ.setdefault("DEV", "CPU")
from studentz_kernels import backend  # noqa: E402,F401  (maps METAL=1 style switches before tinygrad is imported)

SHARED_DATA = Path(os.environ.get("STUDENTZ_DATA", ROOT.parent / "shared" / "data"))


# ---- teacher fixtures (shared: any test that needs the real MiniLM teacher folder or STS-B sentences) ----
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
  """The real all-MiniLM-L6-v2 HF folder, fetched once into the studentz cache by teacher.hub."""
  from teacher.hub import resolve
  return Path(resolve("all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def stsb_test_pairs() -> list[tuple[str, str]]:
  """(sentence1, sentence2) of every STS-B test row: tab-separated, columns 6 and 7 (1-based), no csv quoting."""
  path = SHARED_DATA / "stsb" / "sts-test.csv"
  if not path.is_file(): pytest.skip(f"STS-B not found at {path} (set STUDENTZ_DATA)")
  rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  return [(r[5], r[6]) for r in rows if len(r) >= 7]


def write_checkpoint(out, cfg, models: dict, tok, teacher_name: str = "none-such-teacher") -> None:
  """A checkpoint folder in train.py's layout (model.safetensors, config.json, tokenizer.json) from untrained models."""
  import json
  import studentz as sz
  from tinygrad.nn.state import get_state_dict
  out.mkdir(parents=True, exist_ok=True)
  sz.save_tensors(out / "model.safetensors", {f"{k}.{n}": t for k, m in models.items()
                                              for n, t in get_state_dict(m).items()})
  info = {"format_version": 1, "step": 0, "config": cfg.to_dict(), "data_dir": str(out),
          "teacher": {"name": teacher_name, "dim": cfg.proj_dim, "fingerprint": "x"}, "metrics": {}}
  (out / "config.json").write_text(json.dumps(info))
  tok.save(out / "tokenizer.json")
