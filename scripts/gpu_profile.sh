#!/bin/bash
# Where the default bf16 train step (B=512, L=64) spends its time on a lent GPU: the step with the taps' gradient
# materialised or not (STUDENTZ_TAPS_GRAD_CONTIG), and a DEBUG=2 kernel log of the default step, summarised by
# `python scripts/profile_table.py $OUT/profile_bf16_b512.log`. Needs the tinygrad wheel in .whl/.
source scripts/gpu_env.sh
for v in 0 1; do
  TO=150 train_row step_taps_grad_$v "STUDENTZ_TAPS_GRAD_CONTIG=$v" --precision bf16 --batch 512 --len 64 --no-torch
done
DEBUG=2 timeout 150 python3 -m bench train --precision bf16 --batch 512 --len 64 --no-torch --warmup 1 --reps 1 \
  > $OUT/profile_bf16_b512.log 2>&1
ls -la $OUT
