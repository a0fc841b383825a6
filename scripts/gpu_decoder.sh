#!/bin/bash
# Second stage on the same warm GPU machine as scripts/gpu_train.sh: keep the distilled encoder (RUN/best) frozen and
# fit a decoder to it (mode A: student z, mode B: teacher vector), then evaluate both and bring the weights back.
# Output under $OUT: model16.part-* (fp16 safetensors of the final checkpoint, 15 MB parts) and meta.tgz (configs,
# tokenizer, eval JSONs, metrics, logs). Knobs: RUN, DEC (decoder run folder), TL (minutes), DEC_ARGS, DATA_DIR (the
# encoder's data folder, default runs/gpu-data: the decoder needs its tokenizer), DEC_ONLY=1 (bring
# back only the decoder's tensors, when an earlier call brought the encoder: a wide model's fp16 weights exceed the
# 64 MiB a call returns). The decoder keeps dropout 0.1, as it was measured with (the full profile's encoder has none).
source scripts/gpu_env.sh
RUN=${RUN:-runs/gpu}; DEC=${DEC:-runs/dec}; M=/tmp/meta; mkdir -p $M
export_ckpt() { export16 $1 $2; cp $1/config.json $1/tokenizer.json $M/; }
pack() { cp $RUN/metrics.jsonl $M/encoder_metrics.jsonl; cp $DEC/metrics.jsonl $M/decoder_metrics.jsonl 2>/dev/null
  tar czf $OUT/meta.tgz -C $M .; }
[ -z "$DEC_ONLY" ] && export_ckpt $RUN/best; pack
timeout 150 python3 train.py --eval $RUN/best --json --decode-limit 0 > $M/eval_encoder.json 2> $M/eval_encoder.log
cat $M/eval_encoder.json; pack
timeout 400 python3 train.py --profile full --teacher .devcarry/minilm16 --out $DEC \
  --data-dir ${DATA_DIR:-runs/gpu-data} \
  --init-from $RUN/best --freeze '["encoder"]' --loss_weights.ce 1 --time-limit ${TL:-4} --quiet --dropout 0.1 \
  ${DEC_ARGS:---dec_output tied --dec_blocks 4 --dec_dilation_schedule [1,2,4,8] --mode_b_mix row --steps 8000 \
  --eval_every 500 --batch_size 128 --optimizer.lr 2e-3} \
  > $M/decoder_train.log 2>&1
echo "decoder rc=$?"; grep -v "^\s*$" $M/decoder_train.log | tail -12; pack
if [ -e $DEC/best/model.safetensors ]; then
  export_ckpt $DEC/best ${DEC_ONLY:+encoder.}; pack
  timeout 130 python3 train.py --eval $DEC/best --json --decode-limit 256 > $M/eval_decoder.json 2> $M/eval_decoder.log
  cat $M/eval_decoder.json; pack
fi
ls -la $OUT
