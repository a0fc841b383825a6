#!/bin/bash
# Speed measurements on a lent GPU (one call): the train step against PyTorch eager on the same card, student vs
# teacher encoding, and a DEBUG=2 kernel profile. JSON rows land in $OUT.
# Needs the tinygrad wheel carried in .whl/ (see scripts/gpu_train.sh) and the fp16 MiniLM in .devcarry/minilm16.
source scripts/gpu_env.sh
# the reference: PyTorch eager on the same card, same weights and batch (fp32, TF32, bf16 autocast)
timeout 200 python3 -m bench train --precision fp32 tf32 bf16 --reps 20 --json $OUT/train_vs_torch.json 2>&1 \
  | tail -4
timeout 200 python3 -m bench teacher encode --teacher .devcarry/minilm16 --lens 128 512 \
  --student-lens 128 512 \
  2048 --student-precision fp32 half --batch 128 --teacher-n 1024 --json $OUT/encode.json 2>&1 | tail -8
DEBUG=2 timeout 120 python3 -m bench train --precision bf16 --no-torch --warmup 1 --reps 1 \
  > $OUT/profile_bf16.log 2>&1
ls -la $OUT
