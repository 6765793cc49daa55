#!/usr/bin/env bash
# Training throughput of the stem engine against PyTorch at its best on this CPU.
#
# What it does: for S (batch 8 x seq 256) and M (batch 4 x seq 512), dense and
# stem, runs first `$STEM bench train --json`, then scripts/bench_pytorch.py on
# the same config and shape, and prints a markdown table of tokens/s and the
# stem / PyTorch ratio. PyTorch runs in its best environment:
#   OMP_NUM_THREADS=2 (and torch.set_num_threads(2) in the script),
#   LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp: Debian's torch
#     links libblas.so.3 / liblapack.so.3 (normally resolved through
#     update-alternatives); this pins them, and libopenblas.so.0, to the OpenMP
#     OpenBLAS, which shares libgomp's thread pool with ATen,
#   LD_PRELOAD=libtcmalloc.so.4 (libgoogle-perftools4).
# Before benchmarking it checks, from /proc/self/maps of a torch process and
# OpenBLAS's own openblas_get_parallel(), that this is what really gets loaded
# (it stops if not). OPENBLAS_CORETYPE is left as the caller's environment has
# it (this workplace exports OPENBLAS_CORETYPE=Haswell: AVX2 kernels); the core
# each run used is printed. When the CPU has AVX-512 it also runs PyTorch with
# OPENBLAS_CORETYPE=SkylakeX (AVX-512 SGEMM kernels) and reports that in a
# separate table, as information only: that setting crashes on CPUs without
# AVX-512. Where the CPU multiplies BF16 natively (`stem bench gemm` says so),
# it also runs `stem bench train --precision bf16` right after the F32 run and
# adds its columns (mixed precision against PyTorch in F32).
#
# Usage: scripts/bench_compare.sh [--quick] [--no-coretype] [--only NAME] [--steps N] [--warmup W] [--save DIR]
#   STEM=path/to/stem (default build/stem); PYTHON (default /usr/bin/python3).
#   --quick: S configs only at batch 2 x seq 64, --steps 2 --warmup 1 (a smoke
#   test of the harness, not a measurement). --only NAME (S-dense, S-stem,
#   M-dense or M-stem; repeatable) runs those configs alone. --save DIR keeps
#   every run's JSON.
#   Run the real thing on a quiet machine: the table goes to stdout, progress to stderr.
set -euo pipefail

cd "$(dirname "$0")/.."
STEM=${STEM:-build/stem}
PYTHON=${PYTHON:-/usr/bin/python3}
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4

quick=0 coretype=1 steps=5 warmup=1 save="" only=()
while (($#)); do
  case "$1" in
    --quick) quick=1; steps=2; warmup=1 ;;
    --no-coretype) coretype=0 ;;
    --only) only+=("$2"); shift ;;
    --steps) steps=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --save) save=$2; mkdir -p "$save"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# name config batch seq
if ((quick)); then
  runs=("S-dense configs/S-dense.json 2 64" "S-stem configs/S-stem.json 2 64")
else
  runs=("S-dense configs/S-dense.json 8 256" "S-stem configs/S-stem.json 8 256"
        "M-dense configs/M-dense.json 4 512" "M-stem configs/M-stem.json 4 512")
fi
if ((${#only[@]})); then
  kept=()
  for r in "${runs[@]}"; do
    for name in "${only[@]}"; do [[ ${r%% *} == "$name" ]] && kept+=("$r"); done
  done
  ((${#kept[@]})) || { echo "--only ${only[*]}: no such config (S-dense, S-stem, M-dense, M-stem)" >&2; exit 2; }
  runs=("${kept[@]}")
fi

[[ -x $STEM ]] || { echo "no stem binary at $STEM (set STEM=...)" >&2; exit 1; }
[[ -d $OPENBLAS_DIR ]] || { echo "$OPENBLAS_DIR missing: apt-get install libopenblas0-openmp" >&2; exit 1; }
[[ -e $TCMALLOC ]] || { echo "$TCMALLOC missing: apt-get install libgoogle-perftools4" >&2; exit 1; }
if ((coretype)) && ! grep -qw avx512f /proc/cpuinfo; then
  echo "note: no AVX-512 on this CPU; skipping the OPENBLAS_CORETYPE=SkylakeX runs" >&2
  coretype=0
fi

# The PyTorch environment. OPENBLAS_CORETYPE is inherited: this workplace sets
# OPENBLAS_CORETYPE=Haswell globally (AVX2 kernels); the check below also shows
# what OpenBLAS would pick by itself, and the tables name the core each run used.
torch_env() {
  env -u OPENBLAS_NUM_THREADS -u MKL_NUM_THREADS \
    OMP_NUM_THREADS=2 LD_LIBRARY_PATH="$OPENBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    LD_PRELOAD="$TCMALLOC" "$@"
}

json_get() {  # json_get KEY < json  (plain python3 is enough: no torch needed)
  python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(v if not isinstance(v, float) else f"{v:.6g}")' "$1"
}

# --- verify what the PyTorch process really loads --------------------------
echo "## PyTorch environment check" >&2
check=$(torch_env "$PYTHON" - <<'EOF'
import json, os, sys
sys.path.insert(0, "scripts")
import torch
import bench_pytorch as b
torch.set_num_threads(2)
libs = b.loaded_libraries()
ob = b.openblas_info(libs)
print(json.dumps({"libraries": libs, "openblas": ob, "torch_threads": torch.get_num_threads(),
                  "torch": torch.__version__}))
EOF
)
echo "$check" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("torch", c["torch"], "threads", c["torch_threads"])
for p in c["libraries"]: print("  mapped:", p)
ob = c["openblas"] or {}
print("  OpenBLAS:", ob.get("path"), "|", ob.get("parallel"), "| core", ob.get("core"), "|", ob.get("threads"), "threads")
' >&2
echo "  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>} in this environment; OpenBLAS alone would pick core" \
     "$(torch_env env -u OPENBLAS_CORETYPE "$PYTHON" -c 'import sys; sys.path.insert(0, "scripts"); import torch, bench_pytorch as b; print(b.openblas_info(b.loaded_libraries())["core"])')" >&2
echo "$check" | OPENBLAS_DIR=$OPENBLAS_DIR python3 -c '
import json, os, sys
c = json.load(sys.stdin); d = os.environ["OPENBLAS_DIR"]; libs = c["libraries"]; ob = c["openblas"] or {}
bad = []
for name in ("libblas.so", "liblapack.so", "libopenblas"):
    hits = [p for p in libs if os.path.basename(p).startswith(name)]
    if not hits or any(not p.startswith(d + "/") for p in hits): bad.append(f"{name}: {hits}")
if ob.get("parallel") != "openmp": bad.append("OpenBLAS parallel = %s" % ob.get("parallel"))
if not any("libtcmalloc" in os.path.basename(p) for p in libs): bad.append("tcmalloc not mapped")
if c["torch_threads"] != 2: bad.append("torch threads = %s" % c["torch_threads"])
if bad: sys.exit("environment check FAILED: " + "; ".join(bad))
print("environment check OK: OpenMP OpenBLAS from", d, "+ tcmalloc, 2 threads")
' >&2

# --- benchmarks ------------------------------------------------------------
bf16=0
"$STEM" bench gemm | grep -q '^BF16 GEMM 2048' && bf16=1
rows=() xrows=()
for r in "${runs[@]}"; do
  read -r name cfg B T <<<"$r"
  echo "## $name  B=$B T=$T" >&2
  sj=$("$STEM" bench train --config "$cfg" --batch "$B" --seq "$T" --steps "$steps" --warmup "$warmup" --json)
  s_tps=$(json_get tokens_per_second <<<"$sj")
  echo "  stem     $s_tps tok/s  step $(json_get step_seconds <<<"$sj") s  loss $(json_get loss <<<"$sj")" >&2
  b_tps=""
  if ((bf16)); then
    bj=$("$STEM" bench train --config "$cfg" --batch "$B" --seq "$T" --steps "$steps" --warmup "$warmup" \
           --precision bf16 --json)
    b_tps=$(json_get tokens_per_second <<<"$bj")
    [[ -z $save ]] || echo "$bj" >"$save/$name.stem-bf16.json"
    echo "  stem bf16 $b_tps tok/s  step $(json_get step_seconds <<<"$bj") s  loss $(json_get loss <<<"$bj")" >&2
  fi
  pj=$(torch_env "$PYTHON" scripts/bench_pytorch.py --config "$cfg" --batch "$B" --seq "$T" \
         --steps "$steps" --warmup "$warmup" --json)
  p_tps=$(json_get tokens_per_second <<<"$pj")
  if [[ -n $save ]]; then echo "$sj" >"$save/$name.stem.json"; echo "$pj" >"$save/$name.pytorch.json"; fi
  echo "  pytorch  $p_tps tok/s  step $(json_get step_seconds <<<"$pj") s  loss $(json_get loss <<<"$pj")" \
       " (fwd $(json_get forward_seconds <<<"$pj") bwd $(json_get backward_seconds <<<"$pj")" \
       "opt $(json_get optimizer_seconds <<<"$pj"))" >&2
  p_core=$(python3 -c 'import json,sys; print((json.load(sys.stdin)["openblas"] or {}).get("core"))' <<<"$pj")
  row="$(printf '| %s | %s x %s | %.1f | %.1f | %.2fx | %s |' "$name" "$B" "$T" "$s_tps" "$p_tps" \
            "$(python3 -c "print($s_tps / $p_tps)")" "$p_core")"
  if ((bf16)); then
    row+="$(printf ' %.1f | %.2fx | %.2fx |' "$b_tps" "$(python3 -c "print($b_tps / $s_tps)")" \
            "$(python3 -c "print($b_tps / $p_tps)")")"
  fi
  rows+=("$row")
  if ((coretype)); then
    xj=$(torch_env env OPENBLAS_CORETYPE=SkylakeX "$PYTHON" \
           scripts/bench_pytorch.py --config "$cfg" --batch "$B" --seq "$T" \
           --steps "$steps" --warmup "$warmup" --json)
    x_tps=$(json_get tokens_per_second <<<"$xj")
    [[ -z $save ]] || echo "$xj" >"$save/$name.pytorch-skylakex.json"
    core=$(python3 -c 'import json,sys; print((json.load(sys.stdin)["openblas"] or {}).get("core"))' <<<"$xj")
    echo "  pytorch OPENBLAS_CORETYPE=SkylakeX (core $core)  $x_tps tok/s" >&2
    xrows+=("$(printf '| %s | %s x %s | %.1f | %.1f | %.2fx |' "$name" "$B" "$T" "$p_tps" "$x_tps" \
               "$(python3 -c "print($x_tps / $p_tps)")")")
  fi
done

echo
echo "Training throughput, F32, $(nproc) cores, median of $steps steps after $warmup warm-up$( ((quick)) && echo ' (--quick: smoke test only)')"
echo
if ((bf16)); then
  echo "| config | batch x seq | stem tok/s | PyTorch tok/s | stem / PyTorch | PyTorch OpenBLAS core | stem BF16 tok/s | BF16 / F32 | BF16 / PyTorch |"
  echo "|---|---|---|---|---|---|---|---|---|"
else
  echo "| config | batch x seq | stem tok/s | PyTorch tok/s | stem / PyTorch | PyTorch OpenBLAS core |"
  echo "|---|---|---|---|---|---|"
fi
printf '%s\n' "${rows[@]}"
if ((coretype)); then
  echo
  echo "Information only: PyTorch with OPENBLAS_CORETYPE=SkylakeX (AVX-512 kernels; unsafe on CPUs without AVX-512)"
  echo
  echo "| config | batch x seq | PyTorch tok/s (main run) | PyTorch tok/s (SkylakeX) | SkylakeX / main |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${xrows[@]}"
fi
