#!/bin/bash
# Training on a lent GPU machine (no network there), in calls of at most 10 minutes: a run can span calls with
# RESUME=1 while the machine stays warm (run folder, data and kernel cache live under runs/, kept between calls).
# It expects, carried next to the repo (the carry limit is 64 MiB, hence the fp16 teacher and the xz corpus;
# `bash scripts/prepare_devcarry.sh` builds them all):
#   .whl/                    tinygrad-0.14.0 wheel (pip download --no-deps tinygrad==0.14.0 -d .whl)
#   .devcarry/minilm16/      the MiniLM folder from `python -m teacher fetch all-MiniLM-L6-v2`, model.safetensors
#                            rounded to fp16 (its vectors: cosine >= 0.9999995 to the fp32 teacher's)
#   .devcarry/data/          stsb/sts-test.csv (and wikipedia/enwiki-docs.jsonl.gz: a slice, used when the next
#                            is absent)
#   .devcarry/enwiki-docs.jsonl.xz  the whole corpus, xz-compressed (scripts/gpu_env.sh unpacks it):
#                            zcat ../shared/data/wikipedia/enwiki-docs.jsonl.gz | xz -9 > .devcarry/enwiki-docs.jsonl.xz
# (carry .whl .devcarry/minilm16 .devcarry/data/stsb .devcarry/enwiki-docs.jsonl.xz, and move the tracked models/ folder
# aside for the call: with it the working tree exceeds the 64 MiB a call may carry)
# Knobs: RUN (run folder), TL (minutes of training in this call), RESUME=1, EVAL=1 (train.py --eval of RUN/best),
# EXPORT=1 (RUN/best as fp16 safetensors split into 15 MB parts under $OUT), EXTRA (more train.py arguments).
# Output files in $OUT are named after the run folder, so one call can train and compare several runs.
# A user's run, one process for all its minutes (data included, in train.py's own data folder): MINUTES=14.9 starts
# `train.py --minutes 14.9` in a session of its own, which outlives the call while the machine stays warm, and waits
# for it until BUDGET seconds into the call; WAIT=1 in the next calls (made within the machine's 30 s) only waits.
# EVAL/EXPORT run once it has exited. Each process start costs minutes of compiles and checks, which is why the
# one-process run is the one that says what `DEV=CUDA python train.py --minutes 14.9` gives.
source scripts/gpu_env.sh
RUN=${RUN:-runs/gpu}
NAME=$(basename $RUN)
if [ -n "$MINUTES" ]; then
  rm -rf $RUN
  detach $RUN.exit $RUN.log $(python3 -c "print(int($MINUTES * 60 + 1500))") python3 train.py --profile full \
    --teacher .devcarry/minilm16 --out $RUN --minutes $MINUTES --decoder_share 0 --quiet $EXTRA
  WAIT=1
fi
if [ -n "$WAIT" ]; then  # until the run has exited or the call's BUDGET is near, then where it stands
  need_run $RUN.log $RUN "start again with MINUTES=..."
  while [ ! -f $RUN.exit ] && [ $SECONDS -lt $((${BUDGET:-570} - 10)) ]; do sleep 5; done
  grep -v "^\s*$" $RUN.log | tail -6; tail -2 $RUN/metrics.jsonl 2>/dev/null | cut -c1-300
  cp $RUN.log $OUT/$NAME.log; cp $RUN/metrics.jsonl $OUT/$NAME.metrics.jsonl 2>/dev/null
  # the best checkpoint so far comes back with every call: the twelfth session lost its machine (and the run) when a
  # call came late, with nothing saved
  [ -f $RUN.exit ] || { [ -f $RUN/best/model.safetensors ] && export16 $RUN/best && cp $RUN/best/*.json $OUT/
    echo "still running after ${SECONDS}s: call again with WAIT=1"; exit 0; }
  echo "train.py exited with $(cat $RUN.exit) after ${SECONDS}s of this call"
fi
if [ -n "$TL" ]; then
  if [ -n "$RESUME" ]; then
    timeout 590 python3 train.py --resume $RUN --time-limit $TL --quiet $EXTRA >> $OUT/$NAME.log 2>&1
  else
    timeout 590 python3 train.py --profile full --teacher .devcarry/minilm16 --out $RUN --data-dir runs/gpu-data \
      --time-limit $TL --decoder_share 0 --quiet $EXTRA > $OUT/$NAME.log 2>&1
  fi
  echo "train rc=$?"; grep -v "^\s*$" $OUT/$NAME.log | tail -25
  cp $RUN/metrics.jsonl $OUT/$NAME.metrics.jsonl 2>/dev/null
fi
if [ -n "$EVAL" ]; then
  timeout ${EVAL_TIMEOUT:-200} python3 train.py --eval $RUN/best --json --decode-limit ${DECODE_LIMIT:-256} \
    > $OUT/$NAME.eval.json 2>> $OUT/$NAME.log
  cat $OUT/$NAME.eval.json
fi
if [ -n "$EXPORT" ]; then
  cp $RUN/best/config.json $RUN/best/tokenizer.json $OUT/
  export16 $RUN/best
fi
ls -la $OUT
