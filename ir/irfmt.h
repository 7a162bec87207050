// Pieces shared by the IR's dump formats (ir/text.c, ir/xml.c, ir/dot.c):
// formatting of types, dims, strings and attribute values, and one lexer
// that reads the text IR and, in XML mode, the small texts inside XML
// attribute values (types like "f32[B*T,64]", lists like "[0,2,1,3]"), so
// that both forms accept exactly the same value syntax.
//
// Internal to the IR layer: not a public header.
#ifndef NC_IR_IRFMT_H
#define NC_IR_IRFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/graph.h"
#include "support/buf.h"

// ---- printing ----------------------------------------------------------------
// Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not valid.
size_t nc_utf8_seq(const unsigned char *s, size_t n);
// Dims and types exactly as nc_dim_str / nc_type_str print them, but into a
// growable buffer (no truncation with long symbol names).
void nc_fmt_dim(nc_buf *b, const nc_graph *g, nc_dim d);
void nc_fmt_type(nc_buf *b, const nc_graph *g, const nc_type *t);
// A double-quoted string literal of the text IR: \" \\ \n \t, \xHH for other
// control bytes (< 0x20, 0x7f) and for bytes of invalid UTF-8 sequences, all
// other bytes as they are. Parsing it gives back the same bytes.
void nc_fmt_qstring(nc_buf *b, const char *s, size_t n);
// The value of attribute spec of node n, as the text IR writes it: ints,
// floats (nc_fmt_double: exact round trip, nan, inf, -inf), true/false, enum
// names, axes as a sorted list "[0,2]", perm as a list "[0,2,1,3]", strings
// quoted (quote=true) or raw (quote=false, for XML/DOT which escape them).
void nc_fmt_attr_value(nc_buf *b, const nc_graph *g, const nc_node *n, const nc_attr_spec *spec,
                       bool quote);

// ---- lexing ------------------------------------------------------------------
typedef enum {
  NC_TK_EOF,
  NC_TK_IDENT,   // [A-Za-z_][A-Za-z0-9_]*
  NC_TK_LABEL,   // %[A-Za-z0-9_.]+ (text: the part after %)
  NC_TK_INT,     // [0-9]+ (no sign: '-' is punctuation)
  NC_TK_FLOAT,   // [0-9]+ ('.' [0-9]*)? ([eE] [+-]? [0-9]+)? with a '.' or exponent
  NC_TK_STRING,  // "..." (text: decoded bytes in lexer.str)
  NC_TK_PUNCT,   // one of ( ) { } [ ] , = : * ^ -
} nc_tok_kind;

typedef struct {
  nc_tok_kind kind;
  const char *p;  // the token's bytes in the source (label: after '%')
  size_t n;
  int line, col;  // 1-based; col counts code points
} nc_tok;

typedef struct {
  const char *src;
  size_t len, pos;
  int line, col;
  const char *file;   // for messages
  // XML mode (xml_line > 0): messages read "file:xml_line: <ctx>: ..." and the
  // position inside the attribute value is given as a column of the value.
  int xml_line;
  const char *ctx;
  nc_tok tok;         // the current (lookahead) token
  nc_buf str;         // decoded bytes of the current string token
} nc_lexer;

// Checks UTF-8 and NUL bytes of the whole input first (so that every later
// position is a valid code point boundary), then reads the first token.
nc_status nc_lex_init(nc_lexer *lx, const char *src, size_t len, const char *file);
void nc_lex_free(nc_lexer *lx);
nc_status nc_lex_next(nc_lexer *lx);
// An error at token t (or at the current token when t is NULL) with the
// location prefix of the lexer's mode.
nc_status nc_lex_error_at(const nc_lexer *lx, const nc_tok *t, nc_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// A short description of a token for "expected X, found Y" messages.
void nc_tok_describe(const nc_tok *t, char *out, size_t n);

bool nc_tok_is(const nc_lexer *lx, char punct);
bool nc_tok_is_word(const nc_lexer *lx, const char *word);
// Consumes punctuation c or fails with "expected 'c' <what>, found ...".
nc_status nc_lex_expect(nc_lexer *lx, char c, const char *what);

// ---- values --------------------------------------------------------------------
// All of these start at the current token and leave the lexer after the value.
// '-'? INT, checked against [lo, hi].
nc_status nc_parse_int(nc_lexer *lx, int64_t lo, int64_t hi, int64_t *out);
// '-'? (INT | FLOAT | nan | inf); out-of-range literals are errors.
nc_status nc_parse_float(nc_lexer *lx, double *out);
// dtype '[' dim (',' dim)* ']' with dims over g's symbols.
nc_status nc_parse_type(nc_lexer *lx, const nc_graph *g, nc_type *out);
// Attribute value of the given spec into d (STR: copied to *str_out, which the
// caller frees).
nc_status nc_parse_attr_value(nc_lexer *lx, const nc_attr_spec *spec, nc_node_desc *d,
                              char **str_out);
// Parses a whole attribute value in XML mode: the value must be exactly one
// value of the spec (or a type, when spec is NULL and type_out is set).
nc_status nc_parse_xml_value(const char *val, const char *file, int line, const char *ctx,
                             const nc_graph *g, const nc_attr_spec *spec, nc_node_desc *d,
                             nc_type *type_out);

// ---- labels ---------------------------------------------------------------------
// A map from label text to node id (keys are copied).
typedef struct {
  struct nc_label_slot {
    const char *p;
    size_t n;
    nc_id id;
  } *slots;
  size_t cap, count;
} nc_label_map;

void nc_label_map_free(nc_label_map *m);
nc_id nc_label_find(const nc_label_map *m, const char *p, size_t n);  // NC_NONE if absent
bool nc_label_put(nc_label_map *m, const char *p, size_t n, nc_id id);  // false on OOM

#endif
