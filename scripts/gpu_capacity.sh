#!/bin/bash
# Student capacity at equal wall time, on a lent machine of several GPUs (nvidia-h100-x4), in calls of at most 10
# minutes made back to back while it stays warm (it goes back about 30 s after a call returns: start the next phase
# at once, read the results after; the seventh session lost a phase-1 host that way). Each config in CONFIGS trains on
# its own GPU for the same minutes of training (MINUTES in all, PHASE=1 then PHASE=2 as train.py --resume), each
# run planning its own step count from its measured step rate (train.py --minutes), so that every LR schedule ends
# inside the time (the sixth session's bench-based plans had the wider configs 13-24% too long); one more GPU
# helps with the teacher vectors, then searches the default train step's GEMM kernels (scripts/gpu_gemm_beam.sh, L=64
# then L=32).
#   PHASE=1  data (sentences and tokenizer on the CPU while each GPU times its config's step; teacher vectors in one
#            shard per GPU, merged), then the first stretch of training
#   PHASE=2  more training, at most TL2MAX minutes per call: run it again while it says minutes are left (MINUTES=14.9
#            after a phase 1 that spent 6 minutes on data takes two); the best run's encoder comes back as fp16 parts
#            $OUT/model16.part-*
#   PHASE=3  every run evaluated (train.py --eval), and the train-step rows (searched GEMMs, the joint step) timed on
#            the otherwise idle card; DECODER=1 first fits a decoder to the best encoder (scripts/gpu_decoder.sh,
#            DEC_ONLY) on its card
# A last short PHASE=2 and PHASE=3 fit one call:
#   PHASE=2 BUDGET=250 bash scripts/gpu_capacity.sh; PHASE=3 ROWS=winner bash scripts/gpu_capacity.sh
# (BUDGET: the seconds that stretch may take, its minutes x 60 plus ~2 minutes of start-up and final validation)
# With DETACH=1 (in every call) each run is one train.py process for all MINUTES, started in phase 1 in a session of
# its own so that it outlives the call; PHASE=2 then only waits (until BUDGET) and, once every run has exited, picks
# the best; the last call is "PHASE=2; PHASE=3" as above. Calls must follow each other within the machine's 30 s.
# All the rest comes back in $OUT/capN.tgz (logs, metrics, step times, evals, step rows) and $OUT/beam_cache.db.
# Needs what scripts/gpu_train.sh carries (bash scripts/prepare_devcarry.sh), and .devcarry/beam_cache.db if a search
# was begun elsewhere. To check it here on the CPU with tiny models: DEV=CPU NGPU=n OUT=dir with DATA_LIMIT, VOCAB,
# TINY (more train.py arguments), BENCH (bench/'s shape) and DEC_ARGS (scripts/gpu_decoder.sh) set small.
source scripts/gpu_env.sh
# END: seconds into the call by which everything has stopped; TL2MAX: the longest stretch that fits a 10-minute call
PHASE=${PHASE:-1}; END=${BUDGET:-580}; MINUTES=${MINUTES:-14.9}; TL2MAX=${TL2MAX:-8.5}
C=runs/cap; DATA=runs/gpu-data; mkdir -p $C/logs
SRC=$STUDENTZ_DATA/wikipedia/enwiki-docs.jsonl.gz
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
# name | train.py arguments | python -m bench arguments (the same model); a config with --data_crops K gets its own
# data folder
CONFIGS=${CONFIGS:-"base|--d_model 256 --hidden 512|--d 256 --h 512
h1024|--d_model 256 --hidden 1024|--d 256 --h 1024
d384|--d_model 384 --hidden 1024|--d 384 --h 1024"}
NAMES=(); TARGS=(); BARGS=()
while IFS='|' read -r n t b; do [ -n "$n" ] && NAMES+=("$n") && TARGS+=("$t") && BARGS+=("$b"); done <<< "$CONFIGS"
N=${#NAMES[@]}
# each config's data folder: $DATA, or $DATA-cK for a config that adds K word spans per sentence (--data_crops K)
DIRS=(); for t in "${TARGS[@]}"; do k=$(echo "$t" | sed -n 's/.*--data_crops \([0-9]*\).*/\1/p')
  [ "${k:-0}" = 0 ] && k=; DIRS+=($DATA${k:+-c$k}); done
COMMON="--teacher .devcarry/minilm16 --quiet ${DATA_LIMIT:+--data_limit $DATA_LIMIT} ${VOCAB:+--vocab_size $VOCAB} \
  $TINY"
BENCH=${BENCH:-"--precision bf16 --batch 512 --len 64"}
on() { local g=$1; shift; CUDA_VISIBLE_DEVICES=$g "$@"; }  # run on GPU g (ignored by DEV=CPU)
pack() { tar czf $OUT/cap$PHASE.tgz -C $C logs $(cd $C && ls *.json *.jsonl *.prof 2>/dev/null); }
echo "phase $PHASE: $N configs (${NAMES[*]}) on $NGPU GPUs"
[ $NGPU -ge $N ] || { echo "needs a GPU per config"; exit 2; }
# on_cards KIND D [K]: python -m studentz_corpus KIND (teacher or tokens) for folder D in K shards a card (default 1),
# shard j of NGPU*K on GPU j % NGPU, waiting for all (each at most SHARD_TIMEOUT seconds, default 300); the teacher's
# shards run in copies of D (merged after), the token targets' in D itself. The token pass is bound by each process's
# CPU side (the teacher runs at several times its rate), hence TOKEN_SHARDS processes a card for it; TOKENS_PROFILE=1
# profiles its shard 0
on_cards() {
  local kind=$1 D=$2 K=${3:-1} d j pids=() prof
  local S=$((NGPU * K))
  for j in $(seq 0 $((S - 1))); do
    d=$D; [ $kind = teacher ] && [ $j -gt 0 ] && { rm -rf $D-s$j; cp -r $D $D-s$j; d=$D-s$j; }
    prof=; [ $kind = tokens ] && [ $j = 0 ] && [ -n "$TOKENS_PROFILE" ] && \
      prof="-m cProfile -o $C/tokens_$(basename $D).prof"
    on $((j % NGPU)) timeout ${SHARD_TIMEOUT:-300} python3 $prof -m studentz_corpus $kind --data $d \
      --teacher .devcarry/minilm16 --batch-size 256 --shard $j/$S > $C/logs/${kind}_$(basename $D)_$j.log 2>&1 &
    pids[$j]=$!
  done
  for j in $(seq 0 $((S - 1))); do
    wait ${pids[$j]} || { echo "$kind shard $j failed"; tail -3 $C/logs/${kind}_$(basename $D)_$j.log; }
  done
}
# the GEMM search runs on the GPU after the configs', in its own folder for $OUT (a call returns at most 8 files)
# the default train step's (pool head, token targets; BEAM_ARGS: bench/'s arguments for another)
beam() {
  [ $NGPU -gt $N ] || return 0
  mkdir -p /tmp/beamout; on $N env OUT=/tmp/beamout BUDGET=$(($1 - SECONDS)) LENS="$2" \
    BEAM_ARGS="${BEAM_ARGS:---pool-head 1024 --tok 0.25}" bash scripts/gpu_gemm_beam.sh \
    > $C/logs/beam_phase$PHASE.log 2>&1 &
}
finish_beam() { wait; cp /tmp/beamout/beam_cache.db $OUT/ 2>/dev/null; cp /tmp/beamout/*.json $C/ 2>/dev/null
  cp /tmp/beamout/search_L*.log $C/logs/ 2>/dev/null
  grep -h "bench=\|search run" $C/logs/beam_phase$PHASE.log 2>/dev/null; }

# DETACH=1: the runs of phase 1 go on across calls (a process in a session of its own outlives its call while the
# machine stays warm), so each run starts once, as a user's does; the eleventh session's runs were three processes
# each, and every start spent ~100 s of the run's minutes before its steps ran at full rate (scripts/capacity_table.py)
TOTAL_S=$(python3 -c "print(int($MINUTES * 60))")
all_exited() { for n in ${NAMES[@]}; do [ -f $C/exit_$n ] || return 1; done; }
wait_runs() {  # until every detached run has exited or the call's END is near, showing where each one is
  for n in ${NAMES[@]}; do need_run $C/logs/train_$n.log $n "start again with PHASE=1"; done
  while ! all_exited && [ $SECONDS -lt $((END - 15)) ]; do sleep 5; done
  for n in ${NAMES[@]}; do
    echo "$n: $([ -f $C/exit_$n ] && echo "exited $(cat $C/exit_$n)" || echo running), $(tail -1 $C/$n/metrics.jsonl \
      2>/dev/null | cut -c1-90)"; done
}
collect() {  # the runs' curves beside the logs, the best one named, its encoder back as fp16 parts
  for n in ${NAMES[@]}; do cp $C/$n/metrics.jsonl $C/${n}_metrics.jsonl; done
  python3 -c "
import json
best = {n: json.load(open('$C/' + n + '/best/config.json'))['best_val_cos'] for n in '${NAMES[*]}'.split()}
print('best val_cos', best); w = max(best, key=best.get); open('$C/winner', 'w').write(w)"
  export16 $C/$(cat $C/winner)/best; cp $C/$(cat $C/winner)/best/config.json $C/winner_config.json
}

if [ $PHASE = 1 ]; then
  rm -f $C/logs/plan.txt
  for i in $(seq 0 $((N - 1))); do
    on $i env CACHEDB=$PWD/$C/tg-${NAMES[$i]}.db timeout 200 python3 -m bench train $BENCH --no-torch --warmup 3 \
      --reps 10 ${BARGS[$i]} --json $C/bench_${NAMES[$i]}.json > $C/logs/bench_${NAMES[$i]}.log 2>&1 &
    bpids[$i]=$!
  done
  # TEACHER_BENCH=1: the teacher's sentences/s in fp32 and fp16 (and fp16's cosine to fp32 on real sentences) on the
  # last card, beside its config's step timing, while the CPU prepares the data
  [ -n "$TEACHER_BENCH" ] && { on $((NGPU - 1)) timeout 240 python3 -m bench teacher --teacher .devcarry/minilm16 \
    --lens 32 64 128 --batch 256 --teacher-n 2048 --teacher-precision fp32 fp16 --no-torch \
    --json $C/teacher_precision.json > $C/logs/teacher_bench.log 2>&1 & tbpid=$!; }
  UDIRS=($(printf "%s\n" "${DIRS[@]}" | sort -u))
  for D in ${UDIRS[@]}; do  # sentences and tokenizer of each data folder, side by side on the CPU
    k=${D##*-c}; [ "$D" = "$DATA" ] && k=0
    timeout 300 python3 -m studentz_corpus prepare --source $SRC --out $D --quiet ${DATA_LIMIT:+--limit $DATA_LIMIT} \
      ${VOCAB:+--vocab-size $VOCAB} --crops $k > $C/logs/prepare_$(basename $D).log 2>&1 &
    ppids+=($!)
  done
  for p in ${ppids[@]}; do wait $p || { echo "prepare failed"; tail $C/logs/prepare_*.log; exit 1; }; done
  wait ${bpids[@]} $tbpid
  echo "data ready at ${SECONDS}s"; grep -h "bench=" $C/logs/bench_*.log $C/logs/teacher_bench.log 2>/dev/null
  # teacher vectors of each folder: shard i of NGPU in a copy of it on GPU i (every card, the search's too), then
  # merged into it
  for D in ${UDIRS[@]}; do
    on_cards teacher $D
    [ $NGPU -gt 1 ] && python3 -m studentz_corpus merge --dst $D \
      --src $(for i in $(seq 1 $((NGPU - 1))); do echo $D-s$i; done) \
      --teacher .devcarry/minilm16 | tail -1
  done
  echo "teacher vectors at ${SECONDS}s"
  # token targets (studentz_corpus/token_targets.py) for the folders of configs that train on them (all but
  # --loss_weights.tok 0: the GPU default does): one shard per card, all in the folder itself; the last shard to
  # finish joins them
  TOKD=(); for i in $(seq 0 $((N - 1))); do
    echo " ${TARGS[$i]} " | grep -qE -- '--loss_weights.tok 0(\.0*)? ' || TOKD+=(${DIRS[$i]}); done
  for D in $(printf "%s\n" "${TOKD[@]}" | sort -u); do
    on_cards tokens $D ${TOKEN_SHARDS:-4}
    echo "token targets of $D at ${SECONDS}s"
  done
  beam $((END - 10)) 64  # the GEMM search on the card after the configs', once the teacher no longer needs it
  # each run plans its own step count (train.py --minutes) for the minutes of training both phases give it; the bench
  # estimate below only spaces the validations, and is what scripts/capacity_table.py compares the plan with
  TL1=$(python3 -c "print(round(min(max(($END - $SECONDS - 75) / 60, 1.0), $MINUTES), 2))")
  TOTAL=$MINUTES
  echo $TL1 > $C/done; echo $TOTAL > $C/total
  for i in $(seq 0 $((N - 1))); do
    steps=$(python3 -c "
import json; ms = json.load(open('$C/bench_${NAMES[$i]}.json'))[0]['tinygrad_queued_ms']
print(max(int(0.97 * $TOTAL * 60 / (ms * 1.265e-3)) // 100 * 100, 100))")
    echo "${NAMES[$i]}: ${TARGS[$i]} steps $steps" | tee -a $C/logs/plan.txt  # read by scripts/capacity_table.py
    ARGS="--profile full $COMMON --decoder_share 0 --data-dir ${DIRS[$i]} --out $C/${NAMES[$i]} --minutes $TOTAL \
      ${TARGS[$i]} --eval_every $((steps / 10))"
    if [ -n "$DETACH" ]; then  # one process for all the minutes, outliving this call (detach, scripts/gpu_env.sh)
      detach $C/exit_${NAMES[$i]} $C/logs/train_${NAMES[$i]}.log $((TOTAL_S + 900)) env CUDA_VISIBLE_DEVICES=$i \
        CACHEDB=$PWD/$C/tg-${NAMES[$i]}.db python3 train.py $ARGS
      continue
    fi
    on $i env CACHEDB=$PWD/$C/tg-${NAMES[$i]}.db timeout $((END - SECONDS)) python3 train.py $ARGS --time-limit $TL1 \
      > $C/logs/train_${NAMES[$i]}.log 2>&1 &
    rpids[$i]=$!
  done
  if [ -n "$DETACH" ]; then wait_runs; else wait ${rpids[@]}; fi
elif [ $PHASE = 2 ] && [ -n "$DETACH" ]; then
  wait_runs; all_exited || { echo "still training: run PHASE=2 again"; finish_beam; pack; exit 0; }
  for n in ${NAMES[@]}; do echo "$n exited with $(cat $C/exit_$n)"; done
  collect
elif [ $PHASE = 2 ]; then
  # the schedules phase 1's search found so far, for every config's step from now on (each is checked against the
  # heuristic one before use, backend.verify_schedule)
  if [ -f runs/beam-cache.db ]; then
    python3 scripts/beam_cache.py export /tmp/beam_found.db --db runs/beam-cache.db
    for n in ${NAMES[@]}; do python3 scripts/beam_cache.py import /tmp/beam_found.db --db $C/tg-$n.db; done
  fi
  beam $((END - 10)) "64 32"  # L=64 again: reads what phase 1 found and searches what it did not reach
  # the schedule is planned for all the minutes left; this call trains at most TL2MAX of them (--time-limit)
  REM=$(python3 -c "print(round($(cat $C/total) - $(cat $C/done), 2))")
  TL2=$(python3 -c "print(min($TL2MAX, $REM))")
  STOP=$(python3 -c "print('--time-limit $TL2' if $REM - $TL2 > 0.05 else '')")
  for i in $(seq 0 $((N - 1))); do
    on $i env CACHEDB=$PWD/$C/tg-${NAMES[$i]}.db timeout $((END - SECONDS)) python3 train.py --resume $C/${NAMES[$i]} \
      --minutes $REM $STOP --quiet >> $C/logs/train_${NAMES[$i]}.log 2>&1 &
    rpids[$i]=$!
  done
  wait ${rpids[@]}
  python3 -c "print(round($(cat $C/done) + $TL2, 2))" > $C/done
  echo "trained $(cat $C/done) of $(cat $C/total) minutes$([ -n "$STOP" ] && echo ': run PHASE=2 again')"
  collect
else
  [ -n "$DETACH" ] && ! all_exited && { echo "runs still training: PHASE=2 first"; exit 2; }
  # every run evaluated on its own card; with DECODER=1 the best one's card fits it a decoder first
  W=$(cat $C/winner); evals=(${NAMES[@]})
  if [ -n "$DECODER" ]; then
    evals=(); for n in ${NAMES[@]}; do [ $n != $W ] && evals+=($n); done
    for i in $(seq 0 $((N - 1))); do [ ${NAMES[$i]} = $W ] && WD=${DIRS[$i]}; done
    on 0 env RUN=$C/$W DEC_ONLY=1 TL=${DEC_TL:-3.3} DATA_DIR=$WD CACHEDB=$PWD/$C/tg-$W.db \
      bash scripts/gpu_decoder.sh > $C/logs/decoder.log 2>&1 &
  fi
  for i in $(seq 0 $((${#evals[@]} - 1))); do n=${evals[$i]}; g=$((i + ${DECODER:+1} + 0))
    # EVAL_VAL=1: then on the validation split too (its first 4,096 sentences; the runs chose by its first 2,048)
    (on $g env CACHEDB=$PWD/$C/tg-$n.db timeout 200 python3 train.py --eval $C/$n/best --json --decode-limit 0 \
      > $C/eval_$n.json 2> $C/logs/eval_$n.log
     [ -n "$EVAL_VAL" ] && on $g env CACHEDB=$PWD/$C/tg-$n.db timeout 150 python3 train.py --eval $C/$n/best --json \
       --decode-limit 0 --stsb-limit 8 --eval-split val > $C/evalval_$n.json 2>> $C/logs/eval_$n.log) &
  done
  if [ $NGPU -gt $N ]; then  # the idle card: the step (train.py's, dropout included) on the searched GEMM schedules
    # (phases 1-2 and beam/), on tinygrad's heuristics, and without dropout, each with PyTorch in the same process;
    # "winner": the best config's step (its python -m bench arguments) on the searched schedules; "joint": the joint
    # encoder+decoder step and its PyTorch twin (its output in logs/joint_twin.log); "tokhost": the best config's step
    # with its token targets copied from the host every step (--tok-table host) instead of gathered on the device.
    # ROWS picks which, in this order.
    for i in $(seq 0 $((N - 1))); do [ ${NAMES[$i]} = $W ] && WB=${BARGS[$i]}; done
    (export CUDA_VISIBLE_DEVICES=$N CACHEDB=$PWD/runs/beam-cache.db CCACHE=0 OUT=$C
     for r in ${ROWS:-searched heuristic nodrop joint}; do case $r in
       searched) TO=150 train_row row_step_L64_searched "" $BENCH ;;
       heuristic) TO=150 train_row row_step_L64_heuristic STUDENTZ_GEMM_BEAM=0 $BENCH ;;
       nodrop) TO=150 train_row row_step_L64_nodrop_searched "" --dropout 0 $BENCH ;;
       winner) TO=150 train_row row_step_L64_${W}_searched "" $BENCH $WB ;;
       tokhost) TO=150 train_row row_step_L64_${W}_tok_host "" $BENCH $WB --tok-table host ;;
       joint) timeout 200 python3 -m bench train --joint --reps 10 --json $C/row_joint_L64.json $BENCH \
                > $C/logs/joint_twin.log 2>&1
              grep -a "bench=\|Error\|error" $C/logs/joint_twin.log | tail -5 ;;
     esac; done > $C/logs/rows.log 2>&1) &
  fi
  wait; cat $C/logs/rows.log 2>/dev/null
  for n in ${evals[@]}; do echo "$n: $(cat $C/eval_$n.json) val: $(cat $C/evalval_$n.json 2>/dev/null)"; done
  [ -n "$DECODER" ] && tail -5 $C/logs/decoder.log
fi
[ $PHASE != 3 ] && finish_beam
for n in ${NAMES[@]}; do echo "== $n"; grep -v "^\s*$" $C/logs/train_$n.log | grep -v "^init\|^note" | tail -4; done
pack; ls -la $OUT
