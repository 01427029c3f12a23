"""Seeds for fuzz_hf_tokenizer from the real tokenizer.json files (../shared/data/tokenizers):
for each, a small tokenizer.json with the real file's normalizer, pre-tokenizer, decoder and
every added token (its id, content and flags), over a byte-level vocabulary of the 256 byte
symbols plus the real merges among them that fit; and a text of every added token in context.
Written into tests/fuzz/corpus/hf_tokenizer/real_<name>.json and real_<name>_text.txt.
usage: python3 tests/fuzz/make_real_seeds.py [TOKENIZERS_DIR]"""
import json, os, sys

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/tokenizers"
out = os.path.join(os.path.dirname(__file__), "corpus", "hf_tokenizer")
for name in ("qwen3", "llama3", "deepseek_v3", "gpt_oss"):
    path = os.path.join(src, name, "tokenizer.json")
    if not os.path.exists(path):
        print(f"{path}: missing; skipped")
        continue
    tok = json.load(open(path, encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    byte_syms = sorted(vocab, key=vocab.get)[:256]  # the byte-level alphabet comes first in these files
    small = {s: i for i, s in enumerate(byte_syms)}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in small and b in small and a + b not in small and len(small) < 400:
            small[a + b] = len(small)
            merges.append([a, b])
    seed = {k: tok[k] for k in ("normalizer", "pre_tokenizer", "decoder") if k in tok}
    # added tokens keep their real content and flags; their ids follow the small vocabulary
    seed["added_tokens"] = [dict(t, id=len(small) + i) for i, t in enumerate(tok.get("added_tokens", []))]
    seed["model"] = dict(tok["model"], vocab=small, merges=merges)
    json.dump(seed, open(os.path.join(out, f"real_{name}.json"), "w", encoding="utf-8"), ensure_ascii=False)
    specials = [t["content"] for t in tok.get("added_tokens", [])]
    text = "".join(f"{s}x {s}{s} y{s[: max(1, len(s) // 2)]} " for s in specials[:400])
    open(os.path.join(out, f"real_{name}_text.txt"), "w", encoding="utf-8").write(text)
    print(f"{name}: {len(specials)} added tokens, {len(merges)} merges")
