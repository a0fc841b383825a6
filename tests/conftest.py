import gc, json, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# tests run on the CPU backend unless the caller says otherwise: small shapes, clang-compiled kernels
os.environ.setdefault("DEV", "CPU")
# kernels compile in this process: under pytest-xdist tinygrad gives each worker a pool of one compile process,
# respawned every 16 kernels, which only adds start-up and pickling on a machine whose cores the workers already fill
os.environ.setdefault("PARALLEL", "0")
from studentz_kernels import backend  # noqa: E402,F401  (maps METAL=1 style switches before tinygrad is imported)

SHARED_DATA = Path(os.environ.get("STUDENTZ_DATA", ROOT.parent / "shared" / "data"))


import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
  """The heap left by the run's kernels is gigabytes of objects: frozen, the interpreter's exit skips a minute of
  collecting garbage it is about to drop anyway."""
  gc.freeze()


# ---- shared fixtures: built once per session (per worker under pytest-xdist) and used by several test files ----


@pytest.fixture(scope="session")
def work(tmp_path_factory):
  """test_train's data folder, corpus and run config for the tiny student (see test_train.make_work)."""
  from test_train import make_work
  return make_work(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
  """A tiny untrained encoder + decoder checkpoint (see test_infer.make_ckpt)."""
  from test_infer import make_ckpt
  return make_ckpt(tmp_path_factory.mktemp("ckpt"))


def _tiny_tokenizer_json() -> str:
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)]
                                      + ["##" + chr(c) for c in range(97, 123)] + ["the", "a", "cat", "sat"])}
  tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return tok.to_str()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
  """A random 1-layer BERT saved by transformers as safetensors, with tokenizer.json and sentence-transformers files."""
  from transformers import BertConfig, BertModel
  d = tmp_path_factory.mktemp("tiny-bert")
  cfg = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99,
                   max_position_embeddings=64)
  BertModel(cfg).save_pretrained(d, safe_serialization=True)
  (d / "tokenizer.json").write_text(_tiny_tokenizer_json())
  (d / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "Transformer"},
                                              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "Pooling"}]))
  (d / "1_Pooling").mkdir()
  pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
  (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
  return d


# ---- teacher fixtures (shared: any test that needs the real MiniLM teacher folder or STS-B sentences) ----


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
  import studentz as sz
  from tinygrad.nn.state import get_state_dict
  out.mkdir(parents=True, exist_ok=True)
  sz.save_tensors(out / "model.safetensors", {f"{k}.{n}": t for k, m in models.items()
                                              for n, t in get_state_dict(m).items()})
  info = {"format_version": 1, "step": 0, "config": cfg.to_dict(), "data_dir": str(out),
          "teacher": {"name": teacher_name, "dim": cfg.proj_dim, "fingerprint": "x"}, "metrics": {}}
  (out / "config.json").write_text(json.dumps(info))
  tok.save(out / "tokenizer.json")
