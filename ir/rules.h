// Shape and dtype rules of the op table (one per RULE column of ir/ops.def).
// A rule reads the input types and attributes of a node description and
// writes the output type; for ops flagged DECL the declared type is already
// in *out and the rule checks it.
#ifndef NC_IR_RULES_H
#define NC_IR_RULES_H

#include "ir/graph.h"

#define NC_RULE(name)                                                                     \
  nc_status nc_rule_##name(const nc_graph *g, const nc_node_desc *d, const nc_type *const *in, \
                           nc_type *out)
NC_RULE(leaf);
NC_RULE(iota);
NC_RULE(unary_num);
NC_RULE(unary_float);
NC_RULE(unary_bool);
NC_RULE(cast);
NC_RULE(binary_num);
NC_RULE(binary_bool);
NC_RULE(compare);
NC_RULE(where);
NC_RULE(reduce);
NC_RULE(rms_norm);
NC_RULE(rms_norm_grad);
NC_RULE(softmax);
NC_RULE(rope);
NC_RULE(matmul);
NC_RULE(bmm);
NC_RULE(attention);
NC_RULE(attention_grad);
NC_RULE(gather);
NC_RULE(scatter_add);
NC_RULE(cross_entropy);
NC_RULE(cross_entropy_grad);
NC_RULE(reshape);
NC_RULE(permute);
NC_RULE(slice);
NC_RULE(concat);
NC_RULE(expand);
NC_RULE(shift);

// Attribute encodings shared by the printers and parsers.
// AXES: bit k set = axis k.  PERM: (rank << 60) | sum(perm[i] << 4i).
static inline int nc_perm_rank(int64_t p) { return (int)((uint64_t)p >> 60); }
static inline int nc_perm_at(int64_t p, int i) { return (int)(((uint64_t)p >> (4 * i)) & 15); }
int64_t nc_perm_encode(const int *perm, int rank);

#endif
