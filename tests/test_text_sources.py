"""The shipped text sources in data/text (built by scripts/build_text_sources.py) and its cleaning functions."""
import gzip, re, sys

import pytest

from conftest import ROOT, SHARED_DATA

sys.path.insert(0, str(ROOT / "scripts"))
import build_text_sources as bts  # noqa: E402

TEXT_DIR = ROOT / "data" / "text"
NAMES = [s.name for s in bts.SOURCES]


def read_lines(name: str) -> list[str]:
  raw = gzip.decompress((TEXT_DIR / f"{name}.txt.gz").read_bytes())  # raises on a file that isn't gzip
  text = raw.decode("utf-8")  # strict: raises on bytes that aren't UTF-8
  assert text.endswith("\n"), f"{name}: last line has no newline"
  return text[:-1].split("\n")


@pytest.fixture(scope="module", params=NAMES)
def source(request):
  return request.param, read_lines(request.param)


def test_every_source_ships_with_its_license():
  for name in NAMES:
    assert (TEXT_DIR / f"{name}.txt.gz").is_file(), name
    assert (TEXT_DIR / f"{name}-LICENSE.txt").stat().st_size > 200, name
  assert (TEXT_DIR / "SOURCES.md").is_file()


def test_one_clean_text_per_line(source):
  name, lines = source
  assert len(lines) >= 500, f"{name}: only {len(lines)} lines"
  for line in lines:
    assert line == " ".join(line.split()), f"{name}: stray whitespace in {line!r}"  # also no \r, \t, blank lines
    assert 3 <= len(line.split()) <= 60, f"{name}: {len(line.split())} words: {line!r}"
    assert not re.search(r"https?:|www\.|<[a-zA-Z/]|```", line), f"{name}: markup or URL in {line!r}"


def test_no_duplicates(source):
  name, lines = source
  keys = [line.casefold() for line in lines]
  dups = len(keys) - len(set(keys))
  assert dups == 0, f"{name}: {dups} duplicate lines"


@pytest.fixture(scope="module")
def stsb_index():
  """First two words -> STS-B sentences as word tuples; an independent re-implementation of the build's filter."""
  stsb = SHARED_DATA / "stsb"
  if not list(stsb.glob("*.csv")): pytest.skip(f"STS-B not found at {stsb} (set STUDENTZ_DATA)")
  index = {}
  for f in stsb.glob("*.csv"):
    for row in f.read_text(encoding="utf-8").splitlines():
      fields = row.split("\t")  # by position, no csv quoting: sentences contain quote characters
      for s in fields[5:7] if len(fields) >= 7 else ():
        words = tuple(re.findall(r"\w+", s.lower()))
        if words: index.setdefault(words[:2], set()).add(words)
  assert sum(map(len, index.values())) > 10000
  return index


def test_no_stsb_sentence_in_any_line(source, stsb_index):
  name, lines = source
  for line in lines:
    words = tuple(re.findall(r"\w+", line.lower()))
    for i in range(len(words)):
      for s in stsb_index.get(words[i:i + 1], set()) | stsb_index.get(words[i:i + 2], set()):
        assert words[i:i + len(s)] != s, f"{name}: STS-B sentence {' '.join(s)!r} in {line!r}"


def test_clean_text_keeps_prose_and_drops_the_rest():
  assert bts.clean_text("  How do I   change\nmy password?  ") == "How do I change my password?"
  assert bts.clean_text("It\u2019s a \u201cgood\u201d day &amp; night.") == "It's a \"good\" day & night."
  for bad in ["Too short.", " ".join(["word"] * 61), "See https://example.org for more.",
              "Run apt-get install --yes foo now.", "Edit /etc/fstab and reboot it.", "Click <b>OK</b> to close.",
              "def f(x): return x", "1 2 3 4 5 6 a", "That such pillars were raised by Seth all antiquity has ?vowed.",
              "| a | b | c |", "- item one here"]:
    assert bts.clean_text(bad) is None, bad
  assert bts.clean_text("Yes, I have a question.") == "Yes, I have a question."


def test_split_sentences_respects_abbreviations():
  text = "Open Settings. Click Mr. Smith's photo, e.g. the first one! Is it J. Doe? Yes."
  assert bts.split_sentences(text) == ["Open Settings.", "Click Mr. Smith's photo, e.g. the first one!",
                                       "Is it J. Doe?", "Yes."]


def test_to_lines_cleans_and_splits_only_long_texts():
  long = " ".join(["This is a sentence of seven words."] * 10)  # 70 words: cut into sentences
  assert list(bts.to_lines(["Short one.", "Hello there, how are you?", long])) == \
    ["Hello there, how are you?"] + ["This is a sentence of seven words."] * 10


def test_stsb_filter_matches_whole_words_anywhere():
  f = bts.StsbFilter(["A man is playing a guitar.", "People waiting."])
  assert f.hits("a man is playing a guitar")
  assert f.hits("Yesterday, A MAN is playing a guitar!  Loudly.")
  assert f.hits("Ten people waiting outside.")
  assert not f.hits("A man is playing a flute.")
  assert not f.hits("A woman is playing a guitar.")  # 'man' inside 'woman' is not the word
  assert bts.dedup_key("Hello there!") == bts.dedup_key("hello  there.")
