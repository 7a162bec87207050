// Checkpoint folders: save/load round trip, latest-step discovery that ignores
// incomplete checkpoints and temporary files, interrupted writes, bad meta.
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/checkpoint.h"
#include "support/buf.h"

static char root[256];  // the test's temporary folder
static char dir[300];   // the checkpoint folder inside it

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    rm_rf(p);
  }
  closedir(d);
  rmdir(path);
}

static void setup_tmp(void) {
  snprintf(root, sizeof root, "/tmp/nc_ckpt_XXXXXX");
  cr_assert_not_null(mkdtemp(root));
  snprintf(dir, sizeof dir, "%s/base_checkpoints/d4", root);
}
static void teardown_tmp(void) { rm_rf(root); }

TestSuite(checkpoint, .init = setup_tmp, .fini = teardown_tmp);

static void ok(nc_status st) { cr_assert_null(st, "unexpected error: %s", nc_status_msg(st)); }

static void expect_err_words(nc_status st, const char *ctx, ...) {
  cr_assert_not_null(st, "%s: expected an error", ctx);
  va_list ap;
  va_start(ap, ctx);
  const char *w;
  while ((w = va_arg(ap, const char *)))
    cr_assert_not_null(strstr(nc_status_msg(st), w), "%s: message '%s' lacks '%s'", ctx, nc_status_msg(st), w);
  va_end(ap);
  nc_status_free(st);
}
#define EXPECT_ERR(st, ...) expect_err_words((st), #st, __VA_ARGS__, (const char *)NULL)

static char *dpath(const char *name) {
  static char p[1024];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return p;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  if (n) cr_assert_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

static void *slurp(const char *path, size_t *len) {
  char *d;
  ok(nc_file_read(path, (size_t)1 << 30, &d, len));
  return d;
}

static uint32_t seed = 12345;
static void fill(nc_tensor *t) {
  unsigned char *p = t->data;
  for (size_t i = 0; i < nc_tensor_nbytes(t); i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (unsigned char)(seed >> 24);
  }
}

static void add(nc_tensor_list *l, const char *name, nc_dtype dt, int rank, const int64_t *shape) {
  nc_tensor t;
  ok(nc_tensor_alloc(&t, dt, rank, shape));
  fill(&t);
  ok(nc_tensor_list_add(l, name, &t));
}

// A tiny nanochat-shaped state_dict (depth 1, n_embd 8, vocab 16).
static void model_list(nc_tensor_list *l) {
  nc_tensor_list_init(l);
  add(l, "transformer.wte.weight", NC_BF16, 2, (int64_t[]){16, 8});
  add(l, "transformer.h.0.attn.c_q.weight", NC_F32, 2, (int64_t[]){8, 8});
  add(l, "transformer.h.0.attn.c_k.weight", NC_F32, 2, (int64_t[]){8, 8});
  add(l, "transformer.h.0.attn.c_v.weight", NC_F32, 2, (int64_t[]){8, 8});
  add(l, "transformer.h.0.attn.c_proj.weight", NC_F32, 2, (int64_t[]){8, 8});
  add(l, "transformer.h.0.mlp.c_fc.weight", NC_F32, 2, (int64_t[]){32, 8});
  add(l, "transformer.h.0.mlp.c_proj.weight", NC_F32, 2, (int64_t[]){8, 32});
  add(l, "lm_head.weight", NC_F32, 2, (int64_t[]){16, 8});
}

static void optim_list(nc_tensor_list *l) {
  nc_tensor_list_init(l);
  add(l, "state.0.exp_avg", NC_F32, 2, (int64_t[]){16, 8});
  add(l, "state.0.exp_avg_sq", NC_F32, 2, (int64_t[]){16, 8});
  add(l, "state.0.step", NC_I64, 0, NULL);
  add(l, "state.1.momentum_buffer", NC_BF16, 3, (int64_t[]){4, 8, 8});
}

static void assert_lists_equal(const nc_tensor_list *a, const nc_tensor_list *b) {
  cr_assert_eq(a->len, b->len);
  for (size_t i = 0; i < a->len; i++) {
    const nc_tensor *y = nc_tensor_list_find(b, a->items[i].name);
    const nc_tensor *x = &a->items[i].t;
    cr_assert_not_null(y, "%s missing", a->items[i].name);
    cr_assert(x->dtype == y->dtype && x->rank == y->rank);
    for (int d = 0; d < x->rank; d++) cr_assert_eq(x->shape[d], y->shape[d]);
    cr_assert(memcmp(x->data, y->data, nc_tensor_nbytes(x)) == 0, "%s differs", a->items[i].name);
  }
}

static char *meta_text(int64_t step) {
  static char buf[512];
  snprintf(buf, sizeof buf,
           "{\n  \"step\": %lld,\n  \"val_bpb\": 0.8123,\n  \"model_config\": {\"sequence_len\": 64, \"vocab_size\": 16, "
           "\"n_layer\": 1, \"n_head\": 1, \"n_kv_head\": 1, \"n_embd\": 8},\n  \"note\": \"d\\u00e9j\\u00e0 \xe2\x9c\x93\"\n}\n",
           (long long)step);
  return buf;
}

static void save_step(int64_t step, const nc_tensor_list *m, const nc_tensor_list *o) {
  ok(nc_checkpoint_save(dir, step, m, o, meta_text(step)));
}

static int64_t latest(void) {
  int64_t s = -2;
  ok(nc_checkpoint_find_latest(dir, &s));
  return s;
}

// ---- tests ------------------------------------------------------------------------------------

Test(checkpoint, paths) {
  char *p = nc_checkpoint_path("/x/y", NC_CKPT_MODEL, 42, 0);
  cr_assert_str_eq(p, "/x/y/model_000042.safetensors");
  free(p);
  p = nc_checkpoint_path("/x/y/", NC_CKPT_META, 1234567, 0);
  cr_assert_str_eq(p, "/x/y/meta_1234567.json");
  free(p);
  p = nc_checkpoint_path("d", NC_CKPT_OPTIM, 0, 3);
  cr_assert_str_eq(p, "d/optim_000000_rank3.safetensors");
  free(p);
  cr_assert_null(nc_checkpoint_path("d", NC_CKPT_MODEL, -1, 0));
  cr_assert_null(nc_checkpoint_path("d", NC_CKPT_OPTIM, 1, -1));
}

Test(checkpoint, save_load_round_trip) {
  nc_tensor_list m, o;
  model_list(&m);
  optim_list(&o);
  cr_assert_eq(latest(), -1, "missing folder: no checkpoint");
  save_step(250, &m, &o);
  cr_assert_eq(latest(), 250);

  nc_tensor_list rm, ro;
  nc_tensor_list_init(&rm);
  nc_tensor_list_init(&ro);
  json_t *meta = NULL;
  int64_t got = -1;
  ok(nc_checkpoint_load(dir, -1, 0, &rm, &ro, &meta, &got));
  cr_assert_eq(got, 250);
  assert_lists_equal(&m, &rm);
  assert_lists_equal(&o, &ro);
  cr_assert_eq(json_integer_value(json_object_get(meta, "step")), 250);
  cr_assert_eq(json_real_value(json_object_get(meta, "val_bpb")), 0.8123);
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(meta, "model_config"), "n_embd")), 8);
  cr_assert_str_eq(json_string_value(json_object_get(meta, "note")), "d\xc3\xa9j\xc3\xa0 \xe2\x9c\x93");
  json_decref(meta);

  char *text;
  ok(nc_checkpoint_load_meta_text(dir, 250, &text));
  cr_assert_str_eq(text, meta_text(250), "meta is written as given");
  free(text);

  // The model file carries {"format":"pt"} for Hugging Face tools.
  nc_metadata md;
  nc_metadata_init(&md);
  nc_tensor_list tmp;
  nc_tensor_list_init(&tmp);
  ok(nc_safetensors_read(dpath("model_000250.safetensors"), &tmp, &md));
  cr_assert_str_eq(nc_metadata_get(&md, "format"), "pt");
  nc_metadata_free(&md);
  nc_tensor_list_free(&tmp);

  // Loading into lists that already hold a name appends nothing.
  nc_tensor_list again;
  nc_tensor_list_init(&again);
  add(&again, "state.0.step", NC_I64, 0, NULL);
  nc_tensor_list fresh;
  nc_tensor_list_init(&fresh);
  EXPECT_ERR(nc_checkpoint_load(dir, 250, 0, &fresh, &again, NULL, NULL), "already present");
  cr_assert_eq(fresh.len, 0);
  cr_assert_eq(again.len, 1);

  // Without optimizer (as chat_rl saves).
  save_step(300, &m, NULL);
  cr_assert_eq(latest(), 300);
  ok(nc_checkpoint_load(dir, -1, 0, &fresh, NULL, NULL, &got));
  cr_assert_eq(got, 300);
  assert_lists_equal(&m, &fresh);
  nc_tensor_list opt;
  nc_tensor_list_init(&opt);
  EXPECT_ERR(nc_checkpoint_load_optim(dir, 300, 0, &opt), "optim_000300_rank0.safetensors", "cannot open");

  nc_tensor_list_free(&again);
  nc_tensor_list_free(&fresh);
  nc_tensor_list_free(&m);
  nc_tensor_list_free(&o);
  nc_tensor_list_free(&rm);
  nc_tensor_list_free(&ro);
}

Test(checkpoint, meta_from_jansson_object_and_multi_rank) {
  nc_tensor_list m, o;
  model_list(&m);
  optim_list(&o);
  ok(nc_checkpoint_mkdir(dir));
  ok(nc_checkpoint_save_optim(dir, 7, 0, &o));
  ok(nc_checkpoint_save_optim(dir, 7, 1, &o));
  ok(nc_checkpoint_save_model(dir, 7, &m));
  cr_assert_eq(latest(), -1, "no meta yet: not a checkpoint");
  json_t *meta = json_pack("{s:I, s:f, s:{s:i}}", "step", (json_int_t)7, "val_bpb", 1.25, "loop_state", "x", 1);
  EXPECT_ERR(nc_checkpoint_save_meta_obj(dir, 8, meta), "step", "7", "8");
  ok(nc_checkpoint_save_meta_obj(dir, 7, meta));
  json_decref(meta);
  cr_assert_eq(latest(), 7);
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  ok(nc_checkpoint_load_optim(dir, 7, 1, &r));
  assert_lists_equal(&o, &r);
  json_t *back;
  ok(nc_checkpoint_load_meta(dir, 7, &back));
  cr_assert_eq(json_real_value(json_object_get(back, "val_bpb")), 1.25);
  json_decref(back);
  nc_tensor_list_free(&r);
  nc_tensor_list_free(&m);
  nc_tensor_list_free(&o);
}

Test(checkpoint, latest_ignores_incomplete_and_temp_files) {
  nc_tensor_list m;
  model_list(&m);
  save_step(100, &m, NULL);
  // model without meta (a save interrupted before its meta)
  ok(nc_checkpoint_save_model(dir, 200, &m));
  // meta without model (model deleted by hand)
  spit(dpath("meta_000300.json"), meta_text(300), strlen(meta_text(300)));
  // temporary files of interrupted writes, and look-alike names
  spit(dpath("model_000400.safetensors.tmp.a1b2c3"), "x", 1);
  spit(dpath("meta_000400.json.tmp.Zz9Yy8"), "{", 1);
  char *mt = meta_text(500);
  spit(dpath("meta_0000500.json"), mt, strlen(mt));  // not %06d
  spit(dpath("meta_000600.json~"), mt, strlen(mt));
  spit(dpath("meta_00060.json"), mt, strlen(mt));
  spit(dpath("meta_000700.JSON"), mt, strlen(mt));
  spit(dpath("xmeta_000800.json"), mt, strlen(mt));
  ok(nc_checkpoint_save_model(dir, 500, &m));
  ok(nc_checkpoint_save_model(dir, 600, &m));
  mkdir(dpath("meta_000900.json"), 0755);  // a folder, not a file
  ok(nc_checkpoint_save_model(dir, 900, &m));
  cr_assert_eq(latest(), 100);

  nc_tensor_list r;
  nc_tensor_list_init(&r);
  int64_t got;
  ok(nc_checkpoint_load(dir, -1, 0, &r, NULL, NULL, &got));
  cr_assert_eq(got, 100);
  assert_lists_equal(&m, &r);
  nc_tensor_list_free(&r);
  // Large steps print with more than 6 digits and still count.
  save_step(1234567, &m, NULL);
  cr_assert_eq(latest(), 1234567);
  nc_tensor_list_free(&m);
}

// In a child: save step 200 (model 4 MB) with files limited to `limit` bytes;
// SIGXFSZ kills it mid-write, as a crash or power cut would.
static int child_save_killed(rlim_t limit, int64_t step) {
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_DFL);
    struct rlimit rl = {limit, limit};
    setrlimit(RLIMIT_FSIZE, &rl);
    nc_tensor_list l;
    nc_tensor_list_init(&l);
    nc_tensor t;
    if (nc_tensor_alloc(&t, NC_F32, 1, (int64_t[]){1 << 20})) _exit(3);
    if (nc_tensor_list_add(&l, "transformer.wte.weight", &t)) _exit(3);
    nc_status st = nc_checkpoint_save(dir, step, &l, NULL, meta_text(step));
    _exit(st ? 1 : 0);
  }
  int ws;
  cr_assert_eq(waitpid(pid, &ws, 0), pid);
  return ws;
}

Test(checkpoint, interrupted_write_never_affects_previous) {
  nc_tensor_list m, o;
  model_list(&m);
  optim_list(&o);
  save_step(100, &m, &o);
  size_t n0;
  void *model0 = slurp(dpath("model_000100.safetensors"), &n0);

  // A newer step whose model file is truncated and has no meta, plus a temp file.
  size_t n;
  void *b = slurp(dpath("model_000100.safetensors"), &n);
  spit(dpath("model_000200.safetensors"), b, n / 2);
  spit(dpath("model_000300.safetensors.tmp.XYZ123"), b, n / 3);
  free(b);
  cr_assert_eq(latest(), 100);

  // Writers killed at several points while saving steps 400 and 100 itself.
  for (rlim_t lim = 1; lim <= 1u << 20; lim *= 16) {
    int ws = child_save_killed(lim, 400);
    cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGXFSZ);
    ws = child_save_killed(lim, 100);
    cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGXFSZ);
    cr_assert_eq(latest(), 100);
  }
  void *model1 = slurp(dpath("model_000100.safetensors"), &n);
  cr_assert(n == n0 && memcmp(model0, model1, n) == 0, "previous checkpoint damaged");
  free(model1);

  nc_tensor_list rm, ro;
  nc_tensor_list_init(&rm);
  nc_tensor_list_init(&ro);
  int64_t got;
  ok(nc_checkpoint_load(dir, -1, 0, &rm, &ro, NULL, &got));
  cr_assert_eq(got, 100);
  assert_lists_equal(&m, &rm);
  assert_lists_equal(&o, &ro);
  nc_tensor_list bad;
  nc_tensor_list_init(&bad);
  nc_status st = nc_checkpoint_load_model(dir, 200, &bad);
  cr_assert_not_null(st);
  cr_assert_not_null(strstr(nc_status_msg(st), "model_000200.safetensors"));
  nc_status_free(st);
  EXPECT_ERR(nc_checkpoint_load(dir, 200, 0, &bad, NULL, NULL, NULL), "meta_000200.json");
  cr_assert_eq(bad.len, 0);

  free(model0);
  nc_tensor_list_free(&m);
  nc_tensor_list_free(&o);
  nc_tensor_list_free(&rm);
  nc_tensor_list_free(&ro);
}

Test(checkpoint, bad_meta_rejected) {
  nc_tensor_list m;
  model_list(&m);
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"step\": 5,"), "meta_000005.json", "not valid JSON");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"val_bpb\": 1.0}"), "no \"step\"");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"step\": 6}"), "step", "6", "5");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"step\": \"5\"}"), "not an integer");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "[5]"), "not a JSON object");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"step\": 5, \"step\": 5}"), "duplicate");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, "{\"step\": 5, \"n\": \"\xff\"}"), "UTF-8");
  EXPECT_ERR(nc_checkpoint_save(dir, -5, &m, NULL, "{\"step\": -5}"), "out of range");
  EXPECT_ERR(nc_checkpoint_save(dir, 5, &m, NULL, NULL), "NULL meta");
  struct stat sb;
  cr_assert_neq(stat(dir, &sb), 0, "a rejected meta must leave no files (not even the folder)");

  // Corrupted meta on disk: found by name, refused on load.
  save_step(10, &m, NULL);
  save_step(20, &m, NULL);
  spit(dpath("meta_000020.json"), "{\"step\": 20", 11);
  cr_assert_eq(latest(), 20);
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  EXPECT_ERR(nc_checkpoint_load(dir, -1, 0, &r, NULL, NULL, NULL), "meta_000020.json", "not valid JSON");
  cr_assert_eq(r.len, 0);
  spit(dpath("meta_000020.json"), "{\"step\": 21}", 12);
  json_t *j;
  EXPECT_ERR(nc_checkpoint_load_meta(dir, 20, &j), "meta_000020.json", "21", "step 20");
  cr_assert_null(j);
  spit(dpath("meta_000020.json"), "", 0);
  EXPECT_ERR(nc_checkpoint_load_meta(dir, 20, &j), "not valid JSON");
  ok(nc_checkpoint_load(dir, 10, 0, &r, NULL, NULL, NULL));
  assert_lists_equal(&m, &r);
  nc_tensor_list_free(&r);
  nc_tensor_list_free(&m);
}

Test(checkpoint, load_with_no_checkpoint) {
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  EXPECT_ERR(nc_checkpoint_load(dir, -1, 0, &r, NULL, NULL, NULL), "no complete checkpoint");
  ok(nc_checkpoint_mkdir(dir));
  cr_assert_eq(latest(), -1);
  EXPECT_ERR(nc_checkpoint_load(dir, -1, 0, &r, NULL, NULL, NULL), "no complete checkpoint");
  spit(dpath("file"), "x", 1);
  EXPECT_ERR(nc_checkpoint_mkdir(dpath("file")), "file");
  int64_t s;
  EXPECT_ERR(nc_checkpoint_find_latest(dpath("file"), &s), "cannot list");
}
