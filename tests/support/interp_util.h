// Test helpers for the reference interpreter and anything checked against it:
// build small graphs from short strings, make tensors from literal arrays or
// a seeded PRNG, evaluate, and compare with a tolerance.
//
//   nc_graph *g = nct_graph();
//   nc_id x = nct_in(g, "x", NC_F32, "B,4");                 // symbols declared on the fly
//   nc_id y = nct_op(g, NC_OP_REDUCE_SUM, "axes=1 keepdim=1", 1, x);
//   nc_tensor xv = NCT_T(NC_F32, "2,4", 1, 2, 3, 4, 5, 6, 7, 8);
//   nc_tensor r = nct_eval(g, y, "x", &xv, NULL);
//   NCT_EXPECT(&r, 0, 10, 26);
//
// Helpers abort the current test (cr_assert) on unexpected failures.
#ifndef NC_TESTS_INTERP_UTIL_H
#define NC_TESTS_INTERP_UTIL_H

#include <stdint.h>

#include "ir/graph.h"
#include "ir/rules.h"
#include "ir/tensor.h"
#include "runtime/interp.h"

// Memory: graphs from nct_graph and tensors returned by nct_* helpers are
// owned by a per-test pool, released by nct_cleanup (use it as the suite's
// .fini: TestSuite(name, .fini = nct_cleanup)). Do not nc_tensor_free them.
void nct_cleanup(void);
nc_tensor nct_keep(nc_tensor t);  // hands an owned tensor to the pool
nc_graph *nct_graph(void);
// "B,T,64", "B*T,4", "" (scalar): constants and symbols (declared if new).
nc_type nct_type(nc_graph *g, nc_dtype dt, const char *dims);
nc_id nct_in(nc_graph *g, const char *name, nc_dtype dt, const char *dims);
nc_id nct_param(nc_graph *g, const char *name, nc_dtype dt, const char *dims);
nc_id nct_const(nc_graph *g, double v, nc_dtype dt, const char *dims);
// attrs: "name=value ..." by schema name; ints, floats (inf ok), bools,
// enums by name ("reduction=sum"), axes and perms as lists ("axes=0,2",
// "perm=2,0,1"). Inputs follow as nc_id varargs.
nc_id nct_op(nc_graph *g, nc_op op, const char *attrs, int nin, ...);
// Same for ops with a declared type (reshape, expand, cast, iota, scatter_add).
nc_id nct_opd(nc_graph *g, nc_op op, nc_type t, const char *attrs, int nin, ...);
// Same, returning the build status instead of asserting (for build-error tests).
nc_status nct_try_op(nc_graph *g, nc_op op, const nc_type *t, const char *attrs, int nin, const nc_id *in,
                     nc_id *out);

// Tensors. shape: "2,3" ("" = scalar). vals NULL = zeros.
nc_tensor nct_tensor(nc_dtype dt, const char *shape, const double *vals);
#define NCT_T(dt, shape, ...) nct_tensor(dt, shape, (const double[]){__VA_ARGS__})
nc_tensor nct_scalar_i32(int32_t v);
// Seeded PRNG (splitmix64).
uint64_t nct_rng_next(uint64_t *s);
double nct_uniform(uint64_t *s);                                // [0, 1)
int64_t nct_randint(uint64_t *s, int64_t lo, int64_t hi);        // [lo, hi)
nc_tensor nct_rand(nc_dtype dt, const char *shape, uint64_t *s, double lo, double hi);
nc_tensor nct_rand_ids(nc_dtype dt, const char *shape, uint64_t *s, int64_t lo, int64_t hi);
nc_tensor nct_rand_shape(nc_dtype dt, int rank, const int64_t *shape, uint64_t *s, double lo, double hi);
double nct_get(const nc_tensor *t, int64_t i);
void nct_set(nc_tensor *t, int64_t i, double v);

// Evaluation: feeds as (const char *name, const nc_tensor *value) pairs, NULL-terminated.
nc_tensor nct_eval(const nc_graph *g, nc_id id, ...);
nc_status nct_eval_st(const nc_graph *g, nc_id id, nc_tensor *out, ...);
nc_status nct_eval_fv(const nc_graph *g, nc_id id, nc_tensor *out, const nc_feed *feeds, int nfeeds);

// One-op graphs: inputs "x0".."x{n-1}" typed like the given tensors, one node
// of op (decl_dims != NULL: declared type decl_dt[decl_dims]), evaluated.
nc_status nct_apply_st(nc_op op, nc_dtype decl_dt, const char *decl_dims, const char *attrs, int nin,
                       const nc_tensor *const *ins, nc_tensor *out);
nc_tensor nct_apply(nc_op op, nc_dtype decl_dt, const char *decl_dims, const char *attrs, int nin,
                    const nc_tensor *const *ins);
#define NCT_NARGS(...) ((int)(sizeof((const nc_tensor *[]){__VA_ARGS__}) / sizeof(const nc_tensor *)))
#define NCT_APPLY(op, attrs, ...) \
  nct_apply(op, NC_F32, NULL, attrs, NCT_NARGS(__VA_ARGS__), (const nc_tensor *[]){__VA_ARGS__})
#define NCT_APPLYD(op, dt, dims, attrs, ...) \
  nct_apply(op, dt, dims, attrs, NCT_NARGS(__VA_ARGS__), (const nc_tensor *[]){__VA_ARGS__})
#define NCT_APPLY_ST(out, op, attrs, ...) \
  nct_apply_st(op, NC_F32, NULL, attrs, NCT_NARGS(__VA_ARGS__), (const nc_tensor *[]){__VA_ARGS__}, out)
// An input typed like tensor t (constant dims).
nc_id nct_in_like(nc_graph *g, const char *name, const nc_tensor *t);

// Comparisons (|got - want| <= atol + rtol*|want|; NaN matches NaN, inf matches same inf).
void nct_expect_vals(const nc_tensor *t, const double *want, int64_t n, double atol, double rtol, const char *file,
                     int line);
#define NCT_EXPECT(t, atol, ...)                                                                 \
  nct_expect_vals(t, (const double[]){__VA_ARGS__}, (int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)), \
                  atol, 0, __FILE__, __LINE__)
void nct_expect_close(const nc_tensor *got, const nc_tensor *want, double atol, double rtol, const char *file,
                      int line);
#define NCT_CLOSE(got, want, atol, rtol) nct_expect_close(got, want, atol, rtol, __FILE__, __LINE__)
void nct_expect_shape(const nc_tensor *t, nc_dtype dt, const char *shape, const char *file, int line);
#define NCT_SHAPE(t, dt, shape) nct_expect_shape(t, dt, shape, __FILE__, __LINE__)
// Expects an error whose message contains every word of `words` ('|' separated); frees st.
void nct_expect_error(nc_status st, const char *words, const char *file, int line);
#define NCT_ERROR(st, words) nct_expect_error(st, words, __FILE__, __LINE__)

#endif
