#!/usr/bin/env bash
# test_crash.sh: train killed with SIGKILL at seeded random moments (start-up, steps, and
# in the middle of checkpoint writes) always leaves checkpoints that load and are
# byte-equal to ones an uninterrupted run writes, and --resume from every killed
# state reaches the same final bytes as an uninterrupted run.
#
#   1. A reference run (run_probe reference: the library call train makes) keeps the
#      files of every step; `train --stop-at-step` and a full `train` are checked
#      against it, so the references are what the tool writes.
#   2. Kill points, one after the other on the same run directory: each starts train
#      (with --resume once a checkpoint exists) and kills it after a random delay, or
#      when a temporary or pending checkpoint file appears (then after a random few
#      microseconds), so many kills land inside a write. After every kill each
#      checkpoint present must load and equal the reference of its step, and the
#      training state must belong to one of them. A run that finishes is compared
#      with the reference's final files, and the next kill point starts a new run.
#   3. The one moment random kills hardly ever hit, between the state's rename and the
#      checkpoint's (see save_last in src/lib/train.c), is made by hand and resumed.
#   4. The last run is resumed to the end without a kill and compared likewise, as is
#      the deterministic part of its train_log.csv (step, lr, losses, grad norm).
# Leftover "<file>.tmp.<pid>" files of killed processes are expected; the test checks
# that no real file is ever one of them (every real file equals a reference).
#
# Usage: test_crash.sh BUILD_DIR SOURCE_ROOT
# Environment: NGQ_CRASH_KILLS (kill points, default 24), NGQ_CRASH_SEED (default 1),
# NGQ_CRASH_STEPS (training steps, default 8).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$2" && pwd)
KILLS=${NGQ_CRASH_KILLS:-24}
SEED=${NGQ_CRASH_SEED:-1}
STEPS=${NGQ_CRASH_STEPS:-8}
TRAIN=$BUILD/src/tools/train
PREPROCESS=$BUILD/src/tools/preprocess
PROBE=$BUILD/tests/run_probe
TMP=$(mktemp -d /tmp/ngq_test_crash_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# ---- a corpus and a config of our own ------------------------------------------------
names=(Tom Lily Ben Sue Max Mia)
things=(ball cat tree cake kite boat)
for i in $(seq 0 299); do
  n=${names[$((i % 6))]} t=${things[$(((i / 6) % 6))]}
  printf '%s saw a %s. %s liked the %s very much, and the %s was happy too.\n<|endoftext|>\n' \
    "$n" "$t" "$n" "$t" "$t"
done > "$TMP/corpus.txt"
# a model whose checkpoint (1.6 MB) and state (3.2 MB) take a noticeable share of a step,
# written after every step
SETS=(--set "data.inputs=$TMP/corpus.txt" --set data.val_fraction=0.1 --set data.test_fraction=0.1
      --set run.threads=1 --set model.n_layer=2 --set model.n_head=4 --set model.n_embd=128
      --set model.block_size=32 --set train.batch_size=4 --set train.grad_accum=1
      --set "train.max_steps=$STEPS" --set train.warmup_steps=2 --set train.checkpoint_interval=1
      --set train.eval_interval=3 --set train.eval_windows=4 --set train.log_interval=1)

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# the token files, made once and copied into every run directory
"$PREPROCESS" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$TMP/data_run" > "$TMP/preprocess.log"
new_run() { # run_dir: a run directory holding the token files and nothing else
  rm -rf "$1"
  mkdir -p "$1"
  cp -r "$TMP/data_run/data" "$1/data"
}

# ---- 1. references ---------------------------------------------------------------------
new_run "$TMP/ref_run"
t0=$(date +%s%N)
"$PROBE" reference "$TMP/ref" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$TMP/ref_run" \
  > "$TMP/reference.log"
t1=$(date +%s%N)
step_us=$(((t1 - t0) / 1000 / STEPS))
echo "reference: $STEPS steps, $((step_us / 1000)) ms a step (including its checkpoint writes)"
for s in $(seq 1 "$STEPS"); do
  for f in last.safetensors last.state.safetensors; do
    [ -f "$TMP/ref/$s/$f" ] || fail "reference step $s has no $f"
  done
done

same() { cmp -s "$1" "$2"; }
# the references are what the tool writes: a stop in the middle, and a full run
mid=$(((STEPS + 1) / 2))
new_run "$TMP/tool_mid"
"$TRAIN" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$TMP/tool_mid" --stop-at-step "$mid" \
  > "$TMP/tool_mid.log"
new_run "$TMP/tool_full"
"$TRAIN" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$TMP/tool_full" > "$TMP/tool_full.log"
for f in last.safetensors last.state.safetensors best.safetensors; do
  same "$TMP/tool_mid/checkpoints/$f" "$TMP/ref/$mid/$f" || fail "train --stop-at-step $mid: $f differs from the reference"
  same "$TMP/tool_full/checkpoints/$f" "$TMP/ref/$STEPS/$f" || fail "train: final $f differs from the reference"
done
[ $failures -eq 0 ] || { echo "test_crash: the references are not reproducible; stopping"; exit 1; }

# the deterministic columns of a training log: step, lr, train_loss, val_loss, grad_norm
log_columns() { cut -d, -f1-5 "$1"; }

# ---- 2. kill points ----------------------------------------------------------------------
# check_run RUN_DIR WHAT: every checkpoint present loads and equals its step's reference
check_run() {
  local run=$1 what=$2 ck=$1/checkpoints
  local out
  if ! out=$("$PROBE" inspect "$run" 2> "$TMP/inspect.err"); then
    fail "$what: a checkpoint does not load: $(cat "$TMP/inspect.err")"
    return
  fi
  local last pending best state_step state_match tmp
  last=$(sed -n 's/^last //p' <<<"$out")
  pending=$(sed -n 's/^pending //p' <<<"$out")
  best=$(sed -n 's/^best //p' <<<"$out")
  read -r state_step state_match < <(sed -n 's/^state //p' <<<"$out")
  tmp=$(sed -n 's/^tmp //p' <<<"$out")
  [ "$last" = none ] || same "$ck/last.safetensors" "$TMP/ref/$last/last.safetensors" ||
    fail "$what: last.safetensors (step $last) differs from the reference of step $last"
  [ "$pending" = none ] || same "$ck/last.pending.safetensors" "$TMP/ref/$pending/last.safetensors" ||
    fail "$what: last.pending.safetensors (step $pending) differs from the reference of step $pending"
  [ "$best" = none ] || same "$ck/best.safetensors" "$TMP/ref/$best/best.safetensors" ||
    fail "$what: best.safetensors (step $best) differs from the reference of step $best"
  if [ "$state_step" != none ]; then
    case $state_match in
      last | pending) ;;
      *) fail "$what: last.state.safetensors (step $state_step) belongs to no checkpoint present (last $last, pending $pending)" ;;
    esac
    same "$ck/last.state.safetensors" "$TMP/ref/$state_step/last.state.safetensors" ||
      fail "$what: last.state.safetensors (step $state_step) differs from the reference of step $state_step"
  elif [ "$last" != none ]; then
    fail "$what: last.safetensors (step $last) without its training state"
  fi
  echo "$what: last $last, pending $pending, best $best, state $state_step${state_match:+ ($state_match)}, $tmp temporary file(s)"
}

check_final() { # run_dir what
  for f in last.safetensors last.state.safetensors best.safetensors; do
    same "$1/checkpoints/$f" "$TMP/ref/$STEPS/$f" || fail "$2: final $f differs from an uninterrupted run's"
  done
  [ ! -e "$1/checkpoints/last.pending.safetensors" ] || fail "$2: last.pending.safetensors left after the run ended"
  if ! diff <(log_columns "$1/train_log.csv") <(log_columns "$TMP/tool_full/train_log.csv") > "$TMP/log.diff"; then
    fail "$2: train_log.csv differs from an uninterrupted run's (step, lr, losses, grad norm): $(head -5 "$TMP/log.diff")"
  fi
}

RANDOM=$SEED
rand_below() { echo $(((RANDOM * 32768 + RANDOM) % $1)); }
# what a kill waits for: a random time, or a temporary file being written (the checkpoint
# goes to last.pending first, then the state, then last.pending is renamed over last)
modes=(delay any-tmp pending-tmp state-tmp best-tmp)
episode=1 run=$TMP/run_1 killed=0 mid_write=0 finished=0 resumed=0
new_run "$run"
declare -A mode_count=()
for k in $(seq 1 "$KILLS"); do
  mode=${modes[$(rand_below ${#modes[@]})]}
  case $mode in
    delay) kill_args=(--after-us "$(rand_below $((step_us * 5 / 2 + 150000)))") ;;
    any-tmp) kill_args=(--after-us "$(rand_below $((step_us * 3 / 2)))" --when-file '*.tmp.*' --then-us "$(rand_below 5000)") ;;
    pending-tmp) kill_args=(--after-us "$(rand_below "$step_us")" --when-file 'last.pending.safetensors.tmp.*' --then-us "$(rand_below 3000)") ;;
    state-tmp) kill_args=(--after-us "$(rand_below "$step_us")" --when-file 'last.state.safetensors.tmp.*' --then-us "$(rand_below 3000)") ;;
    best-tmp) kill_args=(--after-us "$(rand_below "$step_us")" --when-file 'best.safetensors.tmp.*' --then-us "$(rand_below 3000)") ;;
  esac
  mode_count[$mode]=$((${mode_count[$mode]:-0} + 1))
  resume=()
  if [ -f "$run/checkpoints/last.state.safetensors" ]; then
    resume=(--resume)
    resumed=$((resumed + 1))
  fi
  what="kill point $k ($mode ${kill_args[*]}${resume:+, --resume})"
  if ! "$PROBE" kill "${kill_args[@]}" --in "$run/checkpoints" -- "$TRAIN" --config "$ROOT/configs/ci.ini" \
       "${SETS[@]}" --set "paths.run_dir=$run" "${resume[@]}" > "$TMP/train.out" 2> "$TMP/train.err"; then
    fail "$what: train failed: $(tail -3 "$TMP/train.err")"
    break
  fi
  # run_probe's verdict is the last line (train's own output comes before it)
  outcome=$(grep -E '^(killed|exited|signalled) ' "$TMP/train.out" | tail -1 || true)
  case $outcome in
    killed*)
      killed=$((killed + 1))
      check_run "$run" "$what, $outcome"
      # temporary files left: the process died inside a write. They must be its own.
      pid=${outcome##* }
      leftovers=$(find "$run/checkpoints" -name '*.tmp.*' -printf '%f\n' 2>/dev/null)
      if [ -n "$leftovers" ]; then
        mid_write=$((mid_write + 1))
        ! grep -qv "\.tmp\.$pid\$" <<<"$leftovers" || fail "$what: temporary files of another process: $leftovers"
      fi
      # train does not clean up temporary files; clear them so each kill is judged alone
      find "$run/checkpoints" -name '*.tmp.*' -delete 2>/dev/null || true
      ;;
    "exited 0")
      finished=$((finished + 1))
      check_run "$run" "$what, finished"
      check_final "$run" "$what"
      episode=$((episode + 1)) run=$TMP/run_$episode
      new_run "$run"
      ;;
    *) fail "$what: unexpected outcome '$outcome'" ;;
  esac
done

# ---- 3. the moments between two renames, made by hand ---------------------------------
# A kill between the state's rename and last.pending's rename is rare at random; build
# that state (and the one before the state's rename) from the references and resume.
for S in 1 "$mid"; do
  for window in after-state before-state; do
    hand=$TMP/hand_${S}_$window
    new_run "$hand"
    mkdir -p "$hand/checkpoints"
    head -n $((S + 1)) "$TMP/tool_full/train_log.csv" > "$hand/train_log.csv"
    [ "$S" -eq 1 ] || cp "$TMP/ref/$((S - 1))/last.safetensors" "$hand/checkpoints/last.safetensors"
    [ ! -f "$TMP/ref/$S/best.safetensors" ] || cp "$TMP/ref/$S/best.safetensors" "$hand/checkpoints/best.safetensors"
    cp "$TMP/ref/$S/last.safetensors" "$hand/checkpoints/last.pending.safetensors"
    if [ $window = after-state ]; then
      cp "$TMP/ref/$S/last.state.safetensors" "$hand/checkpoints/last.state.safetensors"
    elif [ "$S" -gt 1 ]; then
      cp "$TMP/ref/$((S - 1))/last.state.safetensors" "$hand/checkpoints/last.state.safetensors"
    fi
    what="step $S, stopped $window rename"
    check_run "$hand" "$what"
    [ -f "$hand/checkpoints/last.state.safetensors" ] || continue # nothing to resume: train starts afresh
    if "$TRAIN" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$hand" --resume \
         > "$TMP/hand.out" 2> "$TMP/hand.err"; then
      check_final "$hand" "$what, resumed"
    else
      fail "$what: --resume failed: $(tail -3 "$TMP/hand.err")"
    fi
  done
done

# ---- 4. the last run to the end, resumed from its killed state -----------------------
resume=()
[ ! -f "$run/checkpoints/last.state.safetensors" ] || resume=(--resume)
if "$TRAIN" --config "$ROOT/configs/ci.ini" "${SETS[@]}" --set "paths.run_dir=$run" "${resume[@]}" \
     > "$TMP/final.out" 2> "$TMP/final.err"; then
  check_final "$run" "final run${resume:+ (--resume)}"
else
  fail "final run${resume:+ (--resume)} failed: $(tail -3 "$TMP/final.err")"
fi

summary=""
for m in "${modes[@]}"; do summary+=" $m ${mode_count[$m]:-0}"; done
echo "test_crash: $KILLS kill points (seed $SEED):$summary; $killed kills, $mid_write inside a write" \
     "(temporary file left), $finished runs finished, $resumed resumed; $failures failure(s)"
[ $failures -eq 0 ]
