/* hf_tokenizer.h - Hugging Face tokenizer.json for byte-level BPE models (Qwen, Llama 3,
 * DeepSeek, GPT-OSS style), encoding and decoding like the `tokenizers` library with
 * add_special_tokens=false (no post-processor template, no BOS).
 *
 * What is implemented, and everything else is refused at load time with one line naming the
 * field ("<file>: field model.type is \"WordPiece\"; expected BPE ..."), never approximated:
 *   - normalizer: null, NFC, NFD, NFKC, NFKD (utf8proc), Sequence of those;
 *   - pre_tokenizer: Split (Regex or String pattern; PCRE2 with UTF and UCP; behaviours
 *     Isolated and Removed; invert), ByteLevel (add_prefix_space, use_regex: the GPT-2
 *     pattern), Digits (individual_digits), Sequence of those; a ByteLevel step is required;
 *   - model: BPE (merges as "a b" or ["a","b"], ignore_merges, byte_fallback; no dropout, no
 *     continuing_subword_prefix or end_of_word_suffix);
 *   - added_tokens: those with normalized false matched in the raw text, leftmost then
 *     longest, with lstrip, rstrip and single_word; the text between them is normalized, and
 *     those with normalized true are matched in it as their normalized form (as the Rust
 *     library does);
 *   - decoder: ByteLevel (or null).
 * Input must be valid UTF-8: invalid bytes are refused with one line naming the offset. */
#ifndef UPCYCLE_HF_TOKENIZER_H
#define UPCYCLE_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct HfTokenizer HfTokenizer;

/* path: a tokenizer.json, or a directory holding tokenizer.json (and optionally
 * tokenizer_config.json, read for eos_token). Errors name the file and field. */
int hf_tokenizer_load(HfTokenizer **out, const char *path);
void hf_tokenizer_free(HfTokenizer *tok);
/* one more than the largest id in the vocabulary and added tokens */
int hf_tokenizer_vocab_size(const HfTokenizer *tok);
/* the id of a vocabulary or added token spelled exactly `text`, or -1 */
int hf_tokenizer_token_id(const HfTokenizer *tok, const char *text);
/* The end-of-text token that ends a document: the added token "<|endoftext|>" if there is one,
 * else tokenizer_config.json's eos_token; -1 if neither exists. */
int hf_tokenizer_eos_id(const HfTokenizer *tok);
/* the path of the tokenizer.json that was read (owned by tok) */
const char *hf_tokenizer_json_path(const HfTokenizer *tok);
/* encode: *ids is malloc'd. decode: *text is malloc'd and NUL-terminated; unknown ids fail. */
int hf_tokenizer_encode(const HfTokenizer *tok, const unsigned char *text, size_t n_bytes, uint32_t **ids,
                        size_t *n_ids);
int hf_tokenizer_decode(const HfTokenizer *tok, const uint32_t *ids, size_t n_ids, char **text, size_t *n_bytes);

#endif
