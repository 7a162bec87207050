// The on-disk kernel cache: round trips, corrupt entries ignored and rebuilt,
// and a compiled plan served from the cache giving identical results.
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ir/build.h"
#include "runtime/cpu.h"
#include "runtime/exec.h"
#include "runtime/kcache.h"

static char dir[256];
static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/nc_kcache_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  setenv("NC_CACHE_DIR", dir, 1);
}
static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}
TestSuite(kcache, .init = setup, .fini = teardown);

static void entry_path(uint64_t key, char *buf, size_t n) {
  snprintf(buf, n, "%s/plan-%016llx.o", dir, (unsigned long long)key);
}

Test(kcache, round_trip_and_corruption) {
  const char payload[] = "not really an object file, but bytes";
  cr_assert_null(nc_kcache_put(42, payload, sizeof payload));
  void *d;
  size_t n;
  cr_assert_null(nc_kcache_get(42, &d, &n));
  cr_assert_not_null(d);
  cr_assert_eq(n, sizeof payload);
  cr_assert(!memcmp(d, payload, n));
  free(d);
  cr_assert_null(nc_kcache_get(43, &d, &n));
  cr_assert_null(d, "another key misses");
  // flip one payload byte: the checksum no longer matches
  char path[512];
  entry_path(42, path, sizeof path);
  FILE *f = fopen(path, "r+b");
  cr_assert_not_null(f);
  fseek(f, -3, SEEK_END);
  fputc('X', f);
  fclose(f);
  cr_assert_null(nc_kcache_get(42, &d, &n));
  cr_assert_null(d, "a corrupt entry is a miss");
  // truncated entry
  cr_assert_null(nc_kcache_put(7, payload, sizeof payload));
  entry_path(7, path, sizeof path);
  cr_assert_eq(truncate(path, 20), 0);
  cr_assert_null(nc_kcache_get(7, &d, &n));
  cr_assert_null(d, "a truncated entry is a miss");
  // an entry stored under the wrong name (another key inside)
  cr_assert_null(nc_kcache_put(8, payload, sizeof payload));
  char p8[512], p9[512];
  entry_path(8, p8, sizeof p8);
  entry_path(9, p9, sizeof p9);
  cr_assert_eq(rename(p8, p9), 0);
  cr_assert_null(nc_kcache_get(9, &d, &n));
  cr_assert_null(d, "the key inside must match");
  setenv("NC_CACHE_DIR", "off", 1);
  cr_assert_null(nc_kcache_put(10, payload, sizeof payload));
  cr_assert_null(nc_kcache_get(42, &d, &n));
  cr_assert_null(d, "disabled cache never hits");
}

#ifndef NC_SANITIZED
static nc_graph *small_graph(void) {
  nc_graph *g = nc_graph_new("kc");
  nc_dim d[2] = {nc_dim_const(37), nc_dim_const(19)};
  nc_id x = nc_leaf(g, NC_OP_INPUT, "x", nc_type_make(NC_F32, 2, d));
  nc_id y = nc_op1(g, NC_OP_TANH, nc_op2(g, NC_OP_MUL, x, x));
  nc_id s = nc_b_reduce(g, NC_OP_REDUCE_SUM, y, 2, false);
  cr_assert_null(nc_graph_set_output(g, "s", s));
  return g;
}

static float run_once(nc_graph *g, bool *hit) {
  nc_device dev = {.kind = NC_DEV_CPU, .threads = 1};
  nc_exec *e;
  nc_status st = nc_exec_new(g, &dev, &e);
  cr_assert_null(st, "%s", nc_status_msg(st));
  (void)hit;
  int64_t shape[2] = {37, 19};
  nc_tensor x, out;
  cr_assert_null(nc_tensor_alloc(&x, NC_F32, 2, shape));
  for (int i = 0; i < 37 * 19; i++) ((float *)x.data)[i] = (float)(i % 11) * 0.1f - 0.5f;
  nc_feed f = {"x", &x};
  cr_assert_null(nc_exec_run(e, &f, 1, &out));
  float v = ((float *)out.data)[5];
  nc_tensor_free(&out);
  nc_tensor_free(&x);
  nc_exec_free(e);
  return v;
}

static int count_entries(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += strncmp(e->d_name, "plan-", 5) == 0;
  if (d) closedir(d);
  return n;
}

Test(kcache, compiled_plans_are_cached_and_rebuilt_when_corrupt) {
  nc_graph *g = small_graph();
  float a = run_once(g, NULL);
  int n = count_entries();
  cr_assert(n >= 1 && n <= 4, "the first compile stores the plan's parts (%d entries)", n);
  float b = run_once(g, NULL);
  cr_assert_eq(a, b, "the cached code computes the same");
  cr_assert_eq(count_entries(), n, "a warm compile stores nothing new");
  // corrupt every entry: the next compile must ignore it and rebuild
  DIR *d = opendir(dir);
  for (struct dirent *e; (e = readdir(d));) {
    if (strncmp(e->d_name, "plan-", 5)) continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r+b");
    fseek(f, 200, SEEK_SET);
    for (int i = 0; i < 64; i++) fputc(0x5a, f);
    fclose(f);
  }
  closedir(d);
  float c = run_once(g, NULL);
  cr_assert_eq(a, c, "rebuilt after corruption");
  nc_graph_free(g);
}
#endif
