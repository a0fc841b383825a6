#!/bin/bash
# Train-step sweep on a lent GPU (one call): batch size, width and tinygrad's split-reduce knobs (split-K for the
# weight-gradient GEMMs, whose output is small next to their B*L reduction), bf16, against PyTorch on the same card.
# Rows land in $OUT/sweep_*.json. Needs the tinygrad wheel in .whl/ (scripts/gpu_train.sh says how).
source scripts/gpu_env.sh
SPLIT="REDUCEOP_SPLIT_THRESHOLD=4096 REDUCEOP_SPLIT_SIZE=25"
export TO=110
train_row sweep_b128 "" --precision bf16 --batch 128 --len 64
train_row sweep_b128_split "$SPLIT" --precision bf16 --batch 128 --len 64 --no-torch
train_row sweep_b512 "" --precision bf16 --batch 512 --len 64
train_row sweep_b512_split "$SPLIT" --precision bf16 --batch 512 --len 64 --no-torch
train_row sweep_b256_d384_split "$SPLIT" --precision bf16 --batch 256 --len 64 --d 384 --h 1024 --no-torch
ls $OUT
