/* tokenizer.h - byte-level (vocab 256) and byte-level BPE tokenizers, ours or a Hugging Face
 * tokenizer.json (tokenizer_load_hf).
 * A BPE tokenizer is saved as DIR/tokenizer.json beside the shards; a data directory without
 * tokenizer.json uses the byte tokenizer. Training is deterministic: the same text and vocab
 * size give the same merges, on any machine and thread count. */
#ifndef UPCYCLE_TOKENIZER_H
#define UPCYCLE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

Tokenizer *tokenizer_byte(void);
/* Learns vocab_size - 256 merges (vocab_size in [257, 65536]); with_eod reserves the last id
 * as the end-of-document token (and learns one merge fewer). */
int tokenizer_train_bpe(Tokenizer **out, const unsigned char *text, size_t n_bytes, int vocab_size, int with_eod);
int tokenizer_save(const Tokenizer *tok, const char *path);  /* atomic; JSON */
int tokenizer_load(Tokenizer **out, const char *path);       /* validates; errors name the file and field */
int tokenizer_load_dir(Tokenizer **out, const char *data_dir); /* DIR/tokenizer.json or byte tokenizer */
/* A Hugging Face byte-level BPE tokenizer.json (data/hf_tokenizer.h says what is implemented):
 * path is the file or a directory holding it. tokenizer_load_dir reads one too (a data
 * directory's tokenizer.json with a "model" object and no "type"; tokenizer_load reads only
 * ours); tokenizer_save copies the file. */
int tokenizer_load_hf(Tokenizer **out, const char *path);
int tokenizer_is_hf(const Tokenizer *tok);
const char *tokenizer_hf_json_path(const Tokenizer *tok); /* NULL unless tokenizer_is_hf */
/* the id of a token spelled exactly text (a vocabulary or added token; ours: only "<|endoftext|>"
 * for the eod id), or -1 */
int tokenizer_token_id(const Tokenizer *tok, const char *text);
int tokenizer_vocab_size(const Tokenizer *tok);
int tokenizer_is_bpe(const Tokenizer *tok);
/* The end-of-document id that joins documents in a BPE data directory (tokenizer.json's
 * "eod_id", the last id; encoding text never yields it, it decodes to "<|endoftext|>"), or -1.
 * For a Hugging Face tokenizer: its end-of-text token (hf_tokenizer_eos_id), or -1. */
int tokenizer_eod_id(const Tokenizer *tok);
/* encode: *ids is malloc'd. decode: *text is malloc'd and NUL-terminated; ids >= vocab fail. */
int tokenizer_encode(const Tokenizer *tok, const unsigned char *text, size_t n_bytes, uint32_t **ids, size_t *n_ids);
int tokenizer_decode(const Tokenizer *tok, const uint32_t *ids, size_t n_ids, char **text, size_t *n_bytes);
void tokenizer_free(Tokenizer *tok);

#endif
