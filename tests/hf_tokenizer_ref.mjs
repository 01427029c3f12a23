// tests/hf_tokenizer_ref.mjs - the reference side of tests/hf_tokenizer_test.sh: encodes a
// UTF-8 file with Hugging Face's tokenizers.js (add_special_tokens false, as `upcycle encode`)
// and prints the ids as one JSON array. usage: node hf_tokenizer_ref.mjs MODULES_DIR TOKENIZER_DIR FILE
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const [modules, dir, file] = process.argv.slice(2);
const require = createRequire(modules + "/");
const { Tokenizer } = require("@huggingface/tokenizers");
const json = JSON.parse(readFileSync(dir + "/tokenizer.json", "utf8"));
let config = {};
try { config = JSON.parse(readFileSync(dir + "/tokenizer_config.json", "utf8")); } catch (e) {}
const tok = new Tokenizer(json, config);
const text = readFileSync(file, "utf8");
const { ids } = tok.encode(text, { add_special_tokens: false });
process.stdout.write(JSON.stringify(Array.from(ids)) + "\n");
