// The executor's run hook (runtime/exec.h nc_exec_set_hook), the seam the
// data-parallel trainer uses to reduce gradients while backward still runs:
// every output is reported exactly once, right after the kernel that
// finishes it (nc_exec_output_kernel), with its final value; a tick follows
// every kernel; an error from the hook stops the run; devices without plans
// refuse hooks.
#include <criterion/criterion.h>
#include <string.h>

#include "ir/build.h"
#include "ir/graph.h"
#include "runtime/exec.h"

typedef struct {
  int ticks;           // kernels finished so far
  int seen[4];         // per output: times reported
  int at[4];           // per output: ticks before its report
  float val[4][6];     // per output: the value reported
  int fail_at;         // report an error at this tick (-1: never)
} rec;

static nc_status hook(void *ctx, int k, const nc_tensor *v) {
  rec *r = ctx;
  if (k < 0) {
    if (r->ticks++ == r->fail_at) return nc_errorf(NC_E_INVALID, "hook says stop at kernel %d", r->fail_at);
    return NC_OK;
  }
  cr_assert(k < 4 && v && v->data);
  r->seen[k]++;
  r->at[k] = r->ticks;
  memcpy(r->val[k], v->data, nc_tensor_nbytes(v) <= sizeof r->val[k] ? nc_tensor_nbytes(v) : sizeof r->val[k]);
  return NC_OK;
}

// x (2,3) -> a = exp(x), r = sum_1(a) (2,1), y = tanh(x * 3): three outputs, r after a.
static nc_graph *graph(void) {
  nc_graph *g = nc_graph_new("hook");
  nc_dim d[2] = {nc_dim_const(2), nc_dim_const(3)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d));
  nc_id a = nc_op1(g, NC_OP_EXP, x);
  nc_id r = nc_b_reduce(g, NC_OP_REDUCE_SUM, a, 2, true);
  nc_id y = nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_MUL, x, nc_op1(g, NC_OP_EXP, nc_op1(g, NC_OP_LOG, nc_op2(g, NC_OP_ADD, x, x)))));
  cr_assert_null(nc_graph_set_output(g, "a", a));
  cr_assert_null(nc_graph_set_output(g, "r", r));
  cr_assert_null(nc_graph_set_output(g, "y", y));
  cr_assert_null(nc_graph_error(g));
  return g;
}

static void check_device(const char *name) {
  nc_device dev;
  cr_assert_null(nc_device_parse(name, &dev));
  dev.threads = 1;
  nc_graph *g = graph();
  nc_exec *e = NULL;
  nc_status st = nc_exec_new(g, &dev, &e);
  if (st && nc_status_code(st) == NC_E_UNSUPPORTED) {  // cpu without LLVM
    cr_log_warn("%s: %s", name, nc_status_msg(st));
    nc_status_free(st);
    nc_graph_free(g);
    return;
  }
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  int64_t shape[2] = {2, 3};
  nc_tensor x;
  cr_assert_null(nc_tensor_alloc(&x, NC_F32, 2, shape));
  for (int i = 0; i < 6; i++) ((float *)x.data)[i] = 0.25f * (float)(i + 1);
  nc_feed f = {"x", &x};
  rec r = {.fail_at = -1};
  cr_assert_null(nc_exec_set_hook(e, hook, &r));
  nc_tensor outs[3];
  cr_assert_null(nc_exec_run(e, &f, 1, outs));
  int nk = nc_exec_nkernels(e);
  cr_assert_eq(r.ticks, nk, "%s: %d ticks for %d kernels", name, r.ticks, nk);
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(r.seen[k], 1, "%s: output %d reported %d times", name, k, r.seen[k]);
    int q = nc_exec_output_kernel(e, k);
    cr_assert(q >= 0 && q < nk, "%s: output %d finished by kernel %d of %d", name, k, q, nk);
    cr_assert_eq(r.at[k], q, "%s: output %d reported after %d kernels, finished by kernel %d", name, k, r.at[k], q);
    cr_assert_eq(memcmp(r.val[k], outs[k].data, nc_tensor_nbytes(&outs[k])), 0, "%s: output %d: the reported value is not the final one", name, k);
    nc_tensor_free(&outs[k]);
  }
  cr_assert_gt(nc_exec_output_kernel(e, 1), nc_exec_output_kernel(e, 0), "%s: the sum is finished before its input", name);
  cr_assert_eq(nc_exec_output_kernel(e, 7), -1);
  // an error from the hook stops the run and comes back
  rec stop = {.fail_at = 0};
  cr_assert_null(nc_exec_set_hook(e, hook, &stop));
  st = nc_exec_run(e, &f, 1, outs);
  cr_assert(st && strstr(nc_status_msg(st), "hook says stop"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  cr_assert_eq(stop.ticks, 1, "the run went on after the hook's error");
  // without the hook: no reports
  rec none = {.fail_at = -1};
  cr_assert_null(nc_exec_set_hook(e, NULL, &none));
  cr_assert_null(nc_exec_run(e, &f, 1, outs));
  for (int k = 0; k < 3; k++) nc_tensor_free(&outs[k]);
  cr_assert_eq(none.ticks, 0);
  nc_tensor_free(&x);
  nc_exec_free(e);
  nc_graph_free(g);
}

Test(exec_hook, eval_device_reports_each_output_once_when_final) { check_device("eval"); }
Test(exec_hook, cpu_device_reports_each_output_once_when_final) { check_device("cpu"); }

Test(exec_hook, devices_without_plans_refuse) {
  nc_device dev;
  cr_assert_null(nc_device_parse("interp", &dev));
  nc_graph *g = graph();
  nc_exec *e = NULL;
  cr_assert_null(nc_exec_new(g, &dev, &e));
  rec r = {.fail_at = -1};
  nc_status st = nc_exec_set_hook(e, hook, &r);
  cr_assert(st && nc_status_code(st) == NC_E_UNSUPPORTED && strstr(nc_status_msg(st), "interp"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  cr_assert_null(nc_exec_set_hook(e, NULL, NULL));  // removing one is always fine
  cr_assert_eq(nc_exec_output_kernel(e, 0), -2);
  nc_exec_free(e);
  nc_graph_free(g);
}
