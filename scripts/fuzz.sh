#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (fuzz/: safetensors, config.json,
# tokenizer.model, overlays, token shards, data.json, the trainer's state,
# tables.stem, task files, the server's request bodies) with libFuzzer under
# ASan + UBSan, SECONDS each (default 30, as CI runs it).
#
# Builds the preset fuzz (clang), writes seed inputs with the CLI (a tiny
# prepared corpus, two training steps of fuzz/model.json, its packed tables
# and an overlay) beside the committed ones in tests/fuzz/NAME/, and keeps
# each target's corpus in build-fuzz/corpus/NAME between runs. A crash, hang
# or leak is saved in build-fuzz/crashes/NAME/ and fails the script; copy it
# into tests/fuzz/NAME/ once fixed, where ctest replays it in every build.
# Per target it prints the executions per second and the coverage reached.
# Usage: scripts/fuzz.sh [SECONDS] [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors config tokenizer overlay token_shard data_json trainer_state
                                packed_tables task http_body)
jobs="$(nproc)"
cmake --preset fuzz > /dev/null
cmake --build --preset fuzz -j "$jobs"
b=build-fuzz
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

# Seeds: valid files as the CLI writes them, made once per build folder.
seeds="$b/seeds"
if [[ ! -f "$seeds/.done" ]]; then
  rm -rf "$seeds" "$b/seed-work" && mkdir -p "$b/seed-work/text"
  w="$b/seed-work"
  head -c 60000 corpus/builtin/persuasion.txt > "$w/text/a.txt"
  "$b/stem" prepare --input "$w/text" --out "$w/data" --vocab-size 400 --val-fraction 0.1 > /dev/null
  "$b/stem" train --config fuzz/model.json --data "$w/data" --steps 2 --batch 2 --seq 32 --save-every 2 \
    --eval-every 0 --lazy-tables --out "$w/run" > /dev/null
  ck="$w/run/checkpoints/step-00000002"
  "$b/stem" convert --model "$ck" --pack-tables > /dev/null
  "$b/stem" edit swap --model "$ck" --from the --to and --shared allow --out "$w/edit.safetensors" > /dev/null
  for t in "${targets[@]}"; do mkdir -p "$seeds/$t"; done
  mkdir -p "$seeds"/{safetensors,config,tokenizer,overlay,token_shard,data_json,trainer_state,packed_tables}
  cp "$ck/model.safetensors" "$ck/optimizer.safetensors" "$w/edit.safetensors" "$seeds/safetensors/"
  cp "$ck/config.json" "$seeds/config/"
  cp "$w/data/tokenizer.model" "$seeds/tokenizer/"
  cp "$w/edit.safetensors" "$seeds/overlay/"
  cp "$w/data/train.tok" "$w/data/val.tok" "$seeds/token_shard/"
  cp "$w/data/data.json" "$seeds/data_json/"
  cp "$ck/trainer_state.json" "$ck/optimizer.safetensors" "$seeds/trainer_state/"
  cp "$ck/tables.stem" "$seeds/packed_tables/"
  touch "$seeds/.done"
fi

failed=()
printf '%-14s %10s %10s %8s %8s  %s\n' target seconds exec/s cov ft result
for t in "${targets[@]}"; do
  corpus="$b/corpus/$t" crashes="$b/crashes/$t"
  mkdir -p "$corpus" "$crashes" "$seeds/$t"
  log="$b/fuzz-$t.log"
  set +e
  "$b/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$crashes/" "$corpus" "$seeds/$t" "tests/fuzz/$t" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo 0)
  result=ok
  if ((rc != 0)); then result="FAILED (rc $rc, see $log)"; failed+=("$t"); fi
  printf '%-14s %10s %10s %8s %8s  %s\n' "$t" "$seconds" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$result"
done
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes, hangs or leaks in: ${failed[*]} (inputs in $b/crashes/)" >&2
  exit 1
fi
