#!/bin/bash
# The shipped encoder's training on the everyday mix (data/everyday-mix.json) on a lent GPU machine, in calls of at
# most 10 minutes that must follow each other within the machine's 30 s of warmth. A call carries at most 64 MiB, and
# the fp16 teacher (45 MB), the xz Wikipedia (14 MB) and models/ (65 MB) do not fit together, so:
#   STAGE=1  carry .whl .devcarry/minilm16 .devcarry/data .devcarry/tokenizer.json, with models/ and results/ moved
#            aside here: installs tinygrad; the teacher stays on the machine (ignored folders are kept between calls)
#   STAGE=1  again, carrying .devcarry/enwiki-docs.jsonl.xz (models/ and results/ still aside): unpacks the corpus;
#            PREP=1 (with the same TOK) also starts the data folder and the teacher pass detached, so they run while
#            the next call carries models/
#   START=1  models/default back in place (models/streaming and results/ still aside), nothing carried: one
#            detached chain of data folder (the shipped tokenizer), the teacher's vectors (and token targets), the
#            stages below, each with its test-split evaluation; the shipped model's evaluation on the same split
#   (every call) waits until the chain has exited or BUDGET seconds, then brings back logs, curves, eval JSON and
#            configs ($OUT/small.tgz) and the stages' best checkpoints that are new since the last call, within the
#            64 MiB a call returns: the decoder without its frozen encoder ($OUT/model16.part-*, fp16), the streaming
#            encoder ($OUT/causal8.safetensors, int8, as it ships) and the encoder ($OUT/enc16.part-*, fp16)
# Stages: MINUTES of the encoder (train.py --init-from models/default, runs/mix; 0: none), then DEC_MINUTES fitting
# the shipped decoder to it (runs/dec; ENC_BESIDE=1: beside the encoder stage, fitted to the shipped encoder), and
# beside the decoder stage CAUSAL_MINUTES of the streaming encoder (runs/causal): CAUSAL_FROM (default models/default,
# an int8 folder such as models/streaming loads as float) re-fitted with causal padding. EXTRA, DEC_EXTRA, CAUSAL_EXTRA:
# more train.py arguments for each. TOK=0: no token targets (a shorter teacher pass; pass --loss_weights.tok 0 to the
# encoder stages); TOKEN_SHARDS: processes for them (default 6). BUDGET as in scripts/gpu_train.sh.
# `bash scripts/prepare_devcarry.sh` builds the carried files; .devcarry/data/extra holds ../shared/data/extra's files
# and .devcarry/tokenizer.json is models/default/tokenizer.json.
source scripts/gpu_env.sh
if [ -d .devcarry/data/extra ] && [ ! -d runs/fulldata/extra ]; then
  mkdir -p runs/fulldata && cp -r .devcarry/data/extra runs/fulldata/extra
fi
RUN=runs/mix DATA=runs/mixdata
snapshot() {  # a detached job runs from a copy of this tree: later calls carry the tree again, and it may change
  rm -rf $1 && mkdir -p $1 && ln -s .. $1/runs && ln -s ../../.devcarry $1/.devcarry
  tar -cf - --exclude=./runs --exclude=./.devcarry --exclude=./.whl --exclude=./.git . | tar -xf - -C $1
}
write_prep() {
  cat > runs/prep.sh <<EOP
set -x
python3 -m studentz_corpus prepare --source data/everyday-mix.json --out $DATA --tokenizer .devcarry/tokenizer.json \
  --max-len 64 --quiet || exit 1
python3 -m studentz_corpus teacher --data $DATA --teacher .devcarry/minilm16 --batch-size 256 || exit 1
if [ "${TOK:-1}" = 1 ]; then  # token targets in TOKEN_SHARDS processes on the one card (each is bound by its CPU side)
  for j in \$(seq 0 $((${TOKEN_SHARDS:-6} - 1))); do
    python3 -m studentz_corpus tokens --data $DATA --teacher .devcarry/minilm16 --batch-size 256 \
      --shard \$j/${TOKEN_SHARDS:-6} > runs/tokens_\$j.log 2>&1 &
  done
  wait
  python3 -m studentz_corpus tokens --data $DATA --teacher .devcarry/minilm16 --batch-size 256 || exit 1
fi
EOP
}
if [ -n "$STAGE" ]; then  # PREP=1 (once the corpus is unpacked): the data folder and teacher pass start detached now
  ls runs/fulldata; python3 -c "import tinygrad; print('tinygrad', tinygrad.__file__)"
  if [ -n "$PREP" ] && [ -f runs/fulldata/wikipedia/enwiki-docs.jsonl.gz ]; then
    rm -rf $DATA && write_prep && snapshot runs/prepsrc
    detach runs/prep.exit runs/prep.log 1800 bash -c "cd runs/prepsrc && exec bash ../prep.sh"
    echo "data and teacher pass started (runs/prep.log)"
  fi
  exit 0
fi
if [ -n "$START" ]; then
  rm -rf $RUN runs/dec runs/combo runs/causal runs/causal8 runs/*.eval.json runs/*.back runs/{chain,mix,dec,causal}.log
  [ -f runs/prep.log ] || { rm -rf $DATA; write_prep; }
  cat > runs/chain.sh <<EOC
set -x
if [ -f runs/prep.log ]; then  # started by STAGE=1 PREP=1: wait for it
  while [ ! -f runs/prep.exit ]; do sleep 5; done; [ "\$(cat runs/prep.exit)" = 0 ] || exit 1
else
  bash runs/prep.sh || exit 1
fi
# the shipped model on the same split; its decodes too when a decoder stage runs, so the two compare row for row
(sleep 90; python3 train.py --eval models/default --data-dir $DATA --json \
  --decode-limit $([ "${DEC_MINUTES:-0}" = 0 ] && echo 0 || echo 256) > runs/shipped.eval.json) &
COMMON="--profile full --teacher .devcarry/minilm16 --data-source data/everyday-mix.json --data-dir $DATA --quiet"
encoder_stage() {
  python3 train.py \$COMMON --init-from models/default --out $RUN --minutes ${MINUTES:-13} --decoder_share 0 $EXTRA \
    > runs/mix.log 2>&1 && python3 train.py --eval $RUN/best --json --decode-limit 0 > runs/mix.eval.json
}
DEC_FROM=models/default
if [ "${MINUTES:-13}" != 0 ] && [ -n "$ENC_BESIDE" ]; then encoder_stage & fi
if [ "${MINUTES:-13}" != 0 ] && [ -z "$ENC_BESIDE" ]; then
  encoder_stage || exit 1
  [ "${DEC_MINUTES:-0}" = 0 ] && [ "${CAUSAL_MINUTES:-0}" = 0 ] && exit 0
  python3 scripts/package_model.py --decoder-from models/default --encoder-parts $RUN/best/model.safetensors \
    --encoder-tokenizer $RUN/best/tokenizer.json --stage1-config $RUN/best/config.json --card GPU --stage1-command mix \
    --stage1-minutes ${MINUTES:-13} --teacher .devcarry/minilm16 --out runs/combo || exit 1
  DEC_FROM=runs/combo
fi
if [ "${CAUSAL_MINUTES:-0}" != 0 ]; then  # the streaming encoder: re-fitted causal, beside the decoder stage
  (python3 train.py \$COMMON --init-from ${CAUSAL_FROM:-models/default} --padding causal --out runs/causal \
    --minutes $CAUSAL_MINUTES --decoder_share 0 $CAUSAL_EXTRA > runs/causal.log 2>&1 &&
    python3 train.py --eval runs/causal/best --json --decode-limit 0 > runs/causal.eval.json) &
fi
if [ "${DEC_MINUTES:-0}" != 0 ]; then  # the decoder's shape comes from the checkpoint (DEC_EXTRA may deepen it)
  python3 train.py \$COMMON --init-from \$DEC_FROM --out runs/dec --freeze '["encoder"]' --loss_weights.ce 1 \
    --loss_weights.tok 0 --dropout 0.1 --mode_b_mix row --eval_every 500 --batch_size 128 --optimizer.lr 1e-3 \
    --minutes $DEC_MINUTES $DEC_EXTRA > runs/dec.log 2>&1 || exit 1
  python3 train.py --eval runs/dec/best --json --decode-limit 256 > runs/dec.eval.json
fi
wait
EOC
  snapshot runs/src
  detach runs/chain.exit runs/chain.log $(((${MINUTES:-13} + ${DEC_MINUTES:-0} + ${CAUSAL_MINUTES:-0}) * 60 + 1800)) \
    bash -c "cd runs/src && exec bash ../chain.sh"
fi
need_run runs/chain.log chain "start again with START=1"
while [ ! -f runs/chain.exit ] && [ $SECONDS -lt $((${BUDGET:-570} - 20)) ]; do sleep 5; done
grep -v "^\s*$" runs/chain.log | tr '\r' '\n' | grep -v "it/s\]$\|sent/s\]$" | tail -20
for f in runs/{mix,dec,causal}.log; do
  [ -f $f ] && { echo "== $f"; tr '\r' '\n' < $f | grep -v "^\s*$" | tail -4; }
done
cat runs/*.eval.json 2>/dev/null
# logs, curves, evaluations and configs in one file (a call brings back at most 8 files)
small=$(ls runs/*.log runs/*.eval.json runs/{mix,dec,causal}/metrics.jsonl runs/{mix,dec,causal}/best/config.json \
  2>/dev/null)
tar -czf $OUT/small.tgz $small
# then each stage's best checkpoint that is newer than the one an earlier call brought back, in this order, as long
# as the files stay within the 64 MiB a call returns (a stage that does not fit comes with the next call)
fresh() { [ -f $1/best/model.safetensors ] && [ $1/best/model.safetensors -nt $1.back ]; }
fits() { [ $(du -b --apparent-size -s $OUT | cut -f1) -lt $((63 * 1048576)) ]; }
if fresh runs/dec; then
  export16 runs/dec/best encoder. model16; fits && touch runs/dec.back || rm -f $OUT/model16.part-*
fi
if fresh runs/causal && python3 -m studentz_runtime.quantize runs/causal/best runs/causal8 > /dev/null; then
  cp runs/causal8/model.safetensors $OUT/causal8.safetensors; fits && touch runs/causal.back || rm $OUT/causal8.*
fi
if fresh $RUN; then export16 $RUN/best "" enc16; fits && touch $RUN.back || rm -f $OUT/enc16.part-*; fi
[ -f runs/chain.exit ] && echo "chain exited with $(cat runs/chain.exit) after ${SECONDS}s of this call" ||
  echo "still running after ${SECONDS}s: call again within 30 s"
ls -la $OUT
