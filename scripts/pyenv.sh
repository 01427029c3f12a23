#!/usr/bin/env bash
# The Python test environment from PyPI, for the suites that compare against Hugging Face's own
# code: PyTorch 2 and safetensors (tests/pyenv/base.txt), and transformers 4.57 and 5, each with
# its own tokenizers and huggingface_hub (tests/pyenv/transformers4.txt, transformers5.txt).
# Three venvs, cached outside the clone and keyed by the pinned files and the Python version, so
# CI and later runs reuse them: $UPCYCLE_PYENV_CACHE (default ~/.cache/upcycle)/pyenv-KEY/{base,tf4,tf5}.
# tf4 and tf5 see base's packages through a relative .pth file (one copy of torch, ~5 GB).
#
#   scripts/pyenv.sh ensure         install what is missing; exit 0 when ready, 1 when it cannot
#                                   be installed (the reason on stderr and in ROOT/unavailable)
#   scripts/pyenv.sh python NAME    print the python of venv NAME (base, tf4, tf5), or exit 1
#                                   with the reason why the environment is not there
#   UPCYCLE_PYENV=off               both say "unavailable: UPCYCLE_PYENV=off" and exit 1
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${UPCYCLE_PYENV_PYTHON:-/usr/bin/python3}
CACHE=${UPCYCLE_PYENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/upcycle}
KEY=$({ cat tests/pyenv/base.txt tests/pyenv/transformers4.txt tests/pyenv/transformers5.txt; "$PY" -V 2>&1; } | sha256sum | cut -c1-16)
ROOT="$CACHE/pyenv-$KEY"

unavailable() {
  echo "unavailable: $*" >&2
  return 1
}

site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

build() { # into $1, then renamed into place by the caller
  local tmp=$1 log=$1.log
  "$PY" -m venv "$tmp/base" >"$log" 2>&1 || { tail -n 3 "$log" >&2; return 1; }
  "$tmp/base/bin/python" -m pip install --no-input -q -r tests/pyenv/base.txt >>"$log" 2>&1 || { tail -n 3 "$log" >&2; return 1; }
  local base_site rel
  base_site=$(site_of "$tmp/base")
  for v in tf4:transformers4 tf5:transformers5; do
    local name=${v%%:*} req=${v#*:}
    "$PY" -m venv "$tmp/$name" >>"$log" 2>&1 || { tail -n 3 "$log" >&2; return 1; }
    local site
    site=$(site_of "$tmp/$name")
    rel=$(realpath --relative-to="$site" "$base_site") # relative: the tree may be renamed
    echo "$rel" >"$site/upcycle-base.pth"
    "$tmp/$name/bin/python" -m pip install --no-input -q -r "tests/pyenv/$req.txt" >>"$log" 2>&1 || { tail -n 3 "$log" >&2; return 1; }
  done
  for name in tf4 tf5; do
    "$tmp/$name/bin/python" -c 'import torch, transformers, tokenizers, safetensors' >>"$log" 2>&1 || { tail -n 3 "$log" >&2; return 1; }
  done
}

ensure() {
  [ "${UPCYCLE_PYENV:-}" = off ] && { unavailable "UPCYCLE_PYENV=off"; return 1; }
  [ -f "$ROOT/ready" ] && return 0
  mkdir -p "$CACHE" || { unavailable "cannot create $CACHE"; return 1; }
  exec 9>"$CACHE/pyenv.lock"
  flock 9
  [ -f "$ROOT/ready" ] && return 0
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "$PY has no venv module (Debian: python3-venv)" >"$CACHE/unavailable-$KEY"
    unavailable "$PY has no venv module (Debian: python3-venv)"
    return 1
  fi
  echo "pyenv: installing the pinned PyTorch 2 and transformers 4.57 / 5 environments into $ROOT (once; ~5 GB)"
  local tmp="$ROOT.tmp.$$"
  rm -rf "$tmp" "$tmp.log"
  if ! build "$tmp" 2>"$CACHE/unavailable-$KEY"; then
    local why
    why=$(tr '\n' ' ' <"$CACHE/unavailable-$KEY" | cut -c1-300)
    rm -rf "$tmp"
    unavailable "pip could not install tests/pyenv/*.txt (no PyPI?): $why"
    return 1
  fi
  rm -f "$tmp.log" "$CACHE/unavailable-$KEY"
  rm -rf "$ROOT"
  mv "$tmp" "$ROOT" && touch "$ROOT/ready"
  rm -rf "$CACHE"/pyenv-*.tmp.* 2>/dev/null
  return 0
}

case "${1:-}" in
ensure) ensure ;;
python)
  name=${2:-}
  case "$name" in base | tf4 | tf5) ;; *) echo "usage: scripts/pyenv.sh python base|tf4|tf5" >&2; exit 2 ;; esac
  [ "${UPCYCLE_PYENV:-}" = off ] && { unavailable "UPCYCLE_PYENV=off"; exit 1; }
  if [ -f "$ROOT/ready" ]; then echo "$ROOT/$name/bin/python"; exit 0; fi
  if [ -f "$CACHE/unavailable-$KEY" ]; then unavailable "$(tr '\n' ' ' <"$CACHE/unavailable-$KEY" | cut -c1-300)"; exit 1; fi
  unavailable "not installed (make test-deps installs it from PyPI)"
  exit 1
  ;;
*) echo "usage: scripts/pyenv.sh ensure | python base|tf4|tf5" >&2; exit 2 ;;
esac
