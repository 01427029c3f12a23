"""The reference side of tests/hf_tokenizer_test.sh and `upcycle bench tokenize`: Hugging Face's
tokenizers, the Rust library from PyPI (the pinned environment of scripts/pyenv.sh), encoding
as `upcycle encode` does: encode(text, add_special_tokens=False).ids.

  python hf_tokenizer_ref.py TOKENIZER_DIR --ids OUT_DIR FILE [FILE ...]
      writes OUT_DIR/<k>.json, the ids of the k-th FILE as one JSON array (the tokenizer is
      loaded once for all files)
  python hf_tokenizer_ref.py TOKENIZER_DIR --bench DOCS.jsonl [--rounds R]
      encodes every {"text": ...} line as one document with encode_batch (the library's
      parallel path; RAYON_NUM_THREADS, set by the caller, is its thread count), R timed rounds
      after one untimed one, and prints one JSON line: the best round's seconds, the loading
      seconds, the text bytes, the id count and the FNV-1a hash of the ids in document order
      (as `upcycle bench tokenize`), the library's version and its thread count
"""
import json
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # encode_batch runs on rayon's pool
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def fnv(ids_lists):
    h = 0x811C9DC5
    n = 0
    for ids in ids_lists:
        for i in ids:
            h = ((h ^ i) * 16777619) & 0xFFFFFFFF
        n += len(ids)
    return n, h


def main(argv):
    tok_dir, mode = argv[0], argv[1]
    path = tok_dir if tok_dir.endswith(".json") else os.path.join(tok_dir, "tokenizer.json")
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(path)
    load = time.perf_counter() - t0
    if mode == "--ids":
        out_dir, files = argv[2], argv[3:]
        for k, f in enumerate(files):
            with open(f, encoding="utf-8", newline="") as fh:  # the bytes as they are: \r\n stays
                text = fh.read()
            ids = tok.encode(text, add_special_tokens=False).ids
            with open(os.path.join(out_dir, f"{k}.json"), "w") as fh:
                fh.write(json.dumps(ids, separators=(",", ":")))
        return 0
    if mode == "--bench":
        docs_path = argv[2]
        rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
        with open(docs_path, encoding="utf-8") as fh:
            docs = [json.loads(line)["text"] for line in fh if line.strip()]
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        tok.encode_batch(docs[:64], add_special_tokens=False)  # the thread pool and caches, untimed
        times, encs = [], None
        for r in range(rounds + 1):  # round 0 untimed: the pages of the text, the allocator
            t0 = time.perf_counter()
            encs = tok.encode_batch(docs, add_special_tokens=False)
            if r:
                times.append(time.perf_counter() - t0)
        best = min(times)
        n, h = fnv(e.ids for e in encs)
        print(json.dumps({"seconds": best, "load_seconds": load, "bytes": nbytes, "ids": n, "hash": h,
                          "version": tokenizers.__version__, "threads": os.environ.get("RAYON_NUM_THREADS", "all")}))
        return 0
    print(f"hf_tokenizer_ref: unknown mode {mode}; expected --ids or --bench", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
