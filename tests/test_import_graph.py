"""The import graph of every module of the repository (parsed, not run): no cycle anywhere (imports inside functions
count too), and the inference side (studentz.py, infer.py, studentz_runtime) never reaches training code."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("studentz_kernels", "studentz_corpus", "studentz_runtime", "studentz_training", "teacher", "bench")
TOP = ("studentz", "train", "infer")
TRAINING = ("train", "studentz_training")


def module_files() -> dict[str, Path]:
  files = {m: ROOT / f"{m}.py" for m in TOP}
  for pkg in PACKAGES:
    for f in sorted((ROOT / pkg).glob("*.py")):
      files[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
  return files


def _type_checking(node) -> bool:
  return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.AST, mods: set[str]) -> set[str]:
  """The repository modules a module imports anywhere in its body (an `if TYPE_CHECKING:` block imports nothing)."""
  out, todo = set(), [tree]
  while todo:
    node = todo.pop()
    for child in ast.iter_child_nodes(node):
      if not _type_checking(child): todo.append(child)
    names = []
    if isinstance(node, ast.Import): names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    for n in names:  # `from pkg import mod` names the module pkg.mod; `from mod import name` the module mod
      while n and n not in mods: n = n.rpartition(".")[0]
      if n: out.add(n)
    if isinstance(node, ast.ImportFrom) and node.module and any(f"{node.module}.{a.name}" in mods for a in node.names):
      out.discard(node.module)  # `from pkg import mod` runs pkg/__init__.py, which imports nothing of pkg's here
  return out


def graph() -> dict[str, set[str]]:
  files = module_files()
  mods = set(files)
  return {m: imported(ast.parse(f.read_text()), mods) - {m} for m, f in files.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(g.get(m, ())):
      if state.get(n) == 1: return stack[stack.index(n):] + [n]
      if n not in state and (c := visit(n)): return c
    stack.pop()
    state[m] = 2
    return None
  for m in sorted(g):
    if m not in state and (c := visit(m)): return c
  return None


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for n in g.get(todo.pop(), ()):
      if n not in seen: seen.add(n); todo.append(n)
  return seen


def is_training(m: str) -> bool: return any(m == t or m.startswith(t + ".") for t in TRAINING)


def test_every_module_is_in_the_graph():
  g = graph()
  assert {"studentz", "infer", "train", "studentz_runtime.api", "studentz_kernels.ops", "bench.speed"} <= set(g)
  assert "studentz" in g["studentz_runtime.api"] or "studentz_runtime.api" in g["studentz"]  # edges are read


def test_no_import_cycles():
  assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_inference_never_imports_training():
  g = graph()
  starts = ["studentz", "infer"] + [m for m in g if m.startswith("studentz_runtime")]
  bad = {s: sorted(filter(is_training, reachable(g, s))) for s in starts}
  assert not any(bad.values()), {s: b for s, b in bad.items() if b}


def test_the_checks_see_a_cycle_and_a_training_import():
  g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "studentz": {"x"}, "x": {"studentz_training.trainer"}}
  assert find_cycle(g) == ["a", "b", "c", "a"]
  assert "studentz_training.trainer" in reachable(g, "studentz")
  tree = ast.parse("import os\nfrom studentz_runtime import api\ndef f():\n  import train\n"
                   "if TYPE_CHECKING:\n  import studentz\n")
  assert imported(tree, {"train", "studentz", "studentz_runtime", "studentz_runtime.api"}) == \
    {"studentz_runtime.api", "train"}
