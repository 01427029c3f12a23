// tests/hf_tokenizer_ref.mjs - the reference side of tests/hf_tokenizer_test.sh and of
// `upcycle bench tokenize`: Hugging Face's tokenizers.js (add_special_tokens false, as
// `upcycle encode`).
//   node hf_tokenizer_ref.mjs MODULES_DIR TOKENIZER_DIR FILE
//       prints FILE's ids as one JSON array
//   node hf_tokenizer_ref.mjs MODULES_DIR TOKENIZER_DIR --bench DOCS.jsonl
//       encodes every {"text": ...} line as one document and prints one JSON line: the seconds
//       spent encoding (reading and loading excluded), the loading seconds, the text bytes,
//       the id count and the FNV-1a hash of the ids in order (as `upcycle bench tokenize`)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const [modules, dir, ...rest] = process.argv.slice(2);
const require = createRequire(modules + "/");
const { Tokenizer } = require("@huggingface/tokenizers");
const loadStart = performance.now();
const json = JSON.parse(readFileSync(dir + "/tokenizer.json", "utf8"));
let config = {};
try { config = JSON.parse(readFileSync(dir + "/tokenizer_config.json", "utf8")); } catch (e) {}
const tok = new Tokenizer(json, config);
const loadSeconds = (performance.now() - loadStart) / 1000;
if (rest[0] === "--bench") {
  const docs = readFileSync(rest[1], "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l).text);
  let bytes = 0, count = 0, hash = 0x811c9dc5;
  for (const d of docs) bytes += Buffer.byteLength(d, "utf8");
  const start = performance.now();
  for (const d of docs) {
    const { ids } = tok.encode(d, { add_special_tokens: false });
    for (const id of ids) hash = Math.imul(hash ^ id, 16777619) >>> 0;
    count += ids.length;
  }
  const seconds = (performance.now() - start) / 1000;
  process.stdout.write(JSON.stringify({ seconds, load_seconds: loadSeconds, bytes, ids: count, hash }) + "\n");
} else {
  const text = readFileSync(rest[0], "utf8");
  const { ids } = tok.encode(text, { add_special_tokens: false });
  process.stdout.write(JSON.stringify(Array.from(ids)) + "\n");
}
