#!/bin/bash
# What a train.py process's start costs on a lent GPU (the ~100 s from step 1 to step 25 that every run pays), on the
# GPU default with a 30k-sentence slice, 30 steps per process:
#   cold    an empty kernel cache: a user's first run on a machine (this process also prepares the data folder)
#   warm    the cache the cold run filled: every later run there
#   shipped an empty cache again, with the GEMM schedule checks the cold run passed shipped in beam/
# The cold run's passed checks come back as $OUT/checked.db: `cp` it to beam/checked_<card>.db to ship them
# (PHASES=shipped alone, in a later call, then measures the start with the checks in beam/).
# PROF=1 runs each under cProfile ($OUT/start_<phase>.txt, by cumulative and own time; it doubles the Python's time).
# Needs the tinygrad wheel in .whl/ and the .devcarry teacher (see scripts/gpu_train.sh).
source scripts/gpu_env.sh
export CACHEDB=runs/start-cache.db; rm -f $CACHEDB runs/start-cache.db-*
A="--profile full --teacher .devcarry/minilm16 --data-dir runs/start-data --data_limit ${LIMIT:-30000} --quiet $EXTRA"
for phase in ${PHASES:-cold warm shipped}; do
  if [ $phase = shipped ]; then cp $OUT/checked.db beam/checked_start.db; rm -f $CACHEDB runs/start-cache.db-*; fi
  rm -rf runs/start-$phase
  PY="python3"; [ -n "$PROF" ] && PY="python3 -m cProfile -o runs/start-$phase.prof"
  timeout 400 $PY train.py $A --steps ${STEPS:-30} --eval_every 1000 --out runs/start-$phase \
    > $OUT/start_$phase.log 2>&1
  echo "$phase: rc=$?"
  cp runs/start-$phase/metrics.jsonl $OUT/start_$phase.metrics.jsonl 2>/dev/null
  [ -n "$PROF" ] && python3 -c "
import pstats
with open('$OUT/start_$phase.txt', 'w') as f:
  s = pstats.Stats('runs/start-$phase.prof', stream=f).strip_dirs()
  s.sort_stats('cumulative').print_stats(60); s.sort_stats('tottime').print_stats(30)"
  python3 -c "
import json
r = [json.loads(l) for l in open('runs/start-$phase/metrics.jsonl')]
s = {x['step']: x['time'] for x in r if 'loss' in x}
print('$phase: step 1 -> 25: %.1f s' % (s[25] - s[1]) if 25 in s and 1 in s else s)"
  grep -v '^\s*$' $OUT/start_$phase.log | grep -i "GEMM\|error\|note" | tail -3
  [ $phase = cold ] && python3 scripts/beam_cache.py export $OUT/checked.db --db $CACHEDB
done
rm -f beam/checked_start.db
ls -la $OUT
