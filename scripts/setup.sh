#!/usr/bin/env bash
# Installs everything stem needs to build, test and run, from Debian 12 packages only.
# Usage: scripts/setup.sh [--dev] [--corpus DIR] [--tasks DIR]
#   --dev         adds PyTorch and NumPy, used only to regenerate test fixtures
#                 and to run the PyTorch baseline benchmark;
#   --corpus DIR  also assembles the larger corpus (tens of MB, Debian packages)
#                 into DIR with scripts/make_corpus.sh;
#   --tasks DIR   also fetches the sources of `stem tasks make` into DIR with
#                 scripts/fetch_task_sources.sh (a held-out novel, countries-list
#                 from npm, WordNet).
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev            # oneDNN: GEMMs, dispatched on the CPU at run time
  nlohmann-json3-dev     # JSON (config.json, safetensors headers)
  libcli11-dev           # command-line parsing
  libgtest-dev libgmock-dev  # tests
  libbenchmark-dev       # micro-benchmarks (bench/)
  libsentencepiece-dev sentencepiece  # tokenizer
  liburing-dev           # io_uring reads for the disk table tier
  zlib1g-dev
  libcpp-httplib-dev     # HTTP for stem serve
  libopenmpi-dev openmpi-bin  # training across processes (mpirun -np N stem train)
  python3-dev pybind11-dev python3-numpy  # the Python module and its tests
  clang-14 libclang-rt-14-dev libomp-14-dev  # fuzzing (libFuzzer; scripts/fuzz.sh)
)
# Node.js runs the server's tests with the official OpenAI client (npm).
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
corpus="" tasks=""
while (($#)); do
  case "$1" in
    --dev) pkgs+=(python3-torch python3-numpy libopenblas0-openmp libgoogle-perftools4) ;;
    --corpus) corpus="${2:?--corpus needs a directory}"; shift ;;
    --tasks) tasks="${2:?--tasks needs a directory}"; shift ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The test clients of stem serve (tests/serve), pinned by package-lock.json.
serve_tests="$(dirname "$0")/../tests/serve"
if [[ -f "$serve_tests/package-lock.json" ]]; then
  npm ci --prefix "$serve_tests" --no-audit --no-fund --loglevel=error >/dev/null
fi
if [[ -n "$corpus" ]]; then
  bash "$(dirname "$0")/make_corpus.sh" "$corpus"
fi
if [[ -n "$tasks" ]]; then
  bash "$(dirname "$0")/fetch_task_sources.sh" "$tasks"
fi
