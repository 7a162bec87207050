#include "runtime/ocl_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kcache.h"
#include "support/buf.h"

typedef struct {
  char magic[8];  // "NCOCLBIN"
  uint32_t format;
  uint32_t pad;
  uint64_t key;
  uint64_t size;
  uint64_t checksum;  // of the payload
} nc_oc_header;

uint64_t nc_ocl_cache_key(const char *const *parts, int nparts) {
  uint64_t h = nc_hash_u64(NC_HASH_SEED, NC_OCL_CACHE_FORMAT);
  for (int i = 0; i < nparts; i++) {
    size_t n = parts[i] ? strlen(parts[i]) : 0;
    h = nc_hash_u64(h, n);
    if (n) h = nc_hash_bytes(h, parts[i], n);
  }
  return h;
}

bool nc_ocl_cache_path(uint64_t key, char *buf, size_t n) {
  char dir[900];
  if (!nc_kcache_dir(dir, sizeof dir)) return false;
  snprintf(buf, n, "%s/ocl-%016llx.bin", dir, (unsigned long long)key);
  return true;
}

void nc_ocl_cache_get(uint64_t key, void **data, size_t *size) {
  *data = NULL;
  *size = 0;
  char path[1024];
  if (!nc_ocl_cache_path(key, path, sizeof path)) return;
  FILE *f = fopen(path, "rb");
  if (!f) return;
  nc_oc_header h;
  void *p = NULL;
  bool ok = fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, "NCOCLBIN", 8) && h.format == NC_OCL_CACHE_FORMAT &&
            h.key == key && h.size > 0 && h.size < ((uint64_t)1 << 32);
  if (ok) ok = (p = malloc(h.size)) != NULL && fread(p, 1, h.size, f) == h.size;
  if (ok) ok = fgetc(f) == EOF && nc_hash_bytes(NC_HASH_SEED, p, h.size) == h.checksum;
  fclose(f);
  if (!ok) {  // corrupt, truncated or foreign: a miss (the caller rebuilds and overwrites)
    free(p);
    return;
  }
  *data = p;
  *size = h.size;
}

nc_status nc_ocl_cache_put(uint64_t key, const void *data, size_t size) {
  char path[1024];
  if (!nc_ocl_cache_path(key, path, sizeof path)) return NC_OK;
  nc_oc_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, "NCOCLBIN", 8);
  h.format = NC_OCL_CACHE_FORMAT;
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
