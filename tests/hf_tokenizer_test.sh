#!/usr/bin/env bash
# Parity of `upcycle encode --tokenizer hf:PATH` with Hugging Face's tokenizers, the Rust library
# from PyPI (encode(text, add_special_tokens=False).ids, tests/hf_tokenizer_ref.py), on the real
# tokenizer.json files of Qwen3, Llama 3, DeepSeek-V3 and GPT-OSS in ../shared/data/tokenizers/:
# identical ids on English prose, source code, 200 KB runs of one character class, and a
# generated text of whitespace runs, digits, CJK, emoji, combining marks and every added token
# in context; decode(encode(x)) == x after the normalizer (NFC for Qwen3); invalid UTF-8
# refused in one line; `bench tokenize` against the library; and an end-to-end run on Qwen3's
# vocabulary. The library comes from the pinned environment of scripts/pyenv.sh (installed by
# make test-deps); without it the parity checks print skipped with the reason, and a missing
# tokenizer folder skips that tokenizer, saying so. No registry is needed for the files.
#   UPCYCLE_BIN              upcycle binary (default ./upcycle)
#   UPCYCLE_HF_TOKENIZERS    the folder of the tokenizer folders (default ../shared/data/tokenizers)
#   UPCYCLE_HF_MODELS        tokenizers to compare (default: qwen3 llama3 deepseek_v3 gpt_oss)
#   UPCYCLE_HF_TEXTS         texts to compare (default: varied code runs shakespeare docs); the
#                            sanitizer pass takes the two that reach every code path (varied: each
#                            class of text and every added token; runs: 200 KB pieces)
set -u
cd "$(dirname "$0")/.."
BIN=${UPCYCLE_BIN:-./upcycle}
TOKDIR=${UPCYCLE_HF_TOKENIZERS:-../shared/data/tokenizers}
MODELS=${UPCYCLE_HF_MODELS:-qwen3 llama3 deepseek_v3 gpt_oss}
TEXTS=${UPCYCLE_HF_TEXTS:-varied code runs shakespeare docs}
CAP=$(mktemp -d)
trap 'rm -rf "$CAP"' EXIT
CMD_TIMEOUT=300
. tests/lib.sh

BYTES=0
MISMATCH=0
finish() {
  echo "hf tokenizer parity: $BYTES bytes of text compared with tokenizers ${REF_VERSION:-(not run)}, $MISMATCH files with different ids"
  echo "hf-tokenizer: $PASS passed, $FAILED failed, $SKIPPED skipped"
  [ "$FAILED" -eq 0 ]
  exit
}

# the reference: the Rust library of the pinned PyPI environment
if PY=$(scripts/pyenv.sh python tf5 2>"$CAP/why"); then
  REF_VERSION=$("$PY" -c 'import tokenizers; print(tokenizers.__version__)' 2>"$CAP/why") || PY=""
else
  PY=""
fi
[ -z "$PY" ] && REF_WHY=$(oneline "$(cat "$CAP/why")")

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
  dir="$TOKDIR/$m"
  if [ ! -f "$dir/tokenizer.json" ]; then
    skip "$m" "$dir/tokenizer.json not found (the shared tokenizer files are missing here)"
    continue
  fi
  python3 tests/hf_tokenizer_text.py "$dir/tokenizer.json" "$CAP/varied-$m.txt" 400000
  # the normalizer's type, once per tokenizer
  norm=$(python3 -c 'import json, sys; print((json.load(open(sys.argv[1], encoding="utf-8")).get("normalizer") or {}).get("type") or "none")' "$dir/tokenizer.json")
  files=()
  for t in $TEXTS; do
    case $t in
      varied) files+=("$CAP/varied-$m.txt") ;;
      *) [ -n "${TEXT_FILE[$t]:-}" ] && files+=("${TEXT_FILE[$t]}") ;;
    esac
  done
  # the library's ids of every file, one load of the tokenizer
  mkdir -p "$CAP/ref-$m"
  ref_ok=0
  if [ -n "$PY" ]; then
    if timeout 600 "$PY" tests/hf_tokenizer_ref.py "$dir" --ids "$CAP/ref-$m" "${files[@]}" 2>"$CAP/ref.err"; then ref_ok=1
    else fail "$m tokenizers" "the reference failed: $(oneline "$(tail -n 3 "$CAP/ref.err")")"; fi
  fi
  k=0
  for f in "${files[@]}"; do
    name="$m $(basename "$f")"
    run "$BIN" encode --tokenizer "hf:$dir" --input "$f"
    if [ "$RC" -ne 0 ]; then fail "$name encode" "exit $RC: $(oneline "$ERR")"; k=$((k + 1)); continue; fi
    tr -d ' \n' <"$CAP/out" >"$CAP/ours.json"
    cp "$CAP/out" "$CAP/ids.json"
    if [ -z "$PY" ]; then
      skip "$name parity" "$REF_WHY"
    elif [ "$ref_ok" -eq 1 ]; then
      BYTES=$((BYTES + $(wc -c <"$f")))
      if cmp -s "$CAP/ours.json" "$CAP/ref-$m/$k.json"; then
        ok "$name: ids identical to tokenizers $REF_VERSION ($(wc -c <"$f") bytes)"
      else
        MISMATCH=$((MISMATCH + 1))
        fail "$name" "$(python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
print(f"first difference at id {i} of {len(a)} (ours) / {len(b)} (tokenizers): {a[i:i+5]} vs {b[i:i+5]}")' "$CAP/ours.json" "$CAP/ref-$m/$k.json")"
      fi
    fi
    k=$((k + 1))
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
# bench tokenize: the varied text and the code as documents, ours on 1 and 2 threads and the
# library on 1 and 2 threads, the same ids (count and hash) from all four, or it exits non-zero
QWEN="$TOKDIR/qwen3"
if [[ " $MODELS " == *" qwen3 "* ]] && [ -f "$QWEN/tokenizer.json" ]; then
  mkdir -p "$CAP/bench_docs" && cp "$CAP/varied-qwen3.txt" "$CAP/code.txt" "$CAP/bench_docs/"
  if [ -z "$PY" ]; then
    skip "bench tokenize qwen3" "$REF_WHY"
  else
    run "$BIN" bench tokenize --tokenizer "hf:$QWEN" --input "$CAP/bench_docs" --threads 2
    if [ "$RC" -eq 0 ] && [[ $OUT == *"ids: identical to tokenizers (Rust)"* ]]; then
      ok "bench tokenize qwen3: $(printf '%s\n' "$OUT" | grep '^upcycle / tokenizers' | tr '\n' ' ')"
    else
      fail "bench tokenize qwen3" "exit $RC: $(oneline "$OUT$ERR")"
    fi
  fi
fi

# End to end: the bundled corpus tokenized with Qwen3's tokenizer, a small Qwen3-MoE-shaped model
# (its 151,669-id vocabulary, 2 layers of 4 experts) trained 20 steps on it, and `sample`
# decoding words: at least 80% of the continuation's words are words of the corpus.
if [[ " $MODELS " == *" qwen3 "* ]] && [ -f data/tinyshakespeare.txt ] && [ -f "$QWEN/tokenizer.json" ]; then
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
