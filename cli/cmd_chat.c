// nanochat chat: talk to a checkpoint in the terminal (nanochat's chat_cli):
// a REPL with multi-turn history and streamed replies, or one reply with -p.
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/precision.h"
#include "cli/commands.h"
#include "engine/engine.h"

static int nc_chat_fail(nc_status st) {
  fprintf(stderr, "nanochat chat: %s\n", nc_status_msg(st));
  int code = nc_status_code(st) == NC_E_IO ? 3 : 1;
  nc_status_free(st);
  return code;
}

static bool nc_chat_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool nc_chat_double(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

static void nc_chat_print(void *user, const nc_gen_event *ev) {
  (void)user;
  if (ev->len) fwrite(ev->text, 1, ev->len, stdout);
  if (ev->finish == NC_FINISH_ERROR) fprintf(stderr, "\nnanochat chat: generation failed: %s\n", ev->error ? ev->error : "?");
  fflush(stdout);
}

static void nc_chat_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat chat --ckpt DIR [-p PROMPT] [-t TEMP] [-k TOPK] [options]\n\n"
          "Chat with a checkpoint: a REPL with multi-turn history (type 'clear' to start\n"
          "over, 'quit' or 'exit' to leave), or one reply to -p PROMPT.\n"
          "  -c, --ckpt DIR        checkpoint folder (latest step unless --step)\n"
          "      --step N          checkpoint step\n"
          "      --tokenizer PATH  tokenizer rank file (default: DIR/tokenizer.tiktoken)\n"
          "  -p, --prompt TEXT     answer this one message and exit\n"
          "  -t, --temperature T   sampling temperature, 0 = greedy (default 0.6)\n"
          "  -k, --top-k K         sample among the K most likely tokens, 0 = all (default 50)\n"
          "  -m, --max-tokens N    tokens per reply (default 256)\n"
          "  -s, --seed S          seed (default: random)\n"
          "  -d, --device D        cpu (default), cpu:avx2, interp (reference, slow)\n"
          "      --threads N       CPU threads (default: one per core)\n"
          "      --precision P     fp32 or bf16 (default: the checkpoint's)\n");
}

typedef struct {
  nc_engine *e;
  nc_gen_opts o;
  nc_ids hist;
  int32_t bos, user_start, user_end, asst_start, asst_end;
} nc_chat;

// One turn: the user's text into the history, the streamed reply, the
// reply's tokens (and <|assistant_end|>) into the history. Returns 0 or an exit code.
static int nc_chat_turn(nc_chat *c, const char *text, size_t n) {
  const nc_tok *t = nc_engine_tok(c->e);
  size_t mark = c->hist.len;
  nc_status st = nc_ids_push(&c->hist, c->user_start);
  if (!st) st = nc_tok_encode(t, text, n, NULL, &c->hist);
  if (!st) st = nc_ids_push(&c->hist, c->user_end);
  if (!st) st = nc_ids_push(&c->hist, c->asst_start);
  if (st) return nc_chat_fail(st);
  if ((int64_t)c->hist.len >= nc_engine_max_seq(c->e)) {
    c->hist.len = mark;
    fprintf(stderr, "nanochat chat: the conversation no longer fits the model's context (%lld tokens); type 'clear'\n",
            (long long)nc_engine_max_seq(c->e));
    return 0;
  }
  nc_gen_result r;
  st = nc_engine_generate_stream(c->e, c->hist.data, c->hist.len, &c->o, nc_chat_print, NULL, &r);
  if (st) {
    c->hist.len = mark;
    return nc_chat_fail(st);
  }
  printf("\n");
  fflush(stdout);
  st = nc_ids_append(&c->hist, r.tokens[0].data, r.tokens[0].len);
  if (!st) st = nc_ids_push(&c->hist, c->asst_end);  // also when cut (nanochat does the same)
  nc_finish fin = r.finish[0];
  nc_gen_result_free(&r);
  if (st) return nc_chat_fail(st);
  return fin == NC_FINISH_ERROR ? 1 : 0;
}

int nc_cmd_chat(int argc, char **argv) {
  static const struct option opts[] = {{"ckpt", required_argument, 0, 'c'},       {"step", required_argument, 0, 'S'},
                                       {"tokenizer", required_argument, 0, 'K'},  {"prompt", required_argument, 0, 'p'},
                                       {"temperature", required_argument, 0, 't'}, {"top-k", required_argument, 0, 'k'},
                                       {"max-tokens", required_argument, 0, 'm'}, {"seed", required_argument, 0, 's'},
                                       {"device", required_argument, 0, 'd'},     {"threads", required_argument, 0, 'T'},
                                       {"help", no_argument, 0, 'h'},             {"precision", required_argument, 0, 'X'},
                                       {0, 0, 0, 0}};
  nc_engine_opts eo;
  nc_engine_opts_default(&eo);
  eo.slots = 1;
  eo.queue_max = 4;
  nc_chat c;
  memset(&c, 0, sizeof c);
  nc_gen_opts_default(&c.o);
  c.o.temperature = 0.6;
  c.o.top_k = 50;
  const char *prompt = NULL;
  long long v;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:p:t:k:m:s:d:h", opts, NULL)) != -1) {
    switch (ch) {
      case 'c': eo.ckpt_dir = optarg; break;
      case 'X':
        if (nc_cli_precision_check("chat", optarg)) return 2;
        eo.precision = optarg;
        break;
      case 'S':
        if (!nc_chat_int(optarg, 0, INT64_MAX, &v)) {
          fprintf(stderr, "nanochat chat: --step wants a non-negative integer, got '%s'\n", optarg);
          return 2;
        }
        eo.step = v;
        break;
      case 'K': eo.tokenizer = optarg; break;
      case 'p': prompt = optarg; break;
      case 't':
        if (!nc_chat_double(optarg, 0, 100, &c.o.temperature)) {
          fprintf(stderr, "nanochat chat: -t/--temperature wants a number in 0..100, got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'k':
        if (!nc_chat_int(optarg, 0, 1 << 30, &v)) {
          fprintf(stderr, "nanochat chat: -k/--top-k wants an integer >= 0, got '%s'\n", optarg);
          return 2;
        }
        c.o.top_k = (int)v;
        break;
      case 'm':
        if (!nc_chat_int(optarg, 1, 1 << 30, &v)) {
          fprintf(stderr, "nanochat chat: --max-tokens wants an integer >= 1, got '%s'\n", optarg);
          return 2;
        }
        c.o.max_tokens = (int)v;
        break;
      case 's':
        if (!nc_chat_int(optarg, 0, INT64_MAX, &v)) {
          fprintf(stderr, "nanochat chat: --seed wants a non-negative integer, got '%s'\n", optarg);
          return 2;
        }
        c.o.seeded = true;
        c.o.seed = (uint64_t)v;
        break;
      case 'd': {
        int threads = eo.device.threads;
        nc_status st = nc_device_parse(optarg, &eo.device);
        if (st) return nc_chat_fail(st);
        eo.device.threads = threads;
        break;
      }
      case 'T':
        if (!nc_chat_int(optarg, 1, 1024, &v)) {
          fprintf(stderr, "nanochat chat: --threads wants 1..1024, got '%s'\n", optarg);
          return 2;
        }
        eo.device.threads = (int)v;
        break;
      case 'h': nc_chat_usage(stdout); return 0;
      default: nc_chat_usage(stderr); return 2;
    }
  }
  if (!eo.ckpt_dir || optind != argc) {
    if (optind != argc) fprintf(stderr, "nanochat chat: unexpected argument '%s'\n", argv[optind]);
    nc_chat_usage(stderr);
    return 2;
  }
  nc_cli_precision_apply(eo.precision, NULL, &eo.device);
  nc_status st = nc_engine_open(&eo, &c.e);
  if (st) return nc_chat_fail(st);
  const nc_tok *t = nc_engine_tok(c.e);
  c.bos = nc_tok_bos_id(t);
  c.user_start = nc_tok_special_id(t, "<|user_start|>");
  c.user_end = nc_tok_special_id(t, "<|user_end|>");
  c.asst_start = nc_tok_special_id(t, "<|assistant_start|>");
  c.asst_end = nc_tok_special_id(t, "<|assistant_end|>");
  if (c.bos < 0 || c.user_start < 0 || c.user_end < 0 || c.asst_start < 0 || c.asst_end < 0) {
    nc_engine_close(c.e);
    return nc_chat_fail(nc_errorf(NC_E_INVALID, "the tokenizer lacks nanochat's chat special tokens (<|user_start|> ...)"));
  }
  int rc = 0;
  nc_ids_push(&c.hist, c.bos);
  if (prompt) {
    rc = nc_chat_turn(&c, prompt, strlen(prompt));
  } else {
    bool tty = isatty(STDIN_FILENO);
    if (tty)
      printf("nanochat chat: %s (%s). 'clear' starts over, 'quit' leaves.\n", nc_engine_model_name(c.e),
             nc_device_name(&eo.device));
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
      if (tty) {
        printf("\nUser: ");
        fflush(stdout);
      }
      ssize_t n = getline(&line, &cap, stdin);
      if (n < 0) break;
      while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
      if (!strcmp(line, "quit") || !strcmp(line, "exit")) break;
      if (!strcmp(line, "clear")) {
        c.hist.len = 0;
        nc_ids_push(&c.hist, c.bos);
        if (tty) printf("(conversation cleared)\n");
        continue;
      }
      if (!n) continue;
      if (tty) printf("\nAssistant: ");
      fflush(stdout);
      if ((rc = nc_chat_turn(&c, line, (size_t)n))) break;
    }
    free(line);
  }
  nc_ids_free(&c.hist);
  nc_engine_close(c.e);
  return rc;
}
