#!/usr/bin/env bash
# Knowledge editing end to end, on a small STEM model trained here on a
# synthetic fact corpus (made-up countries, capitals, languages): swap one
# country's STEM rows for another's, inject a new capital, measure both, merge
# an edit into a new checkpoint, and look at the tables' angular spread and
# context capacity. About 15 s after the build on a 2-core machine.
# Usage: scripts/edit_demo.sh [OUT_DIR]   (default runs/edit-demo; STEM=path/to/stem)
# It does not install packages: run scripts/setup.sh first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/edit-demo}
STEM=${STEM:-build/stem}
if [ ! -x "$STEM" ]; then
  cmake --preset release
  cmake --build --preset release -j "$(nproc)" --target stem
fi
# The model is tiny: one thread is fastest and makes the run identical anywhere.
export OMP_NUM_THREADS=1
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }
field() { sed -n "$1p" "$OUT/facts/subjects.jsonl" | sed "s/.*\"$2\":\"\([^\"]*\)\".*/\1/"; }

step "a fact corpus, its tokenizer and a model that learns it"
"$STEM" edit facts --out "$OUT/facts" --seed 7 --subjects 24
"$STEM" prepare --input "$OUT/facts/facts.txt" --out "$OUT/data" --doc-bytes 32 --val-fraction 0 \
  --vocab-size 768 > /dev/null
# Five STEM layers, then a dense one: facts are stored by the first FFN that
# sees the subject token at its position, so that one must be a STEM layer
# (docs/editing.md).
cat > "$OUT/config.json" <<'EOF'
{"model_type": "stem", "vocab_size": 768, "hidden_size": 32, "intermediate_size": 256,
 "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 4,
 "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
 "tie_word_embeddings": false, "ffn_types": ["stem", "stem", "stem", "stem", "stem", "dense"],
 "num_hash_experts": 0}
EOF
"$STEM" train --config "$OUT/config.json" --data "$OUT/data" --out "$OUT/run" --steps 300 --batch 16 \
  --seq 32 --lr 5e-3 --warmup 20 --eval-every 0 --save-every 0 --keep 1 --weight-decay 0 \
  --peak-gflops 100 --seed 1 2>&1 | tail -1
MODEL="$OUT/run/checkpoints/$(cat "$OUT/run/latest")"

A=$(field 1 subject); B=$(field 2 subject); C=$(field 3 subject)
step "what the model says about $A (capital $(field 1 capital)) before any edit"
"$STEM" generate --model "$MODEL" --prompt "The capital of $A is" --greedy -n 3
"$STEM" generate --model "$MODEL" --prompt "The people of $A speak" --greedy -n 3

step "swap: $A takes the STEM rows of $B (capital $(field 2 capital), language $(field 2 language))"
"$STEM" edit swap --model "$MODEL" --from "$A" --to "$B" --out "$OUT/swap.ovl"
"$STEM" generate --model "$MODEL" --edit "$OUT/swap.ovl" --prompt "The capital of $A is" --greedy -n 3
"$STEM" generate --model "$MODEL" --edit "$OUT/swap.ovl" --prompt "The people of $A speak" --greedy -n 3
"$STEM" edit eval --model "$MODEL" --edit "$OUT/swap.ovl" --cases "$OUT/facts/swap_cases.jsonl"

step "inject: $C's capital becomes $(field 4 capital), training only $C's STEM rows"
"$STEM" edit inject --model "$MODEL" --facts "$OUT/facts/inject_facts.jsonl" --out "$OUT/inject.ovl"
"$STEM" edit eval --model "$MODEL" --edit "$OUT/inject.ovl" --cases "$OUT/facts/inject_cases.jsonl"

step "both edits merged into a new checkpoint (the base one is untouched)"
"$STEM" edit apply --model "$MODEL" --edit "$OUT/swap.ovl" "$OUT/inject.ovl" --out "$OUT/edited"
"$STEM" generate --model "$OUT/edited" --prompt "The capital of $C is" --greedy -n 3

step "angular spread of the STEM rows against the dense layer's W_up x, and context capacity"
"$STEM" analyze spread --model "$MODEL" --data "$OUT/facts/facts.txt"
"$STEM" analyze capacity --model "$MODEL" --data "$OUT/facts/facts.txt"
