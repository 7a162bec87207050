// Pre-split regexes (PCRE2 + JIT) that cut text into chunks before BPE.
//
// The patterns are tiktoken's (gpt2, cl100k_base, o200k_base, as js-tiktoken
// ships them) and nanochat's, written for PCRE2. One deliberate rewrite: \s
// and \S become an explicit class of Unicode White_Space, because tiktoken and
// rustbpe run Rust's regex, whose \s is White_Space (it includes U+0085 NEL),
// while PCRE2's \s under UCP is "Z or tab/LF/VT/FF/CR" (it does not). So we
// split exactly where the Rust tokenizers do.
//
// PCRE2_MATCH_INVALID_UTF lets us split arbitrary bytes: no alternative can
// match an invalid UTF-8 sequence, so those bytes fall between chunks and the
// encoder emits them as single-byte tokens.
#include <stdlib.h>
#include <string.h>

#include "chat/tokenizer_internal.h"

#define WS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define CONTRACTIONS "'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D"

static const char *const nc_tok_pat_names[NC_TOK_PAT_COUNT] = {"gpt2", "cl100k", "o200k", "nanochat"};

static const char *const nc_tok_pat_regex[NC_TOK_PAT_COUNT] = {
    // gpt2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+",
    // cl100k_base
    "(?:" CONTRACTIONS ")|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS
    "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+",
    // o200k_base
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:" CONTRACTIONS
    ")?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:" CONTRACTIONS
    ")?|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+",
    // nanochat: '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,2}| ?[^" WS "\\p{L}\\p{N}]++[\\r\\n]*|[" WS
    "]*[\\r\\n]|[" WS "]+(?![^" WS "])|[" WS "]+",
};

const char *nc_tok_pattern_name(nc_tok_pattern p) {
  return (unsigned)p < NC_TOK_PAT_COUNT ? nc_tok_pat_names[p] : "?";
}

const char *nc_tok_pattern_regex(nc_tok_pattern p) {
  return (unsigned)p < NC_TOK_PAT_COUNT ? nc_tok_pat_regex[p] : NULL;
}

nc_status nc_tok_pattern_parse(const char *name, nc_tok_pattern *out) {
  for (int i = 0; i < NC_TOK_PAT_COUNT; i++)
    if (!strcmp(name, nc_tok_pat_names[i])) return *out = (nc_tok_pattern)i, NC_OK;
  // tiktoken's encoding names are accepted too.
  if (!strcmp(name, "r50k_base")) return *out = NC_TOK_PAT_GPT2, NC_OK;
  if (!strcmp(name, "cl100k_base")) return *out = NC_TOK_PAT_CL100K, NC_OK;
  if (!strcmp(name, "o200k_base")) return *out = NC_TOK_PAT_O200K, NC_OK;
  return nc_errorf(NC_E_INVALID, "unknown split pattern '%s' (expected gpt2, cl100k, o200k or nanochat)", name);
}

nc_status nc_tok_splitter_new(nc_tok_pattern pat, nc_tok_splitter **out) {
  *out = NULL;
  if ((unsigned)pat >= NC_TOK_PAT_COUNT) return nc_errorf(NC_E_INVALID, "bad split pattern %d", (int)pat);
  int err;
  PCRE2_SIZE off;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)nc_tok_pat_regex[pat], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return nc_errorf(NC_E_INTERNAL, "split pattern %s: PCRE2 compile error at offset %zu: %s",
                     nc_tok_pat_names[pat], (size_t)off, (char *)msg);
  }
  nc_tok_splitter *s = calloc(1, sizeof *s);
  if (!s) {
    pcre2_code_free(code);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  s->pat = pat;
  s->code = code;
  // The JIT is 5-10x faster; the interpreter is a correct fallback where the
  // platform has no JIT.
  s->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  *out = s;
  return NC_OK;
}

void nc_tok_splitter_free(nc_tok_splitter *s) {
  if (!s) return;
  pcre2_code_free(s->code);
  free(s);
}

nc_status nc_tok_split_ctx_init(const nc_tok_splitter *s, nc_tok_split_ctx *c) {
  memset(c, 0, sizeof *c);
  c->md = pcre2_match_data_create_from_pattern(s->code, NULL);
  c->mc = pcre2_match_context_create(NULL);
  if (s->jit) {
    // Lookahead after long whitespace runs backtracks; give the JIT room.
    c->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (c->js && c->mc) pcre2_jit_stack_assign(c->mc, NULL, c->js);
  }
  if (!c->md || !c->mc || (s->jit && !c->js)) {
    nc_tok_split_ctx_free(c);
    return nc_errorf(NC_E_NOMEM, "out of memory (regex match data)");
  }
  return NC_OK;
}

void nc_tok_split_ctx_free(nc_tok_split_ctx *c) {
  if (c->md) pcre2_match_data_free(c->md);
  if (c->mc) pcre2_match_context_free(c->mc);
  if (c->js) pcre2_jit_stack_free(c->js);
  memset(c, 0, sizeof *c);
}

bool nc_tok_split_next(const nc_tok_splitter *s, nc_tok_split_ctx *c, const uint8_t *text, size_t n, size_t pos,
                       size_t *ms, size_t *me) {
  while (pos < n) {
    int rc = s->jit ? pcre2_jit_match(s->code, text, n, pos, 0, c->md, c->mc)
                    : pcre2_match(s->code, text, n, pos, 0, c->md, c->mc);
    if (rc < 0) return false;  // no match (or a resource limit: the rest becomes bytes)
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    if (ov[1] > ov[0]) {
      *ms = ov[0];
      *me = ov[1];
      return true;
    }
    pos = ov[0] + 1;  // no pattern matches empty, but never loop on one
  }
  return false;
}

static inline bool nc_is_ascii_alnum(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

// Why this is safe for all four patterns: p must have text[p-2] a printable
// ASCII non-space, text[p-1] == '\n' and text[p] an ASCII letter or digit.
// No alternative can contain '\n' followed by a letter or digit (newlines
// only occur in whitespace runs, which stop before a non-space, or in the
// [\r\n]* / [\r\n/]* tails of punctuation runs), and the letter
// alternatives' optional prefix excludes \r and \n. The lone '\n' (after a
// non-space) is its own chunk or the tail of the one before whether or not
// text follows, so the \s+(?!\S) lookahead at a segment's end decides the
// same as in the whole text. Chunks tile valid text, so one ends at p.
size_t nc_tok_safe_boundary(const uint8_t *text, size_t n, size_t from) {
  size_t p = from < 1 ? 1 : from;
  while (p < n) {
    const uint8_t *nl = memchr(text + p, '\n', n - p);
    if (!nl) return n;
    size_t q = (size_t)(nl - text) + 1;
    if (q < n && q >= 2 && text[q - 2] > 0x20 && text[q - 2] < 0x7F && nc_is_ascii_alnum(text[q])) return q;
    p = q;
  }
  return n;
}
