// Model checkpoints: bit-identical round trips with optimizer state, and
// clear errors for checkpoints that do not match their spec.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"
#include "tests/support/model_util.h"

static char dir[256];
static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/nc_ckpt_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}
TestSuite(model_ckpt, .init = setup, .fini = teardown);

static nc_model_spec spec(const char *name) {
  char rel[128], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  cr_assert_null(nc_spec_load(nc_test_path(path, sizeof path, rel), &s));
  return s;
}

// Session with initialized params and non-zero optimizer state.
static nc_session *session(const nc_model_spec *s, const nc_optim_cfg *oc) {
  nc_session *sess = nc_session_new();
  cr_assert_null(nc_model_init_session(s, 9, sess));
  nc_param_desc *sd;
  int ns;
  cr_assert_null(nc_train_state_descs(s, oc, &sd, &ns));
  for (int i = 0; i < ns; i++) {
    nc_tensor t;
    cr_assert_null(nc_tensor_alloc(&t, NC_F32, sd[i].rank, sd[i].shape));
    for (int64_t j = 0; j < nc_tensor_numel(&t); j++) ((float *)t.data)[j] = (float)(i + 1) * 0.001f * (float)(j % 13);
    cr_assert_null(nc_session_put(sess, sd[i].name, &t));
  }
  free(sd);
  return sess;
}

Test(model_ckpt, round_trip_is_bit_identical) {
  nc_model_spec s = spec("tiny-all"), s2;
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_session *a = session(&s, &oc), *b = nc_session_new();
  char d1[300], d2[300];
  snprintf(d1, sizeof d1, "%s/one", dir);
  snprintf(d2, sizeof d2, "%s/two", dir);
  cr_assert_null(nc_model_ckpt_save(d1, 120, &s, a, &oc, "{\"loop\": {\"min_val_bpb\": 1.5}}"));
  int64_t step;
  nc_status st = nc_model_ckpt_load(d1, -1, &s2, b, &oc, &step);
  cr_assert_null(st, "%s", nc_status_msg(st));
  cr_assert_eq(step, 120);
  cr_assert(!memcmp(&s, &s2, sizeof s), "the spec comes back from meta");
  cr_assert_eq(nc_session_count(a), nc_session_count(b));
  for (int k = 0; k < nc_session_count(a); k++) {
    const char *name = nc_session_name_at(a, k);
    const nc_tensor *x = nc_session_get(a, name), *y = nc_session_get(b, name);
    cr_assert_not_null(y, "%s missing after load", name);
    cr_assert(!memcmp(x->data, y->data, nc_tensor_nbytes(x)), "%s differs", name);
  }
  cr_assert_null(nc_model_ckpt_save(d2, 120, &s2, b, &oc, "{\"loop\": {\"min_val_bpb\": 1.5}}"));
  const char *files[] = {"model_000120.safetensors", "optim_000120_rank0.safetensors", "meta_000120.json"};
  for (int i = 0; i < 3; i++) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cmp -s '%s/%s' '%s/%s'", d1, files[i], d2, files[i]);
    cr_expect_eq(system(cmd), 0, "%s differs between save -> load -> save", files[i]);
  }
  nc_session_free(a);
  nc_session_free(b);
}

Test(model_ckpt, mismatches_are_named) {
  nc_model_spec s = spec("tiny"), s2;
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_session *a = session(&s, &oc);
  cr_assert_null(nc_model_ckpt_save(dir, 1, &s, a, NULL, NULL));
  // drop one tensor from the model file
  nc_tensor_list l, m;
  nc_tensor_list_init(&m);
  char *path = nc_checkpoint_path(dir, NC_CKPT_MODEL, 1, 0);
  nc_tensor_list_init(&l);
  cr_assert_null(nc_safetensors_read(path, &l, NULL));
  for (size_t i = 0; i < l.len; i++)
    if (strcmp(l.items[i].name, "lm_head.weight")) cr_assert_null(nc_tensor_list_add_copy(&m, l.items[i].name, &l.items[i].t));
  cr_assert_null(nc_safetensors_write(path, &m, NULL));
  nc_session *b = nc_session_new();
  nc_status st = nc_model_ckpt_load(dir, 1, &s2, b, NULL, NULL);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "'lm_head.weight' is missing"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // a tensor of the wrong shape
  nc_tensor_list_free(&m);
  nc_tensor_list_init(&m);
  for (size_t i = 0; i < l.len; i++) {
    nc_tensor t = l.items[i].t;
    if (!strcmp(l.items[i].name, "lm_head.weight")) t.shape[0] = 32;  // 32 rows of the 64: a view, same buffer
    cr_assert_null(nc_tensor_list_add_copy(&m, l.items[i].name, &t));
  }
  cr_assert_null(nc_safetensors_write(path, &m, NULL));
  st = nc_model_ckpt_load(dir, 1, &s2, b, NULL, NULL);
  cr_assert_not_null(st);
  cr_expect(strstr(nc_status_msg(st), "'lm_head.weight' is f32[32,32]"), "%s", nc_status_msg(st));
  nc_status_free(st);
  // optimizer state requested but not saved
  st = nc_model_ckpt_load(dir, 1, &s2, b, &oc, NULL);
  cr_assert_not_null(st);
  nc_status_free(st);
  free(path);
  nc_tensor_list_free(&l);
  nc_tensor_list_free(&m);
  nc_session_free(a);
  nc_session_free(b);
}
