#!/bin/bash
# Issue 6's GPU figures for the current code in one call on a lent GPU: the default train step (B=512, L=64) in bf16
# and fp32 against PyTorch eager in the same process, a DEBUG=2 kernel log of the bf16 step (summarise it with
# `python scripts/profile_table.py $OUT/profile_bf16_b512.log`), student vs teacher encoding, and last, with what time
# is left, the bf16 step under JITBEAM=2 (tinygrad's kernel-schedule search; its cost is printed, its cache db kept).
# Needs the tinygrad wheel in .whl/ and the fp16 MiniLM in .devcarry/minilm16 (scripts/gpu_train.sh says how).
source scripts/gpu_env.sh
TO=300 train_row step_b512 "" --precision bf16 fp32 --batch 512 --len 64
DEBUG=2 timeout 150 python3 -m bench train --precision bf16 --batch 512 --len 64 --no-torch --warmup 1 --reps 1 \
  > $OUT/profile_bf16_b512.log 2>&1
timeout 200 python3 -m bench teacher encode --teacher .devcarry/minilm16 --lens 128 512 --student-lens 128 512 2048 \
  --student-precision fp32 half --batch 128 --teacher-n 1024 --json $OUT/encode.json 2>&1 | tail -9
python3 scripts/profile_table.py $OUT/profile_bf16_b512.log --top 25
start=$(date +%s)
TO=${BEAM_TO:-150} CACHEDB=/tmp/beam.db train_row step_b512_jitbeam2 "JITBEAM=2" --precision bf16 --batch 512 --len 64 \
  --no-torch --warmup 2 --reps 10
echo "JITBEAM=2 call: $(( $(date +%s) - start )) s including the search"; ls -la /tmp/beam.db 2>/dev/null
ls -la $OUT
