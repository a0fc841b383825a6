"""bench/'s command line: no arguments means the CPU-sized set on a CPU (it used to fail with "invalid choice:
['all']"), every option has a help text, and a wrong benchmark name is still refused."""
import pytest

from bench import speed as bench


def test_no_arguments_is_the_cpu_set():
  p = bench.parser()
  args = p.parse_args([])
  bench.default_set(args, p, "CPU")
  assert args.what == bench.CPU_SET["what"] and args.batch == bench.CPU_SET["batch"]
  args = p.parse_args(["--batch", "8"])                                           # a size the user gave stays
  bench.default_set(args, p, "CPU")
  assert args.batch == 8 and args.student_lens == bench.CPU_SET["student_lens"]
  args = p.parse_args([])
  bench.default_set(args, p, "CUDA")
  assert args.what == ["all"] and args.batch == p.get_default("batch")
  args = p.parse_args(["encode", "infer"])
  bench.default_set(args, p, "CPU")
  assert args.what == ["encode", "infer"] and args.batch == p.get_default("batch")


def test_every_option_has_help_and_names_are_checked(capsys):
  p = bench.parser()
  assert [a.dest for a in p._actions if not a.help] == []
  with pytest.raises(SystemExit): p.parse_args(["nope"])
  assert "invalid choice: 'nope'" in capsys.readouterr().err
