// The graph IR: typed nodes in one arena, integer ids, hash-consed.
//
// A graph owns its nodes, edges and strings; everything is freed at once by
// nc_graph_free. Nodes are immutable once built and are identified by
// nc_id (an index, in creation order, so inputs always have smaller ids and
// a graph is acyclic by construction). Building a node runs its op's shape and
// dtype rule (ir/rules.c); a node identical to an existing one (same op,
// type, inputs and attributes) is not added twice: the existing id is
// returned (hash-consing).
//
// Dimensions are monomials c * B^i * T^j ... over at most NC_MAX_SYMS named
// symbols per graph (declared with nc_graph_sym), bound to sizes at run time.
#ifndef NC_IR_GRAPH_H
#define NC_IR_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/dtype.h"
#include "support/status.h"

#define NC_MAX_RANK 6
#define NC_MAX_SYMS 16
#define NC_MAX_INPUTS 16
#define NC_MAX_IATTR 4
#define NC_MAX_FATTR 2
#define NC_MAX_DIM (INT64_C(1) << 40)    // largest concrete extent of one axis
#define NC_MAX_ELEMS (INT64_C(1) << 48)  // largest concrete element count
#define NC_MAX_NODES (1u << 24)

typedef uint32_t nc_id;
#define NC_NONE UINT32_MAX

// ---- the op table ---------------------------------------------------------
typedef enum {
#define X(ID, NAME, MINI, MAXI, KIND, FLAGS, ATTRS, RULE) NC_OP_##ID,
#include "ir/ops.def"
#undef X
  NC_OP_COUNT
} nc_op;

typedef enum {
  NC_KIND_LEAF,
  NC_KIND_ELEMWISE,
  NC_KIND_BROADCAST,
  NC_KIND_INJECTIVE,
  NC_KIND_REDUCE,
  NC_KIND_OPAQUE,
} nc_kind;

enum { NC_OPF_DECL = 1, NC_OPF_INPLACE = 2, NC_OPF_DIFF = 4 };

typedef enum { NC_ATTR_INT, NC_ATTR_FLOAT, NC_ATTR_BOOL, NC_ATTR_AXES, NC_ATTR_PERM,
               NC_ATTR_STR, NC_ATTR_ENUM } nc_attr_type;

#define NC_MAX_ATTRS 6
#define NC_MAX_ENUM 4
typedef struct {
  char name[24];
  nc_attr_type type;
  int slot;            // index into ia[] (all but FLOAT) or fa[] (FLOAT)
  bool has_default;
  int64_t idefault;
  double fdefault;
  int nenum;
  char enums[NC_MAX_ENUM][12];
} nc_attr_spec;

typedef struct {
  const char *name;
  int min_inputs, max_inputs;
  nc_kind kind;
  unsigned flags;
  const char *attrs;   // schema text, see ir/ops.def
} nc_op_info;

const nc_op_info *nc_op_get(nc_op op);
nc_op nc_op_lookup(const char *name, size_t len);   // NC_OP_COUNT if unknown
const char *nc_kind_name(nc_kind k);
// Parses op's attribute schema into specs[]; returns how many.
int nc_op_attr_specs(nc_op op, nc_attr_spec specs[NC_MAX_ATTRS]);

// ---- dimensions and types --------------------------------------------------
typedef struct {
  int64_t c;   // constant factor (>= 1)
  uint64_t e;  // 4-bit exponent of symbol k in bits [4k, 4k+4)
} nc_dim;

static inline nc_dim nc_dim_const(int64_t c) { return (nc_dim){c, 0}; }
static inline nc_dim nc_dim_sym(int k) { return (nc_dim){1, (uint64_t)1 << (4 * k)}; }
static inline bool nc_dim_eq(nc_dim a, nc_dim b) { return a.c == b.c && a.e == b.e; }
static inline bool nc_dim_is_const(nc_dim a) { return a.e == 0; }
// Product of two dims; false on overflow of the constant or of an exponent.
bool nc_dim_mul(nc_dim a, nc_dim b, nc_dim *out);
// Value under a binding of the symbols (syms[k] = size of symbol k).
int64_t nc_dim_eval(nc_dim d, const int64_t *syms);

typedef struct {
  nc_dtype dtype;
  uint8_t rank;
  nc_dim dim[NC_MAX_RANK];
} nc_type;

bool nc_type_eq(const nc_type *a, const nc_type *b);
bool nc_shape_eq(const nc_type *a, const nc_type *b);
// Total element count as a dim (false on overflow).
bool nc_type_numel(const nc_type *t, nc_dim *out);

// ---- nodes and graphs --------------------------------------------------------
typedef struct {
  nc_op op;
  nc_type type;
  uint8_t nin;
  uint32_t in_off;  // inputs: graph edges [in_off, in_off + nin)
  int64_t ia[NC_MAX_IATTR];
  double fa[NC_MAX_FATTR];
  uint64_t hash;    // structural (Merkle) hash: op, type, attrs, input hashes
} nc_node;

// What a builder gives to nc_graph_add. Attributes the builder does not set
// must be left at their schema default (nc_node_desc_init does that).
typedef struct {
  nc_op op;
  int nin;
  nc_id in[NC_MAX_INPUTS];
  int64_t ia[NC_MAX_IATTR];
  double fa[NC_MAX_FATTR];
  const char *str;  // the string attribute (input/param name), if any
  nc_type type;     // the declared type, for ops flagged DECL
} nc_node_desc;

typedef struct nc_graph nc_graph;

nc_graph *nc_graph_new(const char *name);  // NULL on out of memory
void nc_graph_free(nc_graph *g);
const char *nc_graph_name(const nc_graph *g);

// Symbols: declared once; returns the index of name (declaring it if new).
nc_status nc_graph_sym(nc_graph *g, const char *name, int *index);
int nc_graph_nsyms(const nc_graph *g);
const char *nc_graph_sym_name(const nc_graph *g, int k);
int nc_graph_sym_find(const nc_graph *g, const char *name, size_t len);  // -1 if none

void nc_node_desc_init(nc_node_desc *d, nc_op op);
// Builds a node (checks arity, attributes, the shape/dtype rule) or returns
// the id of an identical existing node.
nc_status nc_graph_add(nc_graph *g, const nc_node_desc *d, nc_id *out);

uint32_t nc_graph_nnodes(const nc_graph *g);
const nc_node *nc_graph_node(const nc_graph *g, nc_id id);
nc_id nc_graph_input_of(const nc_graph *g, nc_id id, int k);  // k-th input of node id
const char *nc_graph_str(const nc_graph *g, int64_t sid);     // string attribute text
// The name of an input/param node, or NULL.
const char *nc_node_name(const nc_graph *g, nc_id id);

// Named outputs, in declaration order. Names are unique.
nc_status nc_graph_set_output(nc_graph *g, const char *name, nc_id id);
int nc_graph_noutputs(const nc_graph *g);
nc_id nc_graph_output(const nc_graph *g, int k);
const char *nc_graph_output_name(const nc_graph *g, int k);

// Looks an input or param up by name; NC_NONE if absent.
nc_id nc_graph_find_leaf(const nc_graph *g, nc_op op, const char *name);

// Structural hash of the whole graph: name, symbols, nodes, outputs.
uint64_t nc_graph_hash(const nc_graph *g);

// Checks every invariant: op ids, arity, input ids < node id, attributes,
// the shape/dtype rule of every node, hashes, outputs, symbols.
nc_status nc_graph_verify(const nc_graph *g);

// Formats a type as "f32[B,T,768]" / a dim as "B*T" into buf; returns buf.
char *nc_type_str(const nc_graph *g, const nc_type *t, char *buf, size_t n);
char *nc_dim_str(const nc_graph *g, nc_dim d, char *buf, size_t n);

// ---- builder helpers (sticky error) ----------------------------------------
// For model code: each returns NC_NONE once the graph has an error, or when
// building fails (the first error is kept; read it with nc_graph_error).
nc_status nc_graph_error(const nc_graph *g);     // borrowed; NC_OK if none
nc_status nc_graph_take_error(nc_graph *g);      // owned; clears it
nc_id nc_build(nc_graph *g, const nc_node_desc *d);
nc_id nc_leaf(nc_graph *g, nc_op op, const char *name, nc_type type);  // input/param
nc_id nc_const(nc_graph *g, double value, nc_type type);
nc_id nc_op1(nc_graph *g, nc_op op, nc_id a);
nc_id nc_op2(nc_graph *g, nc_op op, nc_id a, nc_id b);
nc_id nc_op3(nc_graph *g, nc_op op, nc_id a, nc_id b, nc_id c);
nc_type nc_type_make(nc_dtype dt, int rank, const nc_dim *dims);
nc_type nc_type_of(const nc_graph *g, nc_id id);



// Fills a description from an existing node (inputs as in g, string attr
// borrowed from g): the starting point of every rewriting pass.
void nc_node_desc_from(const nc_graph *g, nc_id id, nc_node_desc *d);
// Copies the graph's name, symbols (same indices) into a fresh graph.
nc_graph *nc_graph_new_like(const nc_graph *g);
// A full copy of g (symbols, nodes with the same ids, outputs) into *out; passes
// replace the graph they are given, so callers that keep g lower a copy.
nc_status nc_graph_copy(const nc_graph *g, nc_graph **out);
#endif
