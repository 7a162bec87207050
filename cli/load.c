// Loading a command's FILE argument: a graph or a model spec (cli/load.h).
#include "cli/load.h"

#include <stdlib.h>
#include <string.h>

#include "frontend/spec.h"
#include "ir/graphio.h"
#include "models/train.h"
#include "support/buf.h"

// True when the file is a model spec: an XML document whose root is <model>.
static bool nc_is_spec(const char *src, size_t len) {
  size_t i = 0;
  for (;;) {
    while (i < len && (src[i] == ' ' || src[i] == '\t' || src[i] == '\r' || src[i] == '\n')) i++;
    if (i + 1 < len && src[i] == '<' && (src[i + 1] == '?' || src[i + 1] == '!')) {
      const char *end = src[i + 1] == '?' ? "?>" : (i + 3 < len && src[i + 2] == '-' ? "-->" : ">");
      const char *e = memmem(src + i, len - i, end, strlen(end));
      if (!e) return false;
      i = (size_t)(e - src) + strlen(end);
      continue;
    }
    return i + 6 <= len && !memcmp(src + i, "<model", 6) &&
           (i + 6 == len || strchr(" \t\r\n>/", src[i + 6]));
  }
}

// Loads FILE: a graph (text IR or XML) or a model spec, which is built into
// its forward graph (outputs logits and loss) or, with train, its whole
// training step (forward, backward, AdamW + Muon).
nc_status nc_cli_load_graph(const char *path, bool train, nc_graph **g) {
  char *src;
  size_t len;
  *g = NULL;
  NC_TRY(nc_file_read(path, NC_GRAPH_FILE_MAX, &src, &len));
  nc_status st;
  if (nc_is_spec(src, len)) {
    nc_model_spec s;
    st = nc_spec_parse(src, len, path, &s);
    if (!st && train) {
      nc_optim_cfg oc;
      nc_optim_defaults(&oc);
      nc_train_opts to = {.kind = NC_TRAIN_STEP};
      st = nc_train_build(&s, &oc, &to, g);
    } else if (!st) {
      nc_gpt_opts o = {.with_logits = true, .with_loss = true};
      st = nc_gpt_build(&s, &o, g);
    }
  } else if (train) {
    st = nc_errorf(NC_E_INVALID, "%s: --train needs a model spec (XML with a <model> root), not a graph", path);
  } else {
    st = nc_graph_load_mem(src, len, path, g);
  }
  free(src);
  return st;
}
