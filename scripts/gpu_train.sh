#!/bin/bash
# One call on a lent GPU machine (no network there): prepare data + teacher vectors, train with a time limit,
# evaluate, and leave the results and the fp16 weights (split into 15 MB parts) under $OUT.
# It expects, carried next to the repo (the carry limit is 64 MiB, hence the fp16 teacher and the corpus slice):
#   .whl/                    tinygrad-0.14.0 wheel (pip download --no-deps tinygrad==0.14.0 -d .whl)
#   .devcarry/minilm16/      the MiniLM folder from `python -m teacher fetch all-MiniLM-L6-v2`, model.safetensors
#                            rounded to fp16 (its vectors: cosine >= 0.9999995 to the fp32 teacher's)
#   .devcarry/data/          wikipedia/enwiki-docs.jsonl.gz (first 20,000 articles) and stsb/sts-test.csv
# Knobs: TL (minutes of training), STEPS, LIMIT (sentences), EXTRA (more train.py arguments).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 DEV=CUDA STUDENTZ_DATA=.devcarry/data STUDENTZ_CACHE=/tmp/szcache
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 500 python3 train.py --profile full --teacher .devcarry/minilm16 --out /tmp/run --data-dir /tmp/data \
  --time-limit ${TL:-4.5} --precision mixed --steps ${STEPS:-2500} --data_limit ${LIMIT:-150000} $EXTRA > $OUT/train.log 2>&1
echo "train rc=$?"; tail -c 2500 $OUT/train.log
timeout 140 python3 train.py --eval /tmp/run/best --json > $OUT/eval.json 2>> $OUT/train.log; cat $OUT/eval.json
cp /tmp/run/metrics.jsonl /tmp/run/best/config.json /tmp/run/best/tokenizer.json $OUT/ 2>/dev/null
python3 -c "
from safetensors.numpy import load_file, save_file
import numpy as np
d = load_file('/tmp/run/best/model.safetensors')
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in d.items()}, '/tmp/model16.safetensors')"
split -b 15M /tmp/model16.safetensors $OUT/model16.part-
ls -la $OUT
