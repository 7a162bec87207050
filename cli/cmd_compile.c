// nanochat compile FILE [--train] -o DIR: an ahead-of-time plan (runtime/aot.h):
// the graph, its kernels as an object file, the symbol table to link with it
// and a manifest the LLVM-free loader checks.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/load.h"
#include "codegen/jit.h"
#include "ir/text.h"
#include "runtime/aot.h"
#include "runtime/cpu.h"
#include "support/clock.h"

static void nc_compile_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat compile FILE -o DIR [--train] [--avx2]\n"
          "\n"
          "Compiles FILE ahead of time for this CPU into DIR (created if missing):\n"
          "  graph.ncir       the graph (text IR)\n"
          "  plan.o           its kernels and GEMMs (relocatable object file)\n"
          "  plan_symbols.c   the table of plan.o's symbols, for nc_aot_load\n"
          "  manifest.json    format version, target CPU and features, LLVM version,\n"
          "                   GEMM knobs, layout key, kernels and symbols\n"
          "Link plan.o + plan_symbols.c into a program and load DIR with\n"
          "nc_aot_load (runtime/aot.h): it runs without LLVM. See docs/runtime.md.\n"
          "\n"
          "FILE is a text IR (.ncir) or XML graph, or a model spec (XML with a <model>\n"
          "root), built into its forward graph (logits and loss).\n"
          "\n"
          "  -o, --output DIR   the plan folder (required)\n"
          "      --train        FILE is a model spec: compile the whole training step\n"
          "      --avx2         AVX2 code only (runs on CPUs without AVX-512)\n"
          "  -v, --verbose      print each kernel's kernel IR on stderr\n"
          "  -h, --help         this help\n");
}

static int nc_compile_fail(nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat compile: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

// DIR exists (or is created) and is a writable folder.
static nc_status nc_compile_dir(const char *dir) {
  struct stat sb;
  if (mkdir(dir, 0755) && errno != EEXIST) return nc_errorf(NC_E_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
  if (stat(dir, &sb)) return nc_errorf(NC_E_IO, "%s: %s", dir, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) return nc_errorf(NC_E_IO, "%s: not a folder", dir);
  if (access(dir, W_OK)) return nc_errorf(NC_E_IO, "%s: folder is not writable: %s", dir, strerror(errno));
  return NC_OK;
}

static nc_status nc_compile_path(const char *dir, const char *name, char *out, size_t n) {
  if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) return nc_errorf(NC_E_INVALID, "%s: path too long", dir);
  return NC_OK;
}

// plan.o, written through a temporary file and renamed into place.
static nc_status nc_compile_object(const nc_plan *p, const nc_cpu_opts *co, const char *path, nc_gemm_knobs *kn,
                                   nc_cpu_layout *L) {
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  nc_status st = nc_cpu_emit_object(p, co, tmp, kn, L);
  if (!st) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd)) st = nc_errorf(NC_E_IO, "%s: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    if (!st && rename(tmp, path)) st = nc_errorf(NC_E_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (st) nc_cpu_layout_free(L);
  }
  if (st) unlink(tmp);
  return st;
}

// The target the object was generated for, as nc_cpu_emit_object saw it; the
// layout key is recomputed from it (the loader does the same).
static nc_status nc_compile_target(const nc_plan *p, const nc_cpu_layout *L, const nc_gemm_knobs *kn, bool avx2,
                                   nc_aot_target *t) {
  nc_jit_options jo = {.avx2_only = avx2, .no_jit = true};
  nc_jit *jit;
  NC_TRY(nc_jit_create(&jo, &jit));
  const nc_host_cpu *hc = nc_jit_cpu(jit);
  memset(t, 0, sizeof *t);
  snprintf(t->llvm_version, sizeof t->llvm_version, "%s", hc->llvm_version);
  snprintf(t->cpu, sizeof t->cpu, "%s", hc->cpu);
  snprintf(t->features, sizeof t->features, "%s", hc->features);
  nc_jit_free(jit);
  t->avx2_only = avx2;
  t->knobs = *kn;
  nc_cpu_layout L2;
  NC_TRY(nc_cpu_layout_build(p, t->llvm_version, t->cpu, t->features, avx2, kn, &L2));
  bool same = L2.key == L->key;
  nc_cpu_layout_free(&L2);
  if (!same) return nc_errorf(NC_E_INTERNAL, "the layout key of the target differs from the object's (CPU query unstable?)");
  return NC_OK;
}

static nc_status nc_compile_write(const char *dir, const char *name, nc_buf *b) {
  char path[1100];
  NC_TRY(nc_compile_path(dir, name, path, sizeof path));
  if (b->oom) return nc_errorf(NC_E_NOMEM, "out of memory printing %s", path);
  return nc_file_write_atomic(path, b->data ? b->data : "", b->len);
}

static nc_status nc_compile_run(const char *file, bool train, const char *dir, const nc_cpu_opts *co, int *nkernels,
                                int *nunique) {
  NC_TRY(nc_compile_dir(dir));
  char opath[1100];
  NC_TRY(nc_compile_path(dir, NC_AOT_OBJECT, opath, sizeof opath));
  nc_graph *g = NULL, *lowered = NULL;
  nc_plan *plan = NULL;
  nc_status st = nc_cli_load_graph(file, train, &g);
  if (!st) st = nc_graph_verify(g);
  nc_buf text, man, sym;
  nc_buf_init(&text);
  nc_buf_init(&man);
  nc_buf_init(&sym);
  if (!st) st = nc_graph_print_text(g, &text);
  if (!st) st = nc_aot_plan_build(g, &lowered, &plan);
  if (st) goto done;
  nc_gemm_knobs kn;
  nc_cpu_layout L;
  st = nc_compile_object(plan, co, opath, &kn, &L);
  if (st) goto done;
  nc_aot_target t;
  st = nc_compile_target(plan, &L, &kn, co->avx2_only, &t);
  if (!st) st = nc_aot_manifest_text(g, plan, &L, &t, &man);
  if (!st) st = nc_aot_symbols_c(plan, &L, &sym);
  *nkernels = plan->nkernels;
  *nunique = L.nunique;
  nc_cpu_layout_free(&L);
  // the manifest last: a folder with a manifest is complete
  if (!st) st = nc_compile_write(dir, NC_AOT_GRAPH, &text);
  if (!st) st = nc_compile_write(dir, NC_AOT_SYMBOLS_C, &sym);
  if (!st) st = nc_compile_write(dir, NC_AOT_MANIFEST, &man);
done:
  nc_buf_free(&text);
  nc_buf_free(&man);
  nc_buf_free(&sym);
  nc_plan_free(plan);
  nc_graph_free(lowered);
  nc_graph_free(g);
  return st;
}

int nc_cmd_compile(int argc, char **argv) {
  static const struct option opts[] = {{"output", required_argument, 0, 'o'}, {"train", no_argument, 0, 'R'},
                                       {"avx2", no_argument, 0, 'A'},         {"verbose", no_argument, 0, 'v'},
                                       {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  const char *dir = NULL;
  bool train = false;
  nc_cpu_opts co = {0};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
    switch (c) {
      case 'o': dir = optarg; break;
      case 'R': train = true; break;
      case 'A': co.avx2_only = true; break;
      case 'v': co.verbose = true; break;
      case 'h': nc_compile_usage(stdout); return 0;
      default: nc_compile_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "nanochat compile: expected exactly one FILE\n");
    nc_compile_usage(stderr);
    return 2;
  }
  if (!dir || !*dir) {
    fprintf(stderr, "nanochat compile: -o DIR is required (the plan folder)\n");
    nc_compile_usage(stderr);
    return 2;
  }
  double t0 = nc_clock_now();
  int nk = 0, nu = 0;
  nc_status st = nc_compile_run(argv[optind], train, dir, &co, &nk, &nu);
  if (st) return nc_compile_fail(st);
  printf("compiled %s: %d kernels (%d unique) into %s in %.2f s\n", argv[optind], nk, nu, dir, nc_clock_now() - t0);
  return 0;
}
