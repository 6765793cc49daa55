#!/usr/bin/env bash
# Training on several processes, checked and measured on one machine:
#   1. equivalence: N ranks (mpirun -np N, accum 1) against one process with
#      accum N, 50 steps, on S-shape STEM (lazy and dense table AdamW) and
#      dense models, with the backbone's moments whole or sharded (--zero 1),
#      N = 2 and 4: the largest relative difference of the per-step losses
#      and of every checkpoint tensor;
#   2. traffic: bytes each rank sends a step (all of it, and the table rows,
#      with the share of rows prefetched during the step before) against a
#      dense all-reduce of the table gradients, at S and M, and what --zero 1
#      changes: the embedding's rows gathered, 1/N of the backbone's moments;
#   3. kill -9 of one rank: how long the others take to end, what mpirun
#      says, and a resume from the last checkpoint against an unbroken run.
# Usage: scripts/dist_check.sh [WORK_DIR]   (STEPS=50 RANKS="2 4" PARTS="1 2 3" PYTHON=/usr/bin/python3
#        MODELS="stem-lazy stem-dense-adamw dense stem-lazy-zero1 dense-zero1" EXTRA="--clip-stem 0.005")
set -euo pipefail
cd "$(dirname "$0")/.."
STEM=${STEM:-build/stem}
WORK=${1:-$(mktemp -d)}
MODELS=${MODELS:-"stem-lazy stem-dense-adamw dense stem-lazy-zero1 dense-zero1"}
STEPS=${STEPS:-50} RANKS=${RANKS:-"2 4"} PARTS=${PARTS:-"1 2 3"} PYTHON=${PYTHON:-/usr/bin/python3}  # with numpy (Debian's python3-numpy)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}  # containers often forbid CMA
command -v mpirun > /dev/null || { echo "dist_check: mpirun not found (scripts/setup.sh installs Open MPI)" >&2; exit 2; }
mkdir -p "$WORK"
for v in 4096 8192; do
  [[ -f $WORK/data-$v/train.tok ]] || "$STEM" prepare --input corpus/builtin --out "$WORK/data-$v" --vocab-size $v > /dev/null
done

compare() {  # RUN_A RUN_B: largest relative differences of losses and checkpoint tensors
  "$PYTHON" - "$1" "$2" <<'EOF'
import json, struct, sys, os
import numpy as np
def metrics(run):
    return {j["step"]: j for j in map(json.loads, open(os.path.join(run, "metrics.jsonl")))}
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n)); data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.float32 if v["dtype"] == "F32" else np.int32)
    return out
a, b = metrics(sys.argv[1]), metrics(sys.argv[2])
loss = max(abs(a[s]["loss"] - b[s]["loss"]) / abs(a[s]["loss"]) for s in a)
def last(run):
    return os.path.join(run, "checkpoints", open(os.path.join(run, "latest")).read().strip())
# Per tensor: ||x - y|| / ||x|| (the criterion), and the largest element
# difference over the tensor's largest magnitude (for information: Adam
# divides by sqrt(v), so an element whose gradient sums to almost nothing can
# move by a step's size on a rounding difference).
worst, name, elem, ename = 0.0, "", 0.0, ""
for f in ("model.safetensors", "optimizer.safetensors"):
    x, y = tensors(os.path.join(last(sys.argv[1]), f)), tensors(os.path.join(last(sys.argv[2]), f))
    for k in x:
        xd, yd = x[k].astype(np.float64), y[k].astype(np.float64)
        norm = float(np.linalg.norm(xd)) or 1.0
        d = float(np.linalg.norm(xd - yd)) / norm
        e = float(np.abs(xd - yd).max()) / (float(np.abs(xd).max()) or 1.0)
        if d > worst: worst, name = d, f + ":" + k
        if e > elem: elem, ename = e, f + ":" + k
print("losses max rel diff %.2e over %d steps; checkpoint tensors max rel diff %.2e (%s), largest element diff "
      "%.2e of the tensor's max (%s)" % (loss, len(a), worst, name, elem, ename))
EOF
}

train() {  # RANKS(0: one process) OUT CONFIG DATA ACCUM EXTRA...
  local n=$1 out=$2 cfg=$3 data=$4 accum=$5; shift 5
  local launch=()
  ((n > 0)) && launch=(mpirun -np "$n" --oversubscribe)
  "${launch[@]}" "$STEM" train --config "$cfg" --data "$data" --out "$out" --accum "$accum" --steps "$STEPS" \
    --batch 4 --seq 128 --warmup 10 --eval-every 25 --save-every "${SAVE:-25}" --seed 7 --peak-gflops 100 --force \
    --json "$@" ${EXTRA:-} > "$out.log" 2>&1
}

part() { [[ " $PARTS " == *" $1 "* ]]; }

part 1 && echo "== 1. equivalence, $STEPS steps, S shape (batch 4 x 128 per micro-batch)"
for model in $MODELS; do
  part 1 || break
  cfg=configs/S-stem.json extra=()
  [[ $model == dense* ]] && cfg=configs/S-dense.json
  [[ $model == stem-lazy* ]] && extra=(--lazy-tables)
  [[ $model == *-zero1 ]] && extra+=(--zero 1)
  for n in $RANKS; do
    train 0 "$WORK/$model-one-$n" "$cfg" "$WORK/data-4096" "$n" "${extra[@]}"
    train "$n" "$WORK/$model-ranks-$n" "$cfg" "$WORK/data-4096" 1 "${extra[@]}"
    echo "$model, $n ranks: $(compare "$WORK/$model-one-$n" "$WORK/$model-ranks-$n")"
  done
done

part 2 && echo "== 2. traffic per step and rank (lazy tables)"
for shape in S M; do
  part 2 || break
  v=4096; [[ $shape == M ]] && v=8192
  for n in $RANKS; do
    for zero in 0 1; do
      out="$WORK/traffic-$shape-$n-zero$zero"
      STEPS=10 train "$n" "$out" "configs/$shape-stem.json" "$WORK/data-$v" 1 --lazy-tables --zero $zero
      python3 - "$out" "$shape" "$n" "$zero" <<'EOF'
import json, sys
run, shape, n, zero = sys.argv[1:]
m = [json.loads(l) for l in open(run + "/metrics.jsonl")]
last = [json.loads(l) for l in open(run + ".log") if l.startswith("{") and '"ranks"' in l][-1]
summary = last["ranks"]
t = sum(r["table_comm_bytes"] for r in m) / len(m)
c = sum(r["comm_bytes"] for r in m) / len(m)
early = sum(r.get("table_prefetch_bytes", 0) for r in m[:-1]) / max(1, len(m) - 1)  # the last step prefetches nothing
d = summary["dense_table_allreduce_bytes_per_step"]
print("%s, %s ranks, --zero %s: %.2f MB sent a step (%.2f MB table rows and their gradients, %.0f%% of the rows "
      "sent during the step before); a dense all-reduce of the tables: %.1f MB (%.0fx the rows); tables %.1f MB "
      "and backbone moments %.1f MB a rank" % (
      shape, n, zero, c / 1e6, t / 1e6, 100 * early / (t / 2), d / 1e6, d / t, summary["table_shard_bytes"] / 1e6,
      last["backbone_moment_bytes"] / 1e6))
EOF
    done
  done
done

part 3 || exit 0
echo "== 3. kill -9 of rank 1, then resume (2 ranks, S STEM, lazy tables)"
STEPS=60
SAVE=20 train 2 "$WORK/unbroken" configs/S-stem.json "$WORK/data-4096" 1 --lazy-tables
rm -rf "$WORK/broken"
(SAVE=20 train 2 "$WORK/broken" configs/S-stem.json "$WORK/data-4096" 1 --lazy-tables || true) &
until [[ -f $WORK/broken/latest ]] && grep -q "step-00000040" "$WORK/broken/latest"; do sleep 0.2; done
victim=$(pgrep -f "^$STEM train .*$WORK/broken" | tail -1)
t0=$(date +%s.%N)
kill -9 "$victim"
wait
echo "killed rank 1 (pid $victim); all ranks ended after $(python3 -c "print('%.1f' % ($(date +%s.%N) - $t0))") s"
grep -h "mpirun noticed\|exited on signal" "$WORK/broken.log" || true
cp "$WORK/broken.log" "$WORK/broken-killed.log"
SAVE=20 train 2 "$WORK/broken" configs/S-stem.json "$WORK/data-4096" 1 --lazy-tables --resume
echo "resumed at $(grep -o 'resuming.*' "$WORK/broken.log" || echo '?'): $(compare "$WORK/unbroken" "$WORK/broken")"
