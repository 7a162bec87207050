// The training step on the interpreter: overfitting one batch, gradient
// accumulation equal to one big batch, state listing.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/init.h"
#include "models/train.h"
#include "tests/support/model_util.h"

static nc_model_spec tiny_spec(void) {
  char path[1024];
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, "models/specs/tiny.xml"), &s);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return s;
}

// Params from nc_gpt_init and zero optimizer state into a new session.
static nc_session *fresh_session(const nc_model_spec *s, const nc_optim_cfg *oc, uint64_t seed) {
  nc_session *sess = nc_session_new();
  nc_param_desc *ps, *sd;
  int np, ns;
  cr_assert_null(nc_gpt_params(s, &ps, &np));
  nc_tensor *ts = calloc((size_t)np, sizeof *ts);
  cr_assert_null(nc_gpt_init(ps, np, seed, ts));
  for (int i = 0; i < np; i++) cr_assert_null(nc_session_put(sess, ps[i].name, &ts[i]));
  cr_assert_null(nc_train_state_descs(s, oc, &sd, &ns));
  for (int i = 0; i < ns; i++) {
    nc_tensor z;
    cr_assert_null(nc_tensor_alloc(&z, NC_F32, sd[i].rank, sd[i].shape));
    cr_assert_null(nc_session_put(sess, sd[i].name, &z));
  }
  free(ts);
  free(ps);
  free(sd);
  return sess;
}

static void put_batch(nc_session *s, int64_t b, int64_t t, uint64_t seed, int vocab, const char *suffix) {
  int64_t shape[2] = {b, t};
  nc_tensor tok, tgt;
  cr_assert_null(nc_tensor_alloc(&tok, NC_I32, 2, shape));
  cr_assert_null(nc_tensor_alloc(&tgt, NC_I32, 2, shape));
  nc_rng r;
  nc_rng_seed(&r, seed);
  for (int64_t i = 0; i < b * t; i++) {
    ((int32_t *)tok.data)[i] = (int32_t)(nc_rng_next(&r) % (uint64_t)vocab);
    ((int32_t *)tgt.data)[i] = (int32_t)(nc_rng_next(&r) % (uint64_t)vocab);
  }
  char n1[32], n2[32];
  snprintf(n1, sizeof n1, "tokens%s", suffix);
  snprintf(n2, sizeof n2, "targets%s", suffix);
  cr_assert_null(nc_session_put(s, n1, &tok));
  cr_assert_null(nc_session_put(s, n2, &tgt));
}

static void put_scalars(nc_session *s, const nc_optim_cfg *oc, int64_t step, double grad_scale) {
  // nanochat's base LRs at model_dim 32: AdamW LRs scaled by (C/768)^-0.5
  double dmodel = pow(32.0 / 768.0, -0.5);
  double lr[NC_GROUP_COUNT] = {0}, wd[NC_GROUP_COUNT] = {0};
  lr[NC_GROUP_LM_HEAD] = 0.008 * dmodel;
  lr[NC_GROUP_WTE] = 0.3 * dmodel;
  lr[NC_GROUP_MUON] = 0.02;
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(oc, lr, wd, 0.95, step, grad_scale, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) cr_assert_null(nc_session_put_scalar(s, sc[i].name, sc[i].value));
}

Test(train, overfits_one_batch_in_50_steps) {
  nc_model_spec s = tiny_spec();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g;
  nc_status st = nc_train_build(&s, &oc, &to, &g);
  cr_assert_null(st, "%s", nc_status_msg(st));
  nc_session *sess = fresh_session(&s, &oc, 42);
  put_batch(sess, 2, 16, 7, s.vocab_size, "");
  double first = 0, last = 0;
  for (int step = 1; step <= 50; step++) {
    put_scalars(sess, &oc, step, 1.0);
    st = nc_session_run(sess, g);
    cr_assert_null(st, "step %d: %s", step, nc_status_msg(st));
    double loss = *(float *)nc_session_get(sess, "loss")->data;
    cr_assert(isfinite(loss), "step %d: loss %g", step, loss);
    if (step == 1) first = loss;
    last = loss;
  }
  cr_log_info("loss %.4f -> %.4f (%.1f%% lower)", first, last, 100 * (1 - last / first));
  cr_expect_gt(first, 3.9, "starts near ln(64) = 4.16 (zero lm_head), got %g", first);
  cr_expect_lt(last, 0.1 * first, "loss must fall by more than 90%%: %g -> %g", first, last);
  nc_session_free(sess);
  nc_graph_free(g);
}

Test(train, grad_accumulation_equals_big_batch) {
  nc_model_spec s = tiny_spec();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_graph *step, *acc;
  nc_train_opts so = {.kind = NC_TRAIN_STEP}, ao = {.kind = NC_TRAIN_ACCUMULATE}, wo = {.kind = NC_TRAIN_STEP, .with_acc = true};
  cr_assert_null(nc_train_build(&s, &oc, &so, &step));
  cr_assert_null(nc_train_build(&s, &oc, &ao, &acc));
  nc_graph *step_acc;
  cr_assert_null(nc_train_build(&s, &oc, &wo, &step_acc));
  // one batch of 4 rows vs two micro-batches of 2 rows (the same rows)
  nc_session *big = fresh_session(&s, &oc, 3), *mic = fresh_session(&s, &oc, 3);
  put_batch(big, 4, 16, 11, s.vocab_size, "");
  const nc_tensor *tok = nc_session_get(big, "tokens"), *tgt = nc_session_get(big, "targets");
  int64_t half[2] = {2, 16};
  for (int m = 0; m < 2; m++) {
    nc_tensor a = nc_tensor_wrap((int32_t *)tok->data + m * 32, NC_I32, 2, half);
    nc_tensor b = nc_tensor_wrap((int32_t *)tgt->data + m * 32, NC_I32, 2, half);
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "tokens.%d", m);
    snprintf(n2, sizeof n2, "targets.%d", m);
    cr_assert_null(nc_session_put_copy(mic, n1, &a));
    cr_assert_null(nc_session_put_copy(mic, n2, &b));
  }
  // accumulators start at zero
  nc_param_desc *ps;
  int np;
  cr_assert_null(nc_gpt_params(&s, &ps, &np));
  for (int i = 0; i < np; i++) {
    char name[160];
    snprintf(name, sizeof name, "acc.%s", ps[i].name);
    nc_tensor z;
    cr_assert_null(nc_tensor_alloc(&z, NC_F32, ps[i].rank, ps[i].shape));
    cr_assert_null(nc_session_put(mic, name, &z));
  }
  put_scalars(big, &oc, 1, 1.0);
  cr_assert_null(nc_session_run(big, step));
  put_scalars(mic, &oc, 1, 0.5);  // mean of the two micro-batch gradients
  for (int m = 0; m < 2; m++) {
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "tokens.%d", m);
    snprintf(n2, sizeof n2, "targets.%d", m);
    cr_assert_null(nc_session_put_copy(mic, "tokens", nc_session_get(mic, n1)));
    cr_assert_null(nc_session_put_copy(mic, "targets", nc_session_get(mic, n2)));
    nc_status st = nc_session_run(mic, m == 0 ? acc : step_acc);
    cr_assert_null(st, "%s", nc_status_msg(st));
  }
  double worst = 0;
  for (int i = 0; i < np; i++) {
    double e = nc_test_rel_err(nc_session_get(mic, ps[i].name), nc_session_get(big, ps[i].name));
    worst = fmax(worst, e);
    cr_expect_lt(e, 1e-5, "%s differs: rel err %g", ps[i].name, e);
  }
  cr_log_info("accumulated vs big batch: worst rel err %.3g over %d params", worst, np);
  free(ps);
  nc_session_free(big);
  nc_session_free(mic);
  nc_graph_free(step);
  nc_graph_free(acc);
  nc_graph_free(step_acc);
}

Test(train, state_descs_cover_every_param) {
  nc_model_spec s = tiny_spec();
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_param_desc *sd;
  int ns;
  cr_assert_null(nc_train_state_descs(&s, &oc, &sd, &ns));
  // tiny: wte, lm_head (AdamW: 2 each) + 2 layers x 6 matrices (Muon: 2 each with NorMuon)
  cr_assert_eq(ns, 2 * 2 + 12 * 2);
  bool found = false;
  for (int i = 0; i < ns; i++)
    if (!strcmp(sd[i].name, "muon.second_momentum.transformer.h.0.mlp.c_fc.weight")) {
      found = true;
      cr_assert_eq(sd[i].shape[0], 128);  // c_fc is (4C, C) = (128, 32): rows >= cols -> (128, 1)
      cr_assert_eq(sd[i].shape[1], 1);
    }
  cr_assert(found);
  free(sd);
}
