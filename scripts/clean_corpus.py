#!/usr/bin/env python3
"""Turn the raw forms of make_corpus.sh's sources into plain UTF-8 text.

    clean_corpus.py kjv RAW OUT            RAW: output of `bible -m 16384 "gen1:1-rev22:21"`
    clean_corpus.py wordnet DICT_DIR OUT   DICT_DIR: /usr/share/wordnet (data.noun, ...)
    clean_corpus.py dictd STYLE INDEX DICT OUT
                                           a dictd dictionary (.index + .dict.dz);
                                           STYLE jargon or foldoc (how head lines read)

Output conventions (what `stem prepare` reads): one paragraph per line, a
blank line between units that belong apart (chapters, dictionary entries); a
unit never contains a blank line. It does not download or install anything
(scripts/make_corpus.sh does) and keeps the words as they are: cleaning only
removes markup (verse numbers, headings, {cross-reference} braces, dictd
metadata entries, revision dates) and re-joins wrapped lines. Standard library
only.
"""
import gzip
import re
import sys

POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


def fail(msg):
    sys.exit(f"clean_corpus: {msg}")


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"{path}: {len(text.encode('utf-8'))} bytes", file=sys.stderr)


def kjv(raw_path, out_path):
    """Verses one per line (numbers dropped), a blank line between chapters."""
    chapters, verses, prev_blank = [], [], True
    with open(raw_path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                prev_blank = True
                continue
            m = re.match(r"^\s+\d+ (.*)$", line)
            if m:
                verses.append(m.group(1).strip())
            elif prev_blank:  # "Genesis 1": a chapter heading, dropped
                if verses:
                    chapters.append(verses)
                verses = []
            elif verses:  # a wrapped verse
                verses[-1] += " " + line.strip()
            else:
                fail(f"{raw_path}: unexpected line {line!r}")
            prev_blank = False
    if verses:
        chapters.append(verses)
    if len(chapters) < 1000:
        fail(f"{raw_path}: only {len(chapters)} chapters (expected 1189): is it the whole Bible?")
    write(out_path, "\n\n".join("\n".join(re.sub(r"\s+", " ", v) for v in c) for c in chapters) + "\n")


def wordnet(dict_dir, out_path):
    """One synset per line: `lemma, lemma (pos): gloss; "example"`."""
    lines = []
    for part in ("noun", "verb", "adj", "adv"):
        path = f"{dict_dir}/data.{part}"
        try:
            f = open(path, encoding="utf-8", errors="strict")
        except OSError as e:
            fail(f"{path}: {e.strerror}")
        with f:
            for n, line in enumerate(f, 1):
                if line.startswith("  "):  # the license header
                    continue
                head, sep, gloss = line.partition(" | ")
                fields = head.split()
                if not sep or len(fields) < 6:
                    fail(f"{path}:{n}: not a WordNet data line")
                w_cnt = int(fields[3], 16)
                words = []
                for w in fields[4:4 + 2 * w_cnt:2]:
                    w = re.sub(r"\([a-z]+\)$", "", w).replace("_", " ")
                    if w not in words:
                        words.append(w)
                lines.append(f"{', '.join(words)} ({POS[fields[2]]}): {gloss.strip()}")
    write(out_path, "\n".join(lines) + "\n")


B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def b64(s):
    v = 0
    for c in s:
        v = v * 64 + B64[c]
    return v


def dictd(style, index_path, dict_path, out_path):
    """One entry per block: a head line, then one line per paragraph."""
    try:
        data = gzip.open(dict_path).read()
        index = open(index_path, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}")
    spans, meta = set(), set()
    for n, line in enumerate(index, 1):
        parts = line.split("\t")
        if len(parts) < 3:
            fail(f"{index_path}:{n}: not a dictd index line")
        span = (b64(parts[1]), b64(parts[2]))
        (meta if parts[0].startswith(("00-database", "00database")) else spans).add(span)
    entries = []
    for off, length in sorted(spans - meta):
        text = data[off:off + length].decode("utf-8")
        blocks, cur = [], []
        for line in text.split("\n"):
            if line.strip():
                cur.append(line.strip())
            elif cur:
                blocks.append(cur)
                cur = []
        if cur:
            blocks.append(cur)
        if not blocks:
            continue
        head, rest = blocks[0][0], [r for r in blocks[0][1:] if r != "//"]  # "//": no pronunciation
        if rest and style == "jargon":
            head = f"{head} {' '.join(rest)}"  # pronunciation and part of speech: "zorkmid /zork'mid/, n."
        elif rest:
            head = f"{head} (also {', '.join(rest)})"  # FOLDOC: other names of the entry
        paragraphs = [head]
        for b in blocks[1:]:
            p = re.sub(r"\s+", " ", " ".join(b))
            p = re.sub(r"\{([^{}]*)\}", r"\1", p)  # {cross-reference} -> cross-reference
            if re.fullmatch(r"\(\d{4}-\d{2}-\d{2}\)", p):  # FOLDOC revision date
                continue
            paragraphs.append(p)
        entries.append("\n".join(paragraphs))
    if not entries:
        fail(f"{dict_path}: no entries")
    write(out_path, "\n\n".join(entries) + "\n")


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "kjv":
        kjv(args[1], args[2])
    elif len(args) == 3 and args[0] == "wordnet":
        wordnet(args[1], args[2])
    elif len(args) == 5 and args[0] == "dictd" and args[1] in ("jargon", "foldoc"):
        dictd(args[1], args[2], args[3], args[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
