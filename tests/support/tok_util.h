// Helpers for the tokenizer tests: locating the source/build trees, the
// js-tiktoken rank files (exported on demand with tools/export_ranks.mjs) and
// reading files of space-separated ids.
#ifndef NC_TESTS_TOK_UTIL_H
#define NC_TESTS_TOK_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/tokenizer.h"

const char *nc_tok_test_source_dir(void);
const char *nc_tok_test_build_dir(void);
// True when node and tests/js/node_modules are present. Otherwise writes the
// reason into why. In CI (CI=true) a missing oracle is a failure, not a skip.
bool nc_tok_test_have_node(char *why, size_t whylen);
// Directory holding gpt2/cl100k_base/o200k_base .tiktoken (+.json), exported
// from js-tiktoken into $NC_BUILD_DIR/ranks if absent. NULL (+ why) if it
// cannot be made.
const char *nc_tok_test_ranks_dir(char *why, size_t whylen);
// Loads ranks_dir/NAME.tiktoken or fails the test.
nc_tok *nc_tok_test_load(const char *ranks_dir, const char *name);
// A tokenizer of the 256 single bytes (rank = byte value) plus the given
// merged tokens (ranks 256...), nanochat specials after them, nanochat pattern.
nc_tok *nc_tok_test_small(const char *const *merges, size_t n);
// Reads "1 2 3\n"-style ids.
bool nc_tok_test_read_ids(const char *path, nc_ids *out);
// Reads a whole file (test helper; fails the test on error).
char *nc_tok_test_slurp(const char *path, size_t *len);
// Skips, or in CI fails, with a message.
#define NC_TOK_TEST_SKIP_OR_FAIL(...)               \
  do {                                              \
    const char *ci_ = getenv("CI");                 \
    if (ci_ && *ci_ && strcmp(ci_, "false") != 0)   \
      cr_assert_fail(__VA_ARGS__);                  \
    else                                            \
      cr_skip_test(__VA_ARGS__);                    \
  } while (0)

#endif
