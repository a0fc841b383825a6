"""The GPU time of each CUDA graph of a JIT'd training step, from CUDA events recorded around every graph launch (no
syncs in between): steps queued back to back as train.py runs them, then the same steps launched --gap ms apart.

Why: with tinygrad's default graph split (JIT_BATCH_SIZE=32: graphs of 32, 64, 128, ... kernels) the joint step's last
graph, the AdamW update, took many times its own time whenever the steps were queued back to back;
trainer.STEP_GRAPH_BATCH = 0 (one graph a step) is the fix this script measured (docs/RESULTS.md).

  DEV=CUDA python scripts/gpu_step_graphs.py joint                                  # the trainer's one graph a step
  DEV=CUDA python scripts/gpu_step_graphs.py joint --graph-batch 32                 # tinygrad's default split
"""
import argparse, ctypes, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from studentz_kernels import backend
from bench import speed as bench
import studentz as sz
from studentz_training import trainer
from studentz_training.trainer import Trainer


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("what", choices=["joint", "encoder"], help="the joint encoder+decoder step or the encoder's alone")
  p.add_argument("--batch", type=int, default=512)
  p.add_argument("--len", type=int, default=64)
  p.add_argument("--steps", type=int, default=6, help="steps a measurement (default 6)")
  p.add_argument("--gap", type=float, default=70.0,
                 help="ms between launches in the spaced run (default 70: more than a step's GPU time, so each step "
                      "finds the GPU idle)")
  p.add_argument("--graph-batch", type=int, default=trainer.STEP_GRAPH_BATCH,
                 help="kernels per CUDA graph (tinygrad's JIT_BATCH_SIZE; default 0, the trainer's one graph a step)")
  args = p.parse_args(argv)
  trainer.STEP_GRAPH_BATCH = args.graph_batch
  device = backend.check_device()
  if backend.backend_of(device) != "CUDA": p.error(f"needs a CUDA device (DEV=CUDA), got {device}")
  import tinygrad.runtime.autogen.cuda as cuda
  from tinygrad import Device

  # python -m bench train's shapes and batch (its defaults, this --batch and --len)
  cfg = bench.bench_config(bench.parser().parse_args(["train", "--batch", str(args.batch), "--len", str(args.len)]))
  cfg = sz.Config.from_dict({**cfg.to_dict(), "precision": "mixed"})
  B, L = args.batch, args.len
  batch = bench.train_batch(cfg, np.random.default_rng(0))
  if args.what == "joint": cfg, make, loss_fn, batch = bench.joint_setup(cfg, batch)
  else: make, loss_fn = (lambda: {"encoder": sz.Encoder(cfg)}), sz.distill_loss_fn
  tr = Trainer(cfg, make(), loss_fn)
  for _ in range(4): tr.step(batch)  # eager, capture, replays: the graphs exist from here on

  launch, events, on = cuda.cuGraphLaunch, [], [False]
  def event():
    e = cuda.CUevent()
    cuda.cuEventCreate(ctypes.byref(e), 0)
    cuda.cuEventRecord(e, None)  # tinygrad launches its graphs on the default stream
    return e
  def timed_launch(*a):
    if not on[0]: return launch(*a)
    e0 = event()
    r = launch(*a)
    events.append((e0, event()))
    return r
  cuda.cuGraphLaunch = timed_launch
  def ms(a, b) -> float:
    x = ctypes.c_float()
    cuda.cuEventElapsedTime(ctypes.byref(x), a, b)
    return x.value

  print(f"{args.what} step, B={B}, L={L}, bf16, {Device[device].device} ({backend.card_name(device)}), "
        f"graph batch {args.graph_batch}")
  for label, gap in (("back to back", 0.0), (f"launches {args.gap:g} ms apart, no sync", args.gap / 1e3)):
    for _ in range(2):
      Device[device].synchronize()
      events.clear()
      on[0] = True
      t0, pend = time.perf_counter(), []
      for _ in range(args.steps):
        pend.append(tr.launch(batch))
        if gap: time.sleep(gap)
      tr.read(pend[-1])
      wall, on[0] = (time.perf_counter() - t0) / args.steps, False
      per = [ms(a, b) for a, b in events]
      n = len(per) // args.steps
      steps = [per[i * n:(i + 1) * n] for i in range(args.steps)]
      print(f"{label}: {n} graphs a step; GPU ms a graph, steps 1-3 {[[round(x, 2) for x in s] for s in steps[:3]]}; "
            f"a step {[round(sum(s), 1) for s in steps]}" + ("" if gap else f"; wall {1e3 * wall:.1f} ms a step"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
