#!/usr/bin/env bash
# Runs the commands of README.md, docs/evaluation.md, docs/memory-tiers.md,
# docs/editing.md, docs/reliability.md, docs/convert.md and docs/performance.md in the order the pages give
# them, as a user would: from a scratch directory that looks like the
# repository's root (build/, configs/, corpus/, scripts/ linked in), each
# command's exit code checked. Long runs are shortened by the substitutions
# listed below (step, repetition and run counts, the checkpoint names that
# follow from them, the L decode shape replaced by S); everything else runs as
# written. The measurements of docs/performance.md are not compared: a check
# run is too short and too noisy for that.
#
# A command is a line of an indented code block that starts with `build/stem`,
# `build/bench/`, `bash scripts/`, `/usr/bin/python3`, `PYTHONPATH=...` or
# `echo`, optionally after environment settings (`STEPS=20 bash ...`); a
# trailing backslash joins the next line. Lines that start with `stem ` are
# synopses with placeholders in capitals and are not run. Not run either:
# `bash scripts/demo.sh` and `bash scripts/test.sh` (CI and the demo run
# those), the L-shape line of scripts/bench_decode.sh (17 GB of disk; the S
# line runs the same code), and the scripts/reference.py and
# scripts/bench_compare.sh lines when PyTorch is not installed
# (scripts/setup.sh --dev). docs/model-format.md and docs/architecture.md hold
# no commands.
#
# Usage: scripts/check_docs.sh [WORK_DIR]     (default: a new temporary directory)
# Environment: BUILD_DIR (default build/) is linked in as build/; PAGES="docs/convert.md ..."
# runs only those pages; CORPUS=DIR reuses an assembled corpus instead of running
# `scripts/setup.sh --corpus` (which installs Debian packages). Exit 1 on the
# first failing command, with its output.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-$root/build}
[[ -x $build/stem ]] || { echo "check_docs: $build/stem is not built (bash scripts/test.sh)" >&2; exit 2; }
work=${1:-$(mktemp -d)}
mkdir -p "$work"
for d in configs corpus scripts tests; do ln -sfn "$root/$d" "$work/$d"; done
ln -sfn "$build" "$work/build"
if [[ -n "${CORPUS:-}" ]]; then mkdir -p "$work/data" && ln -sfn "$(cd "$CORPUS" && pwd)" "$work/data/corpus"; fi
have_torch=0
/usr/bin/python3 -c "import torch, numpy" 2> /dev/null && have_torch=1

# The commands, in page order, one per line (continuations joined).
mapfile -t cmds < <(python3 - "$root" "${PAGES:-}" <<'EOF'
import re, sys
root = sys.argv[1]
pages = ("README.md", "docs/evaluation.md", "docs/memory-tiers.md", "docs/editing.md", "docs/reliability.md",
         "docs/convert.md", "docs/performance.md")
for page in sys.argv[2].split() or pages:
    lines = open(f"{root}/{page}").read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("    ") and re.match(r"([A-Z_]+=\S+ )*(build/stem |build/bench/|bash scripts/|/usr/bin/python3 |echo )", line[4:]):
            cmd = line[4:]
            while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
            cmd = re.sub(r"\s+#\s.*$", "", cmd).strip()  # trailing comments
            print(f"{page}\t{cmd}")
        i += 1
EOF
)

# Shorter runs, and the names that depend on them.
shorten() {
  sed -E -e 's/--steps 5000/--steps 30/g' -e 's/step-00005000/step-00000030/g' \
      -e 's/interrupt_stress.sh 50$/interrupt_stress.sh 1/' \
      -e 's/--steps (200|300|400)( |$)/--steps 6\2/g' \
      -e 's/--steps [0-9]+ --warmup [0-9]+/--steps 2 --warmup 1/' \
      -e 's/^build\/stem demo/build\/stem demo --steps 20/' -e 's/step-00000600/step-00000020/g' \
      -e 's/^STEPS=20 (bash scripts\/bench_train_tables.sh)/STEPS=3 \1/' \
      -e 's/^(bash scripts\/bench_decode.sh)/REPS=1 \1/' -e 's/decode-L-/decode-S-/g' \
      -e 's/^(CTX=[0-9]+ )?(POS=[0-9]+ )?(REPS=[0-9]+ )?(N=[0-9]+ )?(bash scripts\/bench_eval_tasks.sh)/\1\2REPS=1 N=10 \5/' \
      -e 's/^STEPS=400 (bash scripts\/capacity_study.sh)/N=200 STEPS=3 VOCAB=512 \1/' \
      -e 's/^(build\/stem study .*)$/\1 --steps 4 --seeds 1 --models dense,stem-all --limit 4 --capacity-people 300 --capacity-steps 2 --capacity-models dense/' \
      -e 's/^(bash scripts\/world_edit.sh)$/STEPS=20 \1/' \
      -e 's/^(\/usr\/bin\/python3 scripts\/edit_study.py)$/\1 --seeds 1 --depths 4 --layouts all-stem --pairs 2/' \
      -e 's/^(\/usr\/bin\/python3 scripts\/(swap_train|inject)_study.py)$/SETTINGS=768:2 \1/' \
      -e 's/--benchmark_min_time=[0-9.]+ --benchmark_repetitions=[0-9]+/--benchmark_min_time=0.01 --benchmark_repetitions=1/' \
      -e 's/(bash scripts\/bench_compare.sh)$/\1 --quick/' \
      -e 's/^((LONG=1 )?bash scripts\/convert_study.sh)/STEPS=4 \1/'
}

cd "$work"
n=0 skipped=0
for entry in "${cmds[@]}"; do
  page=${entry%%$'\t'*}
  cmd=$(printf '%s' "${entry#*$'\t'}" | shorten)
  case $cmd in
    "bash scripts/demo.sh"|"bash scripts/test.sh") skipped=$((skipped + 1)); continue ;;
    "bash scripts/setup.sh --corpus data/corpus"*)
      if [[ -e data/corpus ]]; then skipped=$((skipped + 1)); continue; fi ;;
    *"bench_decode.sh runs/bench-decode L")
      echo "skip ($page, 17 GB of disk): $cmd"; skipped=$((skipped + 1)); continue ;;
    *scripts/reference.py*|*scripts/bench_compare.sh*)
      if ((!have_torch)); then echo "skip ($page, needs PyTorch): $cmd"; skipped=$((skipped + 1)); continue; fi ;;
  esac
  n=$((n + 1))
  printf '[%d] %s: %s\n' "$n" "$page" "$cmd"
  start=$(date +%s)
  if ! bash -c "$cmd" > "$work/last.out" 2>&1; then
    echo "check_docs: FAILED ($page): $cmd" >&2
    tail -n 20 "$work/last.out" >&2
    exit 1
  fi
  echo "    ok ($(( $(date +%s) - start )) s)"
done
echo "check_docs: $n commands ran as written, $skipped skipped (work in $work)"
