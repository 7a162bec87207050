// Byte-level BPE tokenizer, as nanochat's (rustbpe for training, tiktoken for
// encoding). A tokenizer is a list of mergeable tokens (byte strings whose
// index is both their id and their merge priority, "rank"), a named
// pre-split regex, and special tokens with ids after the ranks.
//
// Files: the ranks are a tiktoken rank file ("base64 rank\n" per token), so
// GPT-2 / cl100k_base / o200k_base / nanochat tokenizers load unchanged; the
// split pattern name and special tokens live in a JSON sidecar PATH.json
// (docs/tokenizer.md). A rank file without sidecar gets nanochat's
// conventions (nanochat pattern, nanochat specials after the ranks).
//
// A loaded nc_tok is immutable: encode/decode may run concurrently on it.
#ifndef NC_CHAT_TOKENIZER_H
#define NC_CHAT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/buf.h"
#include "support/status.h"

typedef enum {
  NC_TOK_PAT_GPT2,      // GPT-2 (r50k) split regex
  NC_TOK_PAT_CL100K,    // GPT-4 (cl100k_base)
  NC_TOK_PAT_O200K,     // GPT-4o (o200k_base)
  NC_TOK_PAT_NANOCHAT,  // GPT-4's with \p{N}{1,2} (nanochat's default)
  NC_TOK_PAT_COUNT
} nc_tok_pattern;

const char *nc_tok_pattern_name(nc_tok_pattern p);
nc_status nc_tok_pattern_parse(const char *name, nc_tok_pattern *out);
// The regex (PCRE2 syntax) the pattern compiles to.
const char *nc_tok_pattern_regex(nc_tok_pattern p);

// nanochat's special tokens, in id order after the mergeable ranks.
#define NC_TOK_N_NANOCHAT_SPECIALS 9
extern const char *const nc_tok_nanochat_specials[NC_TOK_N_NANOCHAT_SPECIALS];

typedef struct nc_tok nc_tok;

// Growable list of token ids.
typedef struct {
  int32_t *data;
  size_t len, cap;
} nc_ids;
void nc_ids_free(nc_ids *v);
nc_status nc_ids_push(nc_ids *v, int32_t id);
nc_status nc_ids_append(nc_ids *v, const int32_t *ids, size_t n);

// Builds a tokenizer from mergeable tokens (tokens[i] has rank i) and special
// tokens (names[i] gets special_ids[i]; NULL special_ids = n_ranks + i).
// Errors: duplicate tokens, a missing single-byte token, empty tokens,
// special ids that collide with ranks or each other.
nc_status nc_tok_new(const uint8_t *const *tokens, const size_t *lens, size_t n_ranks,
                     nc_tok_pattern pat, const char *const *special_names, const int32_t *special_ids,
                     size_t n_special, nc_tok **out);
void nc_tok_free(nc_tok *t);

// Loads a tiktoken rank file PATH and its sidecar PATH.json (if present).
nc_status nc_tok_load(const char *path, nc_tok **out);
// Writes PATH (rank file) and PATH.json (sidecar), each atomically.
nc_status nc_tok_save(const nc_tok *t, const char *path);
// Parses rank-file text (name is used in error messages: "name:line: ...").
// Returns the tokens in rank order; the caller frees with nc_tok_ranks_free.
typedef struct {
  uint8_t **tok;
  size_t *len;
  size_t n;
} nc_tok_ranks;
nc_status nc_tok_ranks_parse(const char *name, const char *text, size_t n, nc_tok_ranks *out);
void nc_tok_ranks_free(nc_tok_ranks *r);

size_t nc_tok_n_ranks(const nc_tok *t);     // mergeable tokens
size_t nc_tok_vocab_size(const nc_tok *t);  // max id + 1 (ranks + specials)
nc_tok_pattern nc_tok_get_pattern(const nc_tok *t);
size_t nc_tok_n_special(const nc_tok *t);
const char *nc_tok_special_name(const nc_tok *t, size_t i);
int32_t nc_tok_special_id_at(const nc_tok *t, size_t i);
// Id of the named special token, or -1.
int32_t nc_tok_special_id(const nc_tok *t, const char *name);
// nanochat's <|bos|>, else GPT's <|endoftext|>, else -1.
int32_t nc_tok_bos_id(const nc_tok *t);
// Bytes of a token (specials: their text). NULL for an unknown id.
const uint8_t *nc_tok_token(const nc_tok *t, int32_t id, size_t *len);
bool nc_tok_is_special(const nc_tok *t, int32_t id);
// Byte length per id (0 for specials and unused ids), for bits-per-byte;
// out has nc_tok_vocab_size entries.
void nc_tok_token_bytes(const nc_tok *t, int32_t *out);
// Rank of an exact byte string, or -1.
int32_t nc_tok_rank_of(const nc_tok *t, const void *bytes, size_t n);

typedef enum {
  NC_TOK_SPECIAL_ORDINARY,  // special-token text is ordinary text (nanochat's encode)
  NC_TOK_SPECIAL_ALLOW,     // special-token text becomes the special id
  NC_TOK_SPECIAL_DISALLOW,  // special-token text is an error (tiktoken's encode default)
} nc_tok_special_mode;

typedef struct {
  nc_tok_special_mode special;
  int threads;  // 0 = automatic (large inputs split over up to 8 threads), 1 = none
} nc_tok_encode_opts;

// Appends the ids of text (any bytes; invalid UTF-8 bytes become single-byte
// tokens) to out.
nc_status nc_tok_encode(const nc_tok *t, const void *text, size_t n, const nc_tok_encode_opts *opts,
                        nc_ids *out);
// Appends the bytes of ids to out. Unknown ids are an error.
nc_status nc_tok_decode(const nc_tok *t, const int32_t *ids, size_t n, nc_buf *out);

// Streaming decoder: emits only whole UTF-8 characters, holding back an
// incomplete trailing sequence until the next token completes it. Bytes that
// can never become valid UTF-8 are emitted as they are (exact round trip).
typedef struct {
  uint8_t held[4];
  int nheld;
} nc_tok_stream;
void nc_tok_stream_init(nc_tok_stream *s);
nc_status nc_tok_stream_push(const nc_tok *t, nc_tok_stream *s, int32_t id, nc_buf *out);
void nc_tok_stream_flush(nc_tok_stream *s, nc_buf *out);

// ---- training (chat/tokenizer_train.c) ------------------------------------

typedef struct {
  size_t vocab_size;       // total, including the nanochat special tokens
  uint64_t max_chars;      // stop after this many characters (default 2e9)
  uint64_t doc_cap;        // characters kept per document (default 10,000)
  int threads;             // chunk-counting threads (0 = online CPUs)
  nc_tok_pattern pattern;  // default NC_TOK_PAT_NANOCHAT
  // Optional progress report (stage text, a count); called from the caller's thread.
  void (*progress)(void *ctx, const char *stage, uint64_t done, uint64_t total);
  void *progress_ctx;
} nc_tok_train_opts;
void nc_tok_train_opts_default(nc_tok_train_opts *o);

// Source of documents: returns NC_OK with *doc = NULL at the end. The
// document memory stays valid until the next call.
typedef nc_status (*nc_tok_doc_next)(void *ctx, const char **doc, size_t *len);

nc_status nc_tok_train(nc_tok_doc_next next, void *ctx, const nc_tok_train_opts *o, nc_tok **out);
// Convenience: trains on in-memory documents.
nc_status nc_tok_train_docs(const char *const *docs, const size_t *lens, size_t n, const nc_tok_train_opts *o,
                            nc_tok **out);

// Streams documents from files: plain text (documents separated by blank
// lines), JSONL with a "text" field, or either gzipped (.gz, via zlib).
typedef struct nc_tok_docfile nc_tok_docfile;
nc_status nc_tok_docfile_open(const char *const *paths, size_t n, nc_tok_docfile **out);
nc_status nc_tok_docfile_next(void *docfile, const char **doc, size_t *len);
uint64_t nc_tok_docfile_bytes_read(const nc_tok_docfile *f);
void nc_tok_docfile_close(nc_tok_docfile *f);

// ---- chat rendering (chat/tokenizer_chat.c) -------------------------------

typedef struct {
  int32_t *ids;
  uint8_t *mask;  // 1 = trained on (assistant output), 0 = not
  size_t len, cap;
} nc_tok_rendered;
void nc_tok_rendered_free(nc_tok_rendered *r);

// conversation JSON: {"messages":[{"role":"system|user|assistant","content":
// "..." | [{"type":"text|python|python_output","text":"..."}]}]}
// max_tokens 0 = 2048 (nanochat's default).
nc_status nc_tok_render_conversation(const nc_tok *t, const char *json, size_t len, size_t max_tokens,
                                     nc_tok_rendered *out);
// Drops the last (assistant) message and appends <|assistant_start|>.
nc_status nc_tok_render_for_completion(const nc_tok *t, const char *json, size_t len, nc_ids *out);

#endif
