// Test helpers for the model: fixtures, comparisons, sessions.
#ifndef NC_TESTS_MODEL_UTIL_H
#define NC_TESTS_MODEL_UTIL_H

#include "ir/tensor.h"
#include "runtime/safetensors.h"
#include "runtime/session.h"

// $NC_SOURCE_DIR/<rel> (or ./<rel>) into buf.
const char *nc_test_path(char *buf, size_t n, const char *rel);
// Loads a safetensors fixture (aborts the test with a message on error).
void nc_test_load_st(const char *rel, nc_tensor_list *out);
// max |a - b| / max(max |b|, 1e-12) over all elements (as doubles).
double nc_test_rel_err(const nc_tensor *a, const nc_tensor *b);
// Puts every tensor of l into the session (copies), optionally renamed with a prefix stripped.
void nc_test_session_load(nc_session *s, const nc_tensor_list *l, const char *strip_prefix);

#endif
