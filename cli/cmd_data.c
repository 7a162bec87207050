// nanochat data: corpus, synth, gsm8k, stats, pack (docs/data.md).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/tokenizer.h"
#include "cli/commands.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/sft.h"
#include "data/tasks.h"

static const char *nc_data_usage =
    "usage: nanochat data <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  corpus   build the default pretraining corpus from Debian-packaged text\n"
    "           (bible-kjv, dict-gcide, dict-jargon, fortunes) as gzipped JSONL shards\n"
    "  synth    write synthetic conversations: spellingbee, simplespelling,\n"
    "           arithmetic (calculator tool), identity\n"
    "  gsm8k    convert GSM8K {question, answer} JSONL to conversations (calculator parts)\n"
    "  stats    count documents, bytes and tokens of shards or conversation files\n"
    "  pack     run the packing loader: efficiency and the first rows decoded\n"
    "\n"
    "Run 'nanochat data <subcommand> --help' for its options.\n";

static int nc_dfail(const char *sub, nc_status st) {
  fprintf(stderr, "nanochat data %s: %s\n", sub, nc_status_msg(st));
  nc_status_free(st);
  return 1;
}

static int nc_dbad(const char *sub, const char *fmt, const char *arg) {
  fprintf(stderr, "nanochat data %s: ", sub);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see --help)\n");
  return 2;
}

static bool nc_num(const char *s, double lo, double hi, double *out) {
  if (!s || !*s) return false;
  char *e;
  errno = 0;
  double d = strtod(s, &e);
  if (errno || *e || d < lo || d > hi) return false;
  *out = d;
  return true;
}

// Takes the value of option argv[*i] (i advanced); NULL if missing.
static const char *nc_val(int argc, char **argv, int *i) { return *i + 1 < argc ? argv[++*i] : NULL; }

static void nc_corpus_log(void *ctx, const char *line) {
  (void)ctx;
  fprintf(stderr, "  %s\n", line);
}

// ---- corpus ----------------------------------------------------------------

static const char *nc_corpus_help =
    "usage: nanochat data corpus -o DIR [options]\n"
    "\n"
    "Builds the default pretraining corpus from text that Debian packages install\n"
    "(scripts/setup.sh): the King James Bible (one document per chapter, via the\n"
    "`bible` program of bible-kjv), a 1/16 sample of GCIDE dictionary entries, the\n"
    "Jargon File, and the fortunes. Cleans, deduplicates and shuffles the documents\n"
    "(deterministically), then writes DIR/shard_00000.jsonl.gz ... with the LAST\n"
    "shard the validation shard. Same inputs and options, same bytes.\n"
    "\n"
    "options:\n"
    "  -o, --out DIR        output folder (created)\n"
    "  --shard-mb N         text per training shard in MiB (default 1)\n"
    "  --val-frac F         fraction of documents in the val shard (default 0.02)\n"
    "  --max-mb N           keep at most N MiB of text in total (default: all, ~10 MiB)\n"
    "  --seed S             shuffle seed (default 42)\n"
    "  --dictd DIR          dictd files (default /usr/share/dictd)\n"
    "  --fortunes DIR       fortune files (default /usr/share/games/fortunes)\n"
    "  --bible CMD          the bible program (default bible)\n";

static int nc_data_corpus(int argc, char **argv) {
  nc_corpus_opts o = {.log = nc_corpus_log};
  double v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(nc_corpus_help, stdout);
      return 0;
    } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
      if (!(o.out_dir = nc_val(argc, argv, &i))) return nc_dbad("corpus", "%s needs a folder", a);
    } else if (!strcmp(a, "--shard-mb")) {
      if (!nc_num(nc_val(argc, argv, &i), 0.001, 1e6, &v)) return nc_dbad("corpus", "%s needs a size in MiB > 0", a);
      o.shard_bytes = (int64_t)(v * 1048576);
    } else if (!strcmp(a, "--max-mb")) {
      if (!nc_num(nc_val(argc, argv, &i), 0.001, 1e6, &v)) return nc_dbad("corpus", "%s needs a size in MiB > 0", a);
      o.max_bytes = (int64_t)(v * 1048576);
    } else if (!strcmp(a, "--val-frac")) {
      if (!nc_num(nc_val(argc, argv, &i), 1e-9, 0.5, &v))
        return nc_dbad("corpus", "%s needs a fraction in (0, 0.5]", a);
      o.val_fraction = v;
    } else if (!strcmp(a, "--seed")) {
      if (!nc_num(nc_val(argc, argv, &i), 1, 1.8e19, &v)) return nc_dbad("corpus", "%s needs an integer >= 1", a);
      o.seed = (uint64_t)v;
    } else if (!strcmp(a, "--dictd")) {
      if (!(o.dictd_dir = nc_val(argc, argv, &i))) return nc_dbad("corpus", "%s needs a folder", a);
    } else if (!strcmp(a, "--fortunes")) {
      if (!(o.fortunes_dir = nc_val(argc, argv, &i))) return nc_dbad("corpus", "%s needs a folder", a);
    } else if (!strcmp(a, "--bible")) {
      if (!(o.bible_cmd = nc_val(argc, argv, &i))) return nc_dbad("corpus", "%s needs a command", a);
    } else {
      return nc_dbad("corpus", "unknown option '%s'", a);
    }
  }
  if (!o.out_dir) return nc_dbad("corpus", "%s", "-o DIR is required");
  nc_corpus_summary s;
  nc_status st = nc_corpus_build(&o, &s);
  if (st) return nc_dfail("corpus", st);
  printf("%s: %lld documents, %.2f MiB of text: %lld training shard(s) shard_00000..shard_%05lld, val shard "
         "shard_%05lld (%lld documents, %.2f MiB)\n",
         o.out_dir, (long long)s.docs, s.bytes / 1048576.0, (long long)s.train_shards,
         (long long)s.train_shards - 1, (long long)s.train_shards, (long long)s.val_docs, s.val_bytes / 1048576.0);
  return 0;
}

// ---- synth / gsm8k ---------------------------------------------------------

static const char *nc_synth_help =
    "usage: nanochat data synth TASK -n N -o FILE [--seed S] [--words FILE]\n"
    "\n"
    "Writes N synthetic conversations of TASK as JSONL ({\"messages\":[...]}; FILE.gz is\n"
    "gzipped). Conversation i depends only on (seed, i).\n"
    "  spellingbee     count a letter in a word: spell it, running count, python check, \"#### n\"\n"
    "  simplespelling  \"Spell the word: w\" -> \"w:w,o,r,d\"\n"
    "  arithmetic      + - * problems solved with the calculator tool, \"#### n\"\n"
    "  identity        who/what nanochat-c is, who made it, what it can do\n"
    "\n"
    "options:\n"
    "  -n N            number of conversations\n"
    "  -o, --out FILE  output file\n"
    "  --seed S        seed (default 42)\n"
    "  --words FILE    word list for the spelling tasks (default /usr/share/dict/words;\n"
    "                  words of 2-24 lowercase letters are used)\n";

static int nc_data_synth(int argc, char **argv) {
  const char *task = NULL, *out = NULL, *words = NULL;
  double n = -1, seed = 42;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(nc_synth_help, stdout);
      return 0;
    } else if (!strcmp(a, "-n")) {
      if (!nc_num(nc_val(argc, argv, &i), 0, 1e9, &n) || n != (double)(int64_t)n)
        return nc_dbad("synth", "%s needs a count >= 0", a);
    } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
      if (!(out = nc_val(argc, argv, &i))) return nc_dbad("synth", "%s needs a file", a);
    } else if (!strcmp(a, "--seed")) {
      if (!nc_num(nc_val(argc, argv, &i), 0, 1.8e19, &seed)) return nc_dbad("synth", "%s needs an integer >= 0", a);
    } else if (!strcmp(a, "--words")) {
      if (!(words = nc_val(argc, argv, &i))) return nc_dbad("synth", "%s needs a file", a);
    } else if (a[0] == '-') {
      return nc_dbad("synth", "unknown option '%s'", a);
    } else if (!task) {
      task = a;
    } else {
      return nc_dbad("synth", "unexpected argument '%s'", a);
    }
  }
  if (!task) return nc_dbad("synth", "%s", "TASK is required (spellingbee, simplespelling, arithmetic, identity)");
  if (n < 0) return nc_dbad("synth", "%s", "-n N is required");
  if (!out) return nc_dbad("synth", "%s", "-o FILE is required");
  nc_task_kind k;
  nc_status st = nc_task_parse(task, &k);
  if (st) return nc_dfail("synth", st);
  nc_wordlist wl = {0};
  if (k == NC_TASK_SPELLING_BEE || k == NC_TASK_SIMPLE_SPELLING) st = nc_wordlist_load(words, &wl);
  if (!st) st = nc_task_write(k, &wl, (uint64_t)seed, (int64_t)n, out);
  nc_wordlist_free(&wl);
  if (st) return nc_dfail("synth", st);
  printf("%s: %lld %s conversations\n", out, (long long)n, nc_task_name(k));
  return 0;
}

static const char *nc_gsm8k_help =
    "usage: nanochat data gsm8k IN.jsonl[.gz] -o OUT.jsonl[.gz] [--skip-bad]\n"
    "\n"
    "Converts GSM8K problems ({\"question\",\"answer\"} per line) to conversations as\n"
    "nanochat's GSM8K task: each <<expr=result>> of the answer becomes a python part\n"
    "(expr) and a python_output part (result); the answer ends with \"#### N\".\n"
    "  --skip-bad   skip malformed lines (counted) instead of failing at the first\n";

static int nc_data_gsm8k(int argc, char **argv) {
  const char *in = NULL, *out = NULL;
  bool skip = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(nc_gsm8k_help, stdout);
      return 0;
    } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
      if (!(out = nc_val(argc, argv, &i))) return nc_dbad("gsm8k", "%s needs a file", a);
    } else if (!strcmp(a, "--skip-bad")) {
      skip = true;
    } else if (a[0] == '-') {
      return nc_dbad("gsm8k", "unknown option '%s'", a);
    } else if (!in) {
      in = a;
    } else {
      return nc_dbad("gsm8k", "unexpected argument '%s'", a);
    }
  }
  if (!in || !out) return nc_dbad("gsm8k", "%s", "IN and -o OUT are required");
  nc_gsm8k g;
  nc_status st = nc_gsm8k_load(in, skip, &g);
  if (!st) st = nc_gsm8k_write_conversations(&g, out);
  if (st) return nc_dfail("gsm8k", st);
  printf("%s: %lld conversations (%lld lines skipped)\n", out, (long long)g.n, (long long)g.skipped);
  nc_gsm8k_free(&g);
  return 0;
}

// ---- stats / pack ----------------------------------------------------------

typedef struct {
  const char **files;
  int nfiles;
  const char *tok_path;
  bool sft, skip;
  int64_t B, T, batches, show;
  uint64_t seed;
} nc_insp_args;

static const char *nc_stats_help =
    "usage: nanochat data stats FILE... [--tokenizer TOK] [--sft] [--skip-bad]\n"
    "\n"
    "Counts the documents (plain text paragraphs, JSONL \"text\", .gz) and their bytes;\n"
    "with --tokenizer also tokens (a BOS per document) and bytes per token. With\n"
    "--sft the files are conversation JSONL: conversations, and with --tokenizer the\n"
    "rendered tokens and the trained (assistant) tokens. Malformed input stops with\n"
    "file:line, or with --skip-bad is counted and skipped.\n";

static const char *nc_pack_help =
    "usage: nanochat data pack FILE... --tokenizer TOK [options]\n"
    "\n"
    "Runs the loader of base training (or with --sft, of SFT) for a few batches and\n"
    "prints the packing figures: tokens per row used, tokens cropped (pretraining:\n"
    "nanochat's best-fit crops) or padding (SFT), and the first rows decoded.\n"
    "\n"
    "options:\n"
    "  --tokenizer TOK  tiktoken rank file (+ TOK.json sidecar), e.g. from 'nanochat tok train'\n"
    "  -B N             rows per batch (default 4)\n"
    "  -T N             sequence length (default 512)\n"
    "  --batches N      batches to pack (default 10)\n"
    "  --show N         rows to print decoded (default 2; up to 600 characters each)\n"
    "  --sft            FILEs are conversation JSONL (an equal-weight mixture)\n"
    "  --seed S         mixture shuffle seed for --sft (default 42)\n"
    "  --skip-bad       skip malformed input (counted) instead of failing\n";

static int nc_insp_parse(const char *sub, const char *help, int argc, char **argv, nc_insp_args *a) {
  *a = (nc_insp_args){.B = 4, .T = 512, .batches = 10, .show = 2, .seed = 42};
  a->files = calloc((size_t)argc, sizeof *a->files);
  if (!a->files) return 1;
  double v;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
      fputs(help, stdout);
      return 0;
    } else if (!strcmp(s, "--tokenizer")) {
      if (!(a->tok_path = nc_val(argc, argv, &i))) return nc_dbad(sub, "%s needs a file", s);
    } else if (!strcmp(s, "--sft")) {
      a->sft = true;
    } else if (!strcmp(s, "--skip-bad")) {
      a->skip = true;
    } else if (!strcmp(s, "-B") || !strcmp(s, "-T") || !strcmp(s, "--batches") || !strcmp(s, "--show") ||
               !strcmp(s, "--seed")) {
      if (!nc_num(nc_val(argc, argv, &i), 0, 1e9, &v) || v != (double)(int64_t)v)
        return nc_dbad(sub, "%s needs a whole number", s);
      if (s[1] == 'B') a->B = (int64_t)v;
      else if (s[1] == 'T') a->T = (int64_t)v;
      else if (!strcmp(s, "--batches")) a->batches = (int64_t)v;
      else if (!strcmp(s, "--show")) a->show = (int64_t)v;
      else a->seed = (uint64_t)v;
      if ((s[1] == 'B' || s[1] == 'T') && v < 1) return nc_dbad(sub, "%s must be >= 1", s);
    } else if (s[0] == '-' && s[1]) {
      return nc_dbad(sub, "unknown option '%s'", s);
    } else {
      a->files[a->nfiles++] = s;
    }
  }
  if (!a->nfiles) return nc_dbad(sub, "%s", "no input FILE");
  return -1;
}

static int nc_data_stats(int argc, char **argv) {
  nc_insp_args a;
  int rc = nc_insp_parse("stats", nc_stats_help, argc, argv, &a);
  if (rc >= 0) {
    free(a.files);
    return rc;
  }
  nc_tok *tok = NULL;
  nc_status st = a.tok_path ? nc_tok_load(a.tok_path, &tok) : NC_OK;
  if (!st && !a.sft) {
    nc_docstream *ds = NULL;
    st = nc_docstream_open(a.files, a.nfiles, a.skip, &ds);
    int64_t docs = 0, bytes = 0, toks = 0, minb = -1, maxb = 0;
    nc_ids ids = {0};
    while (!st) {
      const char *t;
      size_t n;
      nc_doc_pos p;
      st = nc_docstream_next(ds, &t, &n, &p);
      if (st || !t) break;
      docs++;
      bytes += (int64_t)n;
      if (minb < 0 || (int64_t)n < minb) minb = (int64_t)n;
      if ((int64_t)n > maxb) maxb = (int64_t)n;
      if (tok) {
        ids.len = 0;
        nc_tok_encode_opts eo = {NC_TOK_SPECIAL_ORDINARY, 1};
        st = nc_tok_encode(tok, t, n, &eo, &ids);
        toks += (int64_t)ids.len + 1;
      }
    }
    if (!st) {
      printf("documents  %lld\nbytes      %lld (per document: min %lld, mean %.1f, max %lld)\n", (long long)docs,
             (long long)bytes, (long long)(minb < 0 ? 0 : minb), docs ? (double)bytes / docs : 0.0, (long long)maxb);
      if (tok)
        printf("tokens     %lld (with a BOS per document; %.3f bytes/token, mean %.1f tokens/document)\n",
               (long long)toks, toks ? (double)bytes / toks : 0.0, docs ? (double)toks / docs : 0.0);
      printf("skipped    %lld%s%s\n", (long long)nc_docstream_skipped(ds),
             nc_docstream_skipped(ds) ? "  first: " : "", nc_docstream_first_skip(ds));
    }
    nc_ids_free(&ids);
    nc_docstream_close(ds);
  } else if (!st) {
    nc_sft_source *src = calloc((size_t)a.nfiles, sizeof *src);
    for (int i = 0; src && i < a.nfiles; i++) src[i] = (nc_sft_source){a.files[i], 1};
    nc_sft_mix_opts mo = {src, a.nfiles, a.seed, a.skip};
    nc_sft_mix *m = NULL;
    st = src ? nc_sft_mix_open(&mo, &m) : nc_errorf(NC_E_NOMEM, "out of memory");
    int64_t toks = 0, trained = 0, maxt = 0;
    for (int64_t i = 0; !st && tok && i < nc_sft_mix_len(m); i++) {
      const char *j;
      size_t n;
      int s;
      int64_t ln;
      st = nc_sft_mix_get(m, i, &j, &n, &s, &ln);
      nc_tok_rendered r = {0};
      if (!st) st = nc_tok_render_conversation(tok, j, n, (size_t)1 << 30, &r);
      if (st) st = nc_status_prefix(st, "%s:%lld: ", nc_sft_mix_source_path(m, s), (long long)ln);
      toks += (int64_t)r.len;
      if ((int64_t)r.len > maxt) maxt = (int64_t)r.len;
      for (size_t k = 0; k < r.len; k++) trained += r.mask[k];
      nc_tok_rendered_free(&r);
    }
    if (!st) {
      for (int i = 0; i < a.nfiles; i++)
        printf("%-40s %lld conversations\n", a.files[i], (long long)nc_sft_mix_source_len(m, i));
      printf("conversations  %lld (skipped lines: %lld)\n", (long long)nc_sft_mix_len(m),
             (long long)nc_sft_mix_skipped(m));
      if (tok)
        printf("tokens         %lld rendered (mean %.1f, max %lld per conversation), %lld trained (%.1f%%)\n",
               (long long)toks, nc_sft_mix_len(m) ? (double)toks / nc_sft_mix_len(m) : 0.0, (long long)maxt,
               (long long)trained, toks ? 100.0 * trained / toks : 0.0);
    }
    nc_sft_mix_close(m);
    free(src);
  }
  nc_tok_free(tok);
  free(a.files);
  return st ? nc_dfail("stats", st) : 0;
}

static void nc_show_row(const nc_tok *tok, const int32_t *in, const int32_t *tg, int64_t T, int64_t b) {
  nc_buf out = {0};
  int32_t *row = malloc((size_t)(T + 1) * sizeof *row);
  if (!row) return;
  memcpy(row, in + b * T, (size_t)T * sizeof *row);
  row[T] = tg[b * T + T - 1] >= 0 ? tg[b * T + T - 1] : nc_tok_bos_id(tok);
  nc_status st = nc_tok_decode(tok, row, (size_t)T + 1, &out);
  if (st) {
    printf("row %lld: (cannot decode: %s)\n", (long long)b, nc_status_msg(st));
    nc_status_free(st);
  } else {
    size_t n = out.len > 600 ? 600 : out.len;
    printf("---- row %lld (%zu bytes%s) ----\n%.*s%s\n", (long long)b, out.len, n < out.len ? ", first 600" : "",
           (int)n, out.data ? out.data : "", n < out.len ? " ..." : "");
  }
  nc_buf_free(&out);
  free(row);
}

static int nc_data_pack(int argc, char **argv) {
  nc_insp_args a;
  int rc = nc_insp_parse("pack", nc_pack_help, argc, argv, &a);
  if (rc >= 0) {
    free(a.files);
    return rc;
  }
  if (!a.tok_path) {
    free(a.files);
    return nc_dbad("pack", "%s", "--tokenizer TOK is required");
  }
  nc_tok *tok = NULL;
  nc_status st = nc_tok_load(a.tok_path, &tok);
  size_t n = (size_t)(a.B * a.T);
  int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
  if (!st && (!in || !tg)) st = nc_errorf(NC_E_NOMEM, "out of memory");
  if (!st && !a.sft) {
    nc_loader_opts lo = {.paths = a.files, .npaths = a.nfiles, .tok = tok, .B = a.B, .T = a.T, .skip_bad = a.skip};
    nc_loader *l = NULL;
    st = nc_loader_open(&lo, &l);
    for (int64_t i = 0; !st && i < a.batches; i++) {
      st = nc_loader_next(l, in, tg);
      for (int64_t b = 0; !st && i == 0 && b < a.show && b < a.B; b++) nc_show_row(tok, in, tg, a.T, b);
    }
    if (!st) {
      nc_loader_stats s;
      nc_loader_get_stats(l, &s);
      int64_t used = s.row_tokens;
      printf("packed %lld rows of %lld tokens: %lld documents tokenized (%lld tokens); %lld tokens cropped "
             "(%.1f%% of the tokens consumed), epoch %lld, skipped %lld\n",
             (long long)s.rows, (long long)a.T + 1, (long long)s.docs_read, (long long)s.doc_tokens,
             (long long)s.cropped_tokens, used ? 100.0 * s.cropped_tokens / (double)(used + s.cropped_tokens) : 0.0,
             (long long)nc_loader_epoch(l), (long long)nc_loader_skipped(l));
    }
    nc_loader_close(l);
  } else if (!st) {
    nc_sft_source *src = calloc((size_t)a.nfiles, sizeof *src);
    for (int i = 0; src && i < a.nfiles; i++) src[i] = (nc_sft_source){a.files[i], 1};
    nc_sft_mix_opts mo = {src, a.nfiles, a.seed, a.skip};
    nc_sft_mix *m = NULL;
    nc_sft_loader *l = NULL;
    st = src ? nc_sft_mix_open(&mo, &m) : nc_errorf(NC_E_NOMEM, "out of memory");
    nc_sft_loader_opts so = {.mix = m, .tok = tok, .B = a.B, .T = a.T, .skip_bad = a.skip};
    if (!st) st = nc_sft_loader_open(&so, &l);
    for (int64_t i = 0; !st && i < a.batches; i++) {
      st = nc_sft_loader_next(l, in, tg);
      for (int64_t b = 0; !st && i == 0 && b < a.show && b < a.B; b++) nc_show_row(tok, in, tg, a.T, b);
    }
    if (!st) {
      nc_sft_loader_stats s;
      nc_sft_loader_get_stats(l, &s);
      int64_t cells = s.rows * (a.T + 1);
      printf("packed %lld rows of %lld tokens: %lld conversations (%.2f epochs of %lld), %lld padding tokens "
             "(%.1f%% of the rows), %lld trained targets (%.1f%% of the targets)\n",
             (long long)s.rows, (long long)a.T + 1, (long long)nc_sft_loader_consumed(l), nc_sft_loader_progress(l),
             (long long)nc_sft_mix_len(m), (long long)s.pad_tokens, cells ? 100.0 * s.pad_tokens / cells : 0.0,
             (long long)s.trained_targets, s.rows ? 100.0 * s.trained_targets / (double)(s.rows * a.T) : 0.0);
    }
    nc_sft_loader_close(l);
    nc_sft_mix_close(m);
    free(src);
  }
  free(in);
  free(tg);
  nc_tok_free(tok);
  free(a.files);
  return st ? nc_dfail("pack", st) : 0;
}

int nc_cmd_data(int argc, char **argv) {
  if (argc < 2) {
    fputs(nc_data_usage, stderr);
    return 2;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
    fputs(nc_data_usage, stdout);
    return 0;
  }
  if (!strcmp(sub, "corpus")) return nc_data_corpus(argc - 1, argv + 1);
  if (!strcmp(sub, "synth")) return nc_data_synth(argc - 1, argv + 1);
  if (!strcmp(sub, "gsm8k")) return nc_data_gsm8k(argc - 1, argv + 1);
  if (!strcmp(sub, "stats")) return nc_data_stats(argc - 1, argv + 1);
  if (!strcmp(sub, "pack")) return nc_data_pack(argc - 1, argv + 1);
  fprintf(stderr, "nanochat data: unknown subcommand '%s'\n\n%s", sub, nc_data_usage);
  return 2;
}
