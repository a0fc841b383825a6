#!/bin/bash
# Issue 6's encode target "student >= 5x our teacher and >= 2x HF at L=128, the ratio growing with L", L by L, in one
# call on a lent GPU: the student (bf16 and fp32 activations) against our tinygrad MiniLM and HF transformers, both in
# fp32 and in fp16, at L = 32, 128 and 512 (the teacher cut at its 512-row position table instead of its tuned 256:
# --teacher-max-len; such rows say past_tuned_length), the student alone at 2048; then the streaming encoder and the
# cached decoder. The ratio lines (ratio_vs_teacher, ratio_vs_hf, ..._fp16) are printed and kept in $OUT/encode.json.
# Needs the tinygrad wheel in .whl/ and the fp16 MiniLM in .devcarry/minilm16 (bash scripts/prepare_devcarry.sh).
source scripts/gpu_env.sh
timeout ${TO:-420} python3 -m bench teacher encode --teacher .devcarry/minilm16 --teacher-max-len 512 \
  --lens 32 128 512 --teacher-precision fp32 fp16 --student-lens 32 128 512 2048 --student-precision half fp32 \
  --batch 128 --teacher-n 512 --json $OUT/encode.json 2>&1 | grep -E '^(student|bench=|error|Traceback)|Error'
timeout ${STREAM_TO:-120} python3 -m bench stream --batch 32 --json $OUT/stream.json 2>&1 | grep -E 'bench=|Error'
