#!/usr/bin/env bash
# test_limits.sh: absurd sizes fail up front, with a message, in train, quantize and
# evaluate: values outside the configuration's ranges (n_layer = 1e9, block_size = 0,
# batch_size = 1e9) at validation (exit 2), a model or batch that cannot fit in memory
# at train's memory check, a GPTQ calibration set that cannot fit at quantize's, an
# evaluation batch whose workspace cannot be allocated, and a checkpoint whose metadata
# claims an absurd model (exit 1 or 2). Every run is bounded by a timeout and (except
# with AddressSanitizer, whose shadow memory needs the address space) a 4 GiB
# address-space limit, so a missing check fails the test instead of the machine.
#
# Usage: test_limits.sh BUILD_DIR SOURCE_ROOT
set -euo pipefail
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$2" && pwd)
TOOLS=$BUILD/src/tools
PROBE=$BUILD/tests/run_probe
TMP=$(mktemp -d /tmp/ngq_test_limits_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# under AddressSanitizer an impossible malloc returns NULL (as without it) instead of aborting
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1
address_limit=4194304
if ldd "$TOOLS/train" 2> /dev/null | grep -q libasan; then address_limit=unlimited; fi

names=(Tom Lily Ben Sue)
things=(ball cat tree cake)
for i in $(seq 0 1999); do
  n=${names[$((i % 4))]} t=${things[$(((i / 4) % 4))]}
  printf '%s saw a %s. %s liked the %s very much.\n<|endoftext|>\n' "$n" "$t" "$n" "$t"
done > "$TMP/corpus.txt"
RUN=$TMP/run
BASE=(--config "$ROOT/configs/ci.ini" --set "data.inputs=$TMP/corpus.txt" --set data.val_fraction=0.1
      --set data.test_fraction=0.1 --set run.threads=1 --set "paths.run_dir=$RUN")
"$TOOLS/preprocess" "${BASE[@]}" > /dev/null
mkdir -p "$RUN/checkpoints"
"$PROBE" checkpoint "$RUN/checkpoints/best.safetensors" "${BASE[@]}"
# a model with 8192-token windows and 8 heads (small: 0.6 M parameters)
"$PROBE" checkpoint "$TMP/long.safetensors" "${BASE[@]}" --set model.block_size=8192 --set model.n_embd=64 \
  --set model.n_head=8 --set model.n_layer=1
# a checkpoint whose metadata claims 10^9 layers (the tensors are the small model's)
python3 - "$RUN/checkpoints/best.safetensors" "$TMP/claims.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
model = json.loads(header["__metadata__"]["nanogptq.model"])
model["n_layer"] = 1000000000
header["__metadata__"]["nanogptq.model"] = json.dumps(model)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + data[8 + n:])
PY

failures=0
# expect WHAT STATUSES PATTERN -- tool args...: the tool exits with one of STATUSES (e.g.
# "2" or "1|2") within 30 s under the address-space limit, with a last line on stderr
# matching PATTERN
expect() {
  local what=$1 statuses=$2 pattern=$3 rc=0 t0 t1
  shift 4
  t0=$(date +%s)
  ( ulimit -v "$address_limit"; exec timeout 30 "$TOOLS/$1" "${BASE[@]}" "${@:2}" ) > "$TMP/out" 2> "$TMP/err" || rc=$?
  t1=$(date +%s)
  local message
  message=$(tail -1 "$TMP/err")
  if ! [[ "$rc" =~ ^($statuses)$ ]]; then
    echo "FAIL: $what: exit status $rc, expected $statuses: $message"
    failures=$((failures + 1))
  elif ! grep -Eq "$pattern" <<<"$message"; then
    echo "FAIL: $what: message does not match '$pattern': $message"
    failures=$((failures + 1))
  else
    echo "ok: $what ($((t1 - t0)) s): $message"
  fi
}

for tool in train quantize evaluate; do
  expect "$tool: n_layer = 1e9" 2 'n_layer.*out of range' -- "$tool" --set model.n_layer=1000000000
  expect "$tool: block_size = 0" 2 'block_size.*out of range' -- "$tool" --set model.block_size=0
  expect "$tool: train batch_size = 1e9" 2 'batch_size.*out of range' -- "$tool" --set train.batch_size=1000000000
  expect "$tool: eval batch_size = 1e9" 2 'batch_size.*out of range' -- "$tool" --set eval.batch_size=1000000000
  expect "$tool: n_samples = 1e9" 2 'n_samples.*out of range' -- "$tool" --set quantize.n_samples=1000000000
done

# train: a model over the parameter limit, and one within it that cannot fit in memory
expect "train: 10^11 parameters" 2 'parameters.*limit' -- train --set model.n_layer=128 --set model.n_embd=8192 \
  --set model.n_head=64
expect "train: batch 4096 x block 8192" 1 'needs [0-9.]+ GiB, more than' -- train --set train.batch_size=4096 \
  --set model.block_size=8192
expect "train: 2 G parameters and batch 4096" 1 'needs [0-9.]+ GiB, more than' -- train --set model.n_layer=40 \
  --set model.n_embd=2048 --set model.n_head=16 --set train.batch_size=4096

# quantize: a calibration set that cannot fit
expect "quantize: gptq on 10^6 windows" 1 'calibration.*needs [0-9.]+ GiB, more than' -- quantize \
  --variant gptq:4:channel --set quantize.n_samples=1000000
expect "quantize: gptq on 10^5 windows of 8192 tokens" 1 'calibration.*needs [0-9.]+ GiB, more than' -- quantize \
  --variant gptq:4:channel --set quantize.n_samples=100000 --in "$TMP/long.safetensors" --out "$TMP/q.safetensors"

# evaluate: 4096 windows of 8192 tokens a batch (stride 1 over the train split makes that
# many windows; their attention scratch alone is 8 PiB)
expect "evaluate: batch 4096 x 8192 tokens" 1 'memory' -- evaluate --set eval.batch_size=4096 --set eval.stride=1 \
  --set eval.max_windows=0 --tokens "$RUN/data/train.tok" --out "$TMP/eval" "$TMP/long.safetensors"

# a checkpoint claiming 10^9 layers is refused when read, before any allocation
expect "quantize: checkpoint claiming 10^9 layers" '1|2' 'claims\.safetensors.*n_layer' -- quantize \
  --variant naive:8:channel --in "$TMP/claims.safetensors" --out "$TMP/q.safetensors"
expect "evaluate: checkpoint claiming 10^9 layers" '1|2' 'claims\.safetensors.*n_layer' -- evaluate \
  "$TMP/claims.safetensors"

echo "test_limits: $failures failure(s)"
[ $failures -eq 0 ]
