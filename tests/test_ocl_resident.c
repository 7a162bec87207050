// Device residency on OpenCL (runtime/session.c, nc_exec_run_kept,
// nc_ocl_run_kept): a training loop through a session leaves params and
// optimizer state on the device between steps. Checked against the same loop
// with residency off (NC_OCL_RESIDENT=0: every feed uploaded, every output
// read back): bit-identical after every step, also when the host reads the
// tensors mid-run (a checkpoint), writes into one (zeroing a buffer as the
// trainer does with accumulators), and when another graph (the loss for
// evaluation) runs on the same session between steps. Skips without OpenCL.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat/model_io.h"
#include "models/gpt.h"
#include "models/init.h"
#include "models/train.h"
#include "runtime/exec.h"
#include "runtime/ocl_device.h"
#include "runtime/session.h"
#include "tests/support/model_util.h"

#define NEED_OPENCL()                                                                  \
  do {                                                                                 \
    if (!nc_ocl_available()) cr_skip_test("no OpenCL device (install pocl-opencl-icd)"); \
  } while (0)

static nc_model_spec tiny(void) {
  char path[1024];
  nc_model_spec s;
  cr_assert_null(nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny.xml"), &s));
  return s;
}

static nc_exec *exec_on(const nc_graph *g, bool resident) {
  setenv("NC_OCL_RESIDENT", resident ? "1" : "0", 1);
  nc_device d;
  cr_assert_null(nc_device_parse("opencl", &d));
  nc_exec *ex;
  nc_status st = nc_exec_new(g, &d, &ex);
  unsetenv("NC_OCL_RESIDENT");
  cr_assert_null(st, "%s", nc_status_msg(st));
  return ex;
}

// A session with tiny's params, zeroed optimizer state and one (2,16) batch.
static nc_session *start(const nc_model_spec *sp, const nc_optim_cfg *oc) {
  nc_session *s = nc_session_new();
  cr_assert_null(nc_model_init_session(sp, 7, s));
  nc_param_desc *sd;
  int ns;
  cr_assert_null(nc_train_state_descs(sp, oc, &sd, &ns));
  for (int i = 0; i < ns; i++) {
    nc_tensor z;
    cr_assert_null(nc_tensor_alloc(&z, NC_F32, sd[i].rank, sd[i].shape));
    cr_assert_null(nc_session_put(s, sd[i].name, &z));
  }
  free(sd);
  int64_t shape[2] = {2, 16};
  for (int k = 0; k < 2; k++) {
    nc_tensor t;
    cr_assert_null(nc_tensor_alloc(&t, NC_I32, 2, shape));
    for (int j = 0; j < 32; j++) ((int32_t *)t.data)[j] = (int32_t)((j * 37 + k * 11 + 5) % sp->vocab_size);
    cr_assert_null(nc_session_put(s, k ? "targets" : "tokens", &t));
  }
  return s;
}

static void scalars(nc_session *s, const nc_optim_cfg *oc, int step) {
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  for (int i = 0; i < NC_GROUP_COUNT; i++) lr[i] = 0.01, wd[i] = 0.1;
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(oc, lr, wd, 0.9, step, 1.0, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) cr_assert_null(nc_session_put_scalar(s, sc[i].name, sc[i].value));
}

// Every float tensor of a equals b's bit for bit; returns how many were compared.
static int same_tensors(const nc_session *a, const nc_session *b) {
  int n = 0;
  for (int k = 0; k < nc_session_count(b); k++) {
    const char *name = nc_session_name_at(b, k);
    const nc_tensor *y = nc_session_get(b, name), *x = nc_session_get(a, name);
    cr_assert_not_null(x, "tensor %s missing", name);
    cr_assert_not_null(y);
    cr_assert_eq(nc_tensor_nbytes(x), nc_tensor_nbytes(y), "tensor %s: size", name);
    cr_assert(!memcmp(x->data, y->data, nc_tensor_nbytes(x)), "tensor %s differs with residency on", name);
    n++;
  }
  return n;
}

Test(ocl_resident, steps_equal_steps_without_residency_and_host_reads_see_current_values, .timeout = 300) {
  NEED_OPENCL();
  nc_model_spec sp = tiny();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g, *gl;
  cr_assert_null(nc_train_build(&sp, &oc, &to, &g));
  nc_gpt_opts lo = {.with_loss = true};
  cr_assert_null(nc_gpt_build(&sp, &lo, &gl));
  nc_exec *xr = exec_on(g, true), *xp = exec_on(g, false), *lr = exec_on(gl, true);
  cr_assert(nc_exec_keeps(xr));
  cr_assert(!nc_exec_keeps(xp));
  nc_session *sr = start(&sp, &oc), *sp_ = start(&sp, &oc);
  const char *w = "transformer.h.0.mlp.c_fc.weight";
  for (int step = 1; step <= 4; step++) {
    scalars(sr, &oc, step), scalars(sp_, &oc, step);
    cr_assert_null(nc_session_run_exec(sr, xr));
    cr_assert_null(nc_session_run_exec(sp_, xp));
    // params and optimizer state stayed on the device; the loss came back
    cr_assert_gt(nc_session_on_device(sr), 10, "after step %d only %d tensors on the device", step, nc_session_on_device(sr));
    cr_assert_eq(nc_session_on_device(sp_), 0);
    float la = *(float *)nc_session_get(sr, "loss")->data, lb = *(float *)nc_session_get(sp_, "loss")->data;
    cr_assert(la == lb && isfinite(la), "step %d: loss %.9g with residency, %.9g without", step, la, lb);
    if (step == 2) {  // a checkpoint mid-run: every tensor read back is the current one
      int n = same_tensors(sr, sp_);
      cr_assert_gt(n, 20);
      cr_assert_eq(nc_session_on_device(sr), 0, "reading every tensor brought them all back");
    }
    if (step == 3) {  // the host writes into a tensor it read: the next step must use the written values
      nc_tensor *a = (nc_tensor *)nc_session_get(sr, w), *b = (nc_tensor *)nc_session_get(sp_, w);
      memset(a->data, 0, nc_tensor_nbytes(a));
      memset(b->data, 0, nc_tensor_nbytes(b));
      // evaluation on another exec between steps: it reads the params back first
      cr_assert_null(nc_session_run_exec(sr, lr));
      double l1 = *(float *)nc_session_get(sr, "loss")->data;
      nc_session *chk = nc_session_new();  // the same loss from the host values on the interpreter
      for (int k = 0; k < nc_session_count(sp_); k++)
        cr_assert_null(nc_session_put_copy(chk, nc_session_name_at(sp_, k), nc_session_get(sp_, nc_session_name_at(sp_, k))));
      cr_assert_null(nc_session_run(chk, gl));
      double l2 = *(float *)nc_session_get(chk, "loss")->data;
      cr_assert(fabs(l1 - l2) < 1e-4 * fabs(l2), "eval loss %.9g on opencl, %.9g on the interpreter", l1, l2);
      nc_session_free(chk);
    }
  }
  same_tensors(sr, sp_);
  // freeing the exec first gives the session its tensors back
  scalars(sr, &oc, 5), scalars(sp_, &oc, 5);
  cr_assert_null(nc_session_run_exec(sr, xr));
  cr_assert_null(nc_session_run_exec(sp_, xp));
  cr_assert_gt(nc_session_on_device(sr), 10);
  nc_exec_free(xr);
  cr_assert_eq(nc_session_on_device(sr), 0);
  same_tensors(sr, sp_);
  nc_exec_free(xp);
  nc_exec_free(lr);
  nc_session_free(sr);
  nc_session_free(sp_);
  nc_graph_free(g);
  nc_graph_free(gl);
}

Test(ocl_resident, session_freed_before_the_exec_and_plain_runs_stay_correct, .timeout = 300) {
  NEED_OPENCL();
  nc_model_spec sp = tiny();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  cr_assert_null(nc_train_build(&sp, &oc, &to, &g));
  nc_exec *xr = exec_on(g, true);
  nc_gpt_opts lo = {.with_loss = true};
  nc_graph *gl;
  cr_assert_null(nc_gpt_build(&sp, &lo, &gl));
  nc_exec *xl = exec_on(gl, true);  // keeps nothing (no new.X), but runs on the sessions too
  nc_session *s1 = start(&sp, &oc), *s2 = start(&sp, &oc);
  cr_assert_null(nc_session_run_exec(s1, xl));
  scalars(s1, &oc, 1), scalars(s2, &oc, 1);
  cr_assert_null(nc_session_run_exec(s1, xr));
  cr_assert_gt(nc_session_on_device(s1), 10);
  // the same exec on another session: s1 gets its tensors back first
  cr_assert_null(nc_session_run_exec(s2, xr));
  cr_assert_eq(nc_session_on_device(s1), 0);
  same_tensors(s1, s2);  // both ran one step from the same start
  nc_session_free(s1);
  // a session freed while the exec holds its tensors: the exec forgets it (no use after free under ASan)
  scalars(s2, &oc, 2);
  cr_assert_null(nc_session_run_exec(s2, xr));
  cr_assert_null(nc_session_sync(s2));
  cr_assert_eq(nc_session_on_device(s2), 0);
  cr_assert_null(nc_session_run_exec(s2, xr));
  cr_assert_null(nc_session_run_exec(s2, xl));
  nc_session_free(s2);  // both execs were bound to s2: freeing them afterwards must not touch it
  nc_exec_free(xr);
  nc_exec_free(xl);
  nc_graph_free(g);
  nc_graph_free(gl);
}

Test(ocl_resident, bad_use_is_an_error_not_garbage) {
  NEED_OPENCL();
  nc_model_spec sp = tiny();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_gpt_opts lo = {.with_loss = true};
  nc_graph *gl;
  cr_assert_null(nc_gpt_build(&sp, &lo, &gl));
  nc_exec *x = exec_on(gl, true);
  nc_session *s = start(&sp, &oc);
  // a feed marked as held on the device that the device never kept
  const nc_graph *fg = nc_exec_feed_graph(x);
  nc_feed f[64];
  bool on[64] = {false};
  int n = 0;
  for (nc_id i = 0; i < nc_graph_nnodes(fg) && n < 64; i++) {
    const char *name = nc_node_name(fg, i);
    if (name && nc_session_get(s, name)) f[n++] = (nc_feed){name, nc_session_get(s, name)};
  }
  on[0] = true;
  nc_tensor out[4] = {0};
  nc_status st = nc_exec_run_kept(x, f, n, on, NULL, out);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), f[0].name), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_tensor t;
  int64_t shape[1] = {4};
  cr_assert_null(nc_tensor_alloc(&t, NC_F32, 1, shape));
  st = nc_exec_read_kept(x, "no.such.tensor", &t);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "no.such.tensor"), "%s", nc_status_msg(st));
  nc_status_free(st);
  nc_tensor_free(&t);
  nc_session_free(s);
  nc_exec_free(x);
  nc_graph_free(gl);
}
