#!/usr/bin/env bash
# Multiple-choice evaluation with the shared context (the default) against
# each choice run with its full context (--no-share-context), interleaved, on
# a next-sentence task made from a built-in novel: the context is the CTX
# sentences before (default 6, about 150 tokens), the choices the true next
# sentence and three others of the book (about 20 tokens each). The model is the S STEM config with random weights (speed does not
# depend on the values) and the novel's tokenizer, with POS positions (default
# 512; a context and its choices must fit, or each choice is cut differently
# and nothing is shared); made once under DIR/model-POS.
#
#   bash scripts/bench_eval_tasks.sh [DIR]      (REPS=5, N=200 examples, CTX=6, POS=512)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/bench-eval}
STEM=${STEM:-build/stem}
REPS=${REPS:-5}
N=${N:-200}
CTX=${CTX:-6}
POS=${POS:-512}
MODEL="$DIR/model-$POS"
mkdir -p "$DIR"
[ -d "$DIR/data" ] || "$STEM" prepare --input corpus/builtin/persuasion.txt --out "$DIR/data" --vocab-size 4096 >/dev/null
if [ ! -d "$MODEL" ]; then
  /usr/bin/python3 -c "import json, sys; c = json.load(open('configs/S-stem.json')); c['max_position_embeddings'] = int(sys.argv[2]); json.dump(c, open(sys.argv[1], 'w'), indent=2)" \
    "$DIR/S-stem-$POS.json" "$POS"
  "$STEM" init --config "$DIR/S-stem-$POS.json" --out "$MODEL" >/dev/null
  cp "$DIR/data/tokenizer.model" "$MODEL/"
fi
TASK="$DIR/next_sentence_$CTX.jsonl"
/usr/bin/python3 - corpus/builtin/persuasion.txt "$TASK" "$N" "$CTX" <<'PY'
import json, random, re, sys
text = " ".join(open(sys.argv[1], encoding="utf-8").read().split())
sents = [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s) <= 160]
rng, n, ctx = random.Random(1), int(sys.argv[3]), int(sys.argv[4])
with open(sys.argv[2], "w") as f:
    for i in rng.sample(range(ctx, len(sents)), n):
        choices = [sents[i]] + rng.sample(sents, 3)
        rng.shuffle(choices)
        f.write(json.dumps({"context": " ".join(sents[i - ctx:i]), "choices": choices,
                            "gold": choices.index(sents[i])}) + "\n")
PY
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $N examples, $CTX context sentences, $POS positions, $REPS rounds"
for r in $(seq "$REPS"); do
  for mode in shared separate; do
    flag=""; [ "$mode" = separate ] && flag=--no-share-context
    "$STEM" eval --model "$MODEL" --task "$TASK" $flag --json 2>/dev/null |
      /usr/bin/python3 -c "import json,sys; t=json.load(sys.stdin)['tasks'][0]; print('$mode', round(t['examples_per_second'],2), t['tokens_scored'], round(t['acc'],4))"
  done
done | /usr/bin/python3 -c "
import statistics, sys
rows = {}
for line in sys.stdin:
    mode, eps, toks, acc = line.split()
    rows.setdefault(mode, []).append(float(eps)); print(line.strip())
s, p = statistics.median(rows['shared']), statistics.median(rows['separate'])
print(f'median examples/s: shared {s:.2f}, separate {p:.2f}; ratio {s / p:.2f}x')
"
