#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ir/text.h"
#include "passes/pass.h"
#include "support/buf.h"
#include "support/clock.h"

static const nc_pass_info nc_pass_table[] = {
#define P(NAME, SUMMARY) {#NAME, SUMMARY, nc_pass_##NAME},
#include "passes/passes.def"
#undef P
};
#define NC_NPASSES ((int)(sizeof nc_pass_table / sizeof nc_pass_table[0]))

void nc_pass_ctx_init(nc_pass_ctx *ctx) {
  memset(ctx, 0, sizeof *ctx);
  ctx->stop_after = -1;
}

int nc_pass_count(void) { return NC_NPASSES; }
const nc_pass_info *nc_pass_at(int k) { return k >= 0 && k < NC_NPASSES ? &nc_pass_table[k] : NULL; }

const nc_pass_info *nc_pass_find(const char *name) {
  for (int i = 0; i < NC_NPASSES; i++)
    if (!strcmp(nc_pass_table[i].name, name)) return &nc_pass_table[i];
  return NULL;
}

static bool nc_match(const char *want, const char *name) {
  return want && (!strcmp(want, "*") || !strcmp(want, name));
}

static void nc_dump(nc_pass_ctx *ctx, const nc_graph *g, const char *when, const char *pass) {
  FILE *f = ctx->dump_to ? ctx->dump_to : stderr;
  nc_buf b;
  nc_buf_init(&b);
  nc_status st = nc_graph_print_text(g, &b);
  fprintf(f, "// ---- IR %s pass '%s' ----\n", when, pass);
  if (st) fprintf(f, "// (cannot print: %s)\n", nc_status_msg(st));
  else fputs(b.data ? b.data : "", f);
  nc_status_free(st);
  nc_buf_free(&b);
}

nc_status nc_pass_run_pipeline(nc_graph **g, const char *const *names, int n, nc_pass_ctx *ctx) {
  if (n > NC_MAX_PIPELINE) return nc_errorf(NC_E_INVALID, "pipeline has %d passes (at most %d)", n, NC_MAX_PIPELINE);
  const nc_pass_info *infos[NC_MAX_PIPELINE];
  for (int i = 0; i < n; i++) {
    infos[i] = nc_pass_find(names[i]);
    if (!infos[i]) {
      nc_buf b;
      nc_buf_init(&b);
      for (int k = 0; k < NC_NPASSES; k++) nc_buf_printf(&b, "%s%s", k ? ", " : "", nc_pass_table[k].name);
      nc_status st = nc_errorf(NC_E_INVALID, "unknown pass '%s' (known: %s)", names[i], b.data ? b.data : "");
      nc_buf_free(&b);
      return st;
    }
  }
  if (ctx->verify) NC_TRY(nc_status_prefix(nc_graph_verify(*g), "before the first pass: "));
  ctx->nrun = 0;
  for (int i = 0; i < n; i++) {
    if (ctx->stop_after >= 0 && i > ctx->stop_after) break;
    if (nc_match(ctx->dump_before, infos[i]->name)) nc_dump(ctx, *g, "before", infos[i]->name);
    double t0 = nc_clock_now();
    nc_status st = infos[i]->run(g, ctx);
    ctx->seconds[i] = nc_clock_now() - t0;
    ctx->ran[i] = infos[i]->name;
    ctx->nrun = i + 1;
    if (st) return nc_status_prefix(st, "pass '%s': ", infos[i]->name);
    if (ctx->verify) NC_TRY(nc_status_prefix(nc_graph_verify(*g), "after pass '%s': ", infos[i]->name));
    if (nc_match(ctx->dump_after, infos[i]->name)) nc_dump(ctx, *g, "after", infos[i]->name);
  }
  if (ctx->timing) {
    FILE *f = ctx->dump_to ? ctx->dump_to : stderr;
    for (int i = 0; i < ctx->nrun; i++) fprintf(f, "pass %-16s %9.3f ms\n", ctx->ran[i], 1e3 * ctx->seconds[i]);
  }
  return NC_OK;
}

nc_status nc_pass_split_list(const char *list, char **storage, const char **names, int *n) {
  *n = 0;
  *storage = strdup(list);
  if (!*storage) return nc_errorf(NC_E_NOMEM, "out of memory");
  char *save = NULL;
  for (char *tok = strtok_r(*storage, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (*n >= NC_MAX_PIPELINE) return nc_errorf(NC_E_INVALID, "too many passes in '%s'", list);
    names[(*n)++] = tok;
  }
  return NC_OK;
}
