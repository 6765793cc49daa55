#!/usr/bin/env bash
# fetch_task_sources.sh [OUT_DIR]: the sources of `stem tasks make`, each with
# its license beside it (default OUT_DIR: data/task-sources):
#
#   emma.txt         Jane Austen, Emma (1815)   r-cran-janeaustenr  public domain
#                    held out of scripts/make_corpus.sh's corpus, for the cloze
#                    task and the needle filler
#   countries-list/  countries, capitals, languages, currencies  npm countries-list 3.4.1  MIT
#   WordNet 3.0      installed as the Debian package wordnet-base (/usr/share/wordnet)
#
# r-cran-janeaustenr is unpacked with `apt-get download` + `dpkg -x` (R is not
# installed); countries-list is fetched with `npm pack` and unpacked (no
# node_modules, nothing runs). Re-running overwrites OUT_DIR's files.
set -euo pipefail
out=${1:-data/task-sources}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

echo "fetch_task_sources: emma" >&2
/usr/bin/python3 "$here/extract_austen.py" "$tmp/austen" emma
mv "$tmp/austen/emma.txt" "$out/emma.txt"
cat >"$out/NOTICE.md" <<'NOTE'
# Sources of the built-in evaluation tasks

- emma.txt: Jane Austen, Emma (1815), public domain; from the Debian package
  r-cran-janeaustenr (CRAN janeaustenr by Julia Silge; the novel's text, the
  only part used, is public domain), extracted by scripts/extract_austen.py.
  scripts/make_corpus.sh leaves it out of the training corpus.
- countries-list/: the npm package countries-list 3.4.1 by Annexare Studio,
  MIT license (countries-list/LICENSE).
- WordNet 3.0 (definitions): the Debian package wordnet-base, read from
  /usr/share/wordnet; WordNet 3.0 license, Princeton University
  (/usr/share/doc/wordnet-base/copyright).
NOTE

echo "fetch_task_sources: countries-list" >&2
(cd "$tmp" && npm pack --silent countries-list@3.4.1 >/dev/null)
tar -xzf "$tmp"/countries-list-3.4.1.tgz -C "$tmp"
rm -rf "$out/countries-list"
mv "$tmp/package" "$out/countries-list"

if [[ ! -f /usr/share/wordnet/data.noun ]]; then
  echo "fetch_task_sources: wordnet-base" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null; }
fi
echo "fetch_task_sources: wrote $out" >&2
