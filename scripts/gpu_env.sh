# Sourced by the scripts/gpu_*.sh calls on a lent GPU machine (no network there): tinygrad from the carried wheel in
# .whl/, CUDA, the carried data, and caches under runs/ (kept between calls while the machine stays warm).
# (once per machine: the parallel runs of scripts/gpu_capacity.sh source this too, and must not reinstall under each
# other)
[ -f /tmp/site/tinygrad/__init__.py ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 DEV=${DEV:-CUDA} STUDENTZ_DATA=.devcarry/data STUDENTZ_CACHE=runs/szcache
export CACHEDB=${CACHEDB:-$PWD/runs/tinygrad-cache.db}
mkdir -p runs
# The whole corpus travels xz-compressed (14.7 MB; gzip's 21.9 MB does not fit next to the teacher): unpacked once per
# machine into the layout train.py looks for, with the STS-B test set beside it.
if [ -f .devcarry/enwiki-docs.jsonl.xz ]; then
  if [ ! -f runs/fulldata/wikipedia/enwiki-docs.jsonl.gz ]; then
    mkdir -p runs/fulldata/wikipedia runs/fulldata/stsb && cp .devcarry/data/stsb/sts-test.csv runs/fulldata/stsb/
    python3 -c "import lzma, gzip, shutil; shutil.copyfileobj(lzma.open('.devcarry/enwiki-docs.jsonl.xz'),
gzip.open('runs/fulldata/wikipedia/enwiki-docs.jsonl.gz', 'wb', compresslevel=1), 1 << 20)"
  fi
fi
# once unpacked, later calls need not carry it again (models/ and the xz together come near the 64 MiB a call carries)
[ -f runs/fulldata/wikipedia/enwiki-docs.jsonl.gz ] && export STUDENTZ_DATA=runs/fulldata
nvidia-smi --query-gpu=name --format=csv,noheader

# export16 CKPT [SKIP] [NAME]: the checkpoint's weights as fp16 safetensors in 15 MB parts $OUT/NAME.part-* (NAME
# defaults to model16; files that come back from the machine are limited to 16 MiB each); tensors whose names start
# with SKIP (e.g. "encoder.", when an earlier call brought the frozen encoder back) are left out
export16() {
  python3 -c "
from safetensors.numpy import load_file, save_file
import numpy as np
d = load_file('$1/model.safetensors')
skip = '${2:-}'
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in d.items()
           if not (skip and k.startswith(skip))}, '/tmp/model16.safetensors')"
  local name=${3:-model16}
  rm -f $OUT/$name.part-*; split -b 15M /tmp/model16.safetensors $OUT/$name.part-
}

# train_row NAME "VAR=value ..." [python -m bench train arguments]: one train-step measurement under those variables,
# its rows in $OUT/NAME.json and its summary line on stdout; TO is the time limit in seconds
train_row() {
  local name=$1 vars=$2; shift 2
  env $vars timeout ${TO:-200} python3 -m bench train --reps 20 --json $OUT/$name.json "$@" 2>&1 | grep bench=
}

# detach EXIT LOG SECONDS CMD...: CMD under `timeout SECONDS` in a process session of its own, which outlives the call
# while the machine stays warm (started from a subshell, so that no `wait` of the caller waits for it); its output goes
# to LOG and its exit status to the file EXIT once it ends. LOG exists when detach returns (need_run checks for it at
# once; the background shell may not have opened it yet)
detach() {
  local exit=$1 log=$2 secs=$3; shift 3; rm -f $exit; : > $log
  (EXITF=$exit LOGF=$log setsid bash -c 'timeout "$0" "$@" > "$LOGF" 2>&1; echo $? > "$EXITF"' $secs "$@" \
    < /dev/null > /dev/null 2>&1 &)
}

# need_run LOG NAME HINT: stop the call at once (exit 3) where a detached run's LOG is missing: the machine is a fresh
# one (the warm one went back), so the run and its data are gone. A wait there would last the whole call: the
# fourteenth session's did, 534 s of device time.
need_run() {
  [ -f "$1" ] || { echo "no run $2 on this machine: it is a fresh one (the one that ran it went back), so the run" \
    "and its data are gone; $3"; exit 3; }
}
