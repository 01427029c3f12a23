#!/usr/bin/env bash
# Installs the Debian packages upcycle needs, only those that are missing.
#   scripts/deps.sh build   - what `make` needs (compiler, OpenBLAS, cJSON, PCRE2, utf8proc, OpenMPI)
#   scripts/deps.sh test    - build + python3-torch for the PyTorch reference tests
#   scripts/deps.sh hardening - build + clang and its libFuzzer runtime, valgrind (make fuzz, test-valgrind)
set -euo pipefail
want=(gcc make libc6-dev libopenblas-openmp-dev libcjson-dev libpcre2-dev libutf8proc-dev openmpi-bin libopenmpi-dev)
if [ "${1:-build}" = test ]; then want+=(python3 python3-torch python3-numpy python3-venv); fi
if [ "${1:-build}" = hardening ]; then want+=(clang libclang-rt-14-dev valgrind); fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
