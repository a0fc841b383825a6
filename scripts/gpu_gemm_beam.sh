#!/bin/bash
# The default train step (bf16, B=512) with its GEMM kernels searched by tinygrad's BEAM (STUDENTZ_GEMM_BEAM, see
# backend.py) on a lent GPU. A search run per length bucket of train.py (L=64, 32) pays the search (timed; DEBUG=2
# logs in $OUT/search_L*.log); the timing rows then read it from the cache db, PyTorch in the same process. Search
# results found so far come back as $OUT/beam_cache.db after each step; a later call continues from them when they
# are carried as .devcarry/beam_cache.db (scripts/beam_cache.py). Calls end inside 10 minutes: BUDGET seconds.
# BEAM_ARGS: more python -m bench arguments, for a student other than the default (e.g. --pool-head 1024).
source scripts/gpu_env.sh
# CCACHE=0: the search's compile workers otherwise write every candidate into the cache db and lock it
# (sqlite3.OperationalError: database is locked, seen on the first try)
export CACHEDB=runs/beam-cache.db STUDENTZ_GEMM_BEAM=${AMOUNT:-2} CCACHE=0
[ -f .devcarry/beam_cache.db ] && python3 scripts/beam_cache.py import .devcarry/beam_cache.db
left() { echo $(( ${BUDGET:-575} - SECONDS )); }
for L in ${LENS:-64 32}; do
  t=$(left); [ $t -gt 240 ] && t=$(( t - 130 ))
  start=$SECONDS
  DEBUG=2 timeout $t python3 -m bench train --precision bf16 --batch 512 --len $L --no-torch --warmup 1 \
    --reps 5 $BEAM_ARGS > $OUT/search_L$L.log 2>&1
  rc=$?; echo "L=$L search run: rc=$rc $(( SECONDS - start )) s, $(grep -ac 'GEMM_BEAM=' $OUT/search_L$L.log) GEMM" \
    "kernels marked"
  grep -a "bench=\|note:" $OUT/search_L$L.log
  python3 scripts/beam_cache.py export $OUT/beam_cache.db
  [ $(left) -gt 120 ] && TO=$(( $(left) - 5 )) train_row step_b512_L${L}_gemm_beam "" --precision bf16 --batch 512 \
    --len $L $BEAM_ARGS $([ $L != 64 ] && echo --no-torch)
done
ls -la $OUT
