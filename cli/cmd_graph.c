// nanochat graph dump|check: read a graph (text IR or XML), run passes, print.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/load.h"
#include "frontend/spec.h"
#include "ir/graphio.h"
#include "models/train.h"
#include "passes/lower.h"
#include "passes/memplan.h"
#include "runtime/exec.h"
#include "passes/pass.h"
#include "support/buf.h"

static void nc_graph_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat graph <dump|check> FILE [options]\n"
          "\n"
          "  dump FILE    print the graph (text IR, XML or Graphviz DOT)\n"
          "  check FILE   parse, verify and summarize: nodes, ops, parameters, bytes\n"
          "\n"
          "FILE is a text IR (.ncir) or XML graph, or a model spec (XML with a <model>\n"
          "root), which is built into its forward graph (or its training step with --train).\n"
          "Run 'nanochat graph dump --help' for dump's options.\n");
}

static void nc_dump_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat graph dump FILE [options]\n"
          "\n"
          "  -f, --format FMT     text (default), xml or dot\n"
          "      --train          FILE is a model spec: dump the whole training step\n"
          "  -o, --output PATH    write to PATH (atomically) instead of stdout\n"
          "  -p, --passes LIST    run these passes first (comma-separated)\n"
          "      --after PASS     print the IR after PASS (\"*\" = every pass) on stderr;\n"
          "                       'lower' prints the fused kernels (kernel IR) instead of the\n"
          "                       graph, 'memplan' the memory plan under --bind\n"
          "      --bind B=2,T=16  symbol sizes for --after memplan (default: every symbol 1)\n"
          "      --device DEV     lower/memplan with DEV's fusion patterns (cpu default; opencl: flash attention)\n"
          "      --before PASS    print the IR before PASS on stderr\n"
          "      --stop-after N   run only the first N passes of the list\n"
          "      --timing         print per-pass timing on stderr\n"
          "      --list-passes    list the registered passes and exit\n"
          "  -h, --help           this help\n");
}

static int nc_fail(nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

static int nc_graph_dump(int argc, char **argv) {
  static const struct option opts[] = {
      {"format", required_argument, 0, 'f'}, {"output", required_argument, 0, 'o'},
      {"passes", required_argument, 0, 'p'}, {"after", required_argument, 0, 'A'},
      {"before", required_argument, 0, 'B'}, {"stop-after", required_argument, 0, 'S'},
      {"timing", no_argument, 0, 'T'},       {"list-passes", no_argument, 0, 'L'},
      {"train", no_argument, 0, 'R'},        {"bind", required_argument, 0, 'b'},
      {"help", no_argument, 0, 'h'},         {"device", required_argument, 0, 'D'}, {0, 0, 0, 0}};
  const char *bind = NULL, *device = NULL;
  nc_graph_format fmt = NC_FMT_TEXT;
  bool train = false;
  const char *out_path = NULL, *passes = NULL;
  nc_pass_ctx ctx;
  nc_pass_ctx_init(&ctx);
  ctx.verify = true;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "f:o:p:h", opts, NULL)) != -1) {
    switch (c) {
      case 'f':
        if (!nc_graph_format_parse(optarg, &fmt)) {
          fprintf(stderr, "nanochat graph dump: unknown --format '%s' (text, xml or dot)\n", optarg);
          return 2;
        }
        break;
      case 'o': out_path = optarg; break;
      case 'p': passes = optarg; break;
      case 'A': ctx.dump_after = optarg; break;
      case 'B': ctx.dump_before = optarg; break;
      case 'S': {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end || n < 1 || n > NC_MAX_PIPELINE) {
          fprintf(stderr, "nanochat graph dump: --stop-after wants a number 1..%d, got '%s'\n", NC_MAX_PIPELINE, optarg);
          return 2;
        }
        ctx.stop_after = (int)n - 1;
        break;
      }
      case 'T': ctx.timing = true; break;
      case 'R': train = true; break;
      case 'b': bind = optarg; break;
      case 'D': device = optarg; break;
      case 'L':
        for (int i = 0; i < nc_pass_count(); i++) printf("%-12s %s\n", nc_pass_at(i)->name, nc_pass_at(i)->summary);
        return 0;
      case 'h': nc_dump_usage(stdout); return 0;
      default: nc_dump_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "nanochat graph dump: expected exactly one FILE\n");
    nc_dump_usage(stderr);
    return 2;
  }
  nc_graph *g;
  nc_status st = nc_cli_load_graph(argv[optind], train, &g);
  if (st) return nc_fail(st);
  if (passes) {
    char *storage = NULL;
    const char *names[NC_MAX_PIPELINE];
    int n = 0;
    st = nc_pass_split_list(passes, &storage, names, &n);
    if (!st) st = nc_pass_run_pipeline(&g, names, n, &ctx);
    free(storage);
    if (st) {
      nc_graph_free(g);
      return nc_fail(st);
    }
  }
  nc_buf b;
  nc_buf_init(&b);
  const char *special = ctx.dump_after && (!strcmp(ctx.dump_after, "lower") || !strcmp(ctx.dump_after, "memplan"))
                            ? ctx.dump_after : NULL;
  if (special) {
    // lowering: decompose into primitives, fuse, lower to kernel IR
    nc_pass_ctx lc;
    nc_pass_ctx_init(&lc);
    lc.verify = true;
    // NC_PATTERNS_OFF=<bits> switches named fusion patterns off, as for the runtime (passes/pass.h)
    const char *poff = getenv("NC_PATTERNS_OFF");
    if (poff) lc.patterns_off = (unsigned)strtoul(poff, NULL, 0);
    nc_device dev;
    if (device) {  // the device's pattern choice, as runtime/exec.c compiles for it
      st = nc_device_parse(device, &dev);
      if (st) {
        nc_graph_free(g);
        return nc_fail(nc_status_prefix(st, "--device: "));
      }
      lc.patterns_off = nc_device_patterns_off(&dev);
      lc.patterns_force = nc_device_patterns_force(&dev);
    }
    const char *lp[] = {"decompose", "dce"};
    st = nc_pass_run_pipeline(&g, lp, 2, &lc);
    nc_plan *plan = NULL;
    nc_lower_opts lo = nc_device_lower_opts(device ? &dev : NULL, &lc);
    if (!st) st = nc_plan_build(g, &lo, &plan);
    if (!st && !strcmp(special, "lower")) nc_plan_print(g, plan, &b);
    if (!st && !strcmp(special, "memplan")) {
      int64_t syms[NC_MAX_SYMS] = {0};
      if (bind) st = nc_memplan_parse_bindings(g, bind, syms);
      for (int k = 0; k < nc_graph_nsyms(g); k++)
        if (!syms[k]) syms[k] = 1;
      nc_memplan *mp = NULL;
      if (!st) st = nc_plan_memplan(g, plan, syms, &mp);
      if (!st) nc_memplan_dump(mp, &b);
      nc_memplan_free(mp);
    }
    nc_plan_free(plan);
  } else {
    st = nc_graph_format_write(g, fmt, &b);
  }
  if (!st && b.oom) st = nc_errorf(NC_E_NOMEM, "out of memory printing the graph");
  if (!st) {
    if (out_path) st = nc_file_write_atomic(out_path, b.data, b.len);
    else if (b.len && fwrite(b.data, 1, b.len, stdout) != b.len) st = nc_errorf(NC_E_IO, "stdout: write failed");
  }
  nc_buf_free(&b);
  nc_graph_free(g);
  return st ? nc_fail(st) : 0;
}

static void nc_human_bytes(double b, char *out, size_t n) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, i++;
  snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static int nc_graph_check(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: nanochat graph check FILE [--train]\n\nParses and verifies FILE (a graph or a model spec), then prints its\n"
           "nodes, op counts, inputs, parameters (count, elements, bytes) and outputs.\n");
    return 0;
  }
  bool train = argc == 3 && !strcmp(argv[2], "--train");
  if (argc != 2 && !train) {
    fprintf(stderr, "usage: nanochat graph check FILE [--train]\n");
    return 2;
  }
  nc_graph *g;
  nc_status st = nc_cli_load_graph(argv[1], train, &g);
  if (!st) st = nc_graph_verify(g);
  if (st) {
    nc_graph_free(g);
    return nc_fail(st);
  }
  int counts[NC_OP_COUNT] = {0};
  uint32_t n = nc_graph_nnodes(g);
  int64_t nparams = 0, pelems = 0, pbytes = 0;
  bool symbolic_params = false;
  char tb[256];
  printf("graph \"%s\": %u nodes, hash %016llx\n", nc_graph_name(g), n, (unsigned long long)nc_graph_hash(g));
  if (nc_graph_nsyms(g)) {
    printf("symbols:");
    for (int k = 0; k < nc_graph_nsyms(g); k++) printf(" %s", nc_graph_sym_name(g, k));
    printf("\n");
  }
  for (nc_id i = 0; i < n; i++) {
    const nc_node *nd = nc_graph_node(g, i);
    counts[nd->op]++;
    if (nd->op == NC_OP_INPUT) printf("input  %-32s %s\n", nc_node_name(g, i), nc_type_str(g, &nd->type, tb, sizeof tb));
    if (nd->op == NC_OP_PARAM) {
      nparams++;
      nc_dim e;
      if (nc_type_numel(&nd->type, &e) && nc_dim_is_const(e)) {
        pelems += e.c;
        pbytes += e.c * (int64_t)nc_dtype_size(nd->type.dtype);
      } else {
        symbolic_params = true;
      }
    }
  }
  char hb[32];
  nc_human_bytes((double)pbytes, hb, sizeof hb);
  printf("params %lld tensors, %lld elements, %s%s\n", (long long)nparams, (long long)pelems, hb,
         symbolic_params ? " (plus symbolic-size params)" : "");
  for (int k = 0; k < nc_graph_noutputs(g); k++) {
    nc_type t = nc_type_of(g, nc_graph_output(g, k));
    printf("output %-32s %s = %%%u\n", nc_graph_output_name(g, k), nc_type_str(g, &t, tb, sizeof tb), nc_graph_output(g, k));
  }
  printf("ops:");
  for (int op = 0; op < NC_OP_COUNT; op++)
    if (counts[op]) printf(" %s=%d", nc_op_get((nc_op)op)->name, counts[op]);
  printf("\nok\n");
  nc_graph_free(g);
  return 0;
}

int nc_cmd_graph(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    nc_graph_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "dump")) return nc_graph_dump(argc - 1, argv + 1);
  if (!strcmp(argv[1], "check")) return nc_graph_check(argc - 1, argv + 1);
  fprintf(stderr, "nanochat graph: unknown subcommand '%s' (dump or check)\n", argv[1]);
  nc_graph_usage(stderr);
  return 2;
}
