// Data-parallel training over MPI: `mpirun -np 2 nanochat base-train` against
// one process accumulating the same micro-batches (losses and final weights
// equal up to float reassociation), and a killed rank: the job fails within a
// timeout and resumes from its last checkpoint. Skipped when the build has no
// MPI or mpirun is missing. (Open MPI's own allocations are not ours to
// sanitize: NC_TEST_NO_ASAN.)
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

#include "pipeline/dist.h"
#include "runtime/checkpoint.h"

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

static void make_data(void) {
  static const char *w[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "slept", "under", "tree"};
  for (int f = 0; f < 2; f++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, f ? "val.txt" : "train.txt");
    FILE *o = fopen(path, "w");
    cr_assert(o);
    unsigned x = f ? 7u : 1u;
    for (int d = 0; d < (f ? 40 : 400); d++) {
      int len = 5 + (int)(x % 40);
      for (int k = 0; k < len; k++) {
        x = x * 1103515245u + 12345u;
        fprintf(o, "%s%s", k ? " " : "", w[(x >> 16) % 15]);
      }
      fprintf(o, ".\n\n");
    }
    fclose(o);
  }
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
           "%s%s/cli/nanochat base-train -q --spec %s/models/specs/d4.xml --data %s/train.txt --val %s/val.txt --out %s/%s "
           "--model-tag t --tokenizer %s/tok/t.tiktoken --num-iterations %d --device-batch-size 2 --seq 32 --total-batch-size 128 "
           "--eval-every 0 --eval-batches 2 --threads 1 %s",
           launcher, getenv("NC_BUILD_DIR"), getenv("NC_SOURCE_DIR"), tmp, tmp, tmp, run, tmp, iters, more);
}

static json_t *losses(const char *run, int step) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/base_checkpoints/t/meta_%06d.json", tmp, run, step);
  json_t *m = json_load_file(path, 0, NULL);
  cr_assert(m, "%s", path);
  json_t *l = json_incref(json_object_get(json_object_get(m, "history"), "train_loss"));
  json_decref(m);
  return l;
}

Test(mpi, two_ranks_equal_one_rank_with_accumulation) {
  if (!have_mpi()) return;
  make_data();
  char c[4096];
  train_cmd(c, sizeof c, 1, "one", 6, "");  // 1 rank: 2 micro-steps of 2 x 32 per step
  cr_assert_eq(sh(c), 0, "%s", out);
  train_cmd(c, sizeof c, 2, "two", 6, "");  // 2 ranks: 1 micro-step each
  cr_assert_eq(sh(c), 0, "%s", out);
  cr_assert(strstr(out, "data parallel over 2 ranks"), "%s", out);
  json_t *a = losses("one", 6), *b = losses("two", 6);
  cr_assert_eq(json_array_size(a), 6);
  cr_assert_eq(json_array_size(b), 6);
  for (size_t i = 0; i < 6; i++) {
    double x = json_number_value(json_array_get(json_array_get(a, i), 1)), y = json_number_value(json_array_get(json_array_get(b, i), 1));
    cr_assert(fabs(x - y) <= 1e-4 * fabs(x), "step %zu: loss %.9g (1 rank) vs %.9g (2 ranks)", i + 1, x, y);
  }
  json_decref(a), json_decref(b);
  char d1[1024], d2[1024];
  snprintf(d1, sizeof d1, "%s/one/base_checkpoints/t", tmp);
  snprintf(d2, sizeof d2, "%s/two/base_checkpoints/t", tmp);
  nc_tensor_list m1, m2;
  nc_tensor_list_init(&m1), nc_tensor_list_init(&m2);
  cr_assert(!nc_checkpoint_load_model(d1, 6, &m1));
  cr_assert(!nc_checkpoint_load_model(d2, 6, &m2));
  cr_assert_eq(m1.len, m2.len);
  double worst = 0;
  for (size_t i = 0; i < m1.len; i++) {
    const float *x = m1.items[i].t.data, *y = m2.items[i].t.data;
    cr_assert_str_eq(m1.items[i].name, m2.items[i].name);
    for (int64_t j = 0; j < nc_tensor_numel(&m1.items[i].t); j++) worst = fmax(worst, fabs(x[j] - y[j]) / (1e-3 + fabs(x[j])));
  }
  cr_assert(worst < 1e-3, "final weights differ by up to %g (relative)", worst);
  nc_tensor_list_free(&m1), nc_tensor_list_free(&m2);
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
  train_cmd(c, sizeof c, 2, "kill", 40, "--save-every 2");
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
  train_cmd(c, sizeof c, 2, "kill", 40, "--save-every 2 --resume");
  cr_assert_eq(sh(c), 0, "%s", out);
  snprintf(meta, sizeof meta, "%s/base_checkpoints/t/meta_000040.json", run_dir);
  cr_assert_eq(access(meta, F_OK), 0, "%s", out);
}
