"""StudentZ: an attention-free student that distills a transformer sentence encoder, and a decoder back to text."""
from pathlib import Path
from setuptools import setup

here = Path(__file__).parent
modules = sorted(p.stem for p in here.glob("*.py") if p.stem != "setup")

setup(
  name="studentz",
  version="0.1.0",
  description="Attention-free (dilated-conv) student of a transformer sentence encoder, with a decoder back to text",
  long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  py_modules=modules,
  packages=["teacher"],
  # tinygrad's API changes between releases: pin the version the tests run on
  install_requires=["tinygrad==0.14.0", "numpy", "tokenizers>=0.15", "safetensors"],
  extras_require={
    # torch/transformers are test oracles and optional baselines only; torch 2.13.0 has a local CPU wheel here
    "test": ["pytest", "pytest-xdist", "hypothesis", "torch==2.13.0", "transformers", "scipy", "sacrebleu"],
    "bench": ["torch"],
  },
  entry_points={"console_scripts": ["studentz-train=train:cli", "studentz-infer=infer:cli"]},
)
