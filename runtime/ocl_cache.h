// The on-disk cache of OpenCL program binaries: one file per program, keyed
// by a hash of everything that determines the binary (the OpenCL C source,
// the build options, the platform, device and driver names and versions,
// this cache's format). Files live next to the CPU kernel cache
// (runtime/kcache.h: $NC_CACHE_DIR, ...; NC_CACHE_DIR=off disables both) as
// ocl-<key>.bin, with a header carrying the key, the size and a checksum of
// the payload. Writes are atomic (temporary file, fsync, rename). A missing,
// truncated, corrupt or foreign entry reads as a miss; an entry the driver
// refuses is rebuilt from source by the caller and overwritten, silently.
#ifndef NC_RUNTIME_OCL_CACHE_H
#define NC_RUNTIME_OCL_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/status.h"

#define NC_OCL_CACHE_FORMAT 1

// The key of a program: parts are hashed in order, each with its length.
uint64_t nc_ocl_cache_key(const char *const *parts, int nparts);
// The entry's path into buf; false when the cache is disabled or unusable.
bool nc_ocl_cache_path(uint64_t key, char *buf, size_t n);
// *data (malloc'ed) and *size, or *data == NULL on a miss.
void nc_ocl_cache_get(uint64_t key, void **data, size_t *size);
nc_status nc_ocl_cache_put(uint64_t key, const void *data, size_t size);

#endif
