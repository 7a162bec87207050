// nanochat report: report.md of a run (pipeline/report.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "pipeline/report.h"

int nc_cmd_report(int argc, char **argv) {
  const char *out = NULL, *tag = NULL, *file = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: nanochat report [--out BASE] [--model-tag TAG] [-o FILE]\n\n"
             "Writes the report card of a run: the machine, the code version, and each stage's\n"
             "(base, mid, sft, rl) settings, metrics, greedy samples and loss plots.\n"
             "  --out BASE        the runs' base folder (default $NANOCHAT_BASE_DIR, else ~/.cache/nanochat-c)\n"
             "  --model-tag TAG   the run (default d4)\n"
             "  -o FILE           where to write (default BASE/report.md)\n");
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "nanochat report: %s needs a value\n", argv[i]);
      return 2;
    }
    if (!strcmp(argv[i], "--out")) out = argv[++i];
    else if (!strcmp(argv[i], "--model-tag")) tag = argv[++i];
    else if (!strcmp(argv[i], "-o")) file = argv[++i];
    else {
      fprintf(stderr, "nanochat report: unknown option '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  char base[2048], path[4096];
  const char *env = getenv("NANOCHAT_BASE_DIR"), *home = getenv("HOME");
  if (out) snprintf(base, sizeof base, "%s", out);
  else if (env && *env) snprintf(base, sizeof base, "%s", env);
  else snprintf(base, sizeof base, "%s/.cache/nanochat-c", home ? home : ".");
  if (!file) snprintf(path, sizeof path, "%s/report.md", base), file = path;
  nc_status st = nc_report_write(base, tag ? tag : "d4", file);
  if (st) {
    fprintf(stderr, "nanochat report: %s\n", nc_status_msg(st));
    nc_status_free(st);
    return 1;
  }
  printf("wrote %s\n", file);
  return 0;
}
