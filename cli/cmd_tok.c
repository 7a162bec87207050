// nanochat tok: train, encode, decode, eval (docs/tokenizer.md).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chat/tokenizer.h"
#include "cli/commands.h"
#include "support/clock.h"

#define NC_TOK_MAX_INPUT ((size_t)4 << 30)

static const char *nc_tok_usage =
    "usage: nanochat tok <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  train    train a byte-level BPE tokenizer (nanochat's algorithm)\n"
    "  encode   print the token ids of a file (or stdin)\n"
    "  decode   turn token ids back into the exact bytes\n"
    "  eval     bytes per token of a tokenizer vs GPT-2 and GPT-4 (cl100k)\n"
    "\n"
    "TOKENIZER is a tiktoken rank file (with its PATH.json sidecar, if any) or one of\n"
    "gpt2, cl100k_base, o200k_base, looked up in --ranks-dir (default $NC_RANKS_DIR,\n"
    "else build/ranks; make them with: (cd tests/js && npm ci) && node tools/export_ranks.mjs build/ranks).\n"
    "Run 'nanochat tok <subcommand> --help' for its options.\n";

static int nc_fail(nc_status st) {
  fprintf(stderr, "nanochat tok: %s\n", nc_status_msg(st));
  nc_status_free(st);
  return 1;
}

static bool nc_parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s) return false;
  char *e;
  errno = 0;
  double d = strtod(s, &e);  // accepts 2e9 as nanochat's flags do
  if (errno || *e || d < 0 || d > 1.8e19 || d != (double)(uint64_t)d) return false;
  *out = (uint64_t)d;
  return true;
}

static const char *nc_default_ranks_dir(void) {
  const char *d = getenv("NC_RANKS_DIR");
  return d && *d ? d : "build/ranks";
}

static nc_status nc_tok_open(const char *spec, const char *ranks_dir, nc_tok **out) {
  struct stat sb;
  if (stat(spec, &sb) == 0) return nc_tok_load(spec, out);
  const char *name = spec;
  if (!strcmp(spec, "cl100k")) name = "cl100k_base";
  if (!strcmp(spec, "o200k")) name = "o200k_base";
  if (!strcmp(name, "gpt2") || !strcmp(name, "cl100k_base") || !strcmp(name, "o200k_base")) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s.tiktoken", ranks_dir, name);
    if (stat(p, &sb) != 0)
      return nc_errorf(NC_E_IO, "%s ranks not found at %s; export them from js-tiktoken with: (cd tests/js && npm ci) "
                       "&& node tools/export_ranks.mjs %s   (or pass --ranks-dir)", name, p, ranks_dir);
    return nc_tok_load(p, out);
  }
  return nc_errorf(NC_E_IO, "%s: no such tokenizer file (nor a known name: gpt2, cl100k_base, o200k_base)", spec);
}

static nc_status nc_read_input(const char *path, char **data, size_t *len) {
  if (path && strcmp(path, "-") != 0) return nc_file_read(path, NC_TOK_MAX_INPUT, data, len);
  nc_buf b;
  nc_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) nc_buf_put(&b, chunk, n);
  if (ferror(stdin)) {
    nc_buf_free(&b);
    return nc_errorf(NC_E_IO, "stdin: read error");
  }
  *len = b.len;
  *data = nc_buf_take(&b);
  if (!*data) return nc_errorf(NC_E_NOMEM, "out of memory reading stdin");
  return NC_OK;
}

static bool nc_is(const char *a, const char *x, const char *y) { return !strcmp(a, x) || (y && !strcmp(a, y)); }

// ---- train --------------------------------------------------------------------

typedef struct {
  double t0, last;
  bool quiet;
} nc_progress;

static void nc_train_progress(void *ctx, const char *stage, uint64_t done, uint64_t total) {
  nc_progress *p = ctx;
  if (p->quiet) return;
  double now = nc_clock_now();
  if (now - p->last < 1.0 && done != total) return;
  p->last = now;
  if (!strcmp(stage, "characters"))
    fprintf(stderr, "[%6.1fs] read %.1fM characters\n", now - p->t0, (double)done / 1e6);
  else if (!strcmp(stage, "unique chunks"))
    fprintf(stderr, "[%6.1fs] %llu unique chunks; merging\n", now - p->t0, (unsigned long long)done);
  else
    fprintf(stderr, "[%6.1fs] %s %llu/%llu\n", now - p->t0, stage, (unsigned long long)done, (unsigned long long)total);
}

static int nc_tok_train_cmd(int argc, char **argv) {
  static const char *help =
      "usage: nanochat tok train --input FILE... --vocab-size N -o TOKENIZER [options]\n"
      "\n"
      "Trains byte-level BPE as nanochat does (regex pre-split, parallel chunk counting,\n"
      "incremental merges; ties go to the smaller pair) and writes TOKENIZER (tiktoken\n"
      "ranks) and TOKENIZER.json (split pattern, special tokens).\n"
      "\n"
      "  -i, --input FILE...   text (documents separated by blank lines), JSONL with a\n"
      "                        \"text\" field, or either gzipped (.gz)\n"
      "  --vocab-size N        total vocabulary including the 9 special tokens (default 32768)\n"
      "  -o, --output PATH     where to write the tokenizer (required)\n"
      "  --max-chars N         stop after N characters (default 2e9)\n"
      "  --doc-cap N           characters kept per document (default 10000)\n"
      "  --pattern NAME        split regex: nanochat (default), cl100k, o200k, gpt2\n"
      "  --threads N           chunk-counting threads (default: all cores)\n"
      "  -q, --quiet           no progress on stderr\n";
  nc_tok_train_opts o;
  nc_tok_train_opts_default(&o);
  const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
  size_t ninputs = 0;
  const char *output = NULL;
  nc_progress prog = {nc_clock_now(), 0, false};
  int rc = 2;
  if (!inputs) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    uint64_t v;
    if (nc_is(a, "--help", "-h")) {
      fputs(help, stdout);
      rc = 0;
      goto done;
    } else if (nc_is(a, "--input", "-i")) {
      while (i + 1 < argc && argv[i + 1][0] != '-') inputs[ninputs++] = argv[++i];
    } else if (nc_is(a, "--output", "-o") && i + 1 < argc) {
      output = argv[++i];
    } else if (nc_is(a, "--vocab-size", NULL) && i + 1 < argc) {
      if (!nc_parse_u64(argv[++i], &v)) goto bad_value;
      o.vocab_size = (size_t)v;
    } else if (nc_is(a, "--max-chars", NULL) && i + 1 < argc) {
      if (!nc_parse_u64(argv[++i], &o.max_chars)) goto bad_value;
    } else if (nc_is(a, "--doc-cap", NULL) && i + 1 < argc) {
      if (!nc_parse_u64(argv[++i], &o.doc_cap) || o.doc_cap == 0) goto bad_value;
    } else if (nc_is(a, "--threads", NULL) && i + 1 < argc) {
      if (!nc_parse_u64(argv[++i], &v) || v > 64) goto bad_value;
      o.threads = (int)v;
    } else if (nc_is(a, "--pattern", NULL) && i + 1 < argc) {
      nc_status st = nc_tok_pattern_parse(argv[++i], &o.pattern);
      if (st) {
        rc = nc_fail(st);
        goto done;
      }
    } else if (nc_is(a, "--quiet", "-q")) {
      prog.quiet = true;
    } else {
      fprintf(stderr, "nanochat tok train: unknown or incomplete option '%s'\n\n%s", a, help);
      goto done;
    }
    continue;
  bad_value:
    fprintf(stderr, "nanochat tok train: bad value '%s' for %s\n", argv[i], a);
    goto done;
  }
  if (!ninputs || !output) {
    fprintf(stderr, "nanochat tok train: --input and -o are required\n\n%s", help);
    goto done;
  }
  o.progress = nc_train_progress;
  o.progress_ctx = &prog;
  nc_tok_docfile *f = NULL;
  nc_tok *t = NULL;
  nc_status st = nc_tok_docfile_open(inputs, ninputs, &f);
  if (!st) st = nc_tok_train(nc_tok_docfile_next, f, &o, &t);
  if (!st) st = nc_tok_save(t, output);
  if (st) {
    rc = nc_fail(st);
  } else {
    rc = 0;
    if (!prog.quiet)
      fprintf(stderr, "[%6.1fs] wrote %s (+.json): %zu ranks + %zu special tokens = vocab %zu; read %.1f MB\n",
              nc_clock_now() - prog.t0, output, nc_tok_n_ranks(t), nc_tok_n_special(t), nc_tok_vocab_size(t),
              (double)nc_tok_docfile_bytes_read(f) / 1e6);
  }
  nc_tok_free(t);
  nc_tok_docfile_close(f);
done:
  free(inputs);
  return rc;
}

// ---- encode / decode -------------------------------------------------------------

typedef struct {
  const char *tok, *ranks_dir, *file;
  bool allow_special, count, timing;
  int threads;
} nc_io_args;

// Common options of encode/decode; returns -1 to continue, else an exit code.
static int nc_parse_io(int argc, char **argv, const char *help, nc_io_args *a, bool encode) {
  a->tok = NULL;
  a->ranks_dir = nc_default_ranks_dir();
  a->file = NULL;
  a->allow_special = a->count = a->timing = false;
  a->threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (nc_is(s, "--help", "-h")) {
      fputs(help, stdout);
      return 0;
    } else if (nc_is(s, "--tokenizer", "-t") && i + 1 < argc) {
      a->tok = argv[++i];
    } else if (nc_is(s, "--ranks-dir", NULL) && i + 1 < argc) {
      a->ranks_dir = argv[++i];
    } else if (encode && nc_is(s, "--allow-special", NULL)) {
      a->allow_special = true;
    } else if (encode && nc_is(s, "--count", NULL)) {
      a->count = true;
    } else if (encode && nc_is(s, "--time", NULL)) {
      a->timing = true;
    } else if (encode && nc_is(s, "--threads", NULL) && i + 1 < argc) {
      uint64_t v;
      if (!nc_parse_u64(argv[++i], &v) || v > 64) {
        fprintf(stderr, "nanochat tok %s: bad value '%s' for --threads\n", argv[0], argv[i]);
        return 2;
      }
      a->threads = (int)v;
    } else if ((s[0] != '-' || !strcmp(s, "-")) && !a->file) {
      a->file = s;
    } else {
      fprintf(stderr, "nanochat tok %s: unknown or incomplete option '%s'\n\n%s", argv[0], s, help);
      return 2;
    }
  }
  if (!a->tok) {
    fprintf(stderr, "nanochat tok %s: -t TOKENIZER is required\n\n%s", argv[0], help);
    return 2;
  }
  return -1;
}

static int nc_tok_encode_cmd(int argc, char **argv) {
  static const char *help =
      "usage: nanochat tok encode -t TOKENIZER [options] [FILE]\n"
      "\n"
      "Prints the token ids of FILE (default stdin; any bytes) on one line, separated by\n"
      "single spaces. Special-token text is ordinary text unless --allow-special.\n"
      "\n"
      "  --ranks-dir DIR    where gpt2/cl100k_base/o200k_base ranks live\n"
      "  --allow-special    special-token text becomes the special token\n"
      "  --threads N        encoding threads for large inputs (default: automatic)\n"
      "  --count            print only the number of tokens\n"
      "  --time             report encoding time and MB/s on stderr\n";
  nc_io_args a;
  int rc = nc_parse_io(argc, argv, help, &a, true);
  if (rc >= 0) return rc;
  nc_tok *t = NULL;
  char *text = NULL;
  size_t n = 0;
  nc_ids ids = {0};
  nc_status st = nc_tok_open(a.tok, a.ranks_dir, &t);
  if (!st) st = nc_read_input(a.file, &text, &n);
  nc_tok_encode_opts o = {a.allow_special ? NC_TOK_SPECIAL_ALLOW : NC_TOK_SPECIAL_ORDINARY, a.threads};
  double t0 = nc_clock_now();
  if (!st) st = nc_tok_encode(t, text, n, &o, &ids);
  double dt = nc_clock_now() - t0;
  if (!st && a.timing)
    fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s: %.2f MB/s\n", n, ids.len, dt,
            dt > 0 ? (double)n / 1e6 / dt : 0);
  if (!st && a.count) {
    printf("%zu\n", ids.len);
  } else if (!st) {
    char *buf = malloc(1 << 16);
    size_t bl = 0;
    for (size_t i = 0; buf && i < ids.len; i++) {
      if (bl > (1 << 16) - 16) fwrite(buf, 1, bl, stdout), bl = 0;
      bl += (size_t)snprintf(buf + bl, 16, i ? " %d" : "%d", ids.data[i]);
    }
    if (buf) fwrite(buf, 1, bl, stdout);
    free(buf);
    fputc('\n', stdout);
    if (fflush(stdout) != 0) st = nc_errorf(NC_E_IO, "stdout: write error: %s", strerror(errno));
  }
  free(text);
  nc_ids_free(&ids);
  nc_tok_free(t);
  return st ? nc_fail(st) : 0;
}

static int nc_tok_decode_cmd(int argc, char **argv) {
  static const char *help =
      "usage: nanochat tok decode -t TOKENIZER [--ranks-dir DIR] [FILE]\n"
      "\n"
      "Reads token ids separated by whitespace from FILE (default stdin) and writes the\n"
      "exact bytes they stand for to stdout.\n";
  nc_io_args a;
  int rc = nc_parse_io(argc, argv, help, &a, false);
  if (rc >= 0) return rc;
  nc_tok *t = NULL;
  char *text = NULL;
  size_t n = 0;
  nc_ids ids = {0};
  nc_buf out;
  nc_buf_init(&out);
  nc_status st = nc_tok_open(a.tok, a.ranks_dir, &t);
  if (!st) st = nc_read_input(a.file, &text, &n);
  for (size_t p = 0, k = 0; !st && p < n;) {
    while (p < n && (text[p] == ' ' || text[p] == '\n' || text[p] == '\t' || text[p] == '\r')) p++;
    if (p >= n) break;
    size_t q = p;
    long long v = 0;
    while (q < n && text[q] >= '0' && text[q] <= '9' && v <= INT32_MAX) v = v * 10 + (text[q++] - '0');
    bool sep = q >= n || text[q] == ' ' || text[q] == '\n' || text[q] == '\t' || text[q] == '\r';
    if (q == p || !sep || v > INT32_MAX) {
      size_t e = p;
      while (e < n && e < p + 20 && text[e] != ' ' && text[e] != '\n') e++;
      st = nc_errorf(NC_E_PARSE, "%s: item %zu ('%.*s') is not a token id", a.file ? a.file : "stdin", k, (int)(e - p),
                     text + p);
      break;
    }
    st = nc_ids_push(&ids, (int32_t)v);
    p = q;
    k++;
  }
  if (!st) st = nc_tok_decode(t, ids.data, ids.len, &out);
  if (!st && (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0))
    st = nc_errorf(NC_E_IO, "stdout: write error: %s", strerror(errno));
  free(text);
  nc_ids_free(&ids);
  nc_buf_free(&out);
  nc_tok_free(t);
  return st ? nc_fail(st) : 0;
}

// ---- eval ---------------------------------------------------------------------------

// Short samples of the kinds of text nanochat's tok_eval compares on.
static const char *const nc_eval_names[] = {"news", "korean", "code", "math", "science"};
static const char *const nc_eval_texts[] = {
    "(Washington, D.C., July 9, 2025)- Yesterday, Mexico's National Service of Agro-Alimentary Health, Safety, and "
    "Quality (SENASICA) reported a new case of New World Screwworm (NWS) in Ixhuatlan de Madero, Veracruz in Mexico, "
    "which is approximately 160 miles northward of the current sterile fly dispersal grid, on the eastern side of "
    "the country and 370 miles south of the U.S./Mexico border. This new northward detection comes approximately two "
    "months after northern detections were reported in Oaxaca and Veracruz, less than 700 miles away from the U.S. "
    "border, which triggered the closure of our ports to Mexican cattle imports.\n",
    "정직한 사실 위에, 공정한 시선을 더하다\nHerald Korea Times\n\n헤럴드코리아타임즈는 정치, 경제, 사회, 문화 등 "
    "한국 사회 전반의 주요 이슈를 심도 있게 다루는 종합 온라인 신문사입니다.\n\n우리는 단순히 뉴스를 전달하는 것이 "
    "아니라, 사실(Fact)에 기반한 양측의 시각을 균형 있게 조명하며, 독자 여러분이 스스로 판단할 수 있는 '정보의 "
    "균형'을 제공합니다.\n",
    "class BasicTokenizer(Tokenizer):\n\n    def __init__(self):\n        super().__init__()\n\n"
    "    def train(self, text, vocab_size, verbose=False):\n        assert vocab_size >= 256\n"
    "        num_merges = vocab_size - 256\n\n        # input text preprocessing\n"
    "        text_bytes = text.encode(\"utf-8\") # raw bytes\n"
    "        ids = list(text_bytes) # list of integers in range 0..255\n\n"
    "        merges = {} # (int, int) -> int\n        vocab = {idx: bytes([idx]) for idx in range(256)}\n"
    "        for i in range(num_merges):\n            stats = get_stats(ids)\n"
    "            pair = max(stats, key=stats.get)\n            idx = 256 + i\n"
    "            ids = merge(ids, pair, idx)\n            merges[pair] = idx\n",
    "\\documentclass[12pt]{article}\n\\usepackage{amsmath,amsthm,amssymb}\n\\begin{document}\n"
    "\\begin{theorem}[Lagrange]\nFor every $n \\in \\mathbb{N}$ there exist $a,b,c,d \\in \\mathbb{N}$ with\n"
    "\\[ n = a^2 + b^2 + c^2 + d^2. \\]\n\\end{theorem}\n\\begin{proof}\nBy Euler's four-square identity\n"
    "$(a_1^2+a_2^2+a_3^2+a_4^2)(b_1^2+b_2^2+b_3^2+b_4^2) = (a_1b_1 - a_2b_2 - a_3b_3 - a_4b_4)^2 + \\dots$ it "
    "suffices to treat primes $p$; then $\\sum_{k=1}^{p} \\binom{p}{k} \\equiv 0 \\pmod p$ for $0<k<p$.\n"
    "\\end{proof}\n\\end{document}\n",
    "Photosynthesis is a photochemical energy transduction process in which light-harvesting pigment-protein "
    "complexes within the thylakoid membranes of oxygenic phototrophs absorb photons and initiate charge separation "
    "at the reaction center. The absorbed light excites chlorophyll a molecules in photosystem II (PSII), driving "
    "the oxidation of water at the oxygen-evolving complex (Mn4CaO5 cluster): 2H2O -> O2 + 4H+ + 4e-. Electrons "
    "flow through plastoquinone, the cytochrome b6f complex and plastocyanin to photosystem I (PSI).\n",
};
#define NC_EVAL_N 5

static int nc_tok_eval_cmd(int argc, char **argv) {
  static const char *help =
      "usage: nanochat tok eval [-t TOKENIZER] [--ranks-dir DIR] [--input FILE...]\n"
      "\n"
      "Prints bytes per token (higher = better compression) of GPT-2, GPT-4 (cl100k_base)\n"
      "and, with -t, your tokenizer on built-in samples (news, korean, code, math,\n"
      "science) and on each --input file (read whole; any bytes).\n";
  const char *tokpath = NULL, *ranks_dir = nc_default_ranks_dir();
  const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
  size_t ninputs = 0;
  if (!inputs) return 1;
  int rc = 2;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (nc_is(s, "--help", "-h")) {
      fputs(help, stdout);
      free(inputs);
      return 0;
    } else if (nc_is(s, "--tokenizer", "-t") && i + 1 < argc) {
      tokpath = argv[++i];
    } else if (nc_is(s, "--ranks-dir", NULL) && i + 1 < argc) {
      ranks_dir = argv[++i];
    } else if (nc_is(s, "--input", "-i")) {
      while (i + 1 < argc && argv[i + 1][0] != '-') inputs[ninputs++] = argv[++i];
    } else {
      fprintf(stderr, "nanochat tok eval: unknown or incomplete option '%s'\n\n%s", s, help);
      free(inputs);
      return 2;
    }
  }
  nc_tok *toks[3] = {0};
  const char *names[3] = {"gpt2", "cl100k_base", tokpath};
  int ntok = tokpath ? 3 : 2;
  nc_status st = NC_OK;
  for (int k = 0; k < ntok && !st; k++) st = nc_tok_open(names[k], ranks_dir, &toks[k]);
  if (st) {
    rc = nc_fail(st);
    goto done;
  }
  printf("%-24s %10s %10s %8s %10s %8s", "text", "bytes", "gpt2", "b/tok", "gpt4", "b/tok");
  if (tokpath) printf(" %10s %8s %9s", "ours", "b/tok", "vs gpt4");
  printf("\n");
  for (size_t i = 0; i < NC_EVAL_N + ninputs && !st; i++) {
    char *owned = NULL;
    const char *text;
    size_t n;
    const char *label;
    if (i < NC_EVAL_N) {
      text = nc_eval_texts[i];
      n = strlen(text);
      label = nc_eval_names[i];
    } else {
      label = inputs[i - NC_EVAL_N];
      st = nc_file_read(label, NC_TOK_MAX_INPUT, &owned, &n);
      if (st) break;
      text = owned;
      const char *slash = strrchr(label, '/');
      if (slash) label = slash + 1;
    }
    size_t cnt[3] = {0};
    for (int k = 0; k < ntok && !st; k++) {
      nc_ids ids = {0};
      st = nc_tok_encode(toks[k], text, n, NULL, &ids);
      cnt[k] = ids.len;
      nc_ids_free(&ids);
    }
    free(owned);
    if (st) break;
    printf("%-24.24s %10zu %10zu %8.2f %10zu %8.2f", label, n, cnt[0], cnt[0] ? (double)n / cnt[0] : 0, cnt[1],
           cnt[1] ? (double)n / cnt[1] : 0);
    if (tokpath)
      printf(" %10zu %8.2f %+8.1f%%", cnt[2], cnt[2] ? (double)n / cnt[2] : 0,
             cnt[1] ? 100.0 * ((double)cnt[1] - (double)cnt[2]) / (double)cnt[1] : 0);
    printf("\n");
  }
  rc = st ? nc_fail(st) : 0;
done:
  for (int k = 0; k < 3; k++) nc_tok_free(toks[k]);
  free(inputs);
  return rc;
}

int nc_cmd_tok(int argc, char **argv) {
  if (argc < 2) {
    fputs(nc_tok_usage, stderr);
    return 2;
  }
  const char *sub = argv[1];
  if (nc_is(sub, "--help", "-h") || !strcmp(sub, "help")) {
    fputs(nc_tok_usage, stdout);
    return 0;
  }
  if (!strcmp(sub, "train")) return nc_tok_train_cmd(argc - 1, argv + 1);
  if (!strcmp(sub, "encode")) return nc_tok_encode_cmd(argc - 1, argv + 1);
  if (!strcmp(sub, "decode")) return nc_tok_decode_cmd(argc - 1, argv + 1);
  if (!strcmp(sub, "eval")) return nc_tok_eval_cmd(argc - 1, argv + 1);
  fprintf(stderr, "nanochat tok: unknown subcommand '%s'\n\n%s", sub, nc_tok_usage);
  return 2;
}
