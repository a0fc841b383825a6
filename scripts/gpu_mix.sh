#!/bin/bash
# The shipped encoder's training on the everyday mix (data/everyday-mix.json) on a lent GPU machine, in calls of at
# most 10 minutes that must follow each other within the machine's 30 s of warmth. A call carries at most 64 MiB, and
# the fp16 teacher (45 MB), the xz Wikipedia (14 MB) and models/ (65 MB) do not fit together, so:
#   STAGE=1  carry .whl .devcarry/minilm16 .devcarry/data .devcarry/tokenizer.json, with models/ and results/ moved
#            aside here: installs tinygrad; the teacher stays on the machine (ignored folders are kept between calls)
#   STAGE=1  again, carrying .devcarry/enwiki-docs.jsonl.xz (models/ and results/ still aside): unpacks the corpus
#   START=1  models/default back in place (models/streaming and results/ still aside), nothing carried: one
#            detached chain of data folder (the shipped tokenizer), the teacher's token targets and vectors,
#            train.py --init-from models/default for MINUTES, the test-split evaluation of the new encoder; the
#            shipped model's evaluation on the same split beside it
#   (every call) waits until the chain has exited or BUDGET seconds, then brings back logs, curves, eval JSON and
#            configs ($OUT/small.tgz) and weights as fp16 parts: the new encoder ($OUT/enc16.part-*), the causal one
#            ($OUT/causal16.part-*) and the decoder stage's best without its encoder ($OUT/model16.part-*)
# DEC_MINUTES: then fit the shipped decoder (warm) to the new encoder on the mix for that long (runs/dec, its
# best checkpoint is the one brought back from then on). TOK=0: no token targets (a shorter teacher pass; pass
# --loss_weights.tok 0 in EXTRA); TOKEN_SHARDS: processes for the token targets (default 6). DEC_EXTRA: more
# train.py arguments for the decoder stage. CAUSAL_MINUTES: beside the decoder stage, re-fit the shipped encoder with
# causal padding (the streaming encoder) for that long, in runs/causal; CAUSAL_EXTRA: more arguments for it.
# MINUTES, EXTRA, BUDGET as in scripts/gpu_train.sh. `bash scripts/prepare_devcarry.sh` builds the carried files;
# .devcarry/data/extra holds ../shared/data/extra's files and .devcarry/tokenizer.json is models/default/tokenizer.json.
source scripts/gpu_env.sh
if [ -d .devcarry/data/extra ] && [ ! -d runs/fulldata/extra ]; then
  mkdir -p runs/fulldata && cp -r .devcarry/data/extra runs/fulldata/extra
fi
if [ -n "$STAGE" ]; then
  ls runs/fulldata; python3 -c "import tinygrad; print('tinygrad', tinygrad.__file__)"; exit 0
fi
RUN=runs/mix DATA=runs/mixdata
if [ -n "$START" ]; then
  rm -rf $RUN $DATA runs/dec runs/combo runs/causal runs/*.eval.json runs/*.back
  cat > runs/chain.sh <<EOC
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
(sleep 90; python3 train.py --eval models/default --data-dir $DATA --json --decode-limit 0 > runs/shipped.eval.json) &
python3 train.py --profile full --teacher .devcarry/minilm16 --init-from models/default --data-source \
  data/everyday-mix.json --data-dir $DATA --out $RUN --minutes ${MINUTES:-13} --decoder_share 0 --quiet $EXTRA || exit 1
python3 train.py --eval $RUN/best --json --decode-limit 0 > runs/mix.eval.json
if [ "${CAUSAL_MINUTES:-0}" != 0 ]; then  # the streaming encoder: the shipped one re-fitted causal, beside the decoder
  (python3 train.py --profile full --teacher .devcarry/minilm16 --init-from models/default --padding causal \
    --data-source data/everyday-mix.json --data-dir $DATA --out runs/causal --minutes $CAUSAL_MINUTES \
    --decoder_share 0 --quiet $CAUSAL_EXTRA > runs/causal.log 2>&1 &&
    python3 train.py --eval runs/causal/best --json --decode-limit 0 > runs/causal.eval.json) &
fi
[ "${DEC_MINUTES:-0}" = 0 ] && { wait; exit 0; }
python3 scripts/package_model.py --decoder-from models/default --encoder-parts $RUN/best/model.safetensors \
  --encoder-tokenizer $RUN/best/tokenizer.json --stage1-config $RUN/best/config.json --card GPU --stage1-command mix \
  --stage1-minutes ${MINUTES:-13} --teacher .devcarry/minilm16 --out runs/combo || exit 1
python3 train.py --profile full --teacher .devcarry/minilm16 --init-from runs/combo --data-source \
  data/everyday-mix.json --data-dir $DATA --out runs/dec --freeze '["encoder"]' --loss_weights.ce 1 \
  --loss_weights.tok 0 --dropout 0.1 --dec_output tied --dec_blocks 4 --dec_dilation_schedule '[1,2,4,8]' \
  --mode_b_mix row --eval_every 500 --batch_size 128 --optimizer.lr 1e-3 --minutes $DEC_MINUTES --quiet $DEC_EXTRA \\
  || exit 1
python3 train.py --eval runs/dec/best --json --decode-limit 256 > runs/dec.eval.json
wait
EOC
  # the chain runs from a snapshot of this tree: later calls carry the tree again, and it may have changed by then
  rm -rf runs/src && mkdir -p runs/src && ln -s .. runs/src/runs && ln -s ../../.devcarry runs/src/.devcarry
  tar -cf - --exclude=./runs --exclude=./.devcarry --exclude=./.whl --exclude=./.git . | tar -xf - -C runs/src
  detach runs/chain.exit runs/chain.log $(((${MINUTES:-13} + ${DEC_MINUTES:-0}) * 60 + 1800)) \
    bash -c "cd runs/src && exec bash ../chain.sh"
fi
need_run runs/chain.log chain "start again with START=1"
while [ ! -f runs/chain.exit ] && [ $SECONDS -lt $((${BUDGET:-570} - 20)) ]; do sleep 5; done
grep -v "^\s*$" runs/chain.log | tr '\r' '\n' | grep -v "it/s\]$\|sent/s\]$" | tail -30
cat runs/*.eval.json 2>/dev/null
# logs, curves, evaluations and configs in one file (a call brings back at most 8 files)
small=$(ls runs/chain.log runs/causal.log runs/*.eval.json $RUN/metrics.jsonl runs/{dec,causal}/metrics.jsonl \
  $RUN/best/config.json runs/{dec,causal}/best/config.json 2>/dev/null)
tar -czf $OUT/small.tgz $small
# then the weights, as fp16 parts, within the 64 MiB a call brings back: the new encoder (every call until its stage
# has ended, then once more), the causal encoder (once, when it has ended), the decoder stage's best without its
# frozen encoder (every call once the encoder is back: it improves, and the machine may not be lent for the next call)
[ -f runs/enc.back ] || { [ -f $RUN/best/model.safetensors ] && export16 $RUN/best "" enc16; }
[ -f runs/mix.eval.json ] && [ -f $OUT/enc16.part-aa ] && touch runs/enc.back
if [ -f runs/causal.eval.json ] && [ ! -f runs/causal.back ]; then
  export16 runs/causal/best "" causal16 && touch runs/causal.back
fi
if [ -f runs/enc.back ] && [ ! -f $OUT/enc16.part-aa ] && [ -f runs/dec/best/model.safetensors ]; then
  export16 runs/dec/best encoder.
  [ $(du -sm $OUT | cut -f1) -gt 62 ] && { rm -f $OUT/model16.part-*; echo "decoder parts next call (64 MiB)"; }
fi
[ -f runs/chain.exit ] && echo "chain exited with $(cat runs/chain.exit) after ${SECONDS}s of this call" ||
  echo "still running after ${SECONDS}s: call again within 30 s"
ls -la $OUT
