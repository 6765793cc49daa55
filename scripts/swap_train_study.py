#!/usr/bin/env python3
"""Swaps of made-up countries, copied rows against trained rows.

For each seed and tokenizer size, trains a 4-layer all-STEM model (d=64, 600
steps of 16 x 32 tokens, one thread) on a `stem edit facts` corpus of 24
countries, then for 12 countries A takes the next one B:
  copy   stem edit swap --from A --to B --shared allow   (rows copied, right-aligned)
  train  the same with --prompts A's six prompts          (rows trained on the model's answers for B)
and scores with stem edit eval A's six prompts against B's answers (success:
the whole greedy answer is B's) and the other 23 countries' template-0
prompts (locality: top token unchanged).

Settings: VOCAB:SEED (a tokenizer of VOCAB pieces trained on the facts: 450
gives names of about 3 pieces, 768 of one), or gen:SEED (names of 2-4 pieces
under a 2048-piece tokenizer of the built-in English corpus).

Usage: scripts/swap_train_study.py [WORK_DIR]   (STEM=build/stem, SETTINGS="450:1 450:2 450:3 768:1 768:2 gen:1 gen:2")
"""
import json, os, subprocess, sys, tempfile

STEM = os.environ.get("STEM", os.path.join(os.path.dirname(__file__), "..", "build", "stem"))
ENV = dict(os.environ, OMP_NUM_THREADS="1")
WORK = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
SETTINGS = os.environ.get("SETTINGS", "450:1 450:2 450:3 768:1 768:2 gen:1 gen:2").split()
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "builtin")


def run(*a, may_refuse=False):
    r = subprocess.run([STEM, *a], capture_output=True, text=True, env=ENV)
    if r.returncode == 1 and may_refuse:
        return None
    if r.returncode:
        sys.exit("swap_train_study: stem %s failed: %s" % (" ".join(a[:2]), r.stderr.strip()))
    return r.stdout


def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def write(path, items):
    with open(path, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in items)


def model(vocab, seed):
    general = vocab == "gen"
    w = os.path.join(WORK, "%s-s%d" % (vocab, seed))
    if not os.path.exists(os.path.join(w, "run", "latest")):
        os.makedirs(w, exist_ok=True)
        if general:
            run("prepare", "--input", CORPUS, "--out", w + "/english", "--vocab-size", "2048")
            tok = w + "/english/tokenizer.model"
            run("edit", "facts", "--out", w + "/facts", "--seed", str(seed), "--subjects", "24", "--tokenizer", tok,
                "--pieces", "2-4")
            run("prepare", "--input", w + "/facts/facts.txt", "--out", w + "/data", "--doc-bytes", "32",
                "--val-fraction", "0", "--tokenizer", tok)
            vocab = 2048
        else:
            vocab = int(vocab)
            run("edit", "facts", "--out", w + "/facts", "--seed", str(seed), "--subjects", "24")
            run("prepare", "--input", w + "/facts/facts.txt", "--out", w + "/data", "--doc-bytes", "32",
                "--val-fraction", "0", "--vocab-size", str(vocab))
        json.dump({"model_type": "stem", "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 256,
                   "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
                   "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                   "tie_word_embeddings": False, "ffn_types": ["stem"] * 4, "num_hash_experts": 0},
                  open(w + "/config.json", "w"))
        run("train", "--config", w + "/config.json", "--data", w + "/data", "--out", w + "/run", "--steps", "600",
            "--batch", "16", "--seq", "32", "--lr", "5e-3", "--warmup", "20", "--weight-decay", "0", "--seed", "1",
            "--eval-every", "0", "--save-every", "0", "--keep", "1", "--peak-gflops", "100")
    return w


def study(w):
    subj, qs = rows(w + "/facts/subjects.jsonl"), rows(w + "/facts/queries.jsonl")
    ans = {(q["subject"], q["attribute"]): q["answer"] for q in qs}
    out = {m: dict(n=0, knew=0, success=0, ctrl=0, same=0, steps=0, refused=0) for m in ("copy", "train")}
    for i in range(12):
        a, b = subj[i]["subject"], subj[(i + 1) % 24]["subject"]
        mine = [q for q in qs if q["subject"] == a]
        write(w + "/cases.jsonl", [{"prompt": q["prompt"], "before": q["answer"], "after": ans[(b, q["attribute"])]}
                                   for q in mine] +
              [{"control": q["prompt"]} for q in qs if q["subject"] != a and q["template"] == 0])
        write(w + "/prompts.jsonl", [{"prompt": q["prompt"]} for q in mine])
        base = ["edit", "swap", "--model", w + "/run", "--from", a, "--to", b, "--shared", "allow", "--json"]
        for m, extra in (("copy", []), ("train", ["--prompts", w + "/prompts.jsonl"])):
            rep = run(*base, *extra, "--out", w + "/" + m + ".ovl", may_refuse=True)
            if rep is None:  # a plan the swap refuses (a token that would take two rows): no answer moved
                out[m]["refused"] += 1
                out[m]["n"] += len(mine)
                continue
            out[m]["steps"] += json.loads(rep).get("steps", 0)
            ev = json.loads(run("edit", "eval", "--model", w + "/run", "--edit", w + "/" + m + ".ovl",
                                "--cases", w + "/cases.jsonl", "--json"))
            for c in ev["cases"]:
                out[m]["n"] += 1
                out[m]["knew"] += c["before_base"]["greedy"]
                out[m]["success"] += c["after_edit"]["greedy"]
            for c in ev["controls"]:
                out[m]["ctrl"] += 1
                out[m]["same"] += c["top_base"] == c["top_edit"]
    return out


def main():
    print("| tokenizer, seed | copy: success | copy: locality | copy: refused | train: success | train: locality | train: steps (mean) |")
    print("|---|---|---|---|---|---|---|")
    for s in SETTINGS:
        vocab, seed = s.split(":")
        r = study(model(vocab, int(seed)))
        c, t = r["copy"], r["train"]
        pct = lambda x, n: "%.1f%%" % (100.0 * x / max(1, n))
        name = "2048 English pieces, names of 2-4" if vocab == "gen" else vocab + " pieces"
        print("| %s, seed %s | %s | %s | %d of 12 | %s | %s | %.1f |" % (
            name, seed, pct(c["success"], c["n"]), pct(c["same"], c["ctrl"]), c["refused"],
            pct(t["success"], t["n"]), pct(t["same"], t["ctrl"]), t["steps"] / max(1, 12 - t["refused"])), flush=True)
        if t["knew"] < t["n"]:
            print("  (the base model knew %s of the answers)" % pct(t["knew"], t["n"]))


if __name__ == "__main__":
    main()
