// The GPT, its gradients and one/two optimizer steps on the reference
// interpreter against the PyTorch fixtures of tools/gen_fixtures.py.
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/train.h"
#include "passes/autodiff.h"
#include "passes/pass.h"
#include "tests/support/model_util.h"

static nc_model_spec load_spec(const char *name) {
  char rel[256], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, rel), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return s;
}

static json_t *load_case(const char *name) {
  char rel[256], path[1024];
  snprintf(rel, sizeof rel, "tests/fixtures/model/%s/case.json", name);
  json_error_t err;
  json_t *j = json_load_file(nc_test_path(path, sizeof path, rel), 0, &err);
  cr_assert_not_null(j, "case.json: %s", err.text);
  return j;
}

static nc_session *session_with(const char *cse, const char *file) {
  nc_session *s = nc_session_new();
  char rel[256];
  nc_tensor_list l;
  snprintf(rel, sizeof rel, "tests/fixtures/model/%s/%s", cse, file);
  nc_test_load_st(rel, &l);
  nc_test_session_load(s, &l, NULL);
  nc_tensor_list_free(&l);
  return s;
}

static void add_file(nc_session *s, const char *cse, const char *file) {
  char rel[256];
  nc_tensor_list l;
  snprintf(rel, sizeof rel, "tests/fixtures/model/%s/%s", cse, file);
  nc_test_load_st(rel, &l);
  nc_test_session_load(s, &l, NULL);
  nc_tensor_list_free(&l);
}

static void forward_and_grads(const char *cse) {
  nc_model_spec spec = load_spec(cse);
  nc_gpt_opts o = {.with_loss = true, .with_logits = true};
  nc_graph *g;
  nc_status st = nc_gpt_build(&spec, &o, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  const char *passes[] = {"autodiff"};
  st = nc_pass_run_pipeline(&g, passes, 1, &ctx);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_session *s = session_with(cse, "weights.safetensors");
  add_file(s, cse, "io.safetensors");
  nc_tensor_list want;
  char rel[256];
  snprintf(rel, sizeof rel, "tests/fixtures/model/%s/io.safetensors", cse);
  nc_test_load_st(rel, &want);
  nc_tensor ref_logits, ref_loss;
  cr_assert_null(nc_tensor_clone(&ref_logits, nc_tensor_list_find(&want, "logits")));
  cr_assert_null(nc_tensor_clone(&ref_loss, nc_tensor_list_find(&want, "loss")));
  nc_tensor_list_free(&want);
  st = nc_session_run(s, g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  double e_logits = nc_test_rel_err(nc_session_get(s, "logits"), &ref_logits);
  double e_loss = nc_test_rel_err(nc_session_get(s, "loss"), &ref_loss);
  cr_log_info("%s: logits rel err %.3g, loss rel err %.3g", cse, e_logits, e_loss);
  cr_expect_lt(e_logits, 1e-4, "%s logits rel err %g", cse, e_logits);
  cr_expect_lt(e_loss, 1e-4, "%s loss rel err %g", cse, e_loss);
  snprintf(rel, sizeof rel, "tests/fixtures/model/%s/grads.safetensors", cse);
  nc_test_load_st(rel, &want);
  double worst = 0;
  for (size_t i = 0; i < want.len; i++) {
    char name[200];
    snprintf(name, sizeof name, "grad/%s", want.items[i].name);
    const nc_tensor *got = nc_session_get(s, name);
    cr_assert_not_null(got, "no gradient output for %s", want.items[i].name);
    double e = nc_test_rel_err(got, &want.items[i].t);
    cr_expect_lt(e, 1e-3, "%s: grad of %s rel err %g", cse, want.items[i].name, e);
    worst = fmax(worst, e);
  }
  cr_log_info("%s: %zu gradients, worst rel err %.3g", cse, want.len, worst);
  nc_tensor_list_free(&want);
  nc_tensor_free(&ref_logits);
  nc_tensor_free(&ref_loss);
  nc_session_free(s);
  nc_graph_free(g);
}

Test(model_parity, tiny_forward_and_grads) { forward_and_grads("tiny"); }
Test(model_parity, tiny_all_forward_and_grads) { forward_and_grads("tiny-all"); }

static nc_param_group group_by_name(const char *n) {
  for (int gi = 0; gi < NC_GROUP_COUNT; gi++)
    if (!strcmp(nc_param_group_name((nc_param_group)gi), n)) return (nc_param_group)gi;
  cr_assert_fail("unknown group %s", n);
  return NC_GROUP_COUNT;
}

// Runs two optimizer steps of `variant` and compares with step1/step2.
static void optimizer_steps(const char *cse, const char *variant) {
  nc_model_spec spec = load_spec(cse);
  json_t *c = load_case(cse);
  json_t *opt = json_object_get(c, "optimizer");
  json_t *var = json_object_get(json_object_get(opt, "variants"), variant);
  cr_assert_not_null(var, "variant %s missing in case.json", variant);
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  oc.ns_steps = (int)json_integer_value(json_object_get(var, "ns_steps"));
  oc.polar_express = !strcmp(json_string_value(json_object_get(var, "ortho")), "polar_express");
  oc.normuon = json_is_true(json_object_get(var, "normuon"));
  oc.cautious_wd = json_is_true(json_object_get(var, "cautious_wd"));
  if (json_object_get(var, "beta2")) oc.normuon_beta2 = json_real_value(json_object_get(var, "beta2"));
  cr_assert(!json_is_true(json_object_get(var, "muon_eq")) && !json_is_true(json_object_get(var, "muon_plus")),
            "MuonEq/Muon+ are not implemented");
  nc_session *s = session_with(cse, "weights.safetensors");
  add_file(s, cse, "io.safetensors");
  double lr[NC_GROUP_COUNT] = {0}, wd[NC_GROUP_COUNT] = {0};
  size_t gi;
  json_t *grp;
  json_array_foreach(json_object_get(opt, "adamw_groups"), gi, grp) {
    nc_param_group g = group_by_name(json_string_value(json_object_get(grp, "name")));
    oc.adamw[g].beta1 = json_real_value(json_array_get(json_object_get(grp, "betas"), 0));
    oc.adamw[g].beta2 = json_real_value(json_array_get(json_object_get(grp, "betas"), 1));
    oc.adamw[g].eps = json_real_value(json_object_get(grp, "eps"));
    lr[g] = json_real_value(json_object_get(grp, "lr"));
    wd[g] = json_real_value(json_object_get(grp, "weight_decay"));
  }
  json_t *mu = json_object_get(opt, "muon");
  lr[NC_GROUP_MUON] = json_real_value(json_object_get(mu, "lr"));
  wd[NC_GROUP_MUON] = json_real_value(json_object_get(mu, "weight_decay"));
  double momentum = json_real_value(json_object_get(mu, "momentum"));
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  nc_status st = nc_train_build(&spec, &oc, &to, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_null(nc_graph_verify(g));
  // zero optimizer state
  nc_param_desc *ps;
  int np;
  cr_assert_null(nc_gpt_params(&spec, &ps, &np));
  for (int i = 0; i < np; i++) {
    char name[200];
    const char *kinds[3] = {"adamw.exp_avg", "adamw.exp_avg_sq", "muon.momentum"};
    for (int k = 0; k < 3; k++) {
      if ((k < 2) == (ps[i].group == NC_GROUP_MUON)) continue;
      snprintf(name, sizeof name, "%s.%s", kinds[k], ps[i].name);
      nc_tensor z;
      cr_assert_null(nc_tensor_alloc(&z, NC_F32, ps[i].rank, ps[i].shape));
      cr_assert_null(nc_session_put(s, name, &z));
    }
    if (ps[i].group == NC_GROUP_MUON && oc.normuon) {
      int64_t sh[2] = {ps[i].shape[0], ps[i].shape[1]};
      sh[ps[i].shape[0] >= ps[i].shape[1] ? 1 : 0] = 1;
      snprintf(name, sizeof name, "muon.second_momentum.%s", ps[i].name);
      nc_tensor z;
      cr_assert_null(nc_tensor_alloc(&z, NC_F32, 2, sh));
      cr_assert_null(nc_session_put(s, name, &z));
    }
  }
  for (int step = 1; step <= 2; step++) {
    for (int gg = 0; gg < NC_GROUP_COUNT; gg++) {
      char name[64];
      const char *gn = nc_param_group_name((nc_param_group)gg);
      snprintf(name, sizeof name, "lr.%s", gn);
      nc_session_put_scalar(s, name, (float)lr[gg]);
      snprintf(name, sizeof name, "wd.%s", gn);
      nc_session_put_scalar(s, name, (float)wd[gg]);
      snprintf(name, sizeof name, "bc1.%s", gn);
      nc_session_put_scalar(s, name, (float)(1.0 - pow(oc.adamw[gg].beta1, step)));
      snprintf(name, sizeof name, "bc2.%s", gn);
      nc_session_put_scalar(s, name, (float)(1.0 - pow(oc.adamw[gg].beta2, step)));
    }
    nc_session_put_scalar(s, "momentum.muon", (float)momentum);
    nc_session_put_scalar(s, "grad_scale", 1.0f);
    st = nc_session_run(s, g);
    cr_assert_null(st, "step %d: %s", step, nc_status_msg(st));
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/model/%s/%s/step%d.safetensors", cse, variant, step);
    nc_tensor_list want;
    nc_test_load_st(rel, &want);
    double worst = 0;
    int compared = 0;
    for (size_t i = 0; i < want.len; i++) {
      const char *name = want.items[i].name;
      if (!strcmp(name, "loss_before")) {
        double e = nc_test_rel_err(nc_session_get(s, "loss"), &want.items[i].t);
        cr_expect_lt(e, 1e-4, "%s/%s step %d: loss rel err %g", cse, variant, step, e);
        continue;
      }
      if (!strncmp(name, "grad.", 5)) continue;
      const nc_tensor *got = nc_session_get(s, name);
      cr_assert_not_null(got, "%s: no tensor %s after step %d", variant, name, step);
      double e = nc_test_rel_err(got, &want.items[i].t);
      cr_expect_lt(e, 1e-3, "%s/%s step %d: %s rel err %g", cse, variant, step, name, e);
      worst = fmax(worst, e);
      compared++;
    }
    cr_log_info("%s/%s step %d: %d tensors, worst rel err %.3g", cse, variant, step, compared, worst);
    nc_tensor_list_free(&want);
  }
  free(ps);
  json_decref(c);
  nc_session_free(s);
  nc_graph_free(g);
}

Test(model_parity, tiny_muon_steps) { optimizer_steps("tiny", "muon"); }
Test(model_parity, tiny_normuon_cautious_steps) { optimizer_steps("tiny", "muon_normuon_cautious"); }
Test(model_parity, tiny_all_normuon_cautious_steps) { optimizer_steps("tiny-all", "muon_normuon_cautious"); }
