#!/bin/bash
# Where the default bf16 train step (B=512, L=64) spends its time on a lent GPU: the step's time, and a DEBUG=2 kernel
# log of it, summarised by `python scripts/profile_table.py $OUT/profile_bf16_b512.log`. Needs the tinygrad wheel.
source scripts/gpu_env.sh
TO=150 train_row step_default "" --precision bf16 --batch 512 --len 64 --no-torch
DEBUG=2 timeout 150 python3 -m bench train --precision bf16 --batch 512 --len 64 --no-torch --warmup 1 --reps 1 \
  > $OUT/profile_bf16_b512.log 2>&1
ls -la $OUT
