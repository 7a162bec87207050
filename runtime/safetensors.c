// safetensors reading and writing. See safetensors.h and docs/checkpoints.md.
//
// Reading validates the whole header before allocating anything the header
// asks for: every size is checked against the real file size first, so a
// hostile file can make us allocate at most about its own size.
#include "runtime/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/buf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (tensor bytes are written as they lie in memory)"
#endif

// ---- small helpers ----------------------------------------------------------

// Length of name to print in an error message: at most 200 bytes, cut on a
// UTF-8 character boundary (names may be huge in hostile files).
static int st_name_len(const char *s) {
  size_t n = strlen(s);
  if (n <= 200) return (int)n;
  n = 200;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  return (int)n;
}
#define ST_NAME(s) st_name_len(s), (s)

static char *st_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static bool st_utf8_ok(const char *s) { return nc_utf8_invalid_at(s, strlen(s)) < 0; }

// safetensors dtype strings, in nc_dtype order.
static const char *const st_dtype_names[NC_DTYPE_COUNT] = {
    [NC_F32] = "F32", [NC_BF16] = "BF16", [NC_F16] = "F16", [NC_I32] = "I32",
    [NC_I64] = "I64", [NC_U8] = "U8",     [NC_BOOL] = "BOOL",
};
// Valid safetensors dtypes that nanochat-c has no nc_dtype for.
static const char *const st_dtype_unsupported[] = {
    "F64", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

// Checks a tensor's dtype, rank and shape; *nbytes gets its size.
static nc_status st_check_tensor(const nc_tensor *t, uint64_t *nbytes) {
  if ((unsigned)t->dtype >= NC_DTYPE_COUNT) return nc_errorf(NC_E_INVALID, "invalid dtype %d", (int)t->dtype);
  if (t->rank < 0 || t->rank > NC_MAX_RANK)
    return nc_errorf(NC_E_INVALID, "rank %d out of range 0..%d", t->rank, NC_MAX_RANK);
  uint64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->shape[i] < 0 || t->shape[i] > NC_MAX_DIM)
      return nc_errorf(NC_E_INVALID, "dim %d has invalid extent %lld", i, (long long)t->shape[i]);
    if (t->shape[i] && n > (uint64_t)NC_MAX_ELEMS / (uint64_t)t->shape[i])
      return nc_errorf(NC_E_INVALID, "element count exceeds 2^48");
    n *= (uint64_t)t->shape[i];
  }
  *nbytes = n * nc_dtype_size(t->dtype);
  if (*nbytes && !t->data) return nc_errorf(NC_E_INVALID, "tensor has no data");
  return NC_OK;
}

// ---- nc_tensor_list -----------------------------------------------------------

void nc_tensor_list_init(nc_tensor_list *l) { memset(l, 0, sizeof *l); }

void nc_tensor_list_free(nc_tensor_list *l) {
  for (size_t i = 0; i < l->len; i++) {
    free(l->items[i].name);
    nc_tensor_free(&l->items[i].t);
  }
  free(l->items);
  memset(l, 0, sizeof *l);
}

nc_tensor *nc_tensor_list_find(const nc_tensor_list *l, const char *name) {
  for (size_t i = 0; i < l->len; i++)
    if (strcmp(l->items[i].name, name) == 0) return &l->items[i].t;
  return NULL;
}

static nc_status st_list_reserve(nc_tensor_list *l, size_t extra) {
  if (l->len + extra <= l->cap) return NC_OK;
  size_t cap = l->cap ? l->cap : 16;
  while (cap < l->len + extra) {
    if (cap > SIZE_MAX / 2 / sizeof(nc_named_tensor)) return nc_errorf(NC_E_NOMEM, "tensor list: too many tensors");
    cap *= 2;
  }
  nc_named_tensor *p = realloc(l->items, cap * sizeof *p);
  if (!p) return nc_errorf(NC_E_NOMEM, "tensor list: out of memory");
  l->items = p;
  l->cap = cap;
  return NC_OK;
}

nc_status nc_tensor_list_add(nc_tensor_list *l, const char *name, nc_tensor *t) {
  if (!name) return nc_errorf(NC_E_INVALID, "tensor list: NULL tensor name");
  if (!st_utf8_ok(name)) return nc_errorf(NC_E_INVALID, "tensor list: tensor name is not valid UTF-8");
  if (strcmp(name, "__metadata__") == 0)
    return nc_errorf(NC_E_INVALID, "tensor list: the name '__metadata__' is reserved by safetensors");
  uint64_t nbytes;
  nc_status st = st_check_tensor(t, &nbytes);
  if (st) return nc_status_prefix(st, "tensor list: tensor '%.*s': ", ST_NAME(name));
  if (nc_tensor_list_find(l, name))
    return nc_errorf(NC_E_INVALID, "tensor list: duplicate tensor name '%.*s'", ST_NAME(name));
  NC_TRY(st_list_reserve(l, 1));
  char *d = st_strdup(name);
  if (!d) return nc_errorf(NC_E_NOMEM, "tensor list: out of memory");
  l->items[l->len].name = d;
  l->items[l->len].t = *t;
  l->len++;
  if (t->owned) memset(t, 0, sizeof *t);
  return NC_OK;
}

nc_status nc_tensor_list_add_copy(nc_tensor_list *l, const char *name, const nc_tensor *t) {
  uint64_t nbytes;
  nc_status st = st_check_tensor(t, &nbytes);
  if (st) return nc_status_prefix(st, "tensor list: tensor '%.*s': ", ST_NAME(name ? name : "(null)"));
  nc_tensor c;
  NC_TRY(nc_tensor_clone(&c, t));
  st = nc_tensor_list_add(l, name, &c);
  if (st) nc_tensor_free(&c);
  return st;
}

// ---- nc_metadata ----------------------------------------------------------------

void nc_metadata_init(nc_metadata *m) { memset(m, 0, sizeof *m); }

void nc_metadata_free(nc_metadata *m) {
  for (size_t i = 0; i < m->len; i++) {
    free(m->items[i].key);
    free(m->items[i].value);
  }
  free(m->items);
  memset(m, 0, sizeof *m);
}

const char *nc_metadata_get(const nc_metadata *m, const char *key) {
  for (size_t i = 0; i < m->len; i++)
    if (strcmp(m->items[i].key, key) == 0) return m->items[i].value;
  return NULL;
}

nc_status nc_metadata_set(nc_metadata *m, const char *key, const char *value) {
  if (!key || !value) return nc_errorf(NC_E_INVALID, "metadata: NULL key or value");
  if (!st_utf8_ok(key)) return nc_errorf(NC_E_INVALID, "metadata: key is not valid UTF-8");
  if (!st_utf8_ok(value)) return nc_errorf(NC_E_INVALID, "metadata: value of key '%.*s' is not valid UTF-8", ST_NAME(key));
  char *v = st_strdup(value);
  if (!v) return nc_errorf(NC_E_NOMEM, "metadata: out of memory");
  for (size_t i = 0; i < m->len; i++) {
    if (strcmp(m->items[i].key, key) == 0) {
      free(m->items[i].value);
      m->items[i].value = v;
      return NC_OK;
    }
  }
  char *k = st_strdup(key);
  if (!k) {
    free(v);
    return nc_errorf(NC_E_NOMEM, "metadata: out of memory");
  }
  if (m->len == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    nc_str_pair *p = realloc(m->items, cap * sizeof *p);
    if (!p) {
      free(k);
      free(v);
      return nc_errorf(NC_E_NOMEM, "metadata: out of memory");
    }
    m->items = p;
    m->cap = cap;
  }
  m->items[m->len].key = k;
  m->items[m->len].value = v;
  m->len++;
  return NC_OK;
}

// ---- header encoding ----------------------------------------------------------

// A JSON string the way serde_json writes it: UTF-8 kept as is; ", \ and
// control characters escaped (\b \f \n \r \t, else \u00xx).
static void st_json_str(nc_buf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  nc_buf_put(b, "\"", 1);
  const char *run = s;
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    const char *esc = NULL;
    char u[7];
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      default:
        if (c < 0x20) {
          memcpy(u, "\\u00", 4);
          u[4] = hex[c >> 4];
          u[5] = hex[c & 15];
          u[6] = 0;
          esc = u;
        }
    }
    if (esc) {
      nc_buf_put(b, run, (size_t)(p - run));
      nc_buf_puts(b, esc);
      run = p + 1;
    }
  }
  nc_buf_puts(b, run);
  nc_buf_put(b, "\"", 1);
}

static int st_cmp_str_ptr(const void *a, const void *b) {
  return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

// Builds the padded header and the order in which tensors' data follow it.
// *order gets a malloc'd array of l->len indices into l->items.
static nc_status st_encode_header(const nc_tensor_list *l, const nc_metadata *meta, nc_buf *hdr, size_t **order,
                                  uint64_t *data_len) {
  *order = NULL;
  size_t n = l->len;
  // Sort pointers to the name fields; names are the first member.
  const char **names = malloc((n ? n : 1) * sizeof *names);
  const char ***idx = malloc((n ? n : 1) * sizeof *idx);
  size_t *ord = malloc((n ? n : 1) * sizeof *ord);
  const char **mkeys = NULL;
  const char ***midx = NULL;
  size_t mn = meta ? meta->len : 0;
  if (mn) {
    mkeys = malloc(mn * sizeof *mkeys);
    midx = malloc(mn * sizeof *midx);
  }
  nc_status st = NC_OK;
  if (!names || !idx || !ord || (mn && (!mkeys || !midx))) {
    st = nc_errorf(NC_E_NOMEM, "safetensors: out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const nc_named_tensor *e = &l->items[i];
    uint64_t nb;
    if (!e->name) {
      st = nc_errorf(NC_E_INVALID, "safetensors: tensor %zu has no name", i);
      goto done;
    }
    if (!st_utf8_ok(e->name) || strcmp(e->name, "__metadata__") == 0) {
      st = nc_errorf(NC_E_INVALID, "safetensors: invalid tensor name '%.*s' (not UTF-8 or reserved)", ST_NAME(e->name));
      goto done;
    }
    if ((st = st_check_tensor(&e->t, &nb))) {
      st = nc_status_prefix(st, "safetensors: tensor '%.*s': ", ST_NAME(e->name));
      goto done;
    }
    names[i] = e->name;
    idx[i] = &names[i];
  }
  qsort(idx, n, sizeof *idx, st_cmp_str_ptr);
  for (size_t i = 0; i < n; i++) {
    ord[i] = (size_t)(idx[i] - names);
    if (i && strcmp(*idx[i - 1], *idx[i]) == 0) {
      st = nc_errorf(NC_E_INVALID, "safetensors: duplicate tensor name '%.*s'", ST_NAME(*idx[i]));
      goto done;
    }
  }
  for (size_t i = 0; i < mn; i++) {
    if (!meta->items[i].key || !meta->items[i].value || !st_utf8_ok(meta->items[i].key) ||
        !st_utf8_ok(meta->items[i].value)) {
      st = nc_errorf(NC_E_INVALID, "safetensors: __metadata__ entry %zu is NULL or not valid UTF-8", i);
      goto done;
    }
    mkeys[i] = meta->items[i].key;
    midx[i] = &mkeys[i];
  }
  if (mn) qsort(midx, mn, sizeof *midx, st_cmp_str_ptr);
  for (size_t i = 1; i < mn; i++) {
    if (strcmp(*midx[i - 1], *midx[i]) == 0) {
      st = nc_errorf(NC_E_INVALID, "safetensors: duplicate __metadata__ key '%.*s'", ST_NAME(*midx[i]));
      goto done;
    }
  }

  nc_buf_put(hdr, "{", 1);
  bool first = true;
  if (mn) {
    nc_buf_puts(hdr, "\"__metadata__\":{");
    for (size_t i = 0; i < mn; i++) {
      size_t k = (size_t)(midx[i] - mkeys);
      if (i) nc_buf_put(hdr, ",", 1);
      st_json_str(hdr, meta->items[k].key);
      nc_buf_put(hdr, ":", 1);
      st_json_str(hdr, meta->items[k].value);
    }
    nc_buf_put(hdr, "}", 1);
    first = false;
  }
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    const nc_named_tensor *e = &l->items[ord[i]];
    uint64_t nb = nc_tensor_nbytes(&e->t);
    if (!first) nc_buf_put(hdr, ",", 1);
    first = false;
    st_json_str(hdr, e->name);
    nc_buf_printf(hdr, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_names[e->t.dtype]);
    for (int d = 0; d < e->t.rank; d++) nc_buf_printf(hdr, "%s%lld", d ? "," : "", (long long)e->t.shape[d]);
    nc_buf_printf(hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
    off += nb;  // each nb <= 2^51; n <= 2^(64-51) is far beyond memory
  }
  nc_buf_put(hdr, "}", 1);
  while (hdr->len % 8) nc_buf_put(hdr, " ", 1);
  if (hdr->oom) {
    st = nc_errorf(NC_E_NOMEM, "safetensors: out of memory building the header");
    goto done;
  }
  if (hdr->len > NC_SAFETENSORS_MAX_HEADER) {
    st = nc_errorf(NC_E_INVALID, "safetensors: header of %zu bytes exceeds the limit of %u bytes", hdr->len,
                   NC_SAFETENSORS_MAX_HEADER);
    goto done;
  }
  *data_len = off;
  *order = ord;
  ord = NULL;
done:
  free(names);
  free(idx);
  free(ord);
  free(mkeys);
  free(midx);
  return st;
}

static void st_put_u64le(unsigned char out[8], uint64_t v) {
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (8 * i));
}

nc_status nc_safetensors_encode(const nc_tensor_list *l, const nc_metadata *meta, void **out, size_t *len) {
  *out = NULL;
  *len = 0;
  nc_buf hdr;
  nc_buf_init(&hdr);
  size_t *ord;
  uint64_t data_len;
  nc_status st = st_encode_header(l, meta, &hdr, &ord, &data_len);
  if (st) {
    nc_buf_free(&hdr);
    return st;
  }
  uint64_t total = 8 + (uint64_t)hdr.len + data_len;
  unsigned char *p = total <= SIZE_MAX ? malloc((size_t)total) : NULL;
  if (!p) {
    nc_buf_free(&hdr);
    free(ord);
    return nc_errorf(NC_E_NOMEM, "safetensors: cannot allocate %llu bytes", (unsigned long long)total);
  }
  st_put_u64le(p, hdr.len);
  memcpy(p + 8, hdr.data, hdr.len);
  size_t o = 8 + hdr.len;
  for (size_t i = 0; i < l->len; i++) {
    const nc_tensor *t = &l->items[ord[i]].t;
    size_t nb = nc_tensor_nbytes(t);
    if (nb) memcpy(p + o, t->data, nb);
    o += nb;
  }
  nc_buf_free(&hdr);
  free(ord);
  *out = p;
  *len = (size_t)total;
  return NC_OK;
}

// ---- atomic files -------------------------------------------------------------

static nc_status st_write_all(int fd, const void *data, size_t n, const char *what) {
  const char *p = data;
  while (n > 0) {
    size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
    ssize_t w = write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return nc_errorf(NC_E_IO, "%s: write failed: %s", what, strerror(errno));
    }
    if (w == 0) return nc_errorf(NC_E_IO, "%s: write made no progress", what);
    p += w;
    n -= (size_t)w;
  }
  return NC_OK;
}

nc_status nc_atomic_file_open(nc_atomic_file *f, const char *path) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  size_t pl = strlen(path);
  if (pl == 0 || path[pl - 1] == '/') return nc_errorf(NC_E_INVALID, "'%s': not a file path", path);
  f->path = st_strdup(path);
  f->tmp = malloc(pl + 16);
  if (!f->path || !f->tmp) {
    free(f->path);
    free(f->tmp);
    memset(f, 0, sizeof *f);
    return nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
  }
  snprintf(f->tmp, pl + 16, "%s.tmp.XXXXXX", path);
  f->fd = mkostemp(f->tmp, O_CLOEXEC);
  if (f->fd < 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
    free(f->path);
    free(f->tmp);
    memset(f, 0, sizeof *f);
    return st;
  }
  if (fchmod(f->fd, 0644) != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: chmod failed: %s", f->tmp, strerror(errno));
    nc_atomic_file_abort(f);
    return st;
  }
  return NC_OK;
}

nc_status nc_atomic_file_write(nc_atomic_file *f, const void *p, size_t n) {
  if (f->fd < 0) return nc_errorf(NC_E_INVALID, "atomic file: not open");
  return st_write_all(f->fd, p, n, f->tmp);
}

void nc_atomic_file_abort(nc_atomic_file *f) {
  if (f->fd >= 0) close(f->fd);
  if (f->tmp) unlink(f->tmp);
  free(f->tmp);
  free(f->path);
  memset(f, 0, sizeof *f);
  f->fd = -1;
}

// fsync of the folder holding path, so that the rename itself is durable.
static nc_status st_fsync_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash) {
    dir = st_strdup(".");
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    dir = malloc(n + 1);
    if (dir) {
      memcpy(dir, path, n);
      dir[n] = 0;
    }
  }
  if (!dir) return nc_errorf(NC_E_NOMEM, "%s: out of memory", path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  nc_status st = NC_OK;
  if (fd < 0) {
    st = nc_errorf(NC_E_IO, "%s: cannot open folder for fsync: %s", dir, strerror(errno));
  } else {
    // Some file systems cannot fsync a folder (EINVAL); the rename stands.
    if (fsync(fd) != 0 && errno != EINVAL) st = nc_errorf(NC_E_IO, "%s: folder fsync failed: %s", dir, strerror(errno));
    close(fd);
  }
  free(dir);
  return st;
}

nc_status nc_atomic_file_commit(nc_atomic_file *f) {
  if (f->fd < 0) return nc_errorf(NC_E_INVALID, "atomic file: not open");
  if (fsync(f->fd) != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: fsync failed: %s", f->tmp, strerror(errno));
    nc_atomic_file_abort(f);
    return st;
  }
  int rc = close(f->fd);
  f->fd = -1;
  if (rc != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: close failed: %s", f->tmp, strerror(errno));
    nc_atomic_file_abort(f);
    return st;
  }
  if (rename(f->tmp, f->path) != 0) {
    nc_status st = nc_errorf(NC_E_IO, "%s: rename of %s failed: %s", f->path, f->tmp, strerror(errno));
    nc_atomic_file_abort(f);
    return st;
  }
  nc_status st = st_fsync_dir(f->path);
  free(f->tmp);
  free(f->path);
  memset(f, 0, sizeof *f);
  f->fd = -1;
  return st;
}

nc_status nc_atomic_file_put(const char *path, const void *data, size_t len) {
  nc_atomic_file f;
  NC_TRY(nc_atomic_file_open(&f, path));
  nc_status st = nc_atomic_file_write(&f, data, len);
  if (st) {
    nc_atomic_file_abort(&f);
    return st;
  }
  return nc_atomic_file_commit(&f);
}

nc_status nc_safetensors_write(const char *path, const nc_tensor_list *l, const nc_metadata *meta) {
  nc_buf hdr;
  nc_buf_init(&hdr);
  size_t *ord;
  uint64_t data_len;
  nc_status st = st_encode_header(l, meta, &hdr, &ord, &data_len);
  if (st) {
    nc_buf_free(&hdr);
    return nc_status_prefix(st, "%s: ", path);
  }
  nc_atomic_file f;
  st = nc_atomic_file_open(&f, path);
  if (!st) {
    unsigned char len8[8];
    st_put_u64le(len8, hdr.len);
    st = nc_atomic_file_write(&f, len8, 8);
    if (!st) st = nc_atomic_file_write(&f, hdr.data, hdr.len);
    for (size_t i = 0; i < l->len && !st; i++) {
      const nc_tensor *t = &l->items[ord[i]].t;
      size_t nb = nc_tensor_nbytes(t);
      if (nb) st = nc_atomic_file_write(&f, t->data, nb);
    }
    if (st)
      nc_atomic_file_abort(&f);
    else
      st = nc_atomic_file_commit(&f);
  }
  nc_buf_free(&hdr);
  free(ord);
  return st;
}

// ---- header decoding ------------------------------------------------------------

typedef struct {
  const char *name;  // borrowed from the JSON tree
  nc_dtype dtype;
  int rank;
  int64_t shape[NC_MAX_RANK];
  uint64_t begin, end;
} st_entry;

typedef struct {
  json_t *root;
  st_entry *entries;
  size_t n;
} st_header;

static void st_header_free(st_header *h) {
  json_decref(h->root);
  free(h->entries);
  memset(h, 0, sizeof *h);
}

static int st_cmp_entry(const void *a, const void *b) {
  const st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static uint64_t st_get_u64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// First checks on the 8-byte prefix: *hlen gets a header length known to fit
// both the cap and the file.
static nc_status st_check_prefix(const char *label, const unsigned char *p8, uint64_t file_len, uint64_t *hlen) {
  if (file_len < 8)
    return nc_errorf(NC_E_PARSE, "%s: file is truncated: %llu bytes, shorter than the 8-byte header length", label,
                     (unsigned long long)file_len);
  uint64_t n = st_get_u64le(p8);
  if (n > NC_SAFETENSORS_MAX_HEADER)
    return nc_errorf(NC_E_PARSE, "%s: header length %llu exceeds the limit of %u bytes", label, (unsigned long long)n,
                     NC_SAFETENSORS_MAX_HEADER);
  if (n > file_len - 8)
    return nc_errorf(NC_E_PARSE, "%s: header length %llu exceeds the file size of %llu bytes (truncated file?)", label,
                     (unsigned long long)n, (unsigned long long)file_len);
  if (n < 2) return nc_errorf(NC_E_PARSE, "%s: header length %llu is too small for a JSON object", label, (unsigned long long)n);
  *hlen = n;
  return NC_OK;
}

static bool st_json_u64(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v)) return false;
  json_int_t i = json_integer_value(v);
  if (i < 0) return false;
  *out = (uint64_t)i;
  return true;
}

static nc_status st_parse_entry(const char *label, const char *name, json_t *v, uint64_t data_len, st_entry *e) {
  memset(e, 0, sizeof *e);
  e->name = name;
  if (!json_is_object(v))
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': entry is not a JSON object", label, ST_NAME(name));
  const char *key;
  json_t *field;
  json_object_foreach(v, key, field) {
    if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
      return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': unknown field '%.*s' (expected dtype, shape, data_offsets)", label,
                       ST_NAME(name), ST_NAME(key));
  }
  // dtype
  json_t *jd = json_object_get(v, "dtype");
  if (!json_is_string(jd)) return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': missing or non-string dtype", label, ST_NAME(name));
  const char *ds = json_string_value(jd);
  int dt = -1;
  for (int i = 0; i < NC_DTYPE_COUNT; i++)
    if (strcmp(ds, st_dtype_names[i]) == 0) dt = i;
  if (dt < 0) {
    for (size_t i = 0; i < sizeof st_dtype_unsupported / sizeof *st_dtype_unsupported; i++)
      if (strcmp(ds, st_dtype_unsupported[i]) == 0)
        return nc_errorf(NC_E_UNSUPPORTED, "%s: tensor '%.*s': unsupported dtype '%s' (supported: F32 BF16 F16 I32 I64 U8 BOOL)",
                         label, ST_NAME(name), ds);
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': unknown dtype '%.*s'", label, ST_NAME(name), ST_NAME(ds));
  }
  e->dtype = (nc_dtype)dt;
  // shape
  json_t *js = json_object_get(v, "shape");
  if (!json_is_array(js)) return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': missing shape or shape is not a list", label, ST_NAME(name));
  size_t rank = json_array_size(js);
  if (rank > NC_MAX_RANK)
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': shape has rank %zu, above the maximum of %d", label, ST_NAME(name), rank,
                     NC_MAX_RANK);
  e->rank = (int)rank;
  uint64_t numel = 1;
  for (size_t i = 0; i < rank; i++) {
    uint64_t d;
    if (!st_json_u64(json_array_get(js, i), &d))
      return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': shape must be a list of non-negative integers (dim %zu)", label,
                       ST_NAME(name), i);
    if (d > (uint64_t)NC_MAX_DIM)
      return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': shape dim %zu = %llu is absurd (limit 2^40)", label, ST_NAME(name), i,
                       (unsigned long long)d);
    e->shape[i] = (int64_t)d;
    if (d && numel > (uint64_t)NC_MAX_ELEMS / d)
      return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': element count overflows (shape product above 2^48)", label,
                       ST_NAME(name));
    numel *= d;
  }
  uint64_t nbytes = numel * nc_dtype_size(e->dtype);
  // data_offsets
  json_t *jo = json_object_get(v, "data_offsets");
  if (!json_is_array(jo) || json_array_size(jo) != 2 || !st_json_u64(json_array_get(jo, 0), &e->begin) ||
      !st_json_u64(json_array_get(jo, 1), &e->end))
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': data_offsets must be a list of two non-negative integers", label,
                     ST_NAME(name));
  if (e->begin > e->end)
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': data_offsets [%llu,%llu) has begin > end", label, ST_NAME(name),
                     (unsigned long long)e->begin, (unsigned long long)e->end);
  if (e->end > data_len)
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': data_offsets [%llu,%llu) extends beyond the data section of %llu bytes", label,
                     ST_NAME(name), (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_len);
  if (e->end - e->begin != nbytes)
    return nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': size mismatch: data_offsets cover %llu bytes but %s with %llu elements needs %llu",
                     label, ST_NAME(name), (unsigned long long)(e->end - e->begin), st_dtype_names[e->dtype],
                     (unsigned long long)numel, (unsigned long long)nbytes);
  return NC_OK;
}

// Parses and validates header text hdr[0..n) for a data section of data_len
// bytes. Entries come out sorted by data offset.
static nc_status st_parse_header(const char *label, const char *hdr, size_t n, uint64_t data_len, st_header *h,
                                 nc_metadata *meta) {
  memset(h, 0, sizeof *h);
  if (hdr[0] != '{') return nc_errorf(NC_E_PARSE, "%s: header is not a JSON object (does not start with '{')", label);
  long bad = nc_utf8_invalid_at(hdr, n);
  if (bad >= 0) return nc_errorf(NC_E_PARSE, "%s: header is not valid UTF-8 (byte %ld of the header)", label, bad);
  json_error_t jerr;
  h->root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!h->root)
    return nc_errorf(NC_E_PARSE, "%s: header is not valid JSON: %s (line %d, column %d)", label, jerr.text, jerr.line,
                     jerr.column);
  nc_status st = NC_OK;
  if (!json_is_object(h->root)) {
    st = nc_errorf(NC_E_PARSE, "%s: header is not a JSON object", label);
    goto fail;
  }
  size_t cnt = json_object_size(h->root);
  h->entries = malloc((cnt ? cnt : 1) * sizeof *h->entries);  // cnt is bounded by the header's size
  if (!h->entries) {
    st = nc_errorf(NC_E_NOMEM, "%s: out of memory", label);
    goto fail;
  }
  const char *key;
  json_t *v;
  json_object_foreach(h->root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      if (!json_is_object(v)) {
        st = nc_errorf(NC_E_PARSE, "%s: __metadata__ is not a JSON object", label);
        goto fail;
      }
      const char *mk;
      json_t *mv;
      json_object_foreach(v, mk, mv) {
        if (!json_is_string(mv)) {
          st = nc_errorf(NC_E_PARSE, "%s: __metadata__ value of key '%.*s' is not a string", label, ST_NAME(mk));
          goto fail;
        }
        if (meta && (st = nc_metadata_set(meta, mk, json_string_value(mv)))) {
          st = nc_status_prefix(st, "%s: ", label);
          goto fail;
        }
      }
      continue;
    }
    if ((st = st_parse_entry(label, key, v, data_len, &h->entries[h->n]))) goto fail;
    h->n++;
  }
  qsort(h->entries, h->n, sizeof *h->entries, st_cmp_entry);
  uint64_t pos = 0;
  for (size_t i = 0; i < h->n; i++) {
    const st_entry *e = &h->entries[i];
    if (e->begin < pos) {
      st = nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': data_offsets [%llu,%llu) overlap those of tensor '%.*s'", label,
                     ST_NAME(e->name), (unsigned long long)e->begin, (unsigned long long)e->end, ST_NAME(h->entries[i - 1].name));
      goto fail;
    }
    if (e->begin > pos) {
      st = nc_errorf(NC_E_PARSE, "%s: tensor '%.*s': hole in the data section: bytes [%llu,%llu) belong to no tensor", label,
                     ST_NAME(e->name), (unsigned long long)pos, (unsigned long long)e->begin);
      goto fail;
    }
    pos = e->end;
  }
  if (pos != data_len) {
    st = nc_errorf(NC_E_PARSE, "%s: %llu trailing bytes after the last tensor (data section has %llu bytes, tensors cover %llu)",
                   label, (unsigned long long)(data_len - pos), (unsigned long long)data_len, (unsigned long long)pos);
    goto fail;
  }
  return NC_OK;
fail:
  st_header_free(h);
  return st;
}

// Allocates every tensor of h (fill: copies in the bytes) into a staging list,
// then moves them into out.
typedef nc_status (*st_fill_fn)(void *ctx, const st_entry *e, void *dst);

static nc_status st_materialize(const char *label, const st_header *h, st_fill_fn fill, void *ctx, nc_tensor_list *out) {
  for (size_t i = 0; i < h->n; i++)
    if (nc_tensor_list_find(out, h->entries[i].name))
      return nc_errorf(NC_E_INVALID, "%s: tensor '%.*s': already present in the destination list", label,
                       ST_NAME(h->entries[i].name));
  NC_TRY(st_list_reserve(out, h->n));
  nc_tensor_list tmp;
  nc_tensor_list_init(&tmp);
  nc_status st = st_list_reserve(&tmp, h->n);
  for (size_t i = 0; i < h->n && !st; i++) {
    const st_entry *e = &h->entries[i];
    nc_tensor t;
    st = nc_tensor_alloc(&t, e->dtype, e->rank, e->shape);
    if (st) {
      st = nc_status_prefix(st, "%s: tensor '%.*s': ", label, ST_NAME(e->name));
      break;
    }
    char *name = st_strdup(e->name);
    if (!name) {
      nc_tensor_free(&t);
      st = nc_errorf(NC_E_NOMEM, "%s: out of memory", label);
      break;
    }
    tmp.items[tmp.len].name = name;
    tmp.items[tmp.len].t = t;
    tmp.len++;
    if (e->end > e->begin) st = fill(ctx, e, t.data);
  }
  if (st) {
    nc_tensor_list_free(&tmp);
    return st;
  }
  if (tmp.len) memcpy(out->items + out->len, tmp.items, tmp.len * sizeof *tmp.items);
  out->len += tmp.len;
  free(tmp.items);
  return NC_OK;
}

// Runs the header parse with metadata staged, committing metadata only when
// the whole read succeeds.
typedef struct {
  const unsigned char *data;  // memory source: the data section
  int fd;                     // file source
  uint64_t data_start;
  const char *label;
} st_source;

static nc_status st_fill_mem(void *ctx, const st_entry *e, void *dst) {
  const st_source *s = ctx;
  memcpy(dst, s->data + e->begin, (size_t)(e->end - e->begin));
  return NC_OK;
}

static nc_status st_fill_fd(void *ctx, const st_entry *e, void *dst) {
  const st_source *s = ctx;
  char *p = dst;
  uint64_t off = s->data_start + e->begin, left = e->end - e->begin;
  while (left > 0) {
    size_t chunk = left > ((uint64_t)1 << 30) ? ((size_t)1 << 30) : (size_t)left;
    ssize_t r = pread(s->fd, p, chunk, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return nc_errorf(NC_E_IO, "%s: tensor '%.*s': read failed: %s", s->label, ST_NAME(e->name), strerror(errno));
    }
    if (r == 0)
      return nc_errorf(NC_E_IO, "%s: tensor '%.*s': file is truncated (it shrank while being read)", s->label, ST_NAME(e->name));
    p += r;
    off += (uint64_t)r;
    left -= (uint64_t)r;
  }
  return NC_OK;
}

static nc_status st_commit_meta(nc_metadata *staged, nc_metadata *meta) {
  nc_status st = NC_OK;
  for (size_t i = 0; i < staged->len && !st; i++) st = nc_metadata_set(meta, staged->items[i].key, staged->items[i].value);
  return st;
}

nc_status nc_safetensors_decode(const void *data, size_t len, const char *label, nc_tensor_list *out, nc_metadata *meta) {
  if (!label) label = "(memory)";
  const unsigned char *p = data;
  uint64_t hlen = 0;
  NC_TRY(st_check_prefix(label, p, len, &hlen));
  nc_metadata staged;
  nc_metadata_init(&staged);
  st_header h;
  nc_status st = st_parse_header(label, (const char *)p + 8, (size_t)hlen, len - 8 - hlen, &h, meta ? &staged : NULL);
  if (!st) {
    st_source src = {.data = p + 8 + hlen, .fd = -1, .data_start = 0, .label = label};
    st = st_materialize(label, &h, st_fill_mem, &src, out);
    st_header_free(&h);
  }
  if (!st && meta) st = st_commit_meta(&staged, meta);
  nc_metadata_free(&staged);
  return st;
}

nc_status nc_safetensors_read(const char *path, nc_tensor_list *out, nc_metadata *meta) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // never block on a FIFO
  if (fd < 0) return nc_errorf(NC_E_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  nc_status st = NC_OK;
  char *hdr = NULL;
  nc_metadata staged;
  nc_metadata_init(&staged);
  if (fstat(fd, &sb) != 0) {
    st = nc_errorf(NC_E_IO, "%s: stat failed: %s", path, strerror(errno));
    goto done;
  }
  if (!S_ISREG(sb.st_mode)) {
    st = nc_errorf(NC_E_IO, "%s: not a regular file", path);
    goto done;
  }
  uint64_t file_len = (uint64_t)sb.st_size;
  unsigned char p8[8] = {0};
  if (file_len >= 8) {
    st_source s0 = {.fd = fd, .data_start = 0, .label = path};
    st_entry e0 = {.name = "(header length)", .begin = 0, .end = 8};
    if ((st = st_fill_fd(&s0, &e0, p8))) goto done;
  }
  uint64_t hlen = 0;
  if ((st = st_check_prefix(path, p8, file_len, &hlen))) goto done;
  hdr = malloc((size_t)hlen + 1);  // hlen <= 100 MB and <= the file size
  if (!hdr) {
    st = nc_errorf(NC_E_NOMEM, "%s: cannot allocate the %llu-byte header", path, (unsigned long long)hlen);
    goto done;
  }
  {
    st_source s1 = {.fd = fd, .data_start = 8, .label = path};
    st_entry e1 = {.name = "(header)", .begin = 0, .end = hlen};
    if ((st = st_fill_fd(&s1, &e1, hdr))) goto done;
    hdr[hlen] = 0;
  }
  st_header h;
  if ((st = st_parse_header(path, hdr, (size_t)hlen, file_len - 8 - hlen, &h, meta ? &staged : NULL))) goto done;
  free(hdr);
  hdr = NULL;
  st_source src = {.fd = fd, .data_start = 8 + hlen, .label = path};
  st = st_materialize(path, &h, st_fill_fd, &src, out);
  st_header_free(&h);
  if (!st && meta) st = st_commit_meta(&staged, meta);
done:
  free(hdr);
  nc_metadata_free(&staged);
  close(fd);
  return st;
}
