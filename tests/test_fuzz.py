"""Property tests (hypothesis): the student tokenizer on arbitrary text, and train.py's argument handling on random
`--key value` lists. Neither touches tinygrad kernels, so they are cheap enough for a few hundred examples each."""
import json, os
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import train
import studentz as sz
from studentz_corpus.tokenizer import BOS, EOS, PAD, StudentTokenizer

MAX_LEN = 48
# FUZZ_EXAMPLES=2000 for a deeper search than the suite can afford by default
SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# any text without surrogates (not encodable as UTF-8), including control characters, combining marks and emoji
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
FITTING = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # short: almost always fits in MAX_LEN


@pytest.fixture(scope="module")
def tok():
  corpus = ["The cat sat on the mat.", "Naïve café owners ☕ serve crème brûlée.",
            "東京は日本の首都です。",
            "Emoji 🙂👍🏽 and tabs\tand\x07bells.", "Numbers 12345 and symbols <s> </s> {}[]."]
  corpus *= 20
  return StudentTokenizer.fit(corpus, vocab_size=300, min_frequency=2)


@SETTINGS
@given(text=FITTING)
def test_round_trip_when_it_fits(tok, text):
  # NFKC can expand one character into many (U+FDFA is 18 letters), so "fits" is decided on tokens, not characters
  assume(tok.token_counts([text])[0] <= MAX_LEN - 2)
  ids, mask = tok.encode(text, MAX_LEN)
  assert tok.token_counts([text])[0] == mask.sum() - 2  # nothing was cut
  assert tok.decode(ids) == tok.normalize(text)


@SETTINGS
@given(texts=st.lists(TEXT, min_size=1, max_size=4), max_len=st.integers(3, 40))
def test_ids_and_mask_consistent(tok, texts, max_len):
  ids, mask, cut = tok.encode_batch(texts, max_len, return_truncated=True)
  assert ids.shape == mask.shape == (len(texts), max_len) and ids.dtype == np.int32 and mask.dtype == np.float32
  assert ((ids >= 0) & (ids < tok.vocab_size)).all()
  n = mask.sum(1).astype(int)
  assert set(np.unique(mask)) <= {0.0, 1.0} and (n >= 2).all()
  for r in range(len(texts)):
    assert (mask[r, :n[r]] == 1).all() and (mask[r, n[r]:] == 0).all()  # a prefix of ones
    assert ids[r, 0] == BOS and ids[r, n[r] - 1] == EOS and (ids[r, n[r]:] == PAD).all()
    assert not (ids[r, 1:n[r] - 1] == EOS).any() and not (ids[r, 1:n[r] - 1] == PAD).any()
  assert (cut == (tok.token_counts(texts) > max_len - 2)).all()
  out = tok.decode_batch(ids)  # never raises, whatever the truncation cut through (a multi-byte char, say)
  assert all(isinstance(o, str) for o in out)


@SETTINGS
@given(texts=st.lists(st.one_of(TEXT, st.text(st.characters(max_codepoint=127), max_size=200)), min_size=1, max_size=6),
       max_len=st.integers(3, 40))
def test_fast_paths_match_the_full_tokenizer(tok, texts, max_len):
  """ASCII rows skip the normaliser, no row tracks offsets: the same content ids as the full tokenizer, in order."""
  from test_student_tokenizer import reference_layout
  got, want = tok.encode_batch(texts, max_len, return_truncated=True), reference_layout(tok, texts, max_len)
  assert all(np.array_equal(g, w) for g, w in zip(got, want))


@SETTINGS
@given(ids=st.lists(st.integers(0, 299), max_size=60))
def test_decode_any_valid_ids(tok, ids):
  assert isinstance(tok.decode(np.array(ids, np.int64)), str)


# ---------------------------------------------------------------------------------------------------------------------
# train.py arguments: a valid Config or ValueError / SystemExit(2), never another exception

KEYS = [f.name for f in fields(sz.Config)]
NESTED = [f"optimizer.{k}" for k in ("lr", "weight_decay", "betas", "eps", "type", "momentum")] + \
         [f"loss_weights.{k}" for k in ("cos", "mse", "ce", "sem", "kl")]
SCALAR = st.one_of(st.integers(-10, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["layer", "group", "mean", "gated", "fp32", "mixed", "causal", "adamw", "true",
                                    "null", "NaN", "-Infinity", "1e999", "", "[]", "{}", "__import__('os')"]),
                   st.text(max_size=8))
VALUE = st.one_of(SCALAR, st.lists(st.one_of(st.integers(-2, 20), st.floats(-1, 20), st.text(max_size=3)), max_size=6),
                  st.dictionaries(st.sampled_from(["lr", "cos", "x", "type"]), st.one_of(st.integers(), st.floats()),
                                  max_size=3))


def as_arg(v) -> str:
  return v if isinstance(v, str) else json.dumps(v)


@SETTINGS
@given(pairs=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS + NESTED), st.sampled_from(KEYS).map(
                        lambda k: k.replace("_", "-"))), VALUE), max_size=5),
       profile=st.sampled_from(["full", "cpu"]), eq=st.booleans())
def test_train_args_never_crash(pairs, profile, eq):
  argv = ["--profile", profile]
  for k, v in pairs: argv += [f"--{k}={as_arg(v)}"] if eq else [f"--{k}", as_arg(v)]
  try:
    _, args, overrides = train.parse_args(argv)
    cfg, _ = train.resolve_config(args, overrides, "CPU")
  except (ValueError, SystemExit) as e:
    if isinstance(e, SystemExit): assert e.code == 2, e.code
    return
  assert isinstance(cfg, sz.Config)
  assert sz.Config.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()  # survives a save


# ---- infer.py argument handling: any argv gives exit 0 (help) or 2 (one error line), never a crash

import infer

INFER_FLAGS = ["--json", "--no-teacher", "--strategy", "--temperature", "--top-k", "--top-p", "--beam", "--seed",
               "--png", "--file", "--ckpt", "--help", "-"]
INFER_VALUES = st.one_of(st.sampled_from(["greedy", "sample", "beam", "nan", "inf", "-1", "0", "1e309", "", "x"]),
                         st.integers(-5, 5).map(str), st.floats(allow_nan=True).map(str), TEXT.map(lambda t: t[:20]))


@SETTINGS
@given(argv=st.lists(st.one_of(st.sampled_from(INFER_FLAGS), INFER_VALUES), max_size=8))
def test_infer_args_never_crash(argv, tmp_path_factory, capsys):
  # no usable checkpoint: whatever the arguments, the run must end in argparse's exit 2, --help's 0, or one error line
  missing = str(tmp_path_factory.getbasetemp() / "no-such-ckpt")
  argv = [a for a in argv if a not in ("--file",)] + ["--ckpt", missing]
  os.environ.pop("STUDENTZ_CKPT", None)
  try:
    code = infer.main(argv)
  except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
    code = e.code
  assert code in (0, 2)
  err = capsys.readouterr().err
  if code == 2: assert "Traceback" not in err and err.strip()
