#include "chat/model_io.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/init.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"

// Adds the tensors named by descs from sess to l (wrapped, not copied).
static nc_status nc_collect(const nc_session *sess, const nc_param_desc *ds, int n, nc_tensor_list *l) {
  for (int i = 0; i < n; i++) {
    const nc_tensor *t = nc_session_get(sess, ds[i].name);
    if (!t) return nc_errorf(NC_E_INVALID, "checkpoint: tensor '%s' is missing from the session", ds[i].name);
    nc_tensor w = nc_tensor_wrap(t->data, t->dtype, t->rank, t->shape);
    NC_TRY(nc_tensor_list_add(l, ds[i].name, &w));
  }
  return NC_OK;
}

// world > 1: model and meta only (the ranks save their optimizer state).
static nc_status nc_ckpt_save(const char *dir, int64_t step, const nc_model_spec *s, const nc_session *sess,
                              const nc_optim_cfg *oc, int world, const char *extra_json) {
  nc_param_desc *ps = NULL, *sd = NULL;
  int np = 0, ns = 0;
  nc_tensor_list model, optim;
  nc_tensor_list_init(&model);
  nc_tensor_list_init(&optim);
  json_t *meta = NULL;
  char *xml = NULL, *text = NULL;
  nc_status st = nc_gpt_params(s, &ps, &np);
  if (!st) st = nc_collect(sess, ps, np, &model);
  if (!st && oc) st = nc_train_state_descs(s, oc, &sd, &ns);
  if (!st && oc) st = nc_collect(sess, sd, ns, &optim);
  if (!st) st = nc_spec_to_xml(s, &xml);
  if (st) goto done;
  json_error_t jerr;
  meta = extra_json ? json_loads(extra_json, JSON_REJECT_DUPLICATES, &jerr) : json_object();
  if (!meta || !json_is_object(meta)) {
    st = nc_errorf(NC_E_INVALID, "checkpoint: extra meta is not a JSON object%s%s", meta ? "" : ": ", meta ? "" : jerr.text);
    goto done;
  }
  json_object_set_new(meta, "step", json_integer(step));
  json_object_set_new(meta, "model_config",
                      json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:s}", "sequence_len", s->sequence_len, "vocab_size",
                                s->vocab_size, "n_layer", s->depth, "n_head", s->n_head, "n_kv_head", s->n_kv_head,
                                "n_embd", s->model_dim, "window_pattern", s->window_pattern));
  json_object_set_new(meta, "spec_xml", json_string(xml));
  if (world > 1) json_object_set_new(meta, "optim_world", json_integer(world));
  text = json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS);
  if (!text) {
    st = nc_errorf(NC_E_NOMEM, "out of memory");
    goto done;
  }
  st = nc_checkpoint_save(dir, step, &model, oc ? &optim : NULL, text);
done:
  free(text);
  free(xml);
  json_decref(meta);
  nc_tensor_list_free(&model);
  nc_tensor_list_free(&optim);
  free(ps);
  free(sd);
  return st;
}

nc_status nc_model_ckpt_save(const char *dir, int64_t step, const nc_model_spec *s, const nc_session *sess,
                             const nc_optim_cfg *oc, const char *extra_json) {
  return nc_ckpt_save(dir, step, s, sess, oc, 1, extra_json);
}

nc_status nc_model_ckpt_save_sharded(const char *dir, int64_t step, const nc_model_spec *s, const nc_session *sess, int world,
                                     const char *extra_json) {
  if (world < 1) return nc_errorf(NC_E_INVALID, "checkpoint: world size %d", world);
  return nc_ckpt_save(dir, step, s, sess, NULL, world, extra_json);
}

nc_status nc_model_ckpt_save_optim_rank(const char *dir, int64_t step, int rank, const nc_session *sess,
                                        const nc_param_desc *state, int n) {
  nc_tensor_list optim;
  nc_tensor_list_init(&optim);
  nc_status st = nc_checkpoint_mkdir(dir);
  if (!st) st = nc_collect(sess, state, n, &optim);
  if (!st) st = nc_checkpoint_save_optim(dir, step, rank, &optim);
  nc_tensor_list_free(&optim);
  return st;
}

// meta "optim_world" of a loaded meta object (absent: 1).
static nc_status nc_ckpt_world(const json_t *meta, const char *dir, int64_t step, int *world) {
  json_t *w = json_object_get(meta, "optim_world");
  *world = 1;
  if (!w) return NC_OK;
  if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 1 << 20)
    return nc_errorf(NC_E_INVALID, "%s: meta of step %lld has a bad \"optim_world\" (want a rank count)", dir, (long long)step);
  *world = (int)json_integer_value(w);
  return NC_OK;
}

// Moves the tensors named by descs from l into sess, checking shapes; every
// desc must be present and l must hold nothing else.
static nc_status nc_adopt(nc_tensor_list *l, const nc_param_desc *ds, int n, nc_session *sess, const char *what) {
  for (size_t k = 0; k < l->len; k++) {
    bool known = false;
    for (int i = 0; i < n && !known; i++) known = !strcmp(ds[i].name, l->items[k].name);
    if (!known) return nc_errorf(NC_E_INVALID, "%s: unexpected tensor '%s' for this model", what, l->items[k].name);
  }
  for (int i = 0; i < n; i++) {
    nc_tensor *t = nc_tensor_list_find(l, ds[i].name);
    if (!t) return nc_errorf(NC_E_INVALID, "%s: tensor '%s' is missing", what, ds[i].name);
    bool ok = t->dtype == NC_F32 && t->rank == ds[i].rank;
    for (int d = 0; ok && d < t->rank; d++) ok = t->shape[d] == ds[i].shape[d];
    if (!ok) {
      char got[96];
      return nc_errorf(NC_E_INVALID, "%s: tensor '%s' is %s, the spec wants f32[%lld%s%lld]", what, ds[i].name,
                       nc_tensor_type_str(t, got, sizeof got), (long long)ds[i].shape[0], ds[i].rank > 1 ? "," : "",
                       ds[i].rank > 1 ? (long long)ds[i].shape[1] : 0LL);
    }
  }
  for (int i = 0; i < n; i++) {
    nc_tensor *t = nc_tensor_list_find(l, ds[i].name);
    nc_tensor own;
    NC_TRY(nc_tensor_clone(&own, t));
    nc_status st = nc_session_put(sess, ds[i].name, &own);
    if (st) {
      nc_tensor_free(&own);
      return st;
    }
  }
  return NC_OK;
}

nc_status nc_model_ckpt_load(const char *dir, int64_t step, nc_model_spec *s, nc_session *sess,
                             const nc_optim_cfg *oc, int64_t *step_out) {
  nc_tensor_list model, optim;
  nc_tensor_list_init(&model);
  nc_tensor_list_init(&optim);
  json_t *meta = NULL;
  nc_param_desc *ps = NULL, *sd = NULL;
  int np = 0, ns = 0;
  int64_t got = -1;
  nc_status st = nc_checkpoint_load(dir, step, 0, &model, oc ? &optim : NULL, &meta, &got);
  if (st) goto done;
  const char *xml = json_string_value(json_object_get(meta, "spec_xml"));
  if (!xml) {
    st = nc_errorf(NC_E_INVALID, "%s: meta of step %lld has no \"spec_xml\" (not a nanochat-c checkpoint?)", dir, (long long)got);
    goto done;
  }
  if ((st = nc_spec_parse(xml, strlen(xml), "meta spec_xml", s))) goto done;
  if ((st = nc_gpt_params(s, &ps, &np))) goto done;
  if ((st = nc_adopt(&model, ps, np, sess, "checkpoint model"))) goto done;
  if (oc) {
    int world = 1;
    if ((st = nc_ckpt_world(meta, dir, got, &world))) goto done;
    if (world > 1) {
      st = nc_errorf(NC_E_INVALID,
                     "step %lld holds optimizer state sharded over %d ranks (optim_%06lld_rank0..%d): resume it with mpirun -np %d",
                     (long long)got, world, (long long)got, world - 1, world);
      goto done;
    }
    if ((st = nc_train_state_descs(s, oc, &sd, &ns))) goto done;
    st = nc_adopt(&optim, sd, ns, sess, "checkpoint optimizer state");
  }
done:
  if (st) st = nc_status_prefix(st, "loading checkpoint %s: ", dir);
  else if (step_out) *step_out = got;
  json_decref(meta);
  nc_tensor_list_free(&model);
  nc_tensor_list_free(&optim);
  free(ps);
  free(sd);
  return st;
}

nc_status nc_model_init_session(const nc_model_spec *s, uint64_t seed, nc_session *sess) {
  nc_param_desc *ps;
  int np;
  NC_TRY(nc_gpt_params(s, &ps, &np));
  nc_tensor *ts = calloc((size_t)np, sizeof *ts);
  nc_status st = ts ? nc_gpt_init(ps, np, seed, ts) : nc_errorf(NC_E_NOMEM, "out of memory");
  for (int i = 0; i < np && !st; i++) st = nc_session_put(sess, ps[i].name, &ts[i]);
  if (ts)
    for (int i = 0; i < np; i++) nc_tensor_free(&ts[i]);
  free(ts);
  free(ps);
  return st;
}

nc_status nc_model_ckpt_load_optim_rank(const char *dir, int64_t step, int rank, int world, nc_session *sess,
                                        const nc_param_desc *state, int n) {
  json_t *meta = NULL;
  nc_tensor_list optim;
  nc_tensor_list_init(&optim);
  int saved = 1;
  nc_status st = nc_checkpoint_load_meta(dir, step, &meta);
  if (!st) st = nc_ckpt_world(meta, dir, step, &saved);
  if (!st && saved != world)
    st = nc_errorf(NC_E_INVALID,
                   "step %lld holds optimizer state of %d rank%s but this job has %d: resume with the same world size (mpirun -np %d%s)",
                   (long long)step, saved, saved == 1 ? "" : "s", world, saved, saved == 1 ? ", or no mpirun" : "");
  if (!st) st = nc_checkpoint_load_optim(dir, step, rank, &optim);
  if (!st) st = nc_adopt(&optim, state, n, sess, "checkpoint optimizer shard");
  if (st) st = nc_status_prefix(st, "loading checkpoint %s (rank %d): ", dir, rank);
  nc_tensor_list_free(&optim);
  json_decref(meta);
  return st;
}
