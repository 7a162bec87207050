// nanochat serve: the OpenAI-compatible HTTP server and web UI over the
// inference engine (serve/server.h, docs/api.md).
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/precision.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "serve/server.h"

static bool nc_serve_int(const char *flag, const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi) {
    fprintf(stderr, "nanochat serve: %s wants an integer in %ld..%ld, got '%s'\n", flag, lo, hi, s);
    return false;
  }
  *out = v;
  return true;
}

static void nc_serve_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat serve --ckpt DIR [--host H] [--port P] [options]\n\n"
          "Serves a checkpoint over an OpenAI-compatible API (POST /v1/chat/completions,\n"
          "GET /v1/models, GET /health) and a chat web UI at GET /. See docs/api.md.\n\n"
          "  -c, --ckpt DIR        checkpoint folder (latest step unless --step)\n"
          "      --step N          checkpoint step\n"
          "      --tokenizer FILE  tokenizer rank file (default: DIR/tokenizer.tiktoken)\n"
          "      --host H          IPv4 address to listen on (default 127.0.0.1; 0.0.0.0 = all)\n"
          "  -p, --port P          TCP port (default 8000; 0 = any free port, printed)\n"
          "  -d, --device D        cpu (default), cpu:avx2, interp\n"
          "      --threads N       CPU threads of the engine (default: one per core)\n"
          "      --precision P     fp32 or bf16 (default: the checkpoint's)\n"
          "      --slots N         concurrent sequences in the decode batch (default 16)\n"
          "      --queue N         requests waiting for a slot before 503 (default 64)\n"
          "      --max-seq N       KV cache length per sequence (default: the model's)\n"
          "  -m, --max-tokens N    default max_tokens of a request (default 512)\n"
          "      --max-body BYTES  larger request bodies get 413 (default 1048576)\n"
          "  -q, --quiet           no per-request log lines\n");
}

int nc_cmd_serve(int argc, char **argv) {
  static const struct option opts[] = {
      {"ckpt", required_argument, 0, 'c'},      {"step", required_argument, 0, 'S'},
      {"tokenizer", required_argument, 0, 't'}, {"host", required_argument, 0, 'H'},
      {"port", required_argument, 0, 'p'},      {"device", required_argument, 0, 'd'},
      {"threads", required_argument, 0, 'T'},   {"slots", required_argument, 0, 's'},
      {"queue", required_argument, 0, 'Q'},     {"max-seq", required_argument, 0, 'M'},
      {"max-tokens", required_argument, 0, 'm'}, {"max-body", required_argument, 0, 'B'},
      {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
      {"precision", required_argument, 0, 'X'}, {0, 0, 0, 0}};
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  nc_server_opts so;
  nc_server_opts_default(&so);
  long v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "c:p:d:m:qh", opts, NULL)) != -1) {
    switch (c) {
      case 'c': eo.ckpt_dir = optarg; break;
      case 'X':
        if (nc_cli_precision_check("serve", optarg)) return 2;
        eo.precision = optarg;
        break;
      case 't': eo.tokenizer = optarg; break;
      case 'H': so.host = optarg; break;
      case 'S':
        if (!nc_serve_int("--step", optarg, 0, LONG_MAX, &v)) return 2;
        eo.step = v;
        break;
      case 'p':
        if (!nc_serve_int("--port", optarg, 0, 65535, &v)) return 2;
        so.port = (int)v;
        break;
      case 'd': {
        int threads = eo.device.threads;
        nc_status st = nc_device_parse(optarg, &eo.device);
        if (st) {
          fprintf(stderr, "nanochat serve: --device: %s\n", nc_status_msg(st));
          nc_status_free(st);
          return 2;
        }
        eo.device.threads = threads;
        break;
      }
      case 'T':
        if (!nc_serve_int("--threads", optarg, 1, 1024, &v)) return 2;
        eo.device.threads = (int)v;
        break;
      case 's':
        if (!nc_serve_int("--slots", optarg, 1, 256, &v)) return 2;
        eo.slots = (int)v;
        break;
      case 'Q':
        if (!nc_serve_int("--queue", optarg, 1, 100000, &v)) return 2;
        eo.queue_max = (int)v;
        break;
      case 'M':
        if (!nc_serve_int("--max-seq", optarg, 1, 1 << 20, &v)) return 2;
        eo.max_seq = v;
        break;
      case 'm':
        if (!nc_serve_int("--max-tokens", optarg, 1, so.limits.max_tokens, &v)) return 2;
        so.limits.default_max_tokens = (int)v;
        break;
      case 'B':
        if (!nc_serve_int("--max-body", optarg, 1024, 1L << 30, &v)) return 2;
        so.max_body = (size_t)v;
        break;
      case 'q': so.log = false; break;
      case 'h': nc_serve_usage(stdout); return 0;
      default: nc_serve_usage(stderr); return 2;
    }
  }
  if (!eo.ckpt_dir || optind != argc) {
    if (optind != argc) fprintf(stderr, "nanochat serve: unexpected argument '%s'\n", argv[optind]);
    else fprintf(stderr, "nanochat serve: --ckpt DIR is required\n");
    nc_serve_usage(stderr);
    return 2;
  }
  // SIGINT/SIGTERM are taken by sigwait below; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  nc_engine *e = NULL;
  nc_cli_precision_apply(eo.precision, NULL, &eo.device);
  nc_status st = nc_engine_open(&eo, &e);
  if (st) {
    fprintf(stderr, "nanochat serve: %s\n", nc_status_msg(st));
    nc_status_free(st);
    return 1;
  }
  nc_server *s = NULL;
  st = nc_server_start(e, &so, &s);
  if (st) {
    fprintf(stderr, "nanochat serve: %s\n", nc_status_msg(st));
    nc_status_free(st);
    nc_engine_close(e);
    return 1;
  }
  nc_engine_stats es;
  nc_engine_stats_get(e, &es);
  printf("nanochat serve: model %s (context %" PRId64 ", %d slots) on %s\n", nc_engine_model_name(e),
         nc_engine_max_seq(e), es.slots, nc_device_name(&eo.device));
  printf("listening on http://%s:%d/ (web UI at /, API at /v1)\n", so.host, nc_server_port(s));
  fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  fprintf(stderr, "nanochat serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  nc_server_stop(s);
  nc_engine_close(e);
  return 0;
}
