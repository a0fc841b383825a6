#!/bin/bash
# Build what the scripts/gpu_*.sh calls carry to a lent GPU machine that has no network (see scripts/gpu_train.sh):
#   .whl/                         the tinygrad 0.14.0 wheel
#   .devcarry/minilm16/           all-MiniLM-L6-v2 with model.safetensors rounded to fp16 (45 MB instead of 90: the
#                                 carry limit is 64 MiB; its vectors stay at cosine >= 0.9999995 to the fp32 teacher's)
#   .devcarry/data/stsb/          the STS-B test file
#   .devcarry/enwiki-docs.jsonl.xz  the whole corpus, xz-compressed (14.7 MB)
# Usage: bash scripts/prepare_devcarry.sh [DATA_DIR]   (DATA_DIR defaults to ../shared/data). Both are ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
[ -f "$DATA/wikipedia/enwiki-docs.jsonl.gz" ] || { echo "error: no $DATA/wikipedia/enwiki-docs.jsonl.gz" >&2; exit 2; }
mkdir -p .whl .devcarry/data/stsb
ls .whl/tinygrad-0.14.0-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps tinygrad==0.14.0 -d .whl
cp "$DATA/stsb/sts-test.csv" .devcarry/data/stsb/
teacher=$(python3 -m teacher fetch all-MiniLM-L6-v2)
rm -rf .devcarry/minilm16 && cp -r "$teacher" .devcarry/minilm16 && rm -f .devcarry/minilm16/README.md
python3 - <<'PY'
import numpy as np
from safetensors.numpy import load_file, save_file
path = ".devcarry/minilm16/model.safetensors"
d = load_file(path)
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in d.items()}, path)
PY
[ -s .devcarry/enwiki-docs.jsonl.xz ] ||
  zcat "$DATA/wikipedia/enwiki-docs.jsonl.gz" | xz -9 -T2 > .devcarry/enwiki-docs.jsonl.xz
du -sh .whl .devcarry/minilm16 .devcarry/data .devcarry/enwiki-docs.jsonl.xz
