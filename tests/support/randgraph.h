// Random but valid IR graphs for property tests (round trips of the dump
// formats, pass invariants, verifier checks, fuzzing seeds).
//
//   nc_graph *g = nc_test_random_graph(seed, 200);
//   ... nc_graph_free(g);
//
// Graphs are built only through the public API (nc_graph_add and friends),
// so each one passes nc_graph_verify. They exercise:
//   - every op of ir/ops.def (when target_nodes >= NC_OP_COUNT: the first
//     NC_OP_COUNT op choices are a shuffled list of all ops; later choices are
//     uniform), with every attribute kind (ints, floats including nan, inf,
//     -0 and subnormals, bools, enums, axes, perms, strings);
//   - every dtype, ranks 0..6, symbolic dims over B and T (B, T, B*T, 4*T,
//     B^2*T, ...), plus sometimes an extra unused symbol;
//   - names (graph, inputs, params, outputs) with spaces, quotes,
//     backslashes, line breaks, tabs, '<', '&', and non-ASCII UTF-8;
//   - nodes reused as inputs of several later nodes, and 1 to 4 outputs.
// The same (seed, target_nodes, flags) always yields the same graph.
// Returns NULL (after printing the reason to stderr) only on a bug in the
// generator or in the IR core.
#ifndef NC_TESTS_RANDGRAPH_H
#define NC_TESTS_RANDGRAPH_H

#include <stdint.h>

#include "ir/graph.h"

enum {
  // Also use names with control bytes (\x01, \x1b, \x7f) that XML 1.0
  // cannot represent: for text-only tests.
  NC_RG_CONTROL_NAMES = 1,
  // Prefer few leaves: ops take existing nodes as inputs whenever types allow
  // (deeper graphs).
  NC_RG_DEEP = 2,
};

nc_graph *nc_test_random_graph(uint64_t seed, int target_nodes);
nc_graph *nc_test_random_graph_ex(uint64_t seed, int target_nodes, unsigned flags);

// The seeded generator the helper uses, for tests that need their own
// reproducible randomness (splitmix64).
uint64_t nc_test_rand_next(uint64_t *state);

#endif
