#!/usr/bin/env bash
# Prepares the paper-tiny corpus: the prose of the Linux kernel's Documentation/ (reStructuredText
# and text files) from Debian's linux-source package, tokenized with a byte-level BPE.
#   scripts/prepare_corpus.sh [OUT_DIR]   (default data/linux-docs; needs ~1 GB of disk while it runs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/linux-docs}
VOCAB=${VOCAB:-2048}
if ! ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "corpus: installing Debian's linux-source (about 140 MB)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends linux-source xz-utils >/dev/null
fi
TARBALL=$(ls /usr/src/linux-source-*.tar.xz | sort | tail -n 1)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "corpus: extracting Documentation/ from $TARBALL"
tar -xJf "$TARBALL" -C "$WORK" --wildcards '*/Documentation/*'
# a stable order (sorted paths) so the corpus is the same on every machine
find "$WORK" -type f \( -name '*.rst' -o -name '*.txt' \) -print0 | LC_ALL=C sort -z | xargs -0 cat > "$WORK/corpus.txt"
echo "corpus: $(wc -c < "$WORK/corpus.txt") bytes of text"
[ -x ./upcycle ] || make -s
./upcycle tokenize --input "$WORK/corpus.txt" --out "$OUT" --tokenizer bpe --vocab "$VOCAB" --force
