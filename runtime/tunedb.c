// The tuning database (runtime/tunedb.h): JSON through jansson.
#include "runtime/tunedb.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "support/buf.h"

struct nc_tunedb {
  char path[1024];
  bool print;
  nc_tune_entry *e;
  int n, cap;
  char **warn;
  int nwarn;
};

void nc_tunedb_warn(nc_tunedb *db, const char *fmt, ...) {
  char msg[1400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (db->print) fprintf(stderr, "nanochat: warning: %s\n", msg);
  char **w = realloc(db->warn, (size_t)(db->nwarn + 1) * sizeof *w);
  if (!w) return;
  db->warn = w;
  if ((w[db->nwarn] = strdup(msg))) db->nwarn++;
}

static bool nc_tdb_mkdirs(const char *path) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return false;
    *p = '/';
  }
  return mkdir(tmp, 0755) == 0 || errno == EEXIST;
}

bool nc_tunedb_path(const char *override, char *buf, size_t n) {
  const char *t = getenv("NC_TUNE_DB"), *d = getenv("NC_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  if (override && *override) snprintf(buf, n, "%s", override);
  else if (t && !strcmp(t, "off")) return false;
  else if (t && *t) snprintf(buf, n, "%s", t);
  else if (d && !strcmp(d, "off")) return false;
  else if (d && *d) snprintf(buf, n, "%s/tune.json", d);
  else if (x && *x) snprintf(buf, n, "%s/nanochat-c/tune.json", x);
  else if (h && *h) snprintf(buf, n, "%s/.cache/nanochat-c/tune.json", h);
  else return false;
  return true;
}

static bool nc_tdb_str(json_t *o, const char *key, char *dst, size_t n) {
  json_t *v = json_object_get(o, key);
  if (!json_is_string(v) || json_string_length(v) >= n || json_string_length(v) == 0) return false;
  snprintf(dst, n, "%s", json_string_value(v));
  return true;
}

static bool nc_tdb_num(json_t *o, const char *key, double *dst) {
  json_t *v = json_object_get(o, key);
  if (!json_is_number(v)) return false;
  *dst = json_number_value(v);
  return *dst >= 0;
}

// The knob space named by the kernel signature's first word.
static const nc_knob_space *nc_tdb_space(const char *kernel) {
  char name[64];
  size_t l = strcspn(kernel, " ");
  if (l >= sizeof name) return NULL;
  memcpy(name, kernel, l);
  name[l] = 0;
  return nc_knob_space_find(name);
}

// One entry from JSON: false (and why) when it is unusable.
static bool nc_tdb_entry_parse(json_t *o, nc_tune_entry *e, char *why, size_t wn) {
  memset(e, 0, sizeof *e);
  if (!json_is_object(o)) return snprintf(why, wn, "not an object"), false;
  static const char *fields[] = {"device", "driver", "kernel", "shape"};
  char *dst[] = {e->device, e->driver, e->kernel, e->shape};
  size_t sz[] = {sizeof e->device, sizeof e->driver, sizeof e->kernel, sizeof e->shape};
  for (int i = 0; i < 4; i++)
    if (!nc_tdb_str(o, fields[i], dst[i], sz[i])) return snprintf(why, wn, "field '%s' is missing or not a short non-empty string", fields[i]), false;
  if (!nc_tdb_num(o, "time_us", &e->time_us)) return snprintf(why, wn, "field 'time_us' is missing or not a number >= 0"), false;
  if (!nc_tdb_num(o, "default_time_us", &e->default_time_us))
    return snprintf(why, wn, "field 'default_time_us' is missing or not a number >= 0"), false;
  if (!nc_tdb_str(o, "date", e->date, sizeof e->date)) snprintf(e->date, sizeof e->date, "?");
  const nc_knob_space *s = nc_tdb_space(e->kernel);
  if (!s) return snprintf(why, wn, "kernel '%.100s' names no known template", e->kernel), false;
  json_t *kn = json_object_get(o, "knobs");
  if (!json_is_object(kn)) return snprintf(why, wn, "field 'knobs' is missing or not an object"), false;
  const char *key;
  json_t *v;
  json_object_foreach(kn, key, v) {
    int i = nc_knob_find(s, key);
    if (i < 0) return snprintf(why, wn, "unknown knob '%.40s' for %s", key, s->name), false;
    if (!json_is_integer(v)) return snprintf(why, wn, "knob '%s' is not an integer", key), false;
    json_int_t x = json_integer_value(v);
    if (x < s->knobs[i].min || x > s->knobs[i].max)
      return snprintf(why, wn, "knob %s=%lld is outside %d..%d", key, (long long)x, s->knobs[i].min, s->knobs[i].max), false;
    if (e->nknobs >= NC_KNOB_MAX) return snprintf(why, wn, "too many knobs"), false;
    snprintf(e->knob_names[e->nknobs], sizeof e->knob_names[0], "%s", key);
    e->knob_values[e->nknobs++] = (int)x;
  }
  return true;
}

nc_status nc_tunedb_load(const char *path, bool print, nc_tunedb **out) {
  *out = NULL;
  nc_tunedb *db = calloc(1, sizeof *db);
  if (!db) return nc_errorf(NC_E_NOMEM, "out of memory");
  snprintf(db->path, sizeof db->path, "%s", path);
  db->print = print;
  char *text = NULL;
  size_t len = 0;
  nc_status st = nc_file_read(path, (size_t)64 << 20, &text, &len);
  if (st) {  // absent: an empty database; unreadable: say so
    struct stat sb;
    if (stat(path, &sb) == 0) nc_tunedb_warn(db, "tuning database %s: %s; ignored", path, nc_status_msg(st));
    nc_status_free(st);
    *out = db;
    return NC_OK;
  }
  json_error_t jerr;
  json_t *root = json_loadb(text, len, 0, &jerr);
  free(text);
  if (!root) {
    nc_tunedb_warn(db, "tuning database %s:%d:%d: not JSON (%s); ignored", path, jerr.line, jerr.column, jerr.text);
    *out = db;
    return NC_OK;
  }
  json_t *ver = json_object_get(root, "version"), *fmt = json_object_get(root, "format"), *ents = json_object_get(root, "entries");
  if (!json_is_object(root) || !json_is_string(fmt) || strcmp(json_string_value(fmt), NC_TUNEDB_FORMAT)) {
    nc_tunedb_warn(db, "tuning database %s: not a tuning database (no \"format\": \"%s\"); ignored", path, NC_TUNEDB_FORMAT);
  } else if (!json_is_integer(ver) || json_integer_value(ver) != NC_TUNEDB_VERSION) {
    nc_tunedb_warn(db, "tuning database %s: version %s is not %d (stale); ignored", path,
                   json_is_integer(ver) ? "other" : "missing", NC_TUNEDB_VERSION);
  } else if (!json_is_array(ents)) {
    nc_tunedb_warn(db, "tuning database %s: \"entries\" is not an array; ignored", path);
  } else {
    size_t i;
    json_t *o;
    json_array_foreach(ents, i, o) {
      nc_tune_entry e;
      char why[256];
      if (!nc_tdb_entry_parse(o, &e, why, sizeof why)) {
        nc_tunedb_warn(db, "tuning database %s: entry %zu: %s; ignored", path, i, why);
        continue;
      }
      if ((st = nc_tunedb_put(db, &e))) break;
    }
  }
  json_decref(root);
  if (st) {
    nc_tunedb_free(db);
    return st;
  }
  *out = db;
  return NC_OK;
}

nc_tunedb *nc_tunedb_open_default(void) {
  char path[1024];
  if (!nc_tunedb_path(NULL, path, sizeof path)) return NULL;
  nc_tunedb *db = NULL;
  nc_status st = nc_tunedb_load(path, true, &db);
  nc_status_free(st);
  return db;
}

void nc_tunedb_free(nc_tunedb *db) {
  if (!db) return;
  for (int i = 0; i < db->nwarn; i++) free(db->warn[i]);
  free(db->warn);
  free(db->e);
  free(db);
}

const char *nc_tunedb_file(const nc_tunedb *db) { return db->path; }
int nc_tunedb_count(const nc_tunedb *db) { return db ? db->n : 0; }
const nc_tune_entry *nc_tunedb_entry(const nc_tunedb *db, int i) { return &db->e[i]; }
int nc_tunedb_nwarnings(const nc_tunedb *db) { return db ? db->nwarn : 0; }
const char *nc_tunedb_warning(const nc_tunedb *db, int i) { return db->warn[i]; }

const nc_tune_entry *nc_tunedb_find(const nc_tunedb *db, const char *device, const char *driver, const char *kernel,
                                    const char *shape) {
  for (int i = 0; db && i < db->n; i++) {
    const nc_tune_entry *e = &db->e[i];
    if (!strcmp(e->device, device) && !strcmp(e->driver, driver) && !strcmp(e->kernel, kernel) && !strcmp(e->shape, shape)) return e;
  }
  return NULL;
}

int nc_tunedb_select(nc_tunedb *db, const char *device, const char *driver, const char *kernel, const nc_tune_entry **out,
                     int max) {
  int n = 0;
  for (int i = 0; db && i < db->n; i++) {
    const nc_tune_entry *e = &db->e[i];
    if (strcmp(e->device, device) || strcmp(e->kernel, kernel)) continue;
    if (strcmp(e->driver, driver)) {
      nc_tunedb_warn(db, "tuning database %s: entry %d (%s, %s, %s): stale, tuned under driver '%s', now '%s'; ignored", db->path, i,
                     e->device, e->kernel, e->shape, e->driver, driver);
      continue;
    }
    if (n < max) out[n++] = e;
  }
  return n;
}

nc_status nc_tune_entry_apply(const nc_tune_entry *e, const nc_knob_space *s, void *knobs) {
  char tmp[256];
  if (s->size > sizeof tmp) return nc_errorf(NC_E_INTERNAL, "knob struct of %s too large", s->name);
  memcpy(tmp, knobs, s->size);
  for (int i = 0; i < e->nknobs; i++) {
    int k = nc_knob_find(s, e->knob_names[i]);
    if (k < 0) return nc_errorf(NC_E_INVALID, "unknown knob '%s' for %s", e->knob_names[i], s->name);
    if (!s->knobs[k].nsearch && e->knob_values[i] != nc_knob_get(s, knobs, k))
      return nc_errorf(NC_E_INVALID, "knob %s=%d differs from this device's fixed %d", e->knob_names[i], e->knob_values[i],
                       nc_knob_get(s, knobs, k));
    nc_knob_set(s, tmp, k, e->knob_values[i]);
  }
  NC_TRY(nc_knob_check(s, tmp));
  memcpy(knobs, tmp, s->size);
  return NC_OK;
}

void nc_tune_entry_set_knobs(nc_tune_entry *e, const nc_knob_space *s, const void *knobs) {
  e->nknobs = 0;
  for (int i = 0; i < s->nknobs && i < NC_KNOB_MAX; i++) {
    snprintf(e->knob_names[e->nknobs], sizeof e->knob_names[0], "%s", s->knobs[i].name);
    e->knob_values[e->nknobs++] = nc_knob_get(s, knobs, i);
  }
}

nc_status nc_tunedb_put(nc_tunedb *db, const nc_tune_entry *e) {
  for (int i = 0; i < db->n; i++) {
    nc_tune_entry *o = &db->e[i];
    if (!strcmp(o->device, e->device) && !strcmp(o->driver, e->driver) && !strcmp(o->kernel, e->kernel) && !strcmp(o->shape, e->shape)) {
      *o = *e;
      return NC_OK;
    }
  }
  if (db->n == db->cap) {
    int cap = db->cap ? 2 * db->cap : 16;
    nc_tune_entry *p = realloc(db->e, (size_t)cap * sizeof *p);
    if (!p) return nc_errorf(NC_E_NOMEM, "out of memory");
    db->e = p, db->cap = cap;
  }
  db->e[db->n++] = *e;
  return NC_OK;
}

nc_status nc_tunedb_save(const nc_tunedb *db, const char *path) {
  json_t *root = json_object(), *ents = json_array();
  if (!root || !ents) {
    json_decref(root);
    json_decref(ents);
    return nc_errorf(NC_E_NOMEM, "out of memory");
  }
  json_object_set_new(root, "format", json_string(NC_TUNEDB_FORMAT));
  json_object_set_new(root, "version", json_integer(NC_TUNEDB_VERSION));
  for (int i = 0; i < db->n; i++) {
    const nc_tune_entry *e = &db->e[i];
    json_t *o = json_object(), *kn = json_object();
    json_object_set_new(o, "device", json_string(e->device));
    json_object_set_new(o, "driver", json_string(e->driver));
    json_object_set_new(o, "kernel", json_string(e->kernel));
    json_object_set_new(o, "shape", json_string(e->shape));
    for (int k = 0; k < e->nknobs; k++) json_object_set_new(kn, e->knob_names[k], json_integer(e->knob_values[k]));
    json_object_set_new(o, "knobs", kn);
    json_object_set_new(o, "time_us", json_real(e->time_us));
    json_object_set_new(o, "default_time_us", json_real(e->default_time_us));
    json_object_set_new(o, "speedup", json_real(e->time_us > 0 ? e->default_time_us / e->time_us : 0));
    json_object_set_new(o, "date", json_string(e->date));
    json_array_append_new(ents, o);
  }
  json_object_set_new(root, "entries", ents);
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
  json_decref(root);
  if (!text) return nc_errorf(NC_E_NOMEM, "out of memory writing the tuning database");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    nc_tdb_mkdirs(dir);
  }
  size_t len = strlen(text);
  nc_status st = nc_file_write_atomic(path, text, len);
  free(text);
  if (st) return nc_status_prefix(st, "writing the tuning database %s: ", path);
  return NC_OK;
}

void nc_tune_shape_str(int64_t batch, int64_t m, int64_t n, int64_t k, char *buf, size_t len) {
  snprintf(buf, len, "batch=%lld m=%lld n=%lld k=%lld", (long long)batch, (long long)m, (long long)n, (long long)k);
}

void nc_tune_cpu_kernel(int variant, int vw, int threads, char *buf, size_t len) {
  int ta = (variant >> 1) & 1, tb = variant & 1;
  if (variant >= 8 && variant < 16) {  // bf16 buffers: the bf16 GEMM's own space
    snprintf(buf, len, "cpu.gemm_bf16 ta=%d tb=%d vw=%d threads=%d", ta, tb, vw, threads);
    return;
  }
  // the plain fp32 GEMM keeps the signature of the first databases; the epilogues add a word
  int sym = variant < 8 ? (variant >> 2) & 1 : variant >= 20 ? ((variant - 20) >> 2) & 1 : 0;
  snprintf(buf, len, "cpu.gemm_f32 ta=%d tb=%d sym=%d vw=%d threads=%d%s", ta, tb, sym, vw, threads,
           variant >= 20 ? " epi=addend" : variant >= 16 ? " epi=relu2" : "");
}

void nc_tune_ocl_kernel(int variant, int tc_mode, char *buf, size_t len) {
  if (tc_mode) snprintf(buf, len, "ocl.gemm_bf16 ta=%d tb=%d mode=%d", (variant >> 1) & 1, variant & 1, tc_mode);
  else snprintf(buf, len, "ocl.gemm_f32 ta=%d tb=%d", (variant >> 1) & 1, variant & 1);
}

void nc_tune_ocl_pkernel(int variant, int tc_mode, char *buf, size_t len) {
  snprintf(buf, len, "ocl.gemm_bf16p ta=%d tb=%d mode=%d", (variant >> 1) & 1, variant & 1, tc_mode);
}

void nc_tune_cpu_ids(const nc_host_cpu *hc, char *device, size_t dn, char *driver, size_t rn) {
  snprintf(device, dn, "cpu %s", hc->cpu);
  snprintf(driver, rn, "LLVM %s", hc->llvm_version);
}

void nc_tune_ocl_ids(const nc_ocl_device_desc *d, char *device, size_t dn, char *driver, size_t rn) {
  snprintf(device, dn, "%s | %s", d->name, d->platform);
  snprintf(driver, rn, "%s | %s", d->driver, d->platform_version);
}
