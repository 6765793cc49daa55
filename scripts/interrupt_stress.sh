#!/usr/bin/env bash
# The long version of the interrupt tests (tests/test_signals.cpp): an M-shape
# STEM training run, Ctrl-C'd (SIGINT) a few seconds in, RUNS times. Each run
# must exit 130 with its message (or 0 if it finished first), never abort;
# the checkpoint it saved must load; with RESUME=1 (default) it is resumed to
# the end and its losses must equal those of a run never interrupted.
# Usage: scripts/interrupt_stress.sh [RUNS] [DATA_DIR]
#   RUNS      default 50
#   DATA_DIR  a `stem prepare` directory of vocabulary 8192 (default: the
#             built-in corpus, prepared into $WORK/data)
# Environment: CONFIG (configs/M-stem.json), DELAY seconds before the signal
# (9), STEPS (5), SIG (INT), RESUME (1), WORK (a temporary directory), STEM
# (build/stem). Prints one line per run and a summary; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-50}
STEM=${STEM:-build/stem}
CONFIG=${CONFIG:-configs/M-stem.json}
DELAY=${DELAY:-9}
STEPS=${STEPS:-5}
SIG=${SIG:-INT}
RESUME=${RESUME:-1}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
DATA=${2:-$WORK/data}
[[ -x $STEM ]] || { echo "interrupt_stress: $STEM not built (cmake --build --preset release)" >&2; exit 2; }
if [[ ! -f $DATA/data.json ]]; then
  "$STEM" prepare --input corpus/builtin --out "$DATA" --vocab-size 8192 > /dev/null
fi
train=("$STEM" train --config "$CONFIG" --data "$DATA" --steps "$STEPS" --batch 4 --seq 512 --save-every 10)
losses() { python3 -c 'import json,sys; print(" ".join("%d:%r" % (j["step"], j["loss"]) for j in map(json.loads, open(sys.argv[1]))))' "$1/metrics.jsonl"; }

ref=""
if [[ $RESUME == 1 ]]; then
  "${train[@]}" --out "$WORK/ref" > /dev/null 2>&1
  ref=$(losses "$WORK/ref")
fi
aborts=0 bad=0 stopped=0
for i in $(seq 1 "$RUNS"); do
  run=$WORK/run-$i
  rm -rf "$run"
  set +e
  "${train[@]}" --out "$run" --json > "$run.out" 2> "$run.err" &
  pid=$!
  sleep "$DELAY"
  kill -"$SIG" "$pid" 2> /dev/null
  wait "$pid"
  rc=$?
  set -e
  what="rc $rc"
  case $rc in
    0) ;;
    130|143|129) stopped=$((stopped + 1)) ;;
    *) aborts=$((aborts + 1)); what="$what ABORT: $(tail -n 1 "$run.err")" ;;
  esac
  if [[ $rc == 130 || $rc == 143 || $rc == 129 ]]; then
    grep -q "stopped by SIG" "$run.err" || { bad=$((bad + 1)); what="$what (no stop message)"; }
    latest=$run/checkpoints/$(cat "$run/latest")
    "$STEM" inspect --model "$latest" > /dev/null 2>&1 || { bad=$((bad + 1)); what="$what (checkpoint does not load)"; }
    if [[ $RESUME == 1 ]]; then
      "${train[@]}" --out "$run" --resume > /dev/null 2>&1 || { bad=$((bad + 1)); what="$what (resume failed)"; }
    fi
  fi
  if [[ $RESUME == 1 && $rc != 134 && $rc != 139 ]]; then
    [[ $(losses "$run") == "$ref" ]] || { bad=$((bad + 1)); what="$what (losses differ from the uninterrupted run)"; }
  fi
  echo "run $i/$RUNS: $what"
  rm -rf "$run"
done
echo "interrupt_stress: $RUNS runs, $stopped stopped by the signal, $aborts aborts, $bad other failures ($CONFIG, SIG$SIG after ${DELAY}s, work in $WORK)"
[[ $aborts == 0 && $bad == 0 ]]
