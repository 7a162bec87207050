// nanochat-style checkpoint folders. See checkpoint.h and docs/checkpoints.md.
#include "runtime/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "support/buf.h"

static bool ck_step_ok(int64_t step) { return step >= 0 && step <= NC_CHECKPOINT_MAX_STEP; }

char *nc_checkpoint_path(const char *dir, nc_ckpt_file kind, int64_t step, int rank) {
  if (!dir || !ck_step_ok(step) || rank < 0) return NULL;
  size_t n = strlen(dir) + 64;
  char *p = malloc(n);
  if (!p) return NULL;
  const char *sep = (dir[0] && dir[strlen(dir) - 1] != '/') ? "/" : "";
  switch (kind) {
    case NC_CKPT_MODEL: snprintf(p, n, "%s%smodel_%06lld.safetensors", dir, sep, (long long)step); break;
    case NC_CKPT_META: snprintf(p, n, "%s%smeta_%06lld.json", dir, sep, (long long)step); break;
    case NC_CKPT_OPTIM: snprintf(p, n, "%s%soptim_%06lld_rank%d.safetensors", dir, sep, (long long)step, rank); break;
    default: free(p); return NULL;
  }
  return p;
}

static nc_status ck_path(char **out, const char *dir, nc_ckpt_file kind, int64_t step, int rank) {
  if (!dir || !dir[0]) return nc_errorf(NC_E_INVALID, "checkpoint: empty folder name");
  if (!ck_step_ok(step))
    return nc_errorf(NC_E_INVALID, "checkpoint %s: step %lld out of range 0..%lld", dir, (long long)step,
                     (long long)NC_CHECKPOINT_MAX_STEP);
  if (rank < 0) return nc_errorf(NC_E_INVALID, "checkpoint %s: negative rank %d", dir, rank);
  *out = nc_checkpoint_path(dir, kind, step, rank);
  return *out ? NC_OK : nc_errorf(NC_E_NOMEM, "checkpoint %s: out of memory", dir);
}

nc_status nc_checkpoint_mkdir(const char *dir) {
  if (!dir || !dir[0]) return nc_errorf(NC_E_INVALID, "checkpoint: empty folder name");
  size_t n = strlen(dir);
  char *p = malloc(n + 1);
  if (!p) return nc_errorf(NC_E_NOMEM, "checkpoint %s: out of memory", dir);
  memcpy(p, dir, n + 1);
  nc_status st = NC_OK;
  for (size_t i = 1; i <= n && !st; i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char c = p[i];
    p[i] = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) st = nc_errorf(NC_E_IO, "%s: cannot create folder: %s", p, strerror(errno));
    p[i] = c;
  }
  struct stat sb;
  if (!st && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) st = nc_errorf(NC_E_IO, "%s: not a folder", dir);
  free(p);
  return st;
}

// ---- saving -----------------------------------------------------------------------

nc_status nc_checkpoint_save_model(const char *dir, int64_t step, const nc_tensor_list *model) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_MODEL, step, 0));
  nc_metadata meta;
  nc_metadata_init(&meta);
  nc_status st = nc_metadata_set(&meta, "format", "pt");
  if (!st) st = nc_safetensors_write(path, model, &meta);
  nc_metadata_free(&meta);
  free(path);
  return st;
}

nc_status nc_checkpoint_save_optim(const char *dir, int64_t step, int rank, const nc_tensor_list *optim) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_OPTIM, step, rank));
  nc_status st = nc_safetensors_write(path, optim, NULL);
  free(path);
  return st;
}

// Validates a parsed meta object against step. what names the source.
static nc_status ck_meta_check(const json_t *root, int64_t step, const char *what) {
  if (!json_is_object(root)) return nc_errorf(NC_E_PARSE, "%s: meta is not a JSON object", what);
  json_t *s = json_object_get(root, "step");
  if (!s) return nc_errorf(NC_E_PARSE, "%s: meta has no \"step\"", what);
  if (!json_is_integer(s)) return nc_errorf(NC_E_PARSE, "%s: meta \"step\" is not an integer", what);
  if ((int64_t)json_integer_value(s) != step)
    return nc_errorf(NC_E_PARSE, "%s: meta \"step\" is %lld but the file is for step %lld", what,
                     (long long)json_integer_value(s), (long long)step);
  return NC_OK;
}

static nc_status ck_meta_parse(const char *text, size_t len, int64_t step, const char *what, json_t **out) {
  *out = NULL;
  long bad = nc_utf8_invalid_at(text, len);
  if (bad >= 0) return nc_errorf(NC_E_PARSE, "%s: meta is not valid UTF-8 (byte %ld)", what, bad);
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return nc_errorf(NC_E_PARSE, "%s: meta is not valid JSON: %s (line %d, column %d)", what, jerr.text, jerr.line,
                     jerr.column);
  nc_status st = ck_meta_check(root, step, what);
  if (st) {
    json_decref(root);
    return st;
  }
  *out = root;
  return NC_OK;
}

nc_status nc_checkpoint_save_meta(const char *dir, int64_t step, const char *meta_json) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_META, step, 0));
  if (!meta_json) {
    nc_status st = nc_errorf(NC_E_INVALID, "%s: NULL meta", path);
    free(path);
    return st;
  }
  size_t len = strlen(meta_json);
  json_t *root;
  nc_status st = ck_meta_parse(meta_json, len, step, path, &root);
  json_decref(root);
  if (!st) {
    nc_atomic_file f;
    st = nc_atomic_file_open(&f, path);
    if (!st) {
      st = nc_atomic_file_write(&f, meta_json, len);
      if (!st && (len == 0 || meta_json[len - 1] != '\n')) st = nc_atomic_file_write(&f, "\n", 1);
      if (st)
        nc_atomic_file_abort(&f);
      else
        st = nc_atomic_file_commit(&f);
    }
  }
  free(path);
  return st;
}

nc_status nc_checkpoint_save_meta_obj(const char *dir, int64_t step, const struct json_t *meta) {
  if (!meta) return nc_errorf(NC_E_INVALID, "checkpoint %s: NULL meta", dir ? dir : "(null)");
  char *text = json_dumps(meta, JSON_INDENT(2) | JSON_ENSURE_ASCII);
  if (!text) return nc_errorf(NC_E_INVALID, "checkpoint %s: meta cannot be serialized (not an object or array?)", dir);
  nc_status st = nc_checkpoint_save_meta(dir, step, text);
  free(text);
  return st;
}

nc_status nc_checkpoint_save(const char *dir, int64_t step, const nc_tensor_list *model, const nc_tensor_list *optim,
                             const char *meta_json) {
  // Validate meta first so that a bad meta does not leave orphan tensor files.
  char *mpath;
  NC_TRY(ck_path(&mpath, dir, NC_CKPT_META, step, 0));
  json_t *root;
  nc_status st = meta_json ? ck_meta_parse(meta_json, strlen(meta_json), step, mpath, &root)
                           : nc_errorf(NC_E_INVALID, "%s: NULL meta", mpath);
  free(mpath);
  if (st) return st;
  json_decref(root);
  NC_TRY(nc_checkpoint_mkdir(dir));
  NC_TRY(nc_checkpoint_save_model(dir, step, model));
  if (optim) NC_TRY(nc_checkpoint_save_optim(dir, step, 0, optim));
  return nc_checkpoint_save_meta(dir, step, meta_json);
}

// ---- discovery ----------------------------------------------------------------------

// Parses "meta_<digits>.json" exactly as "%06lld" would print it.
static bool ck_parse_meta_name(const char *name, int64_t *step) {
  if (strncmp(name, "meta_", 5) != 0) return false;
  const char *d = name + 5;
  size_t nd = 0;
  while (d[nd] >= '0' && d[nd] <= '9') nd++;
  if (nd < 6 || nd > 12 || strcmp(d + nd, ".json") != 0) return false;
  if (nd > 6 && d[0] == '0') return false;  // not how %06d prints it
  int64_t v = 0;
  for (size_t i = 0; i < nd; i++) v = v * 10 + (d[i] - '0');
  *step = v;
  return true;
}

static bool ck_is_file(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

nc_status nc_checkpoint_find_latest(const char *dir, int64_t *step) {
  *step = -1;
  if (!dir || !dir[0]) return nc_errorf(NC_E_INVALID, "checkpoint: empty folder name");
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return NC_OK;
    return nc_errorf(NC_E_IO, "%s: cannot list folder: %s", dir, strerror(errno));
  }
  nc_status st = NC_OK;
  struct dirent *ent;
  int64_t best = -1;
  errno = 0;
  while ((ent = readdir(d)) != NULL) {
    int64_t s;
    if (!ck_parse_meta_name(ent->d_name, &s) || s <= best) continue;
    char *meta = nc_checkpoint_path(dir, NC_CKPT_META, s, 0);
    char *model = nc_checkpoint_path(dir, NC_CKPT_MODEL, s, 0);
    if (!meta || !model) {
      free(meta);
      free(model);
      st = nc_errorf(NC_E_NOMEM, "%s: out of memory", dir);
      break;
    }
    if (ck_is_file(meta) && ck_is_file(model)) best = s;
    free(meta);
    free(model);
    errno = 0;
  }
  if (!st && errno != 0) st = nc_errorf(NC_E_IO, "%s: cannot list folder: %s", dir, strerror(errno));
  closedir(d);
  if (!st) *step = best;
  return st;
}

// ---- loading ------------------------------------------------------------------------

nc_status nc_checkpoint_load_model(const char *dir, int64_t step, nc_tensor_list *model) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_MODEL, step, 0));
  nc_status st = nc_safetensors_read(path, model, NULL);
  free(path);
  return st;
}

nc_status nc_checkpoint_load_optim(const char *dir, int64_t step, int rank, nc_tensor_list *optim) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_OPTIM, step, rank));
  nc_status st = nc_safetensors_read(path, optim, NULL);
  free(path);
  return st;
}

static nc_status ck_meta_read(const char *dir, int64_t step, json_t **meta, char **text) {
  char *path;
  NC_TRY(ck_path(&path, dir, NC_CKPT_META, step, 0));
  char *data = NULL;
  size_t len = 0;
  nc_status st = nc_file_read(path, NC_CHECKPOINT_MAX_META, &data, &len);
  json_t *root = NULL;
  if (!st) st = ck_meta_parse(data, len, step, path, &root);
  free(path);
  if (st) {
    free(data);
    return st;
  }
  if (meta)
    *meta = root;
  else
    json_decref(root);
  if (text)
    *text = data;
  else
    free(data);
  return NC_OK;
}

nc_status nc_checkpoint_load_meta(const char *dir, int64_t step, struct json_t **meta) {
  *meta = NULL;
  return ck_meta_read(dir, step, meta, NULL);
}

nc_status nc_checkpoint_load_meta_text(const char *dir, int64_t step, char **text) {
  *text = NULL;
  return ck_meta_read(dir, step, NULL, text);
}

static nc_status ck_list_check_absent(const nc_tensor_list *dst, const nc_tensor_list *src, const char *what) {
  for (size_t i = 0; i < src->len; i++)
    if (nc_tensor_list_find(dst, src->items[i].name))
      return nc_errorf(NC_E_INVALID, "%s: tensor '%s' already present in the destination list", what, src->items[i].name);
  return NC_OK;
}

// Moves every tensor of src into dst (names already checked); empties src.
// Only an allocation failure can stop it half way.
static nc_status ck_list_move(nc_tensor_list *dst, nc_tensor_list *src) {
  for (size_t i = 0; i < src->len; i++) NC_TRY(nc_tensor_list_add(dst, src->items[i].name, &src->items[i].t));
  nc_tensor_list_free(src);  // names only: the tensors were moved
  return NC_OK;
}

nc_status nc_checkpoint_load(const char *dir, int64_t step, int rank, nc_tensor_list *model, nc_tensor_list *optim,
                             struct json_t **meta, int64_t *step_out) {
  if (meta) *meta = NULL;
  if (step < 0) {
    NC_TRY(nc_checkpoint_find_latest(dir, &step));
    if (step < 0) return nc_errorf(NC_E_IO, "%s: no complete checkpoint (meta_*.json with its model file) in the folder", dir);
  }
  json_t *m = NULL;
  nc_tensor_list tm, to;
  nc_tensor_list_init(&tm);
  nc_tensor_list_init(&to);
  nc_status st = ck_meta_read(dir, step, &m, NULL);
  if (!st) st = nc_checkpoint_load_model(dir, step, &tm);
  if (!st && optim) st = nc_checkpoint_load_optim(dir, step, rank, &to);
  if (!st) st = ck_list_check_absent(model, &tm, dir);
  if (!st && optim) st = ck_list_check_absent(optim, &to, dir);
  if (!st) st = ck_list_move(model, &tm);
  if (!st && optim) st = ck_list_move(optim, &to);
  nc_tensor_list_free(&tm);
  nc_tensor_list_free(&to);
  if (st) {
    json_decref(m);
    return st;
  }
  if (meta)
    *meta = m;
  else
    json_decref(m);
  if (step_out) *step_out = step;
  return NC_OK;
}
