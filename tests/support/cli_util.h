// Helper for the tests that drive the `nanochat` binary: runs it from the
// source tree with stdout and stderr captured together.
#ifndef NC_TESTS_CLI_UTIL_H
#define NC_TESTS_CLI_UTIL_H

#include <stddef.h>

// Runs `$NC_BUILD_DIR/cli/nanochat ARGS` in $NC_SOURCE_DIR (each "." when unset)
// and reads up to n-1 bytes of its combined output into out (NUL-terminated).
// Returns its exit status, or -1 when it did not exit normally.
int nc_test_cli(const char *args, char *out, size_t n);

#endif
