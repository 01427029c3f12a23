# tests/make_hf_tokenizer.py - writes DIR/tokenizer.json (+ tokenizer_config.json): a small
# Hugging Face byte-level BPE in Qwen's layout (NFC, Split + ByteLevel, merges as pairs) whose
# <|endoftext|> is id 70000, so that its shards need 4 bytes per token. With --wordpiece the
# model type is WordPiece (to be refused). usage: python3 make_hf_tokenizer.py DIR [--wordpiece]
import json, os, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
chars, n = {}, 0
for b in range(256):
    chars[b] = chr(b) if b in printable else chr(256 + n)
    n += b not in printable
vocab = {chars[b]: b for b in range(256)}
merges = [["t", "h"], ["th", "e"], ["\u0120", "the"], ["o", "u"], ["e", "r"]]
for left, right in merges:
    vocab[left + right] = len(vocab)
added = [{"id": 70000, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": True},
         {"id": 70001, "content": "<|im_end|>", "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": True}]
pattern = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
           "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
       "normalizer": {"type": "NFC"},
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
           {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
       "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False},
       "model": {"type": "WordPiece" if "--wordpiece" in sys.argv else "BPE", "dropout": None, "unk_token": None,
                 "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                 "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges}}
json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
json.dump({"eos_token": "<|im_end|>", "tokenizer_class": "Qwen2Tokenizer"}, open(os.path.join(out, "tokenizer_config.json"), "w"))
