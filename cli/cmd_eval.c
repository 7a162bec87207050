// nanochat eval base|chat: CORE and bits per byte of a base checkpoint
// (nanochat's base_eval), the chat evals and ChatCORE (chat_eval). docs/eval.md.
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/precision.h"
#include "eval/chat.h"
#include "eval/core.h"
#include "eval/forward.h"
#include "pipeline/dist.h"
#include "support/clock.h"

static int nc_eval_fail(const char *what, nc_status st) {
  fprintf(stderr, "nanochat eval %s: %s\n", what, nc_status_msg(st));
  int code = nc_status_code(st) == NC_E_IO ? 3 : 1;
  nc_status_free(st);
  return code;
}

static bool nc_eval_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static json_t *nc_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

// mpirun: every rank evaluates its share of the examples; one rank failing
// ends the job (the others would wait in a collective forever).
static int nc_eval_fail_dist(const char *what, nc_dist *d, nc_status st) {
  if (d->world > 1) {
    fprintf(stderr, "nanochat eval %s: rank %d of %d: %s\n", what, d->rank, d->world, nc_status_msg(st));
    nc_status_free(st);
    nc_dist_abort(d, 1);
  }
  nc_dist_finalize(d);
  return nc_eval_fail(what, st);
}

// Sums each task's counts over the ranks into res (rank r holds examples
// r, r + world, ...) and recomputes accuracies and CORE (nc_core_results_merge).
static nc_status nc_eval_core_reduce(const nc_dist *d, nc_core_result *res, int nres, double *core) {
  if (d->world <= 1) return NC_OK;
  double *c = malloc(sizeof(double) * 2 * (size_t)(nres > 0 ? nres : 1));
  nc_core_result *others = malloc(sizeof *others * (size_t)(nres > 0 ? nres : 1));
  nc_status st = c && others ? NC_OK : nc_errorf(NC_E_NOMEM, "eval: out of memory");
  for (int i = 0; i < nres && !st; i++) c[2 * i] = (double)res[i].n, c[2 * i + 1] = (double)res[i].correct;
  if (!st) st = nc_dist_allreduce_f64(d, c, 2 * (size_t)nres);
  for (int i = 0; i < nres && !st; i++) {  // the other ranks' part: the sum less this rank's own
    others[i] = res[i];
    others[i].n = (int64_t)c[2 * i] - res[i].n, others[i].correct = (int64_t)c[2 * i + 1] - res[i].correct;
  }
  if (!st) st = nc_core_results_merge(res, nres, others, nres, core);
  free(c), free(others);
  return st;
}

// The same for the chat evals (counts n, passed; nc_chat_results_merge).
static nc_status nc_eval_chat_reduce(const nc_dist *d, nc_chat_result *res, int nres, double *cc, bool *complete) {
  if (d->world <= 1) return NC_OK;
  double *c = malloc(sizeof(double) * 2 * (size_t)(nres > 0 ? nres : 1));
  nc_chat_result *others = malloc(sizeof *others * (size_t)(nres > 0 ? nres : 1));
  nc_status st = c && others ? NC_OK : nc_errorf(NC_E_NOMEM, "eval: out of memory");
  for (int i = 0; i < nres && !st; i++) c[2 * i] = (double)res[i].n, c[2 * i + 1] = (double)res[i].passed;
  if (!st) st = nc_dist_allreduce_f64(d, c, 2 * (size_t)nres);
  for (int i = 0; i < nres && !st; i++) {
    others[i] = res[i];
    others[i].n = (int64_t)c[2 * i] - res[i].n, others[i].passed = (int64_t)c[2 * i + 1] - res[i].passed;
  }
  if (!st) st = nc_chat_results_merge(res, nres, others, nres, cc, complete);
  free(c), free(others);
  return st;
}

static nc_status nc_eval_write_json(const char *path, json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (!s) return nc_errorf(NC_E_NOMEM, "%s: cannot serialize", path);
  size_t n = strlen(s);
  nc_status st = nc_file_write_atomic(path, s, n);
  free(s);
  return st;
}

#define NC_BAD_FLAG(cmd, ...)                           \
  do {                                                  \
    fprintf(stderr, "nanochat eval " cmd ": " __VA_ARGS__); \
    fprintf(stderr, "\n");                              \
    return 2;                                           \
  } while (0)

static void nc_eval_base_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat eval base --ckpt DIR [options]\n"
          "  CORE (DCLM bundle) and bits per byte of a base checkpoint; writes DIR/eval_base.csv and DIR/eval_base.json\n"
          "  --ckpt DIR          checkpoint folder (its tokenizer.tiktoken unless --tokenizer)\n"
          "  --step N            checkpoint step (default: the latest)\n"
          "  --tokenizer FILE    tokenizer rank file\n"
          "  --bundle DIR        eval bundle: core.yaml, eval_meta_data.csv, eval_data/ (default ../shared/data/eval/core)\n"
          "  --tasks a,b         only these CORE tasks (labels of core.yaml); --tasks none skips CORE\n"
          "  --max-per-task N    first N examples of each shuffled task (default: all)\n"
          "  --val FILE...       validation text (plain, JSONL \"text\", .gz) for bits per byte; repeatable\n"
          "  --bpb-tokens N      tokens scored for bpb (default 262144)\n"
          "  --device D          cpu (default), interp, opencl[:SEL]\n"
          "  --threads N         cpu threads (default: one per core)\n"
          "  --precision P       fp32 or bf16 (bf16 activations and matmuls, fp32 weights; default: the checkpoint's)\n"
          "  --batch N           sequences per forward pass (default 32)\n"
          "  --batch-tokens N    padded tokens per forward pass (default 8192)\n"
          "  --no-share          CORE's reference path: every choice's whole sequence (no shared prefix, file order)\n"
          "  --kv-cache M        auto (default: on but for opencl), on, off: longer continuations from a KV cache of the prefix\n"
          "  --rank R --world W  evaluate examples R, R+W, R+2W, ... of each task (counts in eval_base.json)\n"
          "  (under mpirun -np N the ranks split CORE's examples this way and rank 0 writes the summed result;\n"
          "   bpb runs on rank 0; --device opencl gives each rank its own GPU)\n"
          "  --out DIR           where to write eval_base.{csv,json} (default: the checkpoint folder)\n"
          "  -v, --verbose       print the prompts of the first examples of each task (-v -v: more)\n");
}

static int nc_eval_base(int argc, char **argv) {
  const char *ckpt = NULL, *tokp = NULL, *bundle = NULL, *tasks = NULL, *outdir = NULL, *prec = NULL;
  long long step = -1, maxper = 0, threads = 0, batch = 32, btok = 8192, bpbtok = 262144, rank = 0, world = 1;
  bool unshared = false;
  int kvc = 0;
  const char *vals[64];
  int nval = 0, verbose = 0;
  nc_device dev;
  nc_status st0 = nc_device_parse("cpu", &dev);
  if (st0) return nc_eval_fail("base", st0);
  static const struct option opts[] = {
      {"ckpt", required_argument, 0, 'c'},      {"step", required_argument, 0, 's'},
      {"tokenizer", required_argument, 0, 'T'}, {"bundle", required_argument, 0, 'b'},
      {"tasks", required_argument, 0, 't'},     {"max-per-task", required_argument, 0, 'm'},
      {"val", required_argument, 0, 'V'},       {"bpb-tokens", required_argument, 0, 'B'},
      {"device", required_argument, 0, 'd'},    {"threads", required_argument, 0, 'j'},
      {"batch", required_argument, 0, 'n'},     {"batch-tokens", required_argument, 0, 'N'},
      {"out", required_argument, 0, 'o'},       {"verbose", no_argument, 0, 'v'},
      {"no-share", no_argument, 0, 'U'},        {"rank", required_argument, 0, 'R'},
      {"kv-cache", required_argument, 0, 'K'},  {"precision", required_argument, 0, 'P'},
      {"world", required_argument, 0, 'W'},     {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
    switch (ch) {
      case 'c': ckpt = optarg; break;
      case 'T': tokp = optarg; break;
      case 'b': bundle = optarg; break;
      case 't': tasks = optarg; break;
      case 'o': outdir = optarg; break;
      case 'v': verbose++; break;
      case 'U': unshared = true; break;
      case 'P':
        if (nc_cli_precision_check("eval base", optarg)) return 2;
        prec = optarg;
        break;
      case 'K':
        if (!strcmp(optarg, "auto")) kvc = 0;
        else if (!strcmp(optarg, "on")) kvc = 1;
        else if (!strcmp(optarg, "off")) kvc = -1;
        else NC_BAD_FLAG("base", "--kv-cache: '%s' is not auto, on or off", optarg);
        break;
      case 'R':
        if (!nc_eval_int(optarg, 0, 65535, &rank)) NC_BAD_FLAG("base", "--rank: '%s' is not in [0, 65535]", optarg);
        break;
      case 'W':
        if (!nc_eval_int(optarg, 1, 65536, &world)) NC_BAD_FLAG("base", "--world: '%s' is not in [1, 65536]", optarg);
        break;
      case 's':
        if (!nc_eval_int(optarg, 0, INT64_MAX, &step)) NC_BAD_FLAG("base", "--step: '%s' is not a step number", optarg);
        break;
      case 'm':
        if (!nc_eval_int(optarg, 1, INT64_MAX, &maxper)) NC_BAD_FLAG("base", "--max-per-task: '%s' is not a positive integer", optarg);
        break;
      case 'B':
        if (!nc_eval_int(optarg, 1, 1ll << 40, &bpbtok)) NC_BAD_FLAG("base", "--bpb-tokens: '%s' is not a positive integer", optarg);
        break;
      case 'j':
        if (!nc_eval_int(optarg, 1, 1024, &threads)) NC_BAD_FLAG("base", "--threads: '%s' is not in [1, 1024]", optarg);
        break;
      case 'n':
        if (!nc_eval_int(optarg, 1, 4096, &batch)) NC_BAD_FLAG("base", "--batch: '%s' is not in [1, 4096]", optarg);
        break;
      case 'N':
        if (!nc_eval_int(optarg, 16, 1ll << 24, &btok)) NC_BAD_FLAG("base", "--batch-tokens: '%s' is not in [16, 16777216]", optarg);
        break;
      case 'V':
        if (nval == 64) NC_BAD_FLAG("base", "--val: at most 64 files");
        vals[nval++] = optarg;
        break;
      case 'd': {
        nc_status st = nc_device_parse(optarg, &dev);
        if (st) {
          fprintf(stderr, "nanochat eval base: --device: %s\n", nc_status_msg(st));
          nc_status_free(st);
          return 2;
        }
        break;
      }
      case 'h': nc_eval_base_usage(stdout); return 0;
      default: nc_eval_base_usage(stderr); return 2;
    }
  }
  if (optind != argc) NC_BAD_FLAG("base", "unexpected argument '%s'", argv[optind]);
  if (rank >= world) NC_BAD_FLAG("base", "--rank %lld must be below --world %lld", rank, world);
  if (!ckpt) {
    nc_eval_base_usage(stderr);
    return 2;
  }
  char bdef[4096];
  if (!bundle) {
    const char *sh = getenv("NC_SHARED_DIR");
    snprintf(bdef, sizeof bdef, "%s/data/eval/core", sh && *sh ? sh : "../shared");
    bundle = bdef;
  }
  bool core_on = !(tasks && !strcmp(tasks, "none"));
  dev.threads = (int)threads;
  double t0 = nc_clock_now();
  nc_dist dist;  // mpirun: CORE's examples strided over the ranks, counts summed (docs/distributed.md)
  nc_dist_before_init(&dev);
  nc_status st = nc_dist_init(&dist);
  if (st) return nc_eval_fail("base", st);
  if (dist.world > 1 && world > 1) {
    nc_dist_finalize(&dist);
    NC_BAD_FLAG("base", "--rank/--world split the examples by hand: under mpirun the ranks split them (drop the flags)");
  }
  if (dist.world > 1) rank = dist.rank, world = dist.world;
  char note[256];
  if ((st = nc_dist_pick_device(&dist, &dev, note, sizeof note))) return nc_eval_fail_dist("base", &dist, st);
  if (note[0]) fprintf(stderr, "eval base: %s\n", note);
  bool lead = dist.rank == 0;
  nc_evalfwd *f = NULL;
  nc_cli_precision_apply(prec, NULL, &dev);
  if ((st = nc_evalfwd_open(ckpt, step, tokp, &dev, &f))) return nc_eval_fail_dist("base", &dist, st);
  if (prec && (st = nc_evalfwd_set_precision(f, prec))) {
    nc_evalfwd_free(f);
    return nc_eval_fail_dist("base", &dist, st);
  }
  if (lead)
    fprintf(stderr, "eval base: %s (%s, vocab %d, seq %d, %s) on %s, prepared in %.1f s%s\n", ckpt, nc_evalfwd_spec(f)->name,
            nc_evalfwd_spec(f)->vocab_size, nc_evalfwd_spec(f)->sequence_len, nc_spec_bf16(nc_evalfwd_spec(f)) ? "bf16" : "fp32",
            nc_device_name(&dev), nc_clock_now() - t0,
            dist.world > 1 ? "; CORE's examples strided over the ranks, bpb on rank 0" : "");
  double bpb = NAN;
  int64_t bpb_n = 0;
  if (nval && lead) {
    double tb = nc_clock_now();
    if ((st = nc_eval_bpb(f, vals, nval, bpbtok, (int)batch > 8 ? 8 : (int)batch, true, &bpb, &bpb_n))) {
      nc_evalfwd_free(f);
      return nc_eval_fail_dist("base", &dist, st);
    }
    fprintf(stderr, "bpb: %.6f over %lld tokens (%.1f s)\n", bpb, (long long)bpb_n, nc_clock_now() - tb);
  }
  nc_core_result *res = NULL;
  int nres = 0;
  double core = NAN, tc = nc_clock_now();
  if (core_on) {
    nc_core_opts co = {.bundle = bundle, .tasks = tasks, .max_per_task = maxper, .batch = (int)batch, .batch_tokens = btok,
                       .verbose = verbose ? (verbose > 1 ? 8 : 1) : 0, .progress = lead, .rank = (int)rank, .world = (int)world,
                       .unshared = unshared, .kv_cache = kvc};
    if (!(st = nc_core_run(f, &co, &res, &nres, &core))) st = nc_eval_core_reduce(&dist, res, nres, &core);
    if (st) {
      nc_evalfwd_free(f);
      return nc_eval_fail_dist("base", &dist, st);
    }
  }
  double core_s = nc_clock_now() - tc;
  if (dist.world > 1) {  // summed over the ranks: the whole result, written by rank 0
    if ((st = nc_dist_barrier(&dist))) return nc_eval_fail_dist("base", &dist, st);
    rank = 0, world = 1;
  }
  nc_dist_finalize(&dist);
  if (!lead) {
    nc_evalfwd_free(f);
    free(res);
    return 0;
  }
  nc_evalfwd_free(f);
  // CSV (nanochat's base_eval layout) and JSON
  const char *od = outdir ? outdir : ckpt;
  char path[4096];
  nc_buf csv;
  nc_buf_init(&csv);
  nc_buf_printf(&csv, "%-35s, %-10s, %-10s, %-8s, %-9s, %s\n", "Task", "Accuracy", "Centered", "N", "Seconds", "Note");
  json_t *jt = json_object();
  for (int i = 0; i < nres; i++) {
    nc_core_result *r = &res[i];
    if (r->skipped) {
      nc_buf_printf(&csv, "%-35s, %-10s, %-10s, %-8s, %-9s, %s\n", r->label, "", "", "", "", r->note);
      json_object_set_new(jt, r->label, json_pack("{s:n,s:n,s:i,s:s}", "accuracy", "centered", "n", 0, "skipped", r->note));
      continue;
    }
    nc_buf_printf(&csv, "%-35s, %-10.6f, %-10.6f, %-8lld, %-9.1f, \n", r->label, r->acc, r->centered, (long long)r->n, r->seconds);
    json_object_set_new(jt, r->label,
                        json_pack("{s:f,s:f,s:I,s:I,s:I,s:f,s:s,s:i,s:f}", "accuracy", r->acc, "centered", r->centered, "n", (json_int_t)r->n,
                                  "correct", (json_int_t)r->correct, "tokens", (json_int_t)r->tokens, "baseline", r->baseline, "type", nc_core_type_name(r->type), "fewshot", r->num_fewshot, "seconds",
                                  r->seconds));
  }
  if (core_on) nc_buf_printf(&csv, "%-35s, %-10s, %-10.6f, %-8s, %-9.1f, \n", "CORE", "", core, "", core_s);
  json_t *j = json_object();
  json_object_set_new(j, "core", nc_json_num(core));
  json_object_set_new(j, "bpb", nc_json_num(bpb));
  json_object_set_new(j, "bpb_tokens", json_integer(bpb_n));
  json_object_set_new(j, "tasks", jt);
  json_object_set_new(j, "bundle", json_string(bundle));
  json_object_set_new(j, "max_per_task", json_integer(maxper));
  json_object_set_new(j, "device", json_string(nc_device_name(&dev)));
  json_object_set_new(j, "rank", json_integer(rank));
  json_object_set_new(j, "world", json_integer(world));
  json_object_set_new(j, "shared", json_boolean(!unshared));
  json_object_set_new(j, "core_seconds", json_real(core_s));
  json_object_set_new(j, "seconds", json_real(nc_clock_now() - t0));
  snprintf(path, sizeof path, "%s/eval_base.csv", od);
  if (core_on) st = nc_file_write_atomic(path, csv.data ? csv.data : "", csv.len);
  char jpath[4096];
  snprintf(jpath, sizeof jpath, "%s/eval_base.json", od);
  if (!st) st = nc_eval_write_json(jpath, j);
  json_decref(j);
  if (core_on) fputs(csv.data ? csv.data : "", stdout);
  if (nval) printf("bpb %.6f\n", bpb);
  nc_buf_free(&csv);
  free(res);
  if (st) return nc_eval_fail("base", st);
  fprintf(stderr, "wrote %s%s%s (%.1f s)\n", core_on ? path : "", core_on ? " and " : "", jpath, nc_clock_now() - t0);
  return 0;
}

static void nc_eval_chat_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat eval chat --ckpt DIR [options]\n"
          "  nanochat's chat_eval: ARC-Easy, ARC-Challenge, MMLU (categorical), GSM8K, HumanEval, SpellingBee\n"
          "  (generative) and ChatCORE; writes DIR/eval_chat.json\n"
          "  --ckpt DIR --step N --tokenizer FILE\n"
          "  --data DIR          folder with mmlu/ gsm8k/ humaneval/ arc/ (default ../shared/data/eval)\n"
          "  --tasks a,b         subset of ARC-Easy,ARC-Challenge,MMLU,GSM8K,HumanEval,SpellingBee\n"
          "  --max-per-task N    first N problems of each task\n"
          "  -n N                samples per generative problem (pass if any passes; default 1)\n"
          "  -t T                temperature (default 0: greedy)\n"
          "  -k K                top-k (default 50)\n"
          "  -m N                max new tokens (default 512)\n"
          "  --batch N           categorical batch (default 8)\n"
          "  --words FILE        SpellingBee word list (default /usr/share/dict/words)\n"
          "  --rank R --world W  evaluate problems R, R+W, R+2W, ... of each task (counts in eval_chat.json)\n"
          "  (under mpirun -np N the ranks split the problems this way and rank 0 writes the summed result)\n"
          "  --device D --threads N --out DIR\n"
          "  --precision P       fp32 or bf16 (bf16 activations and matmuls, fp32 weights; default: the checkpoint's)\n");
}

static int nc_eval_chat(int argc, char **argv) {
  nc_chat_eval_opts o;
  nc_chat_eval_opts_default(&o);
  const char *outdir = NULL;
  long long v = 0, threads = 0;
  static const struct option opts[] = {
      {"ckpt", required_argument, 0, 'c'},  {"step", required_argument, 0, 's'}, {"tokenizer", required_argument, 0, 'T'},
      {"data", required_argument, 0, 'D'},  {"tasks", required_argument, 0, 'a'}, {"max-per-task", required_argument, 0, 'x'},
      {"batch", required_argument, 0, 'b'}, {"words", required_argument, 0, 'w'}, {"device", required_argument, 0, 'd'},
      {"threads", required_argument, 0, 'j'}, {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'},
      {"rank", required_argument, 0, 'R'},  {"world", required_argument, 0, 'W'}, {"precision", required_argument, 0, 'P'},
      {0, 0, 0, 0}};
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "n:t:k:m:h", opts, NULL)) != -1) {
    switch (ch) {
      case 'c': o.ckpt = optarg; break;
      case 'T': o.tokenizer = optarg; break;
      case 'D': o.data = optarg; break;
      case 'a': o.tasks = optarg; break;
      case 'w': o.words = optarg; break;
      case 'P':
        if (nc_cli_precision_check("eval chat", optarg)) return 2;
        o.precision = optarg;
        break;
      case 'o': outdir = optarg; break;
      case 's':
        if (!nc_eval_int(optarg, 0, INT64_MAX, &v)) NC_BAD_FLAG("chat", "--step: '%s' is not a step number", optarg);
        o.step = v;
        break;
      case 'x':
        if (!nc_eval_int(optarg, 1, INT64_MAX, &v)) NC_BAD_FLAG("chat", "--max-per-task: '%s' is not a positive integer", optarg);
        o.max_per_task = v;
        break;
      case 'b':
        if (!nc_eval_int(optarg, 1, 1024, &v)) NC_BAD_FLAG("chat", "--batch: '%s' is not in [1, 1024]", optarg);
        o.batch = (int)v;
        break;
      case 'n':
        if (!nc_eval_int(optarg, 1, 64, &v)) NC_BAD_FLAG("chat", "-n: '%s' is not in [1, 64]", optarg);
        o.num_samples = (int)v;
        break;
      case 'k':
        if (!nc_eval_int(optarg, 0, 100000, &v)) NC_BAD_FLAG("chat", "-k: '%s' is not in [0, 100000]", optarg);
        o.top_k = (int)v;
        break;
      case 'm':
        if (!nc_eval_int(optarg, 1, 65536, &v)) NC_BAD_FLAG("chat", "-m: '%s' is not in [1, 65536]", optarg);
        o.max_tokens = (int)v;
        break;
      case 'j':
        if (!nc_eval_int(optarg, 1, 1024, &threads)) NC_BAD_FLAG("chat", "--threads: '%s' is not in [1, 1024]", optarg);
        break;
      case 't': {
        char *end;
        errno = 0;
        double t = strtod(optarg, &end);
        if (errno || end == optarg || *end || !(t >= 0 && t <= 2)) NC_BAD_FLAG("chat", "-t: '%s' is not a temperature in [0, 2]", optarg);
        o.temperature = t;
        break;
      }
      case 'd': {
        nc_status st = nc_device_parse(optarg, &o.device);
        if (st) {
          fprintf(stderr, "nanochat eval chat: --device: %s\n", nc_status_msg(st));
          nc_status_free(st);
          return 2;
        }
        break;
      }
      case 'R':
        if (!nc_eval_int(optarg, 0, 65535, &v)) NC_BAD_FLAG("chat", "--rank: '%s' is not in [0, 65535]", optarg);
        o.rank = (int)v;
        break;
      case 'W':
        if (!nc_eval_int(optarg, 1, 65536, &v)) NC_BAD_FLAG("chat", "--world: '%s' is not in [1, 65536]", optarg);
        o.world = (int)v;
        break;
      case 'h': nc_eval_chat_usage(stdout); return 0;
      default: nc_eval_chat_usage(stderr); return 2;
    }
  }
  if (optind != argc) NC_BAD_FLAG("chat", "unexpected argument '%s'", argv[optind]);
  if (o.rank >= (o.world > 1 ? o.world : 1)) NC_BAD_FLAG("chat", "--rank %d must be below --world %d", o.rank, o.world > 1 ? o.world : 1);
  if (!o.ckpt) {
    nc_eval_chat_usage(stderr);
    return 2;
  }
  o.device.threads = (int)threads;
  nc_cli_precision_apply(o.precision, NULL, &o.device);
  double t0 = nc_clock_now();
  nc_dist dist;  // mpirun: problems strided over the ranks, counts summed (docs/distributed.md)
  nc_dist_before_init(&o.device);
  nc_status st = nc_dist_init(&dist);
  if (st) return nc_eval_fail("chat", st);
  if (dist.world > 1 && o.world > 1) {
    nc_dist_finalize(&dist);
    NC_BAD_FLAG("chat", "--rank/--world split the problems by hand: under mpirun the ranks split them (drop the flags)");
  }
  if (dist.world > 1) o.rank = dist.rank, o.world = dist.world, o.progress = o.progress && dist.rank == 0;
  char note[256];
  if ((st = nc_dist_pick_device(&dist, &o.device, note, sizeof note))) return nc_eval_fail_dist("chat", &dist, st);
  if (note[0]) fprintf(stderr, "eval chat: %s\n", note);
  nc_chat_result *res = NULL;
  int n = 0;
  double cc;
  bool complete;
  st = nc_chat_eval_run(&o, &res, &n, &cc, &complete);
  if (!st) st = nc_eval_chat_reduce(&dist, res, n, &cc, &complete);
  if (!st && dist.world > 1) st = nc_dist_barrier(&dist);
  if (st) {
    free(res);
    return nc_eval_fail_dist("chat", &dist, st);
  }
  nc_dist_finalize(&dist);
  if (dist.rank != 0) {  // rank 0 prints and writes the whole result
    free(res);
    return 0;
  }
  if (dist.world > 1) o.rank = 0, o.world = 1;
  json_t *jt = json_object();
  json_t *missing = json_array();
  for (int i = 0; i < n; i++) {
    nc_chat_result *r = &res[i];
    if (r->skipped) {
      json_array_append_new(missing, json_string(r->task));
      json_object_set_new(jt, r->task, json_pack("{s:n,s:n,s:i,s:s}", "accuracy", "centered", "n", 0, "skipped", r->note));
      printf("%-14s skipped: %s\n", r->task, r->note);
      continue;
    }
    json_t *jr = json_pack("{s:f,s:f,s:I,s:I,s:f,s:f}", "accuracy", r->acc, "centered", r->centered, "n", (json_int_t)r->n, "passed",
                           (json_int_t)r->passed, "baseline", nc_chat_baseline(r->task), "seconds", r->seconds);
    if (r->note[0]) json_object_set_new(jr, "note", json_string(r->note));
    json_object_set_new(jt, r->task, jr);
    printf("%-14s acc %.4f  centered %+.4f  n %lld  (%.1f s)\n", r->task, r->acc, r->centered, (long long)r->n, r->seconds);
  }
  printf("ChatCORE %.4f%s\n", cc, complete ? "" : " (partial: not every task ran)");
  json_t *j = json_object();
  json_object_set_new(j, "chatcore", nc_json_num(cc));
  json_object_set_new(j, "complete", json_boolean(complete));
  json_object_set_new(j, "missing", missing);
  json_object_set_new(j, "tasks", jt);
  json_object_set_new(j, "seconds", json_real(nc_clock_now() - t0));
  char path[4096];
  snprintf(path, sizeof path, "%s/eval_chat.json", outdir ? outdir : o.ckpt);
  st = nc_eval_write_json(path, j);
  json_decref(j);
  free(res);
  if (st) return nc_eval_fail("chat", st);
  fprintf(stderr, "wrote %s\n", path);
  return 0;
}

int nc_cmd_eval(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    FILE *f = argc < 2 ? stderr : stdout;
    fprintf(f, "usage: nanochat eval base|chat --ckpt DIR [options]   (nanochat eval base --help)\n");
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "base")) return nc_eval_base(argc - 1, argv + 1);
  if (!strcmp(argv[1], "chat")) return nc_eval_chat(argc - 1, argv + 1);
  fprintf(stderr, "nanochat eval: unknown mode '%s' (base or chat)\n", argv[1]);
  return 2;
}
