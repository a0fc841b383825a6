#!/bin/bash
# Data-parallel scaling on a lent 2-GPU machine (one call): the cross-entropy kernels' check (with the head's bias),
# then the default and joint training steps at B=512, L=64 in bf16 on one GPU and split over two (same global batch,
# same weights: losses and gradient norms over 3 steps compared), our CUDA kernels in the 2-GPU step
# (STUDENTZ_CUDA_MULTI=1) and not (the default until this is measured). JSON rows and logs land in $OUT. Needs the
# tinygrad wheel carried in .whl/.
source scripts/gpu_env.sh
nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader
timeout 150 python3 scripts/gpu_cuda_ops_check.py --scale 4 --json $OUT/cuda_ops_check.json \
  > $OUT/cuda_ops_check.log 2>&1
echo "cuda_ops check: exit $? ($(grep -c PASS $OUT/cuda_ops_check.log) PASS lines)"; tail -3 $OUT/cuda_ops_check.log
run() {  # name, env...
  local name=$1; shift
  env "$@" timeout ${TO:-400} python3 -m bench train --devices 2 --joint --precision bf16 --batch 512 --len 64 \
    --no-torch --reps 10 --json $OUT/$name.json > $OUT/$name.log 2>&1
  echo "$name: exit $?"; grep -h "bench=" $OUT/$name.log | cut -c1-400
}
run data_parallel_kernels STUDENTZ_CUDA_MULTI=1
run data_parallel_tinygrad_kernels STUDENTZ_CUDA_MULTI=0
exit 0
