#!/usr/bin/env bash
# Runs the commands of README.md, docs/memory-tiers.md, docs/editing.md and
# docs/reliability.md in
# the order the pages give them, as a user would: from a scratch directory that
# looks like the repository's root (build/, configs/, corpus/, scripts/ linked
# in), each command's exit code checked. Long runs are shortened by the
# substitutions listed below (step counts, and the checkpoint names that follow
# from them); everything else runs as written.
#
# A command is a line of an indented code block that starts with `build/stem`,
# `bash scripts/`, `/usr/bin/python3`, `PYTHONPATH=build/python` or `echo` (a
# trailing backslash joins the next line). Lines that start with `stem ` are synopses with placeholders in
# capitals and are not run. Not run either: `bash scripts/demo.sh` and
# `bash scripts/test.sh` (CI and the demo run those), and the
# scripts/reference.py lines when PyTorch is not installed (scripts/setup.sh
# --dev). docs/performance.md is a record of measurements whose command lines
# are recipes for shapes made elsewhere (placeholders such as L-stem,
# {S-dense,S-stem}); scripts/bench_*.sh are their runnable forms; it is not
# checked. docs/model-format.md and docs/architecture.md hold no commands.
#
# Usage: scripts/check_docs.sh [WORK_DIR]     (default: a new temporary directory)
# Environment: BUILD_DIR (default build/) is linked in as build/; CORPUS=DIR reuses an assembled corpus instead of running
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
mapfile -t cmds < <(python3 - "$root" <<'EOF'
import re, sys
root = sys.argv[1]
for page in ("README.md", "docs/memory-tiers.md", "docs/editing.md", "docs/reliability.md"):
    lines = open(f"{root}/{page}").read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("    ") and re.match(r"(build/stem |bash scripts/|/usr/bin/python3 |echo |PYTHONPATH=build/python )", line[4:]):
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
  sed -e 's/--steps 5000/--steps 30/g' -e 's/step-00005000/step-00000030/g' \
      -e 's/interrupt_stress.sh 50$/interrupt_stress.sh 1/' \
      -e 's/--steps 200 /--steps 6 /g' -e 's/--steps 200$/--steps 6/g'
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
    *scripts/reference.py*)
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
