#!/usr/bin/env python3
"""Injection of new capitals into made-up countries: which rows train.

On the models of scripts/swap_train_study.py (4-layer all-STEM, d=64, 600
steps, 24 made-up countries), five countries each get a new capital that no
sentence names (Vekiholm, Sorapiton, ...), stated in the three capital
templates, the three language sentences restated. Each way of injecting:
  subject   stem edit inject (the subject's rows; the default: 1024 sentences the
            model samples itself: those with a trained row and without the subject held by KL)
  answer    facts with "answer": the new capital's rows train too (the same
            sampled sentences held)
  subject-bare, answer-bare   the same with --keep-samples 0 (nothing held)
  keep      answer, and --keep the other countries' sentences of the corpus
  kl        keep, with --keep-kl (their unedited distributions, not their text)
Scored with stem edit eval: success (the whole new capital is the greedy
answer, 3 templates x 5 countries), language kept, the other 23
countries' 6 answers each, whole and greedy, kept, and the mean KL(unedited
|| edited) of the next token after the other countries' 6 prompts.

Usage: scripts/inject_study.py [WORK_DIR]   (STEM=build/stem, SETTINGS="450:1 450:2 450:3 768:1 768:2",
       MODES="subject-bare subject answer-bare answer keep kl", KEEP_SAMPLES=1024 for subject and answer;
       settings as in swap_train_study.py: gen:1 trains 144 sentences with a 2048-way head, slow with --keep)
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swap_train_study as st  # noqa: E402  (the models, run(), rows(), write())

NEW = ["Vekiholm", "Sorapiton", "Murabegrad", "Tilzaville", "Kopenoburg"]
PROMPTS = {"capital": ["The capital of %s is", "Visitors to %s arrive in its capital,",
                       "The seat of government of %s is the city of"]}


def study(w, mode):
    subj, qs = st.rows(w + "/facts/subjects.jsonl"), st.rows(w + "/facts/queries.jsonl")
    tot = dict(n=0, success=0, lang=0, nlang=0, other=0, nother=0, steps=0, kl=0.0)
    for k, i in enumerate(range(2, 7)):
        s, new = subj[i], NEW[k]
        mine = [q for q in qs if q["subject"] == s["subject"]]
        facts, cases = [], []
        for q in mine:
            answer = " " + new if q["attribute"] == "capital" else q["answer"]
            fact = {"subject": s["subject"], "text": q["prompt"] + answer + "."}
            if not mode.startswith("subject") and q["attribute"] == "capital":
                fact["answer"] = new
            facts.append(fact)
            cases.append({"prompt": q["prompt"], "before": q["answer"], "after": answer, "kind": q["attribute"]})
        others = [{"prompt": q["prompt"], "before": q["answer"], "after": q["answer"]} for q in qs
                  if q["subject"] != s["subject"]]
        st.write(w + "/inject-facts.jsonl", facts)
        st.write(w + "/inject-cases.jsonl", [{k2: c[k2] for k2 in ("prompt", "before", "after")} for c in cases] + others)
        with open(w + "/inject-controls.txt", "w") as f:
            f.writelines(o["prompt"] + "\n" for o in others)
        extra = ["--keep-samples", "0" if mode.endswith("-bare") else os.environ.get("KEEP_SAMPLES", "1024")]
        if mode in ("keep", "kl"):
            with open(w + "/keep.txt", "w") as f:
                f.writelines(l for l in open(w + "/facts/facts.txt") if l.strip() and s["subject"] not in l)
            extra = ["--keep", w + "/keep.txt"] + (["--keep-kl"] if mode == "kl" else [])
        rep = json.loads(st.run("edit", "inject", "--model", w + "/run", "--facts", w + "/inject-facts.jsonl",
                                "--out", w + "/inject.ovl", "--json", *extra))
        tot["steps"] += rep["steps"]
        ev = json.loads(st.run("edit", "eval", "--model", w + "/run", "--edit", w + "/inject.ovl", "--cases",
                               w + "/inject-cases.jsonl", "--controls", w + "/inject-controls.txt", "--json"))
        tot["kl"] += ev["summary"]["mean_kl"] / 5.0
        for c, r in zip(cases + others, ev["cases"]):
            ok = r["after_edit"]["greedy"]
            if c in others:
                tot["nother"] += r["before_base"]["greedy"]
                tot["other"] += ok and r["before_base"]["greedy"]
            elif c["kind"] == "capital":
                tot["n"] += 1
                tot["success"] += ok
            else:
                tot["nlang"] += 1
                tot["lang"] += ok
    return tot


def main():
    settings = os.environ.get("SETTINGS", "450:1 450:2 450:3 768:1 768:2").split()
    modes = os.environ.get("MODES", "subject-bare subject answer-bare answer keep kl").split()
    print("| tokenizer, seed | rows trained | success | language kept | other countries' answers kept | "
          "KL on their prompts (nats) | steps (mean) |")
    print("|---|---|---|---|---|---|---|")
    pct = lambda x, n: "%.1f%%" % (100.0 * x / max(1, n))
    for s in settings:
        vocab, seed = s.split(":")
        w = st.model(vocab, int(seed))
        name = "2048 English pieces, names of 2-4" if vocab == "gen" else vocab + " pieces"
        for mode in modes:
            t = study(w, mode)
            label = {"subject-bare": "subject, --keep-samples 0", "subject": "subject (default)",
                     "answer-bare": "subject + answer, --keep-samples 0", "answer": "subject + answer",
                     "keep": "subject + answer, --keep", "kl": "subject + answer, --keep --keep-kl"}[mode]
            print("| %s, seed %s | %s | %s | %s | %s | %.4f | %.0f |" % (
                name, seed, label, pct(t["success"], t["n"]), pct(t["lang"], t["nlang"]),
                pct(t["other"], t["nother"]), t["kl"], t["steps"] / 5.0), flush=True)


if __name__ == "__main__":
    main()
