"""StudentZ: an attention-free student that distills a transformer sentence encoder, and a decoder back to text."""
from pathlib import Path
from setuptools import setup
from setuptools.command.build_py import build_py

here = Path(__file__).parent
CLI = ("train", "infer")  # the programs at the top of the repository, installed as studentz_cli.train / .infer


class BuildPy(build_py):
  """studentz_cli is the repository's top folder: of its modules only the two programs are installed."""

  def find_package_modules(self, package, package_dir):
    mods = super().find_package_modules(package, package_dir)
    return [m for m in mods if package != "studentz_cli" or m[1] in CLI]


setup(
  name="studentz",
  version="0.1.0",
  description="Attention-free (dilated-conv) student of a transformer sentence encoder, with a decoder back to text",
  long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  # every installed name says whose it is: the model module, the studentz_* packages, the teacher ports; the two
  # programs go inside studentz_cli (train.py / infer.py stay at the top of the repository, under generic names)
  py_modules=["studentz"],
  packages=["studentz_cli", "studentz_kernels", "studentz_corpus", "studentz_runtime", "studentz_training", "teacher",
            "studentz_models", "studentz_data"],
  package_dir={"studentz_cli": ".", "studentz_models": "models", "studentz_data": "data"},
  # the shipped model, the default training mix and its texts, the searched GEMM schedules, the int8 kernel's source
  package_data={"studentz_models": ["*/*"], "studentz_data": ["everyday-mix.json", "text/*"],
                "studentz_kernels": ["beam/*.db"], "studentz_runtime": ["*.c"]},
  # tinygrad's API changes between releases: pin the version the tests run on
  install_requires=["tinygrad==0.14.0", "numpy", "tokenizers>=0.15", "safetensors"],
  extras_require={
    # torch/transformers are test oracles and optional baselines only; torch 2.13.0 has a local CPU wheel here
    "test": ["pytest", "pytest-xdist", "hypothesis", "torch==2.13.0", "transformers", "scipy", "sacrebleu"],
    # scripts/cpu_throughput.py's baselines: the teacher on sentence-transformers and on ONNX Runtime int8
    "bench": ["torch", "sentence-transformers", "onnx", "onnxruntime"],
  },
  cmdclass={"build_py": BuildPy},
  entry_points={"console_scripts": ["studentz-train=studentz_cli.train:cli", "studentz-infer=studentz_cli.infer:cli"]},
)
