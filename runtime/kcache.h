// The on-disk cache of compiled plans: object files (the CPU device stores a
// plan as 4 parts, runtime/cpu_jit.c, each under its own key), keyed by a
// hash of everything that determines the code (the kernels, the GEMM knobs,
// the target CPU and its features, LLVM's version, this cache's format).
// Entries carry a header with the key and a checksum of the payload; a
// corrupt or foreign entry is ignored (and rebuilt by the caller). Writes are
// atomic (temporary file, fsync, rename), so concurrent processes are safe.
//
// Location: $NC_CACHE_DIR, else $XDG_CACHE_HOME/nanochat-c/kernels, else
// ~/.cache/nanochat-c/kernels; NC_CACHE_DIR=off disables the cache.
#ifndef NC_RUNTIME_KCACHE_H
#define NC_RUNTIME_KCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/status.h"

#define NC_KCACHE_FORMAT 1

// The cache folder (created if needed) into buf; false when disabled or unusable.
bool nc_kcache_dir(char *buf, size_t n);
// Reads the entry for key: *data (malloc'ed) and *size, or NC_OK with
// *data == NULL when absent, corrupt or of another key.
nc_status nc_kcache_get(uint64_t key, void **data, size_t *size);
nc_status nc_kcache_put(uint64_t key, const void *data, size_t size);
// The entry format shared with runtime/ocl_cache.h: a header (8-byte magic,
// format, key, size, payload checksum) then the payload. A missing, corrupt,
// truncated or foreign file reads as *data == NULL.
void nc_kcache_entry_read(const char *path, const char magic[8], uint32_t format, uint64_t key, void **data, size_t *size);
nc_status nc_kcache_entry_write(const char *path, const char magic[8], uint32_t format, uint64_t key, const void *data,
                                size_t size);

#endif
