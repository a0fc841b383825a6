"""`pip install .` ships what the code needs under names that say whose they are: the wheel (built here, no
dependencies fetched) holds the model module, the studentz_* packages and the teacher ports, the shipped model, the
default training mix, the GEMM schedules and the int8 kernel's C source, and console commands that point at functions
it contains.
The fresh-venv check (`python -m venv /tmp/v && /tmp/v/bin/pip install .`, then `studentz-infer "hello"` from another
folder) needs the package registry; docs/ARCHITECTURE.md gives it."""
import configparser, subprocess, sys, zipfile

import pytest
from conftest import ROOT

TOP_LEVEL = {"studentz.py", "studentz_cli", "studentz_kernels", "studentz_corpus", "studentz_runtime",
             "studentz_training", "studentz_models", "studentz_data", "teacher"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  out = tmp_path_factory.mktemp("wheel")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                  str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
  whl, = out.glob("studentz-*.whl")
  return zipfile.ZipFile(whl)


def test_only_studentz_names_at_the_top(wheel):
  tops = {n.split("/")[0] for n in wheel.namelist() if ".dist-info" not in n.split("/")[0]}
  assert tops == TOP_LEVEL


def test_package_data_is_shipped(wheel):
  names = set(wheel.namelist())
  model = {f"studentz_models/default/{f}" for f in ("config.json", "model.safetensors", "tokenizer.json")}
  assert model <= names
  assert "studentz_data/everyday-mix.json" in names and any(n.startswith("studentz_data/text/") for n in names)
  shipped = {p.name for p in (ROOT / "studentz_kernels" / "beam").glob("*.db")}
  assert shipped and {f"studentz_kernels/beam/{n}" for n in shipped} <= names
  assert "studentz_runtime/int8_gemm.c" in names                                 # built at first use


def test_console_commands_point_into_the_wheel(wheel):
  info = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
  ep = configparser.ConfigParser()
  ep.read_string(wheel.read(info).decode())
  scripts = dict(ep["console_scripts"])
  assert set(scripts) == {"studentz-train", "studentz-infer"}
  for target in scripts.values():
    module, func = target.split(":")
    src = wheel.read(module.replace(".", "/") + ".py").decode()
    assert f"def {func}(" in src
