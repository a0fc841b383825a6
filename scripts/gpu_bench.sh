#!/bin/bash
# Speed measurements on a lent GPU (one call): train-step variants of the GEMM layout (env knobs) against PyTorch
# eager on the same card, student vs teacher encoding, and a DEBUG=2 kernel profile. JSON rows land in $OUT.
# Needs the tinygrad wheel carried in .whl/ (see scripts/gpu_train.sh) and the fp16 MiniLM in .devcarry/minilm16.
source scripts/gpu_env.sh
step() {  # name, env...: the B=64 L=128 train step in fp32 and bf16, tinygrad only
  local name=$1; shift
  train_row train_$name "$*" --precision ${PRECS:-fp32 bf16} --no-torch
}
step gemm2d_tcopt2 STUDENTZ_GEMM2D=1 TC_OPT=2
step im2col_tcopt2 STUDENTZ_GEMM2D=1 STUDENTZ_TAPS_CONTIG=1 TC_OPT=2
# the reference: PyTorch eager on the same card, same weights and batch (fp32, TF32, bf16 autocast)
TC_OPT=2 timeout 200 python3 -m bench train --precision fp32 tf32 bf16 --reps 20 --json $OUT/train_vs_torch.json 2>&1 \
  | tail -4
TC_OPT=2 timeout 200 python3 -m bench teacher encode --teacher .devcarry/minilm16 --lens 128 512 \
  --student-lens 128 512 \
  2048 --student-precision fp32 half --batch 128 --teacher-n 1024 --json $OUT/encode.json 2>&1 | tail -8
PRECS=bf16 step gemm3d STUDENTZ_GEMM2D=0
PRECS=bf16 step gemm2d STUDENTZ_GEMM2D=1
TC_OPT=2 DEBUG=2 timeout 120 python3 -m bench train --precision bf16 --no-torch --warmup 1 --reps 1 \
  > $OUT/profile_bf16.log 2>&1
ls -la $OUT
