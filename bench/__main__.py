"""`python -m bench ...`: runs the benchmarks of bench/speed.py and bench/fidelity.py (options: bench.speed.parser)."""
from __future__ import annotations
import json, sys

from studentz_kernels import backend
from bench.fidelity import bench_fidelity
from bench.speed import (UsageError, add_encode_ratios, bench_encode, bench_gemm, bench_infer, bench_stream_decode,
                         bench_teacher, bench_train, card_name, default_set, parser)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ["plot"]:  # no device, no tinygrad: it only reads JSON and draws
    from bench.fidelity import plot_main
    return plot_main(argv[1:])
  p = parser()
  args = p.parse_args(argv)
  device = backend.check_device()
  default_set(args, p, device)
  print(f"device {device} ({card_name(device)})", file=sys.stderr)
  from studentz_kernels import parallel
  try:
    args.devices = parallel.device_count(args.devices)
    if args.devices > 1:
      parallel.check_batch(args.batch, 1, args.devices)
      parallel.device_names(args.devices)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  what = set(args.what)
  rows = []
  if what & {"all", "train"}: rows += bench_train(args, device)
  if what & {"all", "teacher"}:
    try: rows += bench_teacher(args, device)
    except UsageError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  if what & {"all", "encode"}: rows += bench_encode(args, device)
  if what & {"all", "stream"}: rows += bench_stream_decode(args, device)
  if what & {"all", "infer"}: rows += bench_infer(args, device)
  if "gemm" in what: rows += bench_gemm(args, device)
  add_encode_ratios(rows)
  if "fidelity" in what:
    try: rows += bench_fidelity(args, device)
    except UsageError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  if args.json:
    args.json.write_text(json.dumps(rows, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
