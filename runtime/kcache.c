#include "runtime/kcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "support/buf.h"

typedef struct {
  char magic[8];  // "NCKCACHE" (plans), "NCOCLBIN" (OpenCL binaries)
  uint32_t format;
  uint32_t pad;
  uint64_t key;
  uint64_t size;
  uint64_t checksum;  // of the payload
} nc_kc_header;

static bool nc_mkdirs(const char *path) {
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

bool nc_kcache_dir(char *buf, size_t n) {
  const char *d = getenv("NC_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  if (d && !strcmp(d, "off")) return false;
  if (d && *d) snprintf(buf, n, "%s", d);
  else if (x && *x) snprintf(buf, n, "%s/nanochat-c/kernels", x);
  else if (h && *h) snprintf(buf, n, "%s/.cache/nanochat-c/kernels", h);
  else return false;
  return nc_mkdirs(buf);
}

static void nc_kc_path(char *buf, size_t n, const char *dir, uint64_t key) {
  snprintf(buf, n, "%s/plan-%016llx.o", dir, (unsigned long long)key);
}

void nc_kcache_entry_read(const char *path, const char magic[8], uint32_t format, uint64_t key, void **data, size_t *size) {
  *data = NULL;
  *size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return;
  nc_kc_header h;
  void *p = NULL;
  bool ok = fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, magic, 8) && h.format == format && h.key == key && h.size > 0 &&
            h.size < ((uint64_t)1 << 32);
  if (ok) ok = (p = malloc(h.size)) != NULL && fread(p, 1, h.size, f) == h.size;
  if (ok) ok = fgetc(f) == EOF && nc_hash_bytes(NC_HASH_SEED, p, h.size) == h.checksum;
  fclose(f);
  if (!ok) {  // corrupt, truncated or foreign: a miss (the caller rebuilds)
    free(p);
    return;
  }
  *data = p;
  *size = h.size;
}

nc_status nc_kcache_entry_write(const char *path, const char magic[8], uint32_t format, uint64_t key, const void *data,
                                size_t size) {
  nc_kc_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, magic, 8);
  h.format = format;
  h.key = key;
  h.size = size;
  h.checksum = nc_hash_bytes(NC_HASH_SEED, data, size);
  char *buf = malloc(sizeof h + size);
  if (!buf) return nc_errorf(NC_E_NOMEM, "out of memory");
  memcpy(buf, &h, sizeof h);
  memcpy(buf + sizeof h, data, size);
  nc_status st = nc_file_write_atomic(path, buf, sizeof h + size);
  free(buf);
  return st;
}

nc_status nc_kcache_get(uint64_t key, void **data, size_t *size) {
  *data = NULL;
  *size = 0;
  char dir[900], path[1024];
  if (!nc_kcache_dir(dir, sizeof dir)) return NC_OK;
  nc_kc_path(path, sizeof path, dir, key);
  nc_kcache_entry_read(path, "NCKCACHE", NC_KCACHE_FORMAT, key, data, size);
  return NC_OK;
}

nc_status nc_kcache_put(uint64_t key, const void *data, size_t size) {
  char dir[900], path[1024];
  if (!nc_kcache_dir(dir, sizeof dir)) return NC_OK;
  nc_kc_path(path, sizeof path, dir, key);
  return nc_kcache_entry_write(path, "NCKCACHE", NC_KCACHE_FORMAT, key, data, size);
}
