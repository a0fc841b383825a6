#!/bin/bash
# Train-step sweep on a lent GPU (one call): batch size, width and tinygrad's split-reduce knobs (split-K for the
# weight-gradient GEMMs, whose output is small next to their B*L reduction), bf16, against PyTorch on the same card.
# Rows land in $OUT/sweep_*.json. Needs the tinygrad wheel in .whl/ (scripts/gpu_train.sh says how).
source scripts/gpu_env.sh
SPLIT="REDUCEOP_SPLIT_THRESHOLD=4096 REDUCEOP_SPLIT_SIZE=25"
row() {  # name, bench.py arguments...; env from $ENV
  local name=$1; shift
  env $ENV timeout ${TO:-110} python3 bench.py train --precision bf16 --reps 20 --json $OUT/sweep_$name.json "$@" 2>&1 \
    | grep -v "^\s*$" | tail -2
}
ENV= row b128 --batch 128 --len 64
ENV=$SPLIT row b128_split --batch 128 --len 64 --no-torch
ENV= row b512 --batch 512 --len 64
ENV=$SPLIT row b512_split --batch 512 --len 64 --no-torch
ENV=$SPLIT row b256_d384_split --batch 256 --len 64 --d 384 --h 1024 --no-torch
ls $OUT
