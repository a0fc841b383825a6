"""Kernel-time table of one train step from a tinygrad DEBUG=2 log (scripts/gpu_profile.sh writes one).

  python scripts/profile_table.py profile_bf16_b512.log [--top 25]

Takes the kernels that ran right after the largest schedule in the log (the step's first, un-JIT'd run, where
DEBUG=2 times every kernel on its own), groups them by kernel name and prints count, total ms, share and the best
GFLOP/s; also the time of each JIT-replayed step (its graph batches summed, a new step starting at each batch of 32
kernels, the first size tinygrad's JIT graphs), for comparison with the kernel sum."""
import argparse, collections, re, sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KERNEL = re.compile(r"^\*\*\* \S+\s+\d+ (\S+)\s.*? tm\s+([\d.]+)(us|ms)/.*?\(\s*(\d+) ([GT])FLOPS")  # T past 10^4
SCHEDULED = re.compile(r"^scheduled\s+(\d+) kernels")


def parse(lines):
  blocks, cur, replays, replay = [], None, [], []
  for raw in lines:
    line = ANSI.sub("", raw).strip()
    if m := SCHEDULED.match(line):
      cur = (int(m.group(1)), [])
      blocks.append(cur)
      continue
    if not (m := KERNEL.match(line)): continue
    name, t, unit = m.group(1), float(m.group(2)), m.group(3)
    gflops = int(m.group(4)) * (1000 if m.group(5) == "T" else 1)
    ms = t / 1000 if unit == "us" else t
    if name == "batched":  # a JIT graph batch: consecutive batches form one replayed step
      replay.append(ms)
      if " 32 " in line.split("batched", 1)[1][:6] and len(replay) > 1: replays.append(sum(replay[:-1])); replay = [ms]
      continue
    if name == "copy" or cur is None: continue
    cur[1].append((name, ms, gflops))
  if replay: replays.append(sum(replay))
  return blocks, replays


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("log")
  p.add_argument("--top", type=int, default=25)
  a = p.parse_args(argv)
  with open(a.log, errors="replace") as f: blocks, replays = parse(f.read().replace("\r", "\n").splitlines())
  if not blocks: sys.exit("error: no 'scheduled N kernels' line: is this a DEBUG=2 log?")
  n, kernels = max(blocks, key=lambda b: b[0])
  total = sum(ms for _, ms, _ in kernels)
  by = collections.defaultdict(lambda: [0, 0.0, 0])
  for name, ms, gf in kernels:
    e = by[name]
    e[0] += 1; e[1] += ms; e[2] = max(e[2], gf)
  print(f"{len(kernels)} kernels ({n} scheduled), {total:.2f} ms of kernel time"
        + (f"; JIT-replayed steps: {', '.join(f'{r:.1f}' for r in replays[:5])} ms" if replays else ""))
  print(f"{'kernel':60s} {'count':>6s} {'total ms':>9s} {'share':>6s} {'best GFLOP/s':>12s}")
  for name, (c, ms, gf) in sorted(by.items(), key=lambda kv: -kv[1][1])[:a.top]:
    print(f"{name[:60]:60s} {c:6d} {ms:9.2f} {ms / total:6.1%} {gf:12d}")


if __name__ == "__main__":
  main()
