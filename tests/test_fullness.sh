#!/usr/bin/env bash
# test_fullness.sh: writing to a full disk, through the real tools. After a first
# successful run, preprocess (vocabulary, token files), train --resume (checkpoints),
# quantize (packed checkpoint) and evaluate (result tables) are run again where no
# file can be completed; each must exit 1 with a message naming the file it could not
# write, leave every previous file byte-identical and leave no temporary file. After
# space is freed, the interrupted training resumes and ends with the bytes of an
# uninterrupted run.
#
# Two ways to fill the disk, each run when available:
#   tmpfs   an 8 MiB tmpfs (mount needs root/CAP_SYS_ADMIN), filled up: ENOSPC;
#   fsize   RLIMIT_FSIZE (ulimit -f) with SIGXFSZ ignored: EFBIG past the limit.
# /dev/full cannot stand in: every file is written as "<path>.tmp.<pid>" next to its
# target and renamed, so the target's directory must be the full one.
#
# Usage: test_fullness.sh BUILD_DIR SOURCE_ROOT
set -euo pipefail
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$2" && pwd)
TOOLS=$BUILD/src/tools
TMP=$(mktemp -d /tmp/ngq_test_fullness_XXXXXX)
MNT=$TMP/mnt
mounted=0
cleanup() {
  [ $mounted = 0 ] || umount "$MNT" || umount -l "$MNT" || true
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

names=(Tom Lily Ben Sue Max Mia)
things=(ball cat tree cake kite boat)
for i in $(seq 0 599); do
  n=${names[$((i % 6))]} t=${things[$(((i / 6) % 6))]}
  printf '%s saw a %s. %s liked the %s very much, and the %s was happy too.\n<|endoftext|>\n' \
    "$n" "$t" "$n" "$t" "$t"
done > "$TMP/corpus.txt"
# a model whose checkpoint (about 420 kB) is larger than the space left below
SETS=(--set "data.inputs=$TMP/corpus.txt" --set data.val_fraction=0.1 --set data.test_fraction=0.1
      --set run.threads=1 --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=64
      --set model.block_size=32 --set train.batch_size=4 --set train.grad_accum=1 --set train.max_steps=4
      --set train.warmup_steps=1 --set train.eval_interval=2 --set train.checkpoint_interval=2
      --set train.eval_windows=4 --set eval.max_windows=16 --set quantize.n_samples=4)

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

run_tool() { # run_dir tool args...
  local run=$1 name=$2
  shift 2
  "$TOOLS/$name" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$run" "$@"
}
tool() { run_tool "$@" > "$TMP/out" 2> "$TMP/err"; } # stdout and stderr to $TMP/out, $TMP/err
# kbytes run_dir tool args...: the tool with RLIMIT_FSIZE = kbytes and SIGXFSZ ignored; its
# messages go through a pipe, since the limit applies to a file they would be written to
limited_tool() {
  local kb=$1
  shift
  ( ulimit -f "$kb"; trap '' XFSZ; run_tool "$@" ) 2>&1 > /dev/null | cat > "$TMP/err"
}
snapshot() { # dir -> "path checksum" of every file below it
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha1sum)
}

# expect_full WHAT RUN_DIR NAME_PATTERN BEFORE_SNAPSHOT -- command...
# The command must exit 1 with a message matching NAME_PATTERN (the file it could not
# write), leave RUN_DIR's files as in BEFORE_SNAPSHOT (apart from train_log.csv) and no
# temporary or pending file.
expect_full() {
  local what=$1 run=$2 pattern=$3 before=$4 rc=0
  shift 5
  "$@" || rc=$?
  local message
  message=$(tail -1 "$TMP/err")
  if [ $rc -ne 1 ]; then
    fail "$what: exit status $rc, expected 1 ($message)"
  elif ! grep -Eq "$pattern" <<<"$message"; then
    fail "$what: the message does not name the file ($pattern): $message"
  else
    ok "$what: exit 1: $message"
  fi
  diff <(grep -v ' ./train_log.csv$' "$before") <(snapshot "$run" | grep -v ' ./train_log.csv$') > "$TMP/diff" ||
    fail "$what: files changed: $(head -4 "$TMP/diff" | tr '\n' ' ')"
  local left
  left=$(find "$run" -name '*.tmp.*' -o -name '*.pending.*' | head -3)
  [ -z "$left" ] || fail "$what: left behind: $left"
}

# an uninterrupted run, for the final bytes
tool "$TMP/reference" preprocess
tool "$TMP/reference" train

# prepare RUN_DIR: a first successful run of every tool, train stopped at step 2
prepare() {
  tool "$1" preprocess || { fail "preprocess on an empty disk: $(cat "$TMP/err")"; return 1; }
  tool "$1" train --stop-at-step 2 || { fail "train on an empty disk: $(cat "$TMP/err")"; return 1; }
  tool "$1" quantize --variant naive:8:channel || { fail "quantize: $(cat "$TMP/err")"; return 1; }
  tool "$1" evaluate || { fail "evaluate: $(cat "$TMP/err")"; return 1; }
}

# finish RUN_DIR WHAT: with room again, the stopped training resumes to the reference's bytes
finish() {
  if tool "$1" train --resume; then
    for f in last.safetensors last.state.safetensors best.safetensors; do
      cmp -s "$1/checkpoints/$f" "$TMP/reference/checkpoints/$f" ||
        fail "$2: $f after resuming differs from an uninterrupted run's"
    done
    ok "$2: train --resume afterwards reaches an uninterrupted run's bytes"
  else
    fail "$2: train --resume afterwards failed: $(tail -1 "$TMP/err")"
  fi
}

# ---- tmpfs: no space left on device -----------------------------------------------------
mkdir -p "$MNT"
if mount -t tmpfs -o size=8m,mode=0755 ngq_fullness "$MNT" 2> "$TMP/mount.err"; then
  mounted=1
  run=$MNT/run
  if prepare "$run"; then
    snapshot "$run" > "$TMP/before"
    # fill the file system to the last block
    dd if=/dev/zero of="$MNT/filler" bs=64k 2> /dev/null || true
    expect_full "tmpfs full: preprocess" "$run" 'vocab\.txt|\.tok' "$TMP/before" -- tool "$run" preprocess
    expect_full "tmpfs full: train --resume" "$run" 'train_log\.csv|safetensors' "$TMP/before" -- \
      tool "$run" train --resume
    expect_full "tmpfs full: quantize" "$run" 'naive-8b-channel\.safetensors|layers-naive-8b-channel\.csv' \
      "$TMP/before" -- tool "$run" quantize --variant naive:8:channel
    expect_full "tmpfs full: evaluate" "$run" 'results/eval' "$TMP/before" -- tool "$run" evaluate
    # 128 kB free: the log fits, a checkpoint does not (best at step 4, last at a stop at 3)
    truncate -s -128k "$MNT/filler"
    expect_full "tmpfs nearly full: train --resume (best)" "$run" 'checkpoints/best\.safetensors' \
      "$TMP/before" -- tool "$run" train --resume
    expect_full "tmpfs nearly full: train --resume --stop-at-step 3 (last)" "$run" \
      'checkpoints/last\.pending\.safetensors' "$TMP/before" -- tool "$run" train --resume --stop-at-step 3
    # 640 kB free: the checkpoint fits, its training state does not
    truncate -s -512k "$MNT/filler"
    expect_full "tmpfs nearly full: train --resume --stop-at-step 3 (state)" "$run" \
      'checkpoints/last\.state\.safetensors' "$TMP/before" -- tool "$run" train --resume --stop-at-step 3
    rm -f "$MNT/filler"
    finish "$run" "tmpfs"
  fi
else
  echo "skip: tmpfs cases (mount -t tmpfs failed: $(head -1 "$TMP/mount.err"))"
fi

# ---- RLIMIT_FSIZE: file too large ----------------------------------------------------------
run=$TMP/run
if prepare "$run"; then
  snapshot "$run" > "$TMP/before"
  expect_full "fsize 0: preprocess (the vocabulary)" "$run" 'data/vocab\.txt' "$TMP/before" -- \
    limited_tool 0 "$run" preprocess
  expect_full "fsize 8k: preprocess (a token file)" "$run" 'data/(train|val|test)\.tok' "$TMP/before" -- \
    limited_tool 8 "$run" preprocess
  expect_full "fsize 64k: train --resume (best)" "$run" 'checkpoints/best\.safetensors' \
    "$TMP/before" -- limited_tool 64 "$run" train --resume
  expect_full "fsize 64k: train --resume --stop-at-step 3 (last)" "$run" 'checkpoints/last\.pending\.safetensors' \
    "$TMP/before" -- limited_tool 64 "$run" train --resume --stop-at-step 3
  expect_full "fsize 600k: train --resume --stop-at-step 3 (state)" "$run" 'checkpoints/last\.state\.safetensors' \
    "$TMP/before" -- limited_tool 600 "$run" train --resume --stop-at-step 3
  expect_full "fsize 1k: train --resume (the training log, before a checkpoint is due)" "$run" 'train_log\.csv' \
    "$TMP/before" -- limited_tool 1 "$run" train --resume --set train.max_steps=40 \
    --set train.eval_interval=100 --set train.checkpoint_interval=100
  expect_full "fsize 16k: quantize (the packed checkpoint)" "$run" 'checkpoints/naive-8b-channel\.safetensors' \
    "$TMP/before" -- limited_tool 16 "$run" quantize --variant naive:8:channel
  expect_full "fsize 0: evaluate (the result tables)" "$run" 'results/eval' "$TMP/before" -- \
    limited_tool 0 "$run" evaluate
  finish "$run" "fsize"
fi

echo "test_fullness: $failures failure(s)"
[ $failures -eq 0 ]
