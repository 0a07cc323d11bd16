#!/usr/bin/env bash
# test_study.sh: scripts/study end to end on configs/ci.ini, in a temporary run directory:
#   1. a first run makes everything (every step "running"), and the report and tables exist;
#   2. a second run skips every step and rewrites nothing;
#   3. touching the baseline checkpoint re-runs quantize, evaluate, figures and report only;
#   4. an unfinished training run (last before max_steps) is resumed, not restarted;
#   5. touching the config re-runs nothing; changing an [eval] value re-runs evaluate, figures
#      and report only; changing a [quantize] value re-runs quantize and what follows;
#   6. a failing step stops the study, names the step and exits non-zero.
# Usage: test_study.sh BUILD_DIR SOURCE_ROOT. Exit 77 (skipped) without the TinyStories corpus.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
ROOT=$(cd "$2" && pwd)
if [ ! -f "$ROOT/data/tinystories/train.txt" ] && [ ! -f "$ROOT/../shared/data/tinystories/train.txt" ] &&
   [ -z "${NGQ_SHARED_DATA:-}" ]; then
  echo "test_study: no TinyStories corpus (data/tinystories); skipped"
  exit 77
fi
TMP=$(mktemp -d /tmp/ngq_test_study_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export NGQ_BUILD_DIR=$BUILD NGQ_STUDY_NO_BUILD=1 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1

# the CI config with every output under $TMP, and a shorter evaluation
sed -e "s|^run_dir = .*|run_dir = $TMP/run|" -e "s|^figures_dir = .*|figures_dir = $TMP/run/figures|" \
    -e "s|^report_dir = .*|report_dir = $TMP/run/report|" -e "s|^max_windows = .*|max_windows = 24|" \
    "$ROOT/configs/ci.ini" > "$TMP/ci.ini"
grep -q "^run_dir = $TMP/run" "$TMP/ci.ini" || { echo "FAIL: could not point the config at $TMP"; exit 1; }

failures=0
check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); fi
}
study() { # log file
  local rc=0
  "$ROOT/scripts/study" "$TMP/ci.ini" > "$1" 2>&1 || rc=$?
  return $rc
}
# step_says LOG STEP WORD: the step's decision line contains WORD ("running", "resuming", "skipped")
step_says() { grep -E "^\[study\] $2[ :].*: $3|^\[study\] $2: $3" "$1" >/dev/null; }
all_steps=(preprocess train "quantize naive:8:channel" "quantize gptq:4:channel" "quantize gptq:4:g16" evaluate
           figures report)

# 1. everything from nothing
check "first run succeeds" study "$TMP/log1"
for s in "${all_steps[@]}"; do check "first run: $s runs" step_says "$TMP/log1" "$s" running; done
check "the report exists" test -s "$TMP/run/report/REPORT.md"
check "eval.csv has the baseline and 3 variants" test "$(wc -l < "$TMP/run/results/eval.csv")" -eq 5
check "the report links the figures or names them missing" grep -q "## Figures" "$TMP/run/report/REPORT.md"
check "the report has observations" grep -q "^- " "$TMP/run/report/REPORT.md"

# 2. nothing to do
snapshot() { find "$TMP/run" -type f -printf '%p %T@\n' | sort; }
snapshot > "$TMP/before"
check "second run succeeds" study "$TMP/log2"
for s in "${all_steps[@]}"; do check "second run: $s skipped" step_says "$TMP/log2" "$s" skipped; done
check "second run runs nothing" bash -c "! grep -E ': (running|resuming)' '$TMP/log2'"
snapshot > "$TMP/after"
check "second run rewrote no file" cmp -s "$TMP/before" "$TMP/after"

# 3. a newer baseline: what reads it runs again, what it reads does not
sleep 0.01
touch "$TMP/run/checkpoints/best.safetensors"
check "run after touching the baseline succeeds" study "$TMP/log3"
check "baseline touched: preprocess skipped" step_says "$TMP/log3" preprocess skipped
check "baseline touched: train skipped" step_says "$TMP/log3" train skipped
for s in "quantize naive:8:channel" "quantize gptq:4:channel" "quantize gptq:4:g16" evaluate figures report; do
  check "baseline touched: $s runs" step_says "$TMP/log3" "$s" running
done

# 4. an unfinished run is resumed
"$BUILD/src/tools/train" --config "$TMP/ci.ini" --stop-at-step 20 > "$TMP/train_stop.log" 2>&1
check "run after stopping training at step 20 succeeds" study "$TMP/log4"
check "unfinished training is resumed" step_says "$TMP/log4" train resuming
check "the resumed run reached max_steps" grep -q "step=30 " <("$BUILD/src/tools/evaluate" --config "$TMP/ci.ini" \
  --info "$TMP/run/checkpoints/last.safetensors")

# 5. the config: its time stamp alone changes nothing; a changed value re-runs what reads it
sleep 0.01
touch "$TMP/ci.ini"
check "run after touching the config succeeds" study "$TMP/log5"
check "config touched: nothing runs" bash -c "! grep -E ': (running|resuming)' '$TMP/log5'"
sed -i "s|^max_windows = 24|max_windows = 20|" "$TMP/ci.ini"
check "run after changing [eval] max_windows succeeds" study "$TMP/log5b"
for s in preprocess train "quantize naive:8:channel" "quantize gptq:4:channel" "quantize gptq:4:g16"; do
  check "[eval] changed: $s skipped" step_says "$TMP/log5b" "$s" skipped
done
for s in evaluate figures report; do check "[eval] changed: $s runs" step_says "$TMP/log5b" "$s" running; done
sed -i "s|^percdamp = .*|percdamp = 0.02|" "$TMP/ci.ini"
check "run after changing [quantize] percdamp succeeds" study "$TMP/log5c"
check "[quantize] changed: train skipped" step_says "$TMP/log5c" train skipped
for s in "quantize gptq:4:channel" evaluate report; do
  check "[quantize] changed: $s runs" step_says "$TMP/log5c" "$s" running
done

# 6. a failing step stops the study and names it (a damaged token file: newer than what
#    made it, so preprocess is skipped, and evaluate is the first step that reads it)
sleep 0.01
echo "not a token file" > "$TMP/run/data/test.tok"
rc=0
study "$TMP/log6" || rc=$?
check "a broken checkpoint makes the study fail" test $rc -ne 0
check "the failure names the step" grep -q "FAILED at step 'evaluate'" "$TMP/log6"
check "no step after the failure ran" bash -c "! grep -E '^\[study\] (figures|report):' '$TMP/log6'"

if [ $failures -ne 0 ]; then
  echo "test_study: $failures check(s) failed; logs:"
  for f in "$TMP"/log*; do echo "==== $f"; cat "$f"; done
  exit 1
fi
echo "test_study: all checks passed"
