#!/usr/bin/env python3
"""Where row swaps work: swap success and locality of `stem edit swap` against
the layout of the STEM layers, the depth, and subjects of one token against
subjects of several tokens (with --align left and right), on small models
trained here on `stem edit facts` corpora of made-up countries.

For every cell (names, layout, depth, seed) it trains a model (d=32, f=256,
300 steps of 16 x 32 tokens, one thread, as scripts/edit_demo.sh), then for
PAIRS subjects A (each with the next subject B) swaps A's rows for B's and runs
`stem edit eval` on A's six prompts (three templates of capital and language)
and on the template-0 prompts of every other subject (controls):

  knew      the base model's greedy answer is A's (all prompts, before any edit)
  refused   pairs whose swap is refused: a piece that occurs twice in A's name
            would take two different rows
  success   the edited model's greedy answer is B's, the whole answer
  first     the edited model's most likely next token is the first of B's answer
  moved     the edited model's greedy answer is no longer A's
  locality  controls whose top next token is unchanged

Names: "one" prepares the corpus with a vocabulary of 768 (every name one
token), "several" with 450 (names of about three pieces; --shared allow, since
such pieces are shared with other names). Prints a table and writes
OUT/edit_study.json. Uses only the stem CLI; about 10 minutes on 2 cores.

  scripts/edit_study.py [--out runs/edit-study] [--seeds 1,2] [--depths 4,8,12] [--pairs 12]
"""
import argparse
import json
import os
import subprocess
import sys
import time

LAYOUTS = {
    "dense-first": lambda n: ["dense"] + ["stem"] * (n - 1),
    "half": lambda n: ["dense" if i % 2 == 0 else "stem" for i in range(n)],
    "all-stem": lambda n: ["stem"] * n,
}
VOCAB = {"one": 768, "several": 450}


def stem(binary, *args, env=None, may_refuse=False):
    r = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0 and may_refuse and "would take two different rows" in r.stderr:
        return None
    if r.returncode != 0:
        sys.exit("edit_study: stem %s failed (%d): %s" % (" ".join(args[:2]), r.returncode, r.stderr.strip()))
    return r.stdout


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def train(binary, data, out, layout, depth, seed, vocab, env):
    cfg = {"model_type": "stem", "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 256,
           "num_hidden_layers": depth, "num_attention_heads": 4, "num_key_value_heads": 4,
           "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": False, "ffn_types": LAYOUTS[layout](depth), "num_hash_experts": 0}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    if not os.path.exists(os.path.join(out, "run", "latest")):
        stem(binary, "train", "--config", os.path.join(out, "config.json"), "--data", data, "--out",
             os.path.join(out, "run"), "--steps", "300", "--batch", "16", "--seq", "32", "--lr", "5e-3",
             "--warmup", "20", "--eval-every", "0", "--save-every", "0", "--keep", "1", "--weight-decay", "0",
             "--peak-gflops", "100", "--seed", str(seed), env=env)
    return os.path.join(out, "run")


def measure(binary, model, facts, pairs, align, shared, work, env):
    subjects = read_jsonl(os.path.join(facts, "subjects.jsonl"))
    queries = read_jsonl(os.path.join(facts, "queries.jsonl"))
    answer = {(q["subject"], q["attribute"]): q["answer"] for q in queries}
    tot = {"cases": 0, "knew": 0, "success": 0, "controls": 0, "same": 0, "pieces": 0, "refused": 0, "first": 0, "moved": 0}
    for i in range(pairs):
        a, b = subjects[i]["subject"], subjects[(i + 1) % len(subjects)]["subject"]
        cases = [{"prompt": q["prompt"], "before": q["answer"], "after": answer[(b, q["attribute"])]}
                 for q in queries if q["subject"] == a]
        controls = [{"control": q["prompt"]} for q in queries if q["subject"] != a and q["template"] == 0]
        write_jsonl(os.path.join(work, "cases.jsonl"), cases + controls)
        ovl = os.path.join(work, "swap.ovl")
        rep = stem(binary, "edit", "swap", "--model", model, "--from", a, "--to", b, "--align", align,
                   "--shared", shared, "--out", ovl, "--json", env=env, may_refuse=True)
        if rep is None:  # a piece repeated in the name with two partners: the swap refuses
            tot["refused"] += 1
            continue
        tot["pieces"] += len(json.loads(rep)["from"]["forms"][0]["tokens"])
        ev = json.loads(stem(binary, "edit", "eval", "--model", model, "--edit", ovl, "--cases",
                             os.path.join(work, "cases.jsonl"), "--json", env=env))
        for c in ev["cases"]:
            tot["cases"] += 1
            tot["knew"] += c["before_base"]["greedy"]
            tot["success"] += c["after_edit"]["greedy"]
            tot["first"] += c["after_edit"]["first_rank"] == 1
            tot["moved"] += not c["before_edit"]["greedy"]
        for c in ev["controls"]:
            tot["controls"] += 1
            tot["same"] += c["top_base"] == c["top_edit"]
    done = max(1, pairs - tot["refused"])
    return {"cases": tot["cases"], "knew": tot["knew"] / max(1, tot["cases"]),
            "success": tot["success"] / max(1, tot["cases"]), "first": tot["first"] / max(1, tot["cases"]),
            "moved": tot["moved"] / max(1, tot["cases"]),
            "locality": tot["same"] / max(1, tot["controls"]),
            "pieces": tot["pieces"] / done, "refused": tot["refused"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/edit-study")
    ap.add_argument("--stem", default=os.environ.get("STEM", "build/stem"))
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--depths", default="4,8,12")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--names", default="one,several")
    ap.add_argument("--pairs", type=int, default=12)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")  # tiny models: one thread is fastest and deterministic
    t0 = time.time()
    rows = []
    for names in args.names.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            base = os.path.join(args.out, "%s-s%d" % (names, seed))
            facts, data = os.path.join(base, "facts"), os.path.join(base, "data")
            if not os.path.exists(os.path.join(facts, "facts.json")):
                stem(args.stem, "edit", "facts", "--out", facts, "--seed", str(seed), "--subjects", "24", env=env)
            if not os.path.exists(os.path.join(data, "data.json")):
                stem(args.stem, "prepare", "--input", os.path.join(facts, "facts.txt"), "--out", data,
                     "--doc-bytes", "32", "--val-fraction", "0", "--vocab-size", str(VOCAB[names]), env=env)
            for layout in args.layouts.split(","):
                for depth in [int(d) for d in args.depths.split(",")]:
                    cell = os.path.join(base, "%s-L%d" % (layout, depth))
                    model = train(args.stem, data, cell, layout, depth, seed, VOCAB[names], env)
                    aligns = ["left", "right"] if names == "several" else ["left"]
                    shared = "allow" if names == "several" else "refuse"
                    for align in aligns:
                        m = measure(args.stem, model, facts, args.pairs, align, shared, cell, env)
                        row = {"names": names, "seed": seed, "layout": layout, "depth": depth, "align": align, **m}
                        rows.append(row)
                        print("%-8s seed %d  %-11s L=%-2d align %-5s  pieces %.1f  knew %5.1f%%  success %5.1f%%  first %5.1f%%  moved %5.1f%%  "
                              "locality %5.1f%%  refused %d" % (names, seed, layout, depth, align, m["pieces"], 100 * m["knew"],
                                                    100 * m["success"], 100 * m["first"], 100 * m["moved"],
                                                    100 * m["locality"],
                                                    m["refused"]),
                              flush=True)
    out = {"rows": rows, "seconds": time.time() - t0, "pairs": args.pairs}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "edit_study.json"), "w") as f:
        json.dump(out, f, indent=1)
    # Means over seeds, one line per (names, layout, depth, align).
    print("\n%-8s %-11s %5s %-6s %7s %8s %7s %7s %9s" % ("names", "layout", "depth", "align", "knew", "success",
                                                       "first", "moved", "locality"))
    keys = sorted({(r["names"], r["layout"], r["depth"], r["align"]) for r in rows},
                  key=lambda k: (k[0], list(LAYOUTS).index(k[1]), k[2], k[3]))
    for k in keys:
        sel = [r for r in rows if (r["names"], r["layout"], r["depth"], r["align"]) == k]
        mean = lambda f: 100 * sum(r[f] for r in sel) / len(sel)
        print("%-8s %-11s %5d %-6s %6.1f%% %7.1f%% %6.1f%% %6.1f%% %8.1f%%" % (
            *k, mean("knew"), mean("success"), mean("first"), mean("moved"), mean("locality")))
    print("%.0f s; %s" % (out["seconds"], os.path.join(args.out, "edit_study.json")))


if __name__ == "__main__":
    main()
