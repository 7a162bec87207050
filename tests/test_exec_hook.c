// The executor's run hook (runtime/exec.h nc_exec_set_hook, and
// nc_exec_set_hook_into with destinations, also on OpenCL: PoCL here), the seam the
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
#include "runtime/ocl_device.h"
#include "runtime/session.h"
#include "chat/model_io.h"
#include "models/gpt.h"
#include "pipeline/trainer.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

// An exec of g on device `name` (1 thread), or NULL after a warning when the
// device is unavailable here (cpu without LLVM, no OpenCL device): g is then freed.
static nc_exec *exec_or_skip(const char *name, nc_graph *g) {
  nc_device dev;
  cr_assert_null(nc_device_parse(name, &dev));
  dev.threads = 1;
  nc_exec *e = NULL;
  nc_status st = nc_exec_new(g, &dev, &e);
  if (st && nc_status_code(st) == NC_E_UNSUPPORTED) {
    cr_log_warn("%s: %s", name, nc_status_msg(st));
    nc_status_free(st);
    nc_graph_free(g);
    return NULL;
  }
  cr_assert_null(st, "%s", st ? nc_status_msg(st) : "");
  return e;
}

// The (2,3) input x of graph(): 0.25, 0.5, ... 1.5.
static void input_x(nc_tensor *x) {
  int64_t shape[2] = {2, 3};
  cr_assert_null(nc_tensor_alloc(x, NC_F32, 2, shape));
  for (int i = 0; i < 6; i++) ((float *)x->data)[i] = 0.25f * (float)(i + 1);
}

static void check_device(const char *name) {
  nc_graph *g = graph();
  nc_exec *e = exec_or_skip(name, g);
  if (!e) return;
  nc_tensor x;
  input_x(&x);
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
  nc_status st = nc_exec_run(e, &f, 1, outs);
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

// ---- destinations (nc_exec_set_hook_into): cpu, eval and OpenCL --------------------

typedef struct {
  int ticks, reports;
  int seen[4], order[4];  // per output: times reported, place among the reports
  void *dst[3];
  bool bad_view;          // a report whose value is not a view of its destination
  int fail_at_report;     // return an error at this report (-1: never)
} into_rec;

static nc_status into_hook(void *ctx, int k, const nc_tensor *v) {
  into_rec *r = ctx;
  if (k < 0) {
    r->ticks++;
    return NC_OK;
  }
  cr_assert(k < 3 && v);
  if (v->data != r->dst[k]) r->bad_view = true;
  r->seen[k]++;
  r->order[k] = r->reports;
  if (r->reports++ == r->fail_at_report) return nc_errorf(NC_E_INVALID, "hook says stop at report %d", r->fail_at_report);
  return NC_OK;
}

// Outputs a and y go to host buffers from nc_exec_host_alloc (pinned on
// OpenCL), r has none: a and y are reported once each, in the order of the
// kernels finishing them, with views of their destinations holding the
// final values; r is not reported; an error from the hook comes back.
static void check_into(const char *name) {
  nc_graph *g = graph();
  nc_exec *e = exec_or_skip(name, g);
  if (!e) return;
  nc_tensor x;
  input_x(&x);
  nc_feed f = {"x", &x};
  into_rec r = {.fail_at_report = -1};
  cr_assert_null(nc_exec_host_alloc(e, 6 * sizeof(float), &r.dst[0]));
  cr_assert_null(nc_exec_host_alloc(e, 6 * sizeof(float), &r.dst[2]));
  for (int i = 0; i < 6; i++) cr_assert_eq(((float *)r.dst[0])[i], 0.0f, "host memory is not zeroed");
  cr_assert_null(nc_exec_set_hook_into(e, into_hook, &r, r.dst));
  nc_tensor outs[3];
  for (int run = 0; run < 2; run++) {  // twice: the second run reuses the reads' queue and events
    memset(&r.seen, 0, sizeof r.seen);
    r.reports = 0;
    cr_assert_null(nc_exec_run(e, &f, 1, outs));
    cr_assert_eq(r.seen[0], 1, "%s: a reported %d times", name, r.seen[0]);
    cr_assert_eq(r.seen[2], 1, "%s: y reported %d times", name, r.seen[2]);
    cr_assert_eq(r.seen[1], 0, "%s: r has no destination but was reported", name);
    cr_assert(!r.bad_view, "%s: a reported value is not a view of its destination", name);
    cr_assert_eq(memcmp(r.dst[0], outs[0].data, 6 * sizeof(float)), 0, "%s: a's destination does not hold its final value", name);
    cr_assert_eq(memcmp(r.dst[2], outs[2].data, 6 * sizeof(float)), 0, "%s: y's destination does not hold its final value", name);
    bool a_first = nc_exec_output_kernel(e, 0) < nc_exec_output_kernel(e, 2);
    cr_assert_eq(r.order[0] < r.order[2], a_first, "%s: reports out of kernel order", name);
    for (int k = 0; k < 3; k++) nc_tensor_free(&outs[k]);
  }
  // an error from the hook comes back (after the reads in flight)
  into_rec stop = {.fail_at_report = 0, .dst = {r.dst[0], NULL, r.dst[2]}};
  cr_assert_null(nc_exec_set_hook_into(e, into_hook, &stop, stop.dst));
  nc_status st = nc_exec_run(e, &f, 1, outs);
  cr_assert(st && strstr(nc_status_msg(st), "hook says stop"), "%s: %s", name, st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  cr_assert_eq(stop.reports, 1, "%s: reports went on after the hook's error", name);
  // removed: no reports, and the run still works
  into_rec none = {.fail_at_report = -1};
  cr_assert_null(nc_exec_set_hook_into(e, NULL, NULL, NULL));
  cr_assert_null(nc_exec_run(e, &f, 1, outs));
  for (int k = 0; k < 3; k++) nc_tensor_free(&outs[k]);
  cr_assert_eq(none.reports + none.ticks, 0);
  nc_exec_host_free(e, r.dst[0]);
  nc_exec_host_free(e, r.dst[2]);
  nc_tensor_free(&x);
  nc_exec_free(e);
  nc_graph_free(g);
}

Test(exec_hook, eval_device_fills_destinations) { check_into("eval"); }
Test(exec_hook, cpu_device_fills_destinations) { check_into("cpu"); }
Test(exec_hook, opencl_reads_outputs_into_destinations_as_they_finish) {
  if (!nc_ocl_available()) {
    cr_log_warn("no OpenCL device: skipped");
    return;
  }
  check_into("opencl");
}

Test(exec_hook, opencl_needs_destinations) {
  if (!nc_ocl_available()) return;
  nc_device dev;
  cr_assert_null(nc_device_parse("opencl", &dev));
  nc_graph *g = graph();
  nc_exec *e = NULL;
  cr_assert_null(nc_exec_new(g, &dev, &e));
  rec r = {.fail_at = -1};
  nc_status st = nc_exec_set_hook(e, hook, &r);
  cr_assert(st && nc_status_code(st) == NC_E_UNSUPPORTED && strstr(nc_status_msg(st), "nc_exec_set_hook_into"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  cr_assert_geq(nc_exec_output_kernel(e, 0), 0);
  nc_exec_free(e);
  nc_graph_free(g);
}

// nc_session_zero zeroes an accumulator where it lives: on the OpenCL device
// that keeps it (no transfer: it stays there), else on the host. acc' = acc + x
// run twice, zeroed, once more: x, not 3x.
static void check_zero(const char *name) {
  nc_graph *g = nc_graph_new("acc");
  nc_dim d[1] = {nc_dim_const(5)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 1, d));
  nc_id acc = nc_leaf(g, NC_OP_INPUT, "acc", nc_type_make(NC_F32, 1, d));
  cr_assert_null(nc_graph_set_output(g, "new.acc", nc_op2(g, NC_OP_ADD, acc, x)));
  nc_exec *e = exec_or_skip(name, g);
  if (!e) return;
  nc_session *s = nc_session_new();
  nc_tensor t;
  int64_t n = 5;
  cr_assert_null(nc_tensor_alloc(&t, NC_F32, 1, &n));
  for (int i = 0; i < 5; i++) ((float *)t.data)[i] = (float)i + 0.5f;
  cr_assert_null(nc_session_put_copy(s, "x", &t));
  memset(t.data, 0, 5 * sizeof(float));
  cr_assert_null(nc_session_put(s, "acc", &t));
  cr_assert_null(nc_session_run_exec(s, e));
  cr_assert_null(nc_session_run_exec(s, e));
  int held = nc_session_on_device(s);
  if (!strcmp(name, "opencl")) cr_assert_eq(held, 1, "opencl: the accumulator is not kept on the device");
  cr_assert_null(nc_session_zero(s, "acc"));
  cr_assert_eq(nc_session_on_device(s), held, "%s: zeroing moved the accumulator", name);
  cr_assert_null(nc_session_run_exec(s, e));
  const nc_tensor *a = nc_session_get(s, "acc");
  for (int i = 0; i < 5; i++) cr_assert_eq(((float *)a->data)[i], (float)i + 0.5f, "%s: acc[%d] = %g", name, i, ((float *)a->data)[i]);
  nc_status st = nc_session_zero(s, "nope");
  cr_assert(st && strstr(nc_status_msg(st), "'nope'"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  nc_exec_free(e);
  nc_session_free(s);
  nc_graph_free(g);
}

Test(exec_hook, session_zero_on_the_host) { check_zero("cpu"); }
Test(exec_hook, session_zero_on_the_opencl_device) {
  if (!nc_ocl_available()) return;
  check_zero("opencl");
}

// ---- the trainer's pinned buffers on OpenCL ---------------------------------------

static int32_t tb_in[2 * 8], tb_tg[2 * 8];
static nc_status tb_batch(void *ctx, int32_t *in, int32_t *tg) {
  int *k = ctx;  // a different batch per call
  for (int i = 0; i < 16; i++) tb_in[i] = (i * 7 + 3 * *k) % 64, tb_tg[i] = i % 5 == 0 ? -1 : (i * 11 + *k) % 64;
  (*k)++;
  memcpy(in, tb_in, sizeof tb_in);
  memcpy(tg, tb_tg, sizeof tb_tg);
  return NC_OK;
}

// With gradient accumulation on OpenCL the session's params become views of
// a pinned buffer of the trainer (uploads from pinned memory): two steps
// equal the interpreter's, and after nc_trainer_free the session owns its
// params again with the trained values (ASan: nothing points into the freed
// buffer).
Test(exec_hook, trainer_pinned_params_on_opencl_equal_the_interpreter, .timeout = 600) {
  if (!nc_ocl_available() || !getenv("NC_SOURCE_DIR")) {
    cr_log_warn("no OpenCL device or NC_SOURCE_DIR: skipped");
    return;
  }
  char path[1024];
  snprintf(path, sizeof path, "%s/models/specs/tiny.xml", getenv("NC_SOURCE_DIR"));
  nc_model_spec s;
  cr_assert_null(nc_spec_load(path, &s));
  nc_session *ss[2] = {nc_session_new(), nc_session_new()};
  nc_trainer *tr[2];
  const char *devs[2] = {"opencl", "interp"};
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  for (int g = 0; g < NC_GROUP_COUNT; g++) lr[g] = 0.01, wd[g] = 0.01;
  for (int d = 0; d < 2; d++) {
    cr_assert_null(nc_model_init_session(&s, 7, ss[d]));
    nc_trainer_opts o = {.spec = &s, .B = 2, .T = 8, .grad_accum = 2};
    cr_assert_null(nc_device_parse(devs[d], &o.device));
    nc_optim_defaults(&o.oc);
    nc_status st = nc_trainer_open(&o, ss[d], &tr[d]);
    cr_assert_null(st, "%s: %s", devs[d], st ? nc_status_msg(st) : "");
    int k = 0;
    double loss;
    for (int step = 1; step <= 2; step++) cr_assert_null(nc_trainer_step(tr[d], tb_batch, &k, lr, wd, 0.9, step, &loss));
  }
  nc_param_desc *ps;
  int np;
  cr_assert_null(nc_gpt_params(&s, &ps, &np));
  float **kept = calloc((size_t)np, sizeof *kept);
  for (int i = 0; i < np; i++) {
    const nc_tensor *a = nc_session_get(ss[0], ps[i].name), *b = nc_session_get(ss[1], ps[i].name);
    cr_assert(a && b, "%s", ps[i].name);
    cr_assert(!a->owned, "%s: the OpenCL trainer's session param is not a view of its pinned buffer", ps[i].name);
    for (int64_t j = 0; j < nc_tensor_numel(a); j++) {
      float x = ((const float *)a->data)[j], y = ((const float *)b->data)[j];
      cr_assert(fabsf(x - y) <= 1e-4f * (1 + fabsf(y)), "%s[%lld]: opencl %g vs interp %g", ps[i].name, (long long)j, x, y);
    }
    kept[i] = malloc(nc_tensor_nbytes(a));
    memcpy(kept[i], a->data, nc_tensor_nbytes(a));
  }
  nc_trainer_free(tr[0]);
  for (int i = 0; i < np; i++) {
    const nc_tensor *a = nc_session_get(ss[0], ps[i].name);
    cr_assert(a && a->owned, "%s: the session does not own its param after the trainer is gone", ps[i].name);
    cr_assert_eq(memcmp(a->data, kept[i], nc_tensor_nbytes(a)), 0, "%s: changed by nc_trainer_free", ps[i].name);
    free(kept[i]);
  }
  free(kept);
  free(ps);
  nc_trainer_free(tr[1]);
  nc_session_free(ss[0]), nc_session_free(ss[1]);
}
