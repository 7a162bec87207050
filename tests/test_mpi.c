// Data-parallel training over MPI with sharded optimizer state:
// `mpirun -np 2 nanochat base-train` against one process accumulating the
// same micro-batches (losses, final weights and optimizer state equal up to
// float reassociation; each rank's optim file holds its share), a sharded
// resume equal to the uninterrupted run, resumes with another world size
// refused, and a killed rank: the job fails within a timeout and resumes from
// its last checkpoint. The sharding plan is checked against hand-computed
// owners. Reductions issued during the backward pass give the same weights
// as after it; `rl` and `eval base|chat` over 2 ranks give the numbers of 1
// rank; `--device opencl` picks the local rank's GPU. MPI runs are skipped
// when the build has no MPI or mpirun is missing. (Open MPI's own
// allocations are not ours to sanitize: NC_TEST_NO_ASAN.)
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chat/model_io.h"
#include "models/train.h"
#include "pipeline/dist.h"
#include "tests/support/corpus_util.h"
#include "runtime/ocl_device.h"
#include "runtime/checkpoint.h"
#include "runtime/session.h"

static char tmp[256], cmd[8192], out[1 << 16];

static void setup(void) {
  snprintf(tmp, sizeof tmp, "/tmp/nc_test_mpi_XXXXXX");
  cr_assert(mkdtemp(tmp));
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);  // CI runs as root
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
}
static void teardown(void) {
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  cr_assert_eq(system(cmd), 0);
}
TestSuite(mpi, .init = setup, .fini = teardown, .timeout = 900);

static bool have_mpi(void) {
  if (!nc_dist_available() || system("command -v mpirun >/dev/null 2>&1") != 0) {
    cr_log_warn("MPI not available (build without MPI or no mpirun): skipped");
    return false;
  }
  return true;
}

static int sh(const char *c) {
  snprintf(cmd, sizeof cmd, "%s 2>&1", c);
  FILE *p = popen(cmd, "r");
  cr_assert(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int ws = pclose(p);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
}

// A tiny spec with every feature on: replicated small tensors (lambdas,
// gates, the 16x32 k/v matrices) and sharded large ones (embeddings, lm_head,
// value embeds, 32x32 and 32x128 matrices).
static void make_spec(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/spec.xml", tmp);
  FILE *o = fopen(path, "w");
  cr_assert(o);
  fputs("<model version=\"1\" name=\"tiny-dp\">\n"
        "  <dims depth=\"2\" aspect_ratio=\"16\" head_dim=\"16\" n_kv_head=\"1\" vocab_size=\"320\" sequence_len=\"32\"/>\n"
        "  <attention rope_base=\"10000\" window_pattern=\"SL\" short_window=\"16\"/>\n"
        "  <output softcap=\"15\"/>\n"
        "  <features value_embeds=\"on\" resid_lambdas=\"on\" smear=\"on\" backout=\"on\"/>\n"
        "</model>\n",
        o);
  fclose(o);
}

static void make_data(void) {
  make_spec();
  nc_test_write_corpus(tmp);
  char c[2048];
  snprintf(c, sizeof c, "mkdir -p %s/tok && %s/cli/nanochat tok train -q -i %s/train.txt --vocab-size 300 -o %s/tok/t.tiktoken", tmp,
           getenv("NC_BUILD_DIR"), tmp, tmp);
  cr_assert_eq(sh(c), 0, "%s", out);
}

// `[mpirun -np N] nanochat base-train ...` into tmp/<run>.
static void train_cmd(char *buf, size_t n, int np, const char *run, int iters, const char *more) {
  char launcher[256] = "";
  if (np > 1) snprintf(launcher, sizeof launcher, "timeout 300 mpirun -np %d ", np);
  snprintf(buf, n,
           "%s%s/cli/nanochat base-train -q --spec %s/spec.xml --data %s/train.txt --val %s/val.txt --out %s/%s "
           "--model-tag t --tokenizer %s/tok/t.tiktoken --num-iterations %d --device-batch-size 2 --seq 32 --total-batch-size 128 "
           "--eval-every 0 --eval-batches 2 --threads 1 %s",
           launcher, getenv("NC_BUILD_DIR"), tmp, tmp, tmp, tmp, run, tmp, iters, more);
}

// tmp/<run>/base_checkpoints/t, or tmp/<run>/t when run names its stage folder ("mid1/mid_checkpoints").
static void run_dir(char *buf, size_t n, const char *run) {
  snprintf(buf, n, strchr(run, '/') ? "%s/%s/t" : "%s/%s/base_checkpoints/t", tmp, run);
}

static json_t *losses(const char *run, int step) {
  char path[1200], d[1024];
  run_dir(d, sizeof d, run);
  snprintf(path, sizeof path, "%s/meta_%06d.json", d, step);
  json_t *m = json_load_file(path, 0, NULL);
  cr_assert(m, "%s", path);
  json_t *l = json_incref(json_object_get(json_object_get(m, "history"), "train_loss"));
  json_decref(m);
  return l;
}


// Losses of steps 1..n of two runs agree (relative 1e-4).
static void same_losses(const char *ra, const char *rb, int step, int n) {
  json_t *a = losses(ra, step), *b = losses(rb, step);
  cr_assert_eq(json_array_size(a), (size_t)n);
  cr_assert_eq(json_array_size(b), (size_t)n);
  for (size_t i = 0; i < (size_t)n; i++) {
    double x = json_number_value(json_array_get(json_array_get(a, i), 1)), y = json_number_value(json_array_get(json_array_get(b, i), 1));
    cr_assert(fabs(x - y) <= 1e-4 * fabs(x), "step %zu: loss %.9g (%s) vs %.9g (%s)", i + 1, x, ra, y, rb);
  }
  json_decref(a), json_decref(b);
}

// Largest relative difference of tensor x (n elements) from y.
static double rel_diff(const nc_tensor *x, const nc_tensor *y) {
  cr_assert_eq(nc_tensor_numel(x), nc_tensor_numel(y));
  const float *a = x->data, *b = y->data;
  double worst = 0;
  for (int64_t j = 0; j < nc_tensor_numel(x); j++) worst = fmax(worst, fabs(a[j] - b[j]) / (1e-3 + fabs(a[j])));
  return worst;
}

static void same_model(const char *ra, const char *rb, int step, double tol) {
  char d1[1024], d2[1024];
  run_dir(d1, sizeof d1, ra), run_dir(d2, sizeof d2, rb);
  nc_tensor_list m1, m2;
  nc_tensor_list_init(&m1), nc_tensor_list_init(&m2);
  cr_assert(!nc_checkpoint_load_model(d1, step, &m1));
  cr_assert(!nc_checkpoint_load_model(d2, step, &m2));
  cr_assert_eq(m1.len, m2.len);
  for (size_t i = 0; i < m1.len; i++) {
    cr_assert_str_eq(m1.items[i].name, m2.items[i].name);
    double w = rel_diff(&m1.items[i].t, &m2.items[i].t);
    cr_assert(w < tol, "%s: %s and %s differ by up to %g (relative)", m1.items[i].name, ra, rb, w);
  }
  nc_tensor_list_free(&m1), nc_tensor_list_free(&m2);
}

static bool is_small(const nc_tensor *t) { return nc_tensor_numel(t) < 1024; }

Test(mpi, two_ranks_equal_one_rank_with_accumulation) {
  if (!have_mpi()) return;
  make_data();
  char c[4096];
  train_cmd(c, sizeof c, 1, "one", 6, "");  // 1 rank: 2 micro-steps of 2 x 32 per step
  cr_assert_eq(sh(c), 0, "%s", out);
  train_cmd(c, sizeof c, 2, "two", 6, "");  // 2 ranks: 1 micro-step each
  cr_assert_eq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "data parallel over 2 ranks"), "%s", out);
  same_losses("one", "two", 6, 6);
  same_model("one", "two", 6, 1e-3);
  // the optimizer state: rank 0 and rank 1 split the large tensors' state
  // (each exactly once) and both hold the small ones'; together they equal
  // the single process's state
  char d1[1024], d2[1024];
  run_dir(d1, sizeof d1, "one"), run_dir(d2, sizeof d2, "two");
  nc_tensor_list full, r0, r1;
  nc_tensor_list_init(&full), nc_tensor_list_init(&r0), nc_tensor_list_init(&r1);
  cr_assert(!nc_checkpoint_load_optim(d1, 6, 0, &full));
  cr_assert(!nc_checkpoint_load_optim(d2, 6, 0, &r0));
  cr_assert(!nc_checkpoint_load_optim(d2, 6, 1, &r1));
  cr_assert_eq(access(strcat(strcpy(c, d1), "/optim_000006_rank1.safetensors"), F_OK), -1, "one process wrote a rank-1 file");
  size_t shared = 0;
  int64_t share[2] = {0, 0};
  for (size_t i = 0; i < full.len; i++) {
    const char *name = full.items[i].name;
    nc_tensor *a = nc_tensor_list_find(&r0, name), *b = nc_tensor_list_find(&r1, name);
    cr_assert(a || b, "no rank holds '%s'", name);
    const nc_tensor *param_like = &full.items[i].t;  // the state of a param has its shape, but NorMuon's factored second moment
    const char *sm = "muon.second_momentum.";
    if (!strncmp(name, sm, strlen(sm))) {
      char mom[256];
      snprintf(mom, sizeof mom, "muon.momentum.%s", name + strlen(sm));
      cr_assert((param_like = nc_tensor_list_find(&full, mom)), "%s", mom);
    }
    if (is_small(param_like)) cr_assert(a && b, "small '%s' is not replicated", name);
    else cr_assert(!(a && b), "large '%s' is held by both ranks", name);
    shared += a && b;
    if (!(a && b)) share[a ? 0 : 1] += nc_tensor_numel(&full.items[i].t);
    if (a) cr_assert(rel_diff(&full.items[i].t, a) < 1e-2, "'%s' of rank 0 differs from one process", name);
    if (b) cr_assert(rel_diff(&full.items[i].t, b) < 1e-2, "'%s' of rank 1 differs from one process", name);
    if (a && b) cr_assert_eq(memcmp(a->data, b->data, nc_tensor_nbytes(a)), 0, "replicated '%s' differs between the ranks", name);
  }
  cr_assert_eq(r0.len + r1.len, full.len + shared);
  cr_assert(shared > 0 && share[0] > 0 && share[1] > 0);
  double ratio = (double)share[0] / (double)share[1];
  cr_assert(ratio > 0.5 && ratio < 2, "unbalanced shards: %lld vs %lld elements of state", (long long)share[0], (long long)share[1]);
  nc_tensor_list_free(&full), nc_tensor_list_free(&r0), nc_tensor_list_free(&r1);
  json_t *meta = NULL;
  cr_assert(!nc_checkpoint_load_meta(d2, 6, &meta));
  cr_assert_eq(json_integer_value(json_object_get(meta, "optim_world")), 2);
  json_decref(meta);
}

Test(mpi, sharded_resume_equals_the_uninterrupted_run) {
  if (!have_mpi()) return;
  make_data();
  char c[4096];
  train_cmd(c, sizeof c, 2, "two", 6, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  train_cmd(c, sizeof c, 2, "res", 6, "--save-every 3 --stop-after 4");  // checkpoint at 3, stop after 4
  cr_assert_eq(sh(c), 0, "%s", out);
  char d[1024], f[1200];
  run_dir(d, sizeof d, "res");
  snprintf(f, sizeof f, "%s/optim_000003_rank1.safetensors", d);
  cr_assert_eq(access(f, F_OK), 0, "no rank-1 optimizer shard at step 3");
  // another world size is refused, naming both
  train_cmd(c, sizeof c, 1, "res", 6, "--save-every 3 --resume");
  cr_assert_neq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "sharded over 2 ranks") && strstr(out, "mpirun -np 2"), "%s", out);
  train_cmd(c, sizeof c, 2, "res", 6, "--save-every 3 --resume");  // from step 3 (step 4 was not saved)
  cr_assert_eq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "at step 3"), "%s", out);
  same_losses("two", "res", 6, 6);
  same_model("two", "res", 6, 1e-5);
  // a single-process checkpoint is not resumed by 2 ranks
  train_cmd(c, sizeof c, 1, "one", 3, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  train_cmd(c, sizeof c, 2, "one", 6, "--resume");
  cr_assert_neq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "optimizer state of 1 rank but this job has 2"), "%s", out);
}

// mid-train (the conversation path of pipeline/run.c) over 2 ranks equals 1
// rank accumulating, from the same base checkpoint.
Test(mpi, mid_train_two_ranks_equal_one_rank) {
  if (!have_mpi()) return;
  make_data();
  char c[4096], base[1024];
  train_cmd(c, sizeof c, 1, "base", 2, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  run_dir(base, sizeof base, "base");
  static const char *w[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"};
  for (int f = 0; f < 2; f++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, f ? "cval.jsonl" : "conv.jsonl");
    FILE *o = fopen(path, "w");
    cr_assert(o);
    unsigned x = f ? 5u : 3u;
    for (int i = 0; i < (f ? 8 : 40); i++) {
      fputs("{\"messages\": [{\"role\": \"user\", \"content\": \"", o);
      for (int k = 0; k < 4; k++) x = x * 1103515245u + 12345u, fprintf(o, "%s%s", k ? " " : "", w[(x >> 16) % 10]);
      fputs("\"}, {\"role\": \"assistant\", \"content\": \"", o);
      for (int k = 0; k < 6; k++) x = x * 1103515245u + 12345u, fprintf(o, "%s%s", k ? " " : "", w[(x >> 16) % 10]);
      fputs("\"}]}\n", o);
    }
    fclose(o);
  }
  for (int np = 1; np <= 2; np++) {
    snprintf(c, sizeof c,
             "%s%s/cli/nanochat mid-train -q --data %s/conv.jsonl --val %s/cval.jsonl --from %s --out %s/mid%d --model-tag t "
             "--tokenizer %s/tok/t.tiktoken --num-iterations 4 --device-batch-size 2 --seq 32 --total-batch-size 128 --eval-every 0 "
             "--threads 1",
             np > 1 ? "timeout 300 mpirun -np 2 " : "", getenv("NC_BUILD_DIR"), tmp, tmp, base, tmp, np, tmp);
    cr_assert_eq(sh(c), 0, "%s", out);
  }
  cr_assert(strstr(out, "data parallel over 2 ranks"), "%s", out);
  same_losses("mid1/mid_checkpoints", "mid2/mid_checkpoints", 4, 4);
  same_model("mid1/mid_checkpoints", "mid2/mid_checkpoints", 4, 1e-3);
  char f[1200];
  snprintf(f, sizeof f, "%s/mid2/mid_checkpoints/t/optim_000004_rank1.safetensors", tmp);
  cr_assert_eq(access(f, F_OK), 0, "no rank-1 optimizer shard");
}

Test(mpi, partition_balances_whole_tensors) {
  // large ones, largest first, to the least loaded rank; < 1024 replicated (-1)
  int64_t numel[] = {5000, 100, 3000, 3000, 2000, 1023, 1024};
  int owner[7];
  cr_assert(!nc_dist_partition(numel, 7, 2, 1024, owner));
  int want2[] = {0, -1, 1, 1, 0, -1, 1};  // loads 5000/0, 5000/3000, 5000/6000, 7000/6000, 7000/7024
  for (int i = 0; i < 7; i++) cr_assert_eq(owner[i], want2[i], "world 2, tensor %d: rank %d", i, owner[i]);
  cr_assert(!nc_dist_partition(numel, 7, 3, 1024, owner));
  int want3[] = {0, -1, 1, 2, 1, -1, 2};  // 5000/0/0, 5000/3000/0, 5000/3000/3000, 5000/5000/3000, 5000/5000/4024
  for (int i = 0; i < 7; i++) cr_assert_eq(owner[i], want3[i], "world 3, tensor %d: rank %d", i, owner[i]);
  cr_assert(!nc_dist_partition(numel, 7, 1, 0, owner));
  for (int i = 0; i < 7; i++) cr_assert_eq(owner[i], 0);
  nc_status st = nc_dist_partition(numel, 7, 0, 1024, owner);
  cr_assert(st);
  nc_status_free(st);
}

// The pid of a rank process (argv[0] ends in "nanochat", the run folder in its arguments).
static pid_t find_rank(const char *run_dir) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t found = 0;
  while (d && (e = readdir(d)) && !found) {
    char path[300], buf[8192];
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    size_t a0 = strlen(buf);
    if (a0 >= 8 && !strcmp(buf + a0 - 8, "nanochat")) {
      for (size_t i = 0; i < n; i++)
        if (!buf[i]) buf[i] = ' ';
      if (strstr(buf, run_dir)) found = (pid_t)atoi(e->d_name);
    }
  }
  if (d) closedir(d);
  return found;
}

Test(mpi, killed_rank_fails_the_job_and_it_resumes) {
  if (!have_mpi()) return;
  make_data();
  char c[4096], run_dir[512], meta[1024];
  snprintf(run_dir, sizeof run_dir, "%s/kill", tmp);
  train_cmd(c, sizeof c, 2, "kill", 60, "--save-every 2");
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    snprintf(cmd, sizeof cmd, "exec %s >/dev/null 2>&1", c);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  snprintf(meta, sizeof meta, "%s/base_checkpoints/t/meta_000002.json", run_dir);
  for (int i = 0; i < 24000 && access(meta, F_OK) != 0; i++) usleep(5000);
  cr_assert_eq(access(meta, F_OK), 0, "no checkpoint appeared");
  pid_t rank = find_rank(run_dir);
  cr_assert_gt(rank, 0, "no rank process found");
  kill(rank, SIGKILL);
  time_t t0 = time(NULL);
  int ws;
  waitpid(pid, &ws, 0);
  cr_assert(time(NULL) - t0 < 120, "the job took %lds to notice a dead rank", (long)(time(NULL) - t0));
  cr_assert(!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0), "the job succeeded although a rank was killed");
  // resume from the last checkpoint, to the end
  train_cmd(c, sizeof c, 2, "kill", 60, "--save-every 2 --resume");
  cr_assert_eq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "resumed from"), "%s", out);
  snprintf(meta, sizeof meta, "%s/base_checkpoints/t/meta_000060.json", run_dir);
  cr_assert_eq(access(meta, F_OK), 0, "%s", out);
}

static bool only_wte_and_lambdas(const nc_param_desc *p, void *ctx) {
  (void)ctx;
  return !strcmp(p->name, "transformer.wte.weight") || !strcmp(p->name, "resid_lambdas") ||
         !strcmp(p->name, "transformer.h.1.mlp.c_fc.weight");
}
static bool only_nothing(const nc_param_desc *p, void *ctx) { return (void)p, (void)ctx, false; }

// The optimizer graph of a param subset (one rank's share) updates exactly
// those params and their state, with the values of the full optimizer graph
// (both run on the reference interpreter).
Test(mpi, apply_graph_of_a_param_subset) {
  char path[1024];
  snprintf(path, sizeof path, "%s/models/specs/tiny-all.xml", getenv("NC_SOURCE_DIR"));
  nc_model_spec spec;
  cr_assert(!nc_spec_load(path, &spec));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_graph *gall = NULL, *gsub = NULL;
  nc_train_opts all = {.kind = NC_TRAIN_APPLY}, sub = {.kind = NC_TRAIN_APPLY, .only = only_wte_and_lambdas};
  cr_assert(!nc_train_build(&spec, &oc, &all, &gall));
  cr_assert(!nc_train_build(&spec, &oc, &sub, &gsub));
  // outputs: new.<p> and the new state of each of the 3 params (AdamW: 2 moments, NorMuon: momentum and second moment)
  cr_assert_eq(nc_graph_noutputs(gsub), 3 * 3, "%d outputs", nc_graph_noutputs(gsub));
  for (int k = 0; k < nc_graph_noutputs(gsub); k++) {
    const char *n = nc_graph_output_name(gsub, k);
    cr_assert(strstr(n, "wte") || strstr(n, "resid_lambdas") || strstr(n, "h.1.mlp.c_fc"), "unexpected output %s", n);
  }
  nc_param_desc *sd = NULL;
  int ns = 0;
  cr_assert(!nc_train_state_descs_only(&spec, &oc, only_wte_and_lambdas, NULL, &sd, &ns));
  cr_assert_eq(ns, 6);
  free(sd);
  // same session contents for both: params, random grads, random state, scalars
  nc_session *s1 = nc_session_new(), *s2 = nc_session_new();
  cr_assert(!nc_model_init_session(&spec, 7, s1));
  cr_assert(!nc_model_init_session(&spec, 7, s2));
  nc_param_desc *ps = NULL;
  int np = 0;
  cr_assert(!nc_gpt_params(&spec, &ps, &np));
  cr_assert(!nc_train_state_descs(&spec, &oc, &sd, &ns));
  unsigned x = 12345;
  for (int pass = 0; pass < 2; pass++) {
    const nc_param_desc *ds = pass ? sd : ps;
    for (int i = 0; i < (pass ? ns : np); i++) {
      nc_tensor t;
      cr_assert(!nc_tensor_alloc(&t, NC_F32, ds[i].rank, ds[i].shape));
      float *v = t.data;
      for (int64_t j = 0; j < nc_tensor_numel(&t); j++) {
        x = x * 1103515245u + 12345u;
        float u = (float)((x >> 8) & 0xffff) / 65536.0f;  // [0,1)
        bool second = pass && (strstr(ds[i].name, "exp_avg_sq") || strstr(ds[i].name, "second_momentum"));
        v[j] = second ? 1e-3f * u : u - 0.5f;  // second moments are >= 0
      }
      char name[200];
      snprintf(name, sizeof name, "%s%s", pass ? "" : "grad.", ds[i].name);
      cr_assert(!nc_session_put_copy(s1, name, &t));
      cr_assert(!nc_session_put_copy(s2, name, &t));
      nc_tensor_free(&t);
    }
  }
  double lr[NC_GROUP_COUNT], wd[NC_GROUP_COUNT];
  for (int g = 0; g < NC_GROUP_COUNT; g++) lr[g] = 0.01 * (g + 1), wd[g] = 0.1;
  nc_train_scalar sc[NC_TRAIN_NSCALARS];
  nc_train_scalars(&oc, lr, wd, 0.9, 3, 0.5, sc);
  for (int i = 0; i < NC_TRAIN_NSCALARS; i++) {
    cr_assert(!nc_session_put_scalar(s1, sc[i].name, sc[i].value));
    cr_assert(!nc_session_put_scalar(s2, sc[i].name, sc[i].value));
  }
  const nc_tensor *before = nc_session_get(s2, "lm_head.weight");
  cr_assert(before);
  nc_tensor lm_before;
  cr_assert(!nc_tensor_clone(&lm_before, before));
  cr_assert(!nc_session_run(s1, gall));
  cr_assert(!nc_session_run(s2, gsub));
  for (int pass = 0; pass < 2; pass++) {
    const nc_param_desc *ds = pass ? sd : ps;
    for (int i = 0; i < (pass ? ns : np); i++) {
      const char *n = ds[i].name;
      if (!(strstr(n, "transformer.wte.weight") || strstr(n, "resid_lambdas") || strstr(n, "h.1.mlp.c_fc"))) continue;
      const nc_tensor *a = nc_session_get(s1, n), *b = nc_session_get(s2, n);
      cr_assert(a && b, "%s", n);
      cr_assert_eq(memcmp(a->data, b->data, nc_tensor_nbytes(a)), 0, "%s: the subset graph differs from the full one", n);
    }
  }
  // a param outside the subset is left alone
  const nc_tensor *after = nc_session_get(s2, "lm_head.weight");
  cr_assert_eq(memcmp(after->data, lm_before.data, nc_tensor_nbytes(after)), 0);
  cr_assert_neq(memcmp(nc_session_get(s1, "lm_head.weight")->data, lm_before.data, nc_tensor_nbytes(after)), 0);
  nc_tensor_free(&lm_before);
  // bad uses: a subset of the forward+backward graphs, or of nothing
  nc_graph *bad = NULL;
  nc_train_opts step_sub = {.kind = NC_TRAIN_STEP, .only = only_wte_and_lambdas}, none = {.kind = NC_TRAIN_APPLY, .only = only_nothing};
  nc_status st = nc_train_build(&spec, &oc, &step_sub, &bad);
  cr_assert(st && strstr(nc_status_msg(st), "APPLY"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  st = nc_train_build(&spec, &oc, &none, &bad);
  cr_assert(st && strstr(nc_status_msg(st), "selects none"), "%s", st ? nc_status_msg(st) : "ok");
  nc_status_free(st);
  cr_assert_null(bad);
  free(ps), free(sd);
  nc_session_free(s1), nc_session_free(s2);
  nc_graph_free(gall), nc_graph_free(gsub);
}

// ---- overlap of the gradient reductions with the backward pass ---------------------

// The same 2-rank run with the reductions issued from the backward pass (the
// default) and after it (NC_DP_OVERLAP=0): identical buckets and
// collectives, so identical weights, and the overlapped run did issue
// buckets while backward ran.
static void overlap_equals_plain(const char *more, const char *ovl, const char *pln) {
  make_data();
  char c[4096], e[4200], opts[512], path[600];
  snprintf(opts, sizeof opts, "--total-batch-size 256 %s", more);  // 2 micro-steps per rank: the hook runs on the second
  train_cmd(c, sizeof c, 2, ovl, 4, opts);
  cr_assert_eq(sh(c), 0, "%s", out);
  const char *st = strstr(out, "gradient buckets issued during backward");
  cr_assert(st, "%s", out);
  const char *p = st;
  while (p > out && p[-1] != ',') p--;  // "..., N gradient buckets issued during backward"
  cr_assert_gt(atol(p + 1), 0, "no bucket was issued during backward: %s", out);
  snprintf(e, sizeof e, "NC_DP_OVERLAP=0 %s", c);
  snprintf(path, sizeof path, "/%s ", ovl);
  char *slash = strstr(e, path);
  cr_assert(slash);
  memcpy(slash + 1, pln, strlen(pln));  // the same command into tmp/<pln> (same length)
  cr_assert_eq(sh(e), 0, "%s", out);
  cr_assert(strstr(out, ", 0 gradient buckets issued during backward"), "%s", out);
  same_losses(ovl, pln, 4, 4);
  same_model(ovl, pln, 4, 1e-7);
}

Test(mpi, overlapped_reductions_equal_the_plain_ones) {
  if (!have_mpi()) return;
  overlap_equals_plain("", "ovl", "pln");
}

// The same on OpenCL (PoCL here, the GPU of each rank elsewhere): the hook's
// reads of finished gradients into the pinned bucket buffer, the reductions
// started as the reads land, the accumulators zeroed on the device, the
// params broadcast into their pinned host memory.
Test(mpi, overlapped_reductions_on_opencl_equal_the_plain_ones) {
  if (!have_mpi()) return;
  if (!nc_ocl_available()) {
    cr_log_warn("no OpenCL device: skipped");
    return;
  }
  overlap_equals_plain("--device opencl", "ocl_ovl", "ocl_pln");
}

// ---- rl over ranks ----------------------------------------------------------------

// A tiny model that has seen "#### 1" and "#### 2" a lot, so sampled answers
// are sometimes right and sometimes wrong (nonzero advantages), and
// questions whose answers are 1 or 2: `rl` over 2 ranks (each samples every
// other question of a step) equals 1 rank: the same rewards, pass@k and,
// up to float reassociation, final weights.
Test(mpi, rl_two_ranks_equal_one_rank) {
  if (!have_mpi()) return;
  make_spec();
  char path[512], c[4096];
  snprintf(path, sizeof path, "%s/train.txt", tmp);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  unsigned x = 7;
  for (int d = 0; d < 200; d++) {
    for (int k = 0; k < 8; k++) x = x * 1103515245u + 12345u, fprintf(f, "%s#### %d", k ? " " : "", 1 + (int)((x >> 16) % 2));
    fputs("\n\n", f);
  }
  fclose(f);
  snprintf(c, sizeof c, "cp %s/train.txt %s/val.txt && mkdir -p %s/tok && %s/cli/nanochat tok train -q -i %s/train.txt --vocab-size 300 -o %s/tok/t.tiktoken",
           tmp, tmp, tmp, getenv("NC_BUILD_DIR"), tmp, tmp);
  cr_assert_eq(sh(c), 0, "%s", out);
  train_cmd(c, sizeof c, 1, "base", 150, "--unembedding-lr 0.05 --matrix-lr 0.05");
  cr_assert_eq(sh(c), 0, "%s", out);
  char base[1024];
  run_dir(base, sizeof base, "base");
  snprintf(c, sizeof c, "cp %s/tok/t.tiktoken %s/tokenizer.tiktoken", tmp, base);
  cr_assert_eq(sh(c), 0, "%s", out);
  snprintf(path, sizeof path, "%s/q.jsonl", tmp);
  f = fopen(path, "w");
  cr_assert(f);
  for (int i = 0; i < 8; i++)
    fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"q%d\"}, {\"role\": \"assistant\", \"content\": \"#### %d\"}]}\n", i, 1 + i % 2);
  fclose(f);
  static char logs[2][8192];  // the "rl step" lines (rewards, pass@k) without their times
  for (int np = 1; np <= 2; np++) {
    snprintf(c, sizeof c,
             "%s%s/cli/nanochat rl --data %s/q.jsonl --from %s --out %s/rl%d --model-tag t --num-iterations 3 --examples-per-step 4 "
             "--samples 4 --max-new-tokens 6 --eval-every 1 --eval-examples 3 --eval-k 2 --save-every 0 --device interp --lr-frac 0.1",
             np > 1 ? "timeout 300 mpirun -np 2 " : "", getenv("NC_BUILD_DIR"), tmp, base, tmp, np);
    cr_assert_eq(sh(c), 0, "%s", out);
    char *lg = logs[np - 1];
    lg[0] = 0;
    for (const char *l = strstr(out, "rl step "); l; l = strstr(l + 1, "\nrl step ")) {
      if (*l == '\n') l++;
      size_t n = strcspn(l, "\n"), cut = n;
      const char *bar = memchr(l, '|', n);
      if (bar && (bar = memchr(bar + 1, '|', (size_t)(l + n - bar - 1)))) cut = (size_t)(bar - l);  // drop "| 0.1 s"
      snprintf(lg + strlen(lg), 8192 - strlen(lg), "%.*s\n", (int)cut, l);
    }
  }
  cr_assert(strstr(out, "data parallel: each rank samples every world-th question"), "%s", out);
  cr_assert_str_eq(logs[0], logs[1], "1 rank:\n%s2 ranks:\n%s", logs[0], logs[1]);
  // the steps had something to learn from: some answers right, some wrong
  const char *s1 = strstr(logs[0], "rl step 1/3 | mean reward ");
  cr_assert(s1, "%s", logs[0]);
  double r1 = atof(s1 + strlen("rl step 1/3 | mean reward "));
  cr_assert(r1 > 0 && r1 < 1, "step 1 rewards are all %g: no advantage to learn from\n%s", r1, logs[0]);
  // matrices and embeddings (Muon, or AdamW on many elements) within 1e-3; the
  // scalars (AdamW on a handful of elements) looser: Adam's first steps are
  // about lr x sign(g), and a scalar's gradient summed from advantages of both
  // signs can nearly cancel, so reassociation moves its update visibly
  char d1[1024], d2[1024];
  run_dir(d1, sizeof d1, "rl1/chatrl_checkpoints"), run_dir(d2, sizeof d2, "rl2/chatrl_checkpoints");
  nc_tensor_list m1, m2;
  nc_tensor_list_init(&m1), nc_tensor_list_init(&m2);
  cr_assert(!nc_checkpoint_load_model(d1, 3, &m1));
  cr_assert(!nc_checkpoint_load_model(d2, 3, &m2));
  cr_assert_eq(m1.len, m2.len);
  for (size_t i = 0; i < m1.len; i++) {
    double w = rel_diff(&m1.items[i].t, &m2.items[i].t), tol = nc_tensor_numel(&m1.items[i].t) < 16 ? 5e-2 : 1e-3;
    cr_assert(w < tol, "%s: 1 and 2 ranks differ by up to %g (relative)", m1.items[i].name, w);
  }
  nc_tensor_list_free(&m1), nc_tensor_list_free(&m2);
  // and the weights moved: the steps were real
  nc_tensor_list a, b;
  nc_tensor_list_init(&a), nc_tensor_list_init(&b);
  cr_assert(!nc_checkpoint_load_model(d1, 3, &a));
  cr_assert(!nc_checkpoint_load_model(base, 150, &b));
  double moved = 0;
  for (size_t i = 0; i < a.len; i++) moved = fmax(moved, rel_diff(&b.items[i].t, &a.items[i].t));
  cr_assert(moved > 1e-4, "rl did not change the weights (%g)", moved);
  nc_tensor_list_free(&a), nc_tensor_list_free(&b);
}

// `rl --precision bf16` (one process): the sampling engine and the training
// graphs run nanochat's bf16 model, and the checkpoint's spec says so; fp32
// keeps the base model's fp32.
Test(mpi, rl_precision_flag_reaches_the_checkpoint) {
  make_data();
  char c[4096], path[600];
  train_cmd(c, sizeof c, 1, "base", 2, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  snprintf(path, sizeof path, "%s/q.jsonl", tmp);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  for (int i = 0; i < 8; i++)
    fprintf(f, "{\"messages\": [{\"role\": \"user\", \"content\": \"q%d\"}, {\"role\": \"assistant\", \"content\": \"#### %d\"}]}\n", i, 1 + i % 2);
  fclose(f);
  const char *prec[2] = {"bf16", "fp32"};
  for (int k = 0; k < 2; k++) {
    snprintf(c, sizeof c,
             "%s/cli/nanochat rl --data %s/q.jsonl --from %s/base/base_checkpoints/t --out %s/rl_%s --model-tag t --num-iterations 1 "
             "--examples-per-step 2 --samples 2 --max-new-tokens 4 --eval-every 0 --eval-examples 1 --eval-k 1 --threads 1 --precision %s",
             getenv("NC_BUILD_DIR"), tmp, tmp, tmp, prec[k], prec[k]);
    cr_assert_eq(sh(c), 0, "%s", out);
    snprintf(path, sizeof path, "%s/rl_%s/chatrl_checkpoints/t/meta_000001.json", tmp, prec[k]);
    json_t *m = json_load_file(path, 0, NULL);
    cr_assert(m, "%s", path);
    char *txt = json_dumps(m, 0);
    bool bf16 = strstr(txt, "compute=\\\"bf16\\\"") != NULL;
    cr_assert_eq(bf16, k == 0, "rl --precision %s: checkpoint spec %s bf16: %.400s", prec[k], bf16 ? "says" : "does not say", txt);
    free(txt);
    json_decref(m);
  }
}

// ---- eval over ranks ----------------------------------------------------------------

// `eval base` over 2 ranks (CORE's examples strided, the counts summed)
// writes the same numbers as 1 rank. Skipped without the eval bundle.
Test(mpi, eval_base_two_ranks_equal_one_rank) {
  if (!have_mpi()) return;
  const char *sh_dir = getenv("NC_SHARED_DIR");
  char bundle[1024], c[4096], d[1024];
  snprintf(bundle, sizeof bundle, "%s/data/eval/core", sh_dir && *sh_dir ? sh_dir : "../shared");
  snprintf(c, sizeof c, "%s/core.yaml", bundle);
  if (access(c, R_OK) != 0) {
    cr_log_warn("no eval bundle at %s: skipped", bundle);
    return;
  }
  make_data();
  train_cmd(c, sizeof c, 1, "base", 4, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  run_dir(d, sizeof d, "base");
  json_t *j[2];
  for (int np = 1; np <= 2; np++) {
    snprintf(c, sizeof c,
             "mkdir -p %s/ev%d && %s%s/cli/nanochat eval base --ckpt %s --tokenizer %s/tok/t.tiktoken --bundle %s "
             "--tasks copa,winograd,lambada_openai --max-per-task 7 --device interp --out %s/ev%d",
             tmp, np, np > 1 ? "timeout 300 mpirun -np 2 " : "", getenv("NC_BUILD_DIR"), d, tmp, bundle, tmp, np);
    cr_assert_eq(sh(c), 0, "%s", out);
    char jp[1100];
    snprintf(jp, sizeof jp, "%s/ev%d/eval_base.json", tmp, np);
    cr_assert((j[np - 1] = json_load_file(jp, 0, NULL)), "%s", jp);
  }
  cr_assert(strstr(out, "strided over the ranks"), "%s", out);
  json_t *t1 = json_object_get(j[0], "tasks"), *t2 = json_object_get(j[1], "tasks");
  cr_assert_eq(json_object_size(t1), 3);
  const char *label;
  json_t *v;
  json_object_foreach(t1, label, v) {
    json_t *w = json_object_get(t2, label);
    cr_assert(w, "%s missing with 2 ranks", label);
    cr_assert_eq(json_integer_value(json_object_get(v, "n")), 7, "%s", label);
    cr_assert_eq(json_integer_value(json_object_get(w, "n")), 7, "%s: 2 ranks scored %lld examples", label,
                 (long long)json_integer_value(json_object_get(w, "n")));
    double a = json_number_value(json_object_get(v, "accuracy")), b = json_number_value(json_object_get(w, "accuracy"));
    cr_assert_float_eq(a, b, 1e-12, "%s: accuracy %g (1 rank) vs %g (2 ranks)", label, a, b);
  }
  double c1 = json_number_value(json_object_get(j[0], "core")), c2 = json_number_value(json_object_get(j[1], "core"));
  cr_assert_float_eq(c1, c2, 1e-12, "CORE %g vs %g", c1, c2);
  json_decref(j[0]), json_decref(j[1]);
  // splitting by hand and by mpirun at once is refused
  snprintf(c, sizeof c, "timeout 300 mpirun -np 2 %s/cli/nanochat eval base --ckpt %s --tokenizer %s/tok/t.tiktoken --bundle %s --rank 0 --world 2",
           getenv("NC_BUILD_DIR"), d, tmp, bundle);
  cr_assert_neq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "under mpirun"), "%s", out);
  // --precision bf16 (one rank): the checkpoint's fp32 model computed in bf16, the same examples scored
  snprintf(c, sizeof c,
           "mkdir -p %s/evb && %s/cli/nanochat eval base --ckpt %s --tokenizer %s/tok/t.tiktoken --bundle %s "
           "--tasks copa,winograd,lambada_openai --max-per-task 7 --device interp --precision bf16 --out %s/evb",
           tmp, getenv("NC_BUILD_DIR"), d, tmp, bundle, tmp);
  cr_assert_eq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, ", bf16) on interp"), "%s", out);
  char jp[1100];
  snprintf(jp, sizeof jp, "%s/evb/eval_base.json", tmp);
  json_t *jb = json_load_file(jp, 0, NULL);
  cr_assert(jb, "%s", jp);
  json_object_foreach(json_object_get(jb, "tasks"), label, v) cr_assert_eq(json_integer_value(json_object_get(v, "n")), 7, "bf16: %s", label);
  json_decref(jb);
}

// `eval chat` over 2 ranks (problems strided, counts summed) writes the same
// numbers as 1 rank: MMLU (categorical) and GSM8K (generative). Skipped
// without the eval data.
Test(mpi, eval_chat_two_ranks_equal_one_rank) {
  if (!have_mpi()) return;
  const char *sh_dir = getenv("NC_SHARED_DIR");
  char data[1024], c[4096], d[1200];
  snprintf(data, sizeof data, "%s/data/eval", sh_dir && *sh_dir ? sh_dir : "../shared");
  snprintf(c, sizeof c, "%s/gsm8k/test.jsonl.gz", data);
  snprintf(d, sizeof d, "%s/mmlu", data);
  if (access(c, R_OK) != 0 || access(d, R_OK) != 0) {
    cr_log_warn("no chat eval data under %s: skipped", data);
    return;
  }
  make_data();
  train_cmd(c, sizeof c, 1, "base", 4, "");
  cr_assert_eq(sh(c), 0, "%s", out);
  run_dir(d, sizeof d, "base");
  json_t *j[2];
  for (int np = 1; np <= 2; np++) {
    snprintf(c, sizeof c,
             "mkdir -p %s/ec%d && %s%s/cli/nanochat eval chat --ckpt %s --tokenizer %s/tok/t.tiktoken --data %s --tasks MMLU,GSM8K "
             "--max-per-task 5 -m 6 --device interp --out %s/ec%d",
             tmp, np, np > 1 ? "timeout 300 mpirun -np 2 " : "", getenv("NC_BUILD_DIR"), d, tmp, data, tmp, np);
    cr_assert_eq(sh(c), 0, "%s", out);
    char jp[1100];
    snprintf(jp, sizeof jp, "%s/ec%d/eval_chat.json", tmp, np);
    cr_assert((j[np - 1] = json_load_file(jp, 0, NULL)), "%s", jp);
  }
  json_t *t1 = json_object_get(j[0], "tasks"), *t2 = json_object_get(j[1], "tasks");
  const char *task[] = {"MMLU", "GSM8K"};
  for (int k = 0; k < 2; k++) {
    json_t *v = json_object_get(t1, task[k]), *w = json_object_get(t2, task[k]);
    cr_assert(v && w, "%s missing", task[k]);
    cr_assert_eq(json_integer_value(json_object_get(v, "n")), 5, "%s", task[k]);
    cr_assert_eq(json_integer_value(json_object_get(w, "n")), 5, "%s: 2 ranks scored %lld problems", task[k],
                 (long long)json_integer_value(json_object_get(w, "n")));
    double a = json_number_value(json_object_get(v, "accuracy")), b = json_number_value(json_object_get(w, "accuracy"));
    cr_assert_float_eq(a, b, 1e-12, "%s: accuracy %g (1 rank) vs %g (2 ranks)", task[k], a, b);
  }
  double c1 = json_number_value(json_object_get(j[0], "chatcore")), c2 = json_number_value(json_object_get(j[1], "chatcore"));
  cr_assert_float_eq(c1, c2, 1e-12, "ChatCORE %g vs %g", c1, c2);
  json_decref(j[0]), json_decref(j[1]);
  snprintf(c, sizeof c, "timeout 300 mpirun -np 2 %s/cli/nanochat eval chat --ckpt %s --tokenizer %s/tok/t.tiktoken --data %s --rank 1 --world 2",
           getenv("NC_BUILD_DIR"), d, tmp, data);
  cr_assert_neq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "under mpirun"), "%s", out);
}

// ---- one GPU per rank ---------------------------------------------------------------------

// nc_dist_pick_device: with more than one rank, `opencl` and `opencl:gpu`
// become the GPU of the local rank (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK);
// explicit selectors, other devices and a world of one stay as given; no GPU
// at all: `opencl` stays (the first device), `opencl:gpu` is an error naming
// the rank. (A fake world: no MPI call is made when the launcher's local rank
// variables are set.)
Test(mpi, device_of_the_local_rank) {
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  nc_dist two = {.rank = 3, .world = 4, .mpi = false}, one = {.rank = 0, .world = 1, .mpi = false};
  int lr = -1, ls = -1;
  cr_assert(!nc_dist_local(&two, &lr, &ls));
  cr_assert(lr == 1 && ls == 2, "local rank %d of %d", lr, ls);
  char note[256];
  const char *keep[] = {"opencl:0", "opencl:pocl", "cpu", "interp"};
  for (int i = 0; i < 4; i++) {
    nc_device d;
    cr_assert(!nc_device_parse(keep[i], &d));
    nc_device before = d;
    cr_assert(!nc_dist_pick_device(&two, &d, note, sizeof note));
    cr_assert_str_eq(nc_device_name(&d), nc_device_name(&before), "%s became %s", keep[i], nc_device_name(&d));
    cr_assert_str_eq(note, "");
  }
  nc_device d;
  cr_assert(!nc_device_parse("opencl:gpu", &d));
  cr_assert(!nc_dist_pick_device(&one, &d, note, sizeof note));  // one rank: as given
  cr_assert_str_eq(d.select, "gpu");
  // the GPUs of this machine, in `nanochat devices` order
  int gpus[64], ngpu = 0;
  for (int i = 0; i < 64; i++) {
    char sel[16];
    snprintf(sel, sizeof sel, "%d", i);
    nc_ocl_device_desc dd;
    nc_status st = nc_ocl_select(sel, &dd);
    if (st) {
      nc_status_free(st);
      break;
    }
    if (dd.gpu) gpus[ngpu++] = i;
  }
  for (int k = 0; k < 2; k++) {
    cr_assert(!nc_device_parse(k ? "opencl:gpu" : "opencl", &d));
    nc_status st = nc_dist_pick_device(&two, &d, note, sizeof note);
    if (ngpu) {  // local rank 1: the second GPU (or the only one)
      cr_assert(!st, "%s", nc_status_msg(st));
      char want[16];
      snprintf(want, sizeof want, "%d", gpus[1 % ngpu]);
      cr_assert_str_eq(d.select, want);
      cr_assert(strstr(note, "rank 3 (local rank 1 of 2"), "%s", note);
    } else if (k == 0) {  // no GPU: every rank on the first device
      cr_assert(!st, "%s", nc_status_msg(st));
      cr_assert_str_eq(d.select, "");
    } else {
      cr_assert(st && strstr(nc_status_msg(st), "rank 3") && strstr(nc_status_msg(st), "no OpenCL GPU"), "%s", st ? nc_status_msg(st) : "ok");
      nc_status_free(st);
    }
  }
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
}
