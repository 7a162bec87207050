#include "runtime/ocl_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kcache.h"
#include "support/buf.h"

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
  if (nc_ocl_cache_path(key, path, sizeof path)) nc_kcache_entry_read(path, "NCOCLBIN", NC_OCL_CACHE_FORMAT, key, data, size);
}

nc_status nc_ocl_cache_put(uint64_t key, const void *data, size_t size) {
  char path[1024];
  if (!nc_ocl_cache_path(key, path, sizeof path)) return NC_OK;
  return nc_kcache_entry_write(path, "NCOCLBIN", NC_OCL_CACHE_FORMAT, key, data, size);
}
