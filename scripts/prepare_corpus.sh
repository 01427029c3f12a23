#!/usr/bin/env bash
# Prepares the paper-tiny corpus: the prose of the Linux kernel's Documentation/ (reStructuredText
# and text files) from Debian's linux-source package, tokenized with a byte-level BPE. Every file
# is one document; whole documents go to pretrain, cpt or val by a seeded shuffle (SPLIT_SEED).
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
tar -xJf "$TARBALL" -C "$WORK" --wildcards '*/Documentation/*.rst' '*/Documentation/*.txt'
DOCS=$(ls -d "$WORK"/*/Documentation)
echo "corpus: $(find "$DOCS" -type f | wc -l) documents, $(cat $(find "$DOCS" -type f) | wc -c) bytes of text"
[ -x ./upcycle ] || make -s
# tokenize walks the directory in sorted path order, so the corpus is the same on every machine
./upcycle tokenize --input "$DOCS" --out "$OUT" --tokenizer bpe --vocab "$VOCAB" --split-by document \
  --split pretrain=0.94,cpt=0.03,val=0.03 --split-seed "${SPLIT_SEED:-1}" --force
