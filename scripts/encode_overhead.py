"""Where a student encode batch's time goes: train.encode_ids as it is against its parts and two other ways of running
the same JIT, one row each (median ms per batch of B sentences).

Why: a GPU encode batch took about the same time whatever its length, far more than its GEMMs. This script splits
that time (results/h100_encode_overhead_before.txt, results/h100_encode_overhead_input_slots.txt).

  DEV=CUDA python scripts/encode_overhead.py --len 32 128 --batch 128
"""
import argparse, os, sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from studentz_kernels import backend
from bench import speed as bench
import studentz as sz


def ms(fn, reps: int) -> float:
  return bench.timed(fn, 2, reps) * 1e3  # median ms after two warm-up calls


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--len", type=int, nargs="+", default=[32, 128])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--batches", type=int, default=8, help="batches a measurement of the whole loop")
  p.add_argument("--reps", type=int, default=10)
  p.add_argument("--precision", choices=["half", "fp32"], default="half")
  args = p.parse_args(argv)
  device = backend.check_device()
  from tinygrad import Tensor, TinyJit, Device, Context
  from studentz_training.trainer import half_dtype
  import train
  dev = Device[Device.DEFAULT]
  B = args.batch
  for L in args.len:
    cfg = sz.Config.from_dict({**bench.bench_config(bench.parser().parse_args(["encode"])).to_dict(), "max_len": L,
                               "batch_size": B})
    Tensor.manual_seed(0)
    enc = sz.Encoder(cfg)
    if args.precision == "half": enc.act_dtype = half_dtype(device)
    ids, mask = bench.student_inputs(B * args.batches, L, cfg.vocab_size)
    rows = {}
    rows["encode_ids (the loop as it is), per batch"] = ms(lambda: train.encode_ids(enc, ids, mask, B),
                                                           args.reps) / args.batches
    t_ids, t_mask = Tensor(ids[:B]).realize(), Tensor(mask[:B]).realize()
    jit = TinyJit(lambda t, m: enc(t, m).realize())
    rows["jit replay + sync, inputs on the device"] = ms(lambda: (jit(t_ids, t_mask), dev.synchronize()), args.reps)
    rows["jit replay, no sync (host time)"] = ms(lambda: jit(t_ids, t_mask), args.reps)
    dev.synchronize()
    rows["inputs to the device (2 tensors) + sync"] = ms(
      lambda: (Tensor(ids[:B]).realize(), Tensor(mask[:B]).realize(), dev.synchronize()), args.reps)
    out = jit(t_ids, t_mask)
    rows["output .numpy()"] = ms(lambda: out.numpy(), args.reps)
    with Context(JIT_BATCH_SIZE=0):
      one = TinyJit(lambda t, m: enc(t, m).realize())
      rows["one CUDA graph: jit replay + sync"] = ms(lambda: (one(t_ids, t_mask), dev.synchronize()), args.reps)

    def queued():
      outs = [jit(Tensor(ids[i:i + B]), Tensor(mask[i:i + B])).clone().realize() for i in range(0, len(ids), B)]
      return [o.numpy() for o in outs]
    rows["queued batches (read at the end), per batch"] = ms(queued, args.reps) / args.batches
    for k, v in rows.items(): print(f"L={L:5d} B={B} {args.precision:5s} {k:48s} {v:8.3f} ms")
  return 0


if __name__ == "__main__":
  sys.exit(main())
