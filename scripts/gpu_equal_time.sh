#!/bin/bash
# Configs side by side for the same minutes of training, one per GPU, on data that scripts/gpu_capacity.sh PHASE=1
# prepared on this machine (runs/gpu-data, with token targets): a short ablation in one call of at most 10 minutes.
#   CONFIGS="name|train.py arguments" lines (default: the ninth session's pool head with and without token targets)
#   MINUTES  training minutes of each run (train.py --minutes: the LR schedule is planned to end inside them)
# Each run is then evaluated (train.py --eval --json); $OUT/equal_time.tgz holds the logs, metrics and evaluations.
source scripts/gpu_env.sh >/dev/null
C=runs/eqt; mkdir -p $C; MINUTES=${MINUTES:-6}
CONFIGS=${CONFIGS:-"head|--pool_head 1024 --loss_weights.tok 0
tokhead|--pool_head 1024 --loss_weights.tok 0.25"}
NAMES=(); i=0
while IFS='|' read -r n a; do [ -z "$n" ] && continue; NAMES+=($n)
  CUDA_VISIBLE_DEVICES=$i CACHEDB=$PWD/runs/cap/tg-$n.db timeout $(python3 -c "print(int($MINUTES * 60 + 110))") \
    python3 train.py --profile full --teacher .devcarry/minilm16 --quiet --data-dir runs/gpu-data --out $C/$n \
    --minutes $MINUTES --eval_every 1500 --decoder_share 0 $a > $C/train_$n.log 2>&1 &
  i=$((i + 1)); done <<< "$CONFIGS"
wait
i=0; for n in ${NAMES[@]}; do
  CUDA_VISIBLE_DEVICES=$i timeout 60 python3 train.py --eval $C/$n/best --json --decode-limit 0 > $C/eval_$n.json \
    2> $C/evallog_$n.log &
  i=$((i + 1)); done; wait
for n in ${NAMES[@]}; do cp $C/$n/metrics.jsonl $C/${n}_metrics.jsonl; cp $C/$n/best/config.json $C/${n}_config.json
  tail -3 $C/train_$n.log; cat $C/eval_$n.json; echo; done
tar czf $OUT/equal_time.tgz -C $C $(cd $C && ls *.json *.jsonl *.log)
