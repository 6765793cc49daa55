#!/usr/bin/env bash
# make_corpus.sh OUT_DIR: assemble a larger training corpus (about 26 MB of
# plain text) from Debian packages, each source in its own folder with its
# license notice beside it (notices are not *.txt, so `stem prepare --input
# OUT_DIR` reads only the text):
#
#   austen/   Jane Austen, five novels        r-cran-janeaustenr  public domain
#             (Emma is held out: scripts/fetch_task_sources.sh makes evaluation
#             tasks from it)
#   kjv/      King James Bible                bible-kjv           public domain
#   wordnet/  WordNet 3.0 glosses             wordnet-base        WordNet 3.0 license
#   jargon/   The Jargon File 4.4.7           dict-jargon         public domain
#   foldoc/   Free On-line Dictionary of Computing  dict-foldoc   GFDL 1.1 or later
#
# Packages that carry a program or plain data (bible-kjv, wordnet-base) are
# installed with apt-get when missing (sudo when not root). Packages that would
# pull in something we do not want (r-cran-janeaustenr needs R; the dict-*
# packages need the dictd server) are fetched with `apt-get download` and
# unpacked with `dpkg -x` into a temporary folder instead: nothing is installed
# for them. Cleaning is scripts/extract_austen.py and scripts/clean_corpus.py.
# It does not tokenize (stem prepare does). Re-running overwrites OUT_DIR's files.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=$(command -v python3 || true)
[[ -n "$py" ]] || { echo "make_corpus: python3 is required" >&2; exit 1; }
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "make_corpus: not root and no sudo: cannot install packages" >&2; exit 1; }
  sudo=sudo
fi

apt_install() {  # apt_install PKG...: install, refreshing the package lists once if needed
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt-get download runs as _apt and wants to read the folder

fetch() {  # fetch PKG: apt-get download + dpkg -x into $tmp/PKG; prints that root
  local pkg=$1 deb
  mkdir -p "$tmp/$pkg"
  (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) ||
    { $sudo apt-get update >/dev/null && (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1); } ||
    { echo "make_corpus: apt-get download $pkg failed" >&2; exit 1; }
  deb=$(ls "$tmp"/"${pkg}"_*.deb | head -n1)
  dpkg -x "$deb" "$tmp/$pkg"
  echo "$(basename "$deb")" >"$tmp/$pkg.deb-name"
}

mkdir -p "$out"/{austen,kjv,wordnet,jargon,foldoc}

# ---- Jane Austen: five novels (Emma held out for evaluation)
echo "make_corpus: austen" >&2
fetch r-cran-janeaustenr
"$py" "$here/extract_austen.py" --rdb "$tmp/r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb" \
  "$out/austen"
rm -f "$out/austen/emma.txt"
cat >"$out/austen/NOTICE.md" <<EOF
# Jane Austen, five novels

Mansfield Park, Northanger Abbey, Persuasion, Pride and Prejudice, Sense and
Sensibility (1811-1818). The text is in the public domain (Jane Austen died in
1817). Emma is left out: it is the held-out book of the evaluation tasks
(scripts/fetch_task_sources.sh, stem tasks make).

Source: Debian package $(cat "$tmp/r-cran-janeaustenr.deb-name"), which packages the CRAN
package janeaustenr by Julia Silge (code MIT-licensed; the novels' text, the
only part copied here, is public domain). Extracted with scripts/extract_austen.py:
paragraphs joined into single lines, italics underscores removed.
EOF
cp "$tmp/r-cran-janeaustenr/usr/share/doc/r-cran-janeaustenr/copyright" "$out/austen/copyright"

# ---- King James Bible
echo "make_corpus: kjv" >&2
command -v bible >/dev/null || apt_install bible-kjv
bible -m 16384 "gen1:1-rev22:21" >"$tmp/kjv.raw"
"$py" "$here/clean_corpus.py" kjv "$tmp/kjv.raw" "$out/kjv/kjv.txt"
cat >"$out/kjv/NOTICE.md" <<EOF
# King James Version of the Bible (1611)

Public domain. Source: Debian packages bible-kjv and bible-kjv-text
$(dpkg-query -W -f='${Version}' bible-kjv-text 2>/dev/null || true), text printed with
\`bible -m 16384 "gen1:1-rev22:21"\`. Verse numbers and chapter headings are
dropped; one verse per line, a blank line between chapters. The package's
copyright file is beside this notice.
EOF
cp /usr/share/doc/bible-kjv-text/copyright "$out/kjv/copyright"

# ---- WordNet 3.0 glosses
echo "make_corpus: wordnet" >&2
[[ -f /usr/share/wordnet/data.noun ]] || apt_install wordnet-base
"$py" "$here/clean_corpus.py" wordnet /usr/share/wordnet "$out/wordnet/wordnet_glosses.txt"
cat >"$out/wordnet/NOTICE.md" <<EOF
# WordNet 3.0 glosses

One synset per line: \`lemma, lemma (pos): gloss; "examples"\`, made from
/usr/share/wordnet/data.{noun,verb,adj,adv} of Debian's wordnet-base
$(dpkg-query -W -f='${Version}' wordnet-base 2>/dev/null || true).

WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
Distributed under the WordNet 3.0 license, which requires that its copyright
notice and disclaimer appear on all copies: see the file \`copyright\` beside
this notice.
EOF
cp /usr/share/doc/wordnet-base/copyright "$out/wordnet/copyright"

# ---- Jargon File and FOLDOC (dictd dictionaries; unpacked, not installed)
for dict in jargon foldoc; do
  echo "make_corpus: $dict" >&2
  fetch "dict-$dict"
  d="$tmp/dict-$dict/usr/share/dictd"
  "$py" "$here/clean_corpus.py" dictd "$dict" "$d/$dict.index" "$d/$dict.dict.dz" "$out/$dict/$dict.txt"
  cp "$tmp/dict-$dict/usr/share/doc/dict-$dict/copyright" "$out/$dict/copyright"
done
cat >"$out/jargon/NOTICE.md" <<EOF
# The Jargon File 4.4.7

Public domain ("to be freely used, shared, and modified"; cite it as "Jargon
File 4.4.7"). Source: Debian package $(cat "$tmp/dict-jargon.deb-name"), the dictd edition.
One entry per block (head line, then one line per paragraph), {cross-reference}
braces removed. The package's copyright file is beside this notice.
EOF
cat >"$out/foldoc/NOTICE.md" <<EOF
# FOLDOC, the Free On-line Dictionary of Computing

Copyright 1993 by Denis Howe. Permission is granted to copy, distribute and/or
modify this document under the terms of the GNU Free Documentation License,
Version 1.1 or any later version published by the Free Software Foundation;
with no Invariant Sections, Front- or Back-Cover Texts. The license text is in
\`GFDL-1.3\` beside this notice. Cite as "The Free On-line Dictionary of
Computing, http://www.foldoc.org/, Editor Denis Howe".

Source: Debian package $(cat "$tmp/dict-foldoc.deb-name") (dictd edition).
Modified: one entry per block (head line with other names, then one line per
paragraph), {cross-reference} braces and revision dates removed.
EOF
if [[ -f /usr/share/common-licenses/GFDL-1.3 ]]; then
  cp /usr/share/common-licenses/GFDL-1.3 "$out/foldoc/GFDL-1.3"
else
  echo "make_corpus: /usr/share/common-licenses/GFDL-1.3 is missing; add the GFDL text to $out/foldoc" >&2
  exit 1
fi

echo "make_corpus: wrote $out" >&2
find "$out" -name '*.txt' -printf '%s %p\n' | sort -k2 |
  awk '{ total += $1; printf "  %10d  %s\n", $1, $2 } END { printf "  %10d  total bytes of text\n", total }'
