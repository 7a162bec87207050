// safetensors files: named host tensors plus string metadata, written
// atomically and read back with strict validation.
//
// Format (https://github.com/huggingface/safetensors):
//   8 bytes   N, little-endian u64: length of the JSON header
//   N bytes   UTF-8 JSON object {"__metadata__": {str: str}?,
//             "<name>": {"dtype": "F32", "shape": [2,3], "data_offsets": [b,e]}, ...}
//             (we pad it with spaces to a multiple of 8, as the Rust crate does)
//   rest      the data section; [b,e) is relative to its start and the ranges
//             cover it exactly, without holes or overlaps.
// dtypes: F32 BF16 F16 I32 I64 U8 BOOL (nc_dtype); rank <= NC_MAX_RANK (6).
// Writers put keys in byte-wise sorted order and data in header order.
// Readers read the data straight into each tensor's own buffer (pread), so
// loading never holds the file twice in memory. See docs/checkpoints.md.
#ifndef NC_RUNTIME_SAFETENSORS_H
#define NC_RUNTIME_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/tensor.h"
#include "support/status.h"

// Largest JSON header we accept (the reference implementation's limit).
#define NC_SAFETENSORS_MAX_HEADER 100000000u

// ---- named tensors ----------------------------------------------------------

typedef struct {
  char *name;   // owned, UTF-8, NUL-free
  nc_tensor t;  // its data is owned by the list when t.owned
} nc_named_tensor;

typedef struct {
  nc_named_tensor *items;
  size_t len, cap;
} nc_tensor_list;

void nc_tensor_list_init(nc_tensor_list *l);
// Frees the names and every owned tensor buffer; leaves an empty list.
void nc_tensor_list_free(nc_tensor_list *l);
// Appends (name, *t). The list takes over t's buffer when t->owned: on success
// *t is cleared (a wrapped, non-owned tensor is only referenced). Rejects a
// duplicate or non-UTF-8 name and an invalid dtype/rank/shape; on error the
// caller keeps *t.
nc_status nc_tensor_list_add(nc_tensor_list *l, const char *name, nc_tensor *t);
// Appends a deep copy of *t.
nc_status nc_tensor_list_add_copy(nc_tensor_list *l, const char *name, const nc_tensor *t);
// NULL when absent.
nc_tensor *nc_tensor_list_find(const nc_tensor_list *l, const char *name);

// ---- __metadata__ -----------------------------------------------------------

typedef struct {
  char *key, *value;  // owned, UTF-8
} nc_str_pair;

typedef struct {
  nc_str_pair *items;
  size_t len, cap;
} nc_metadata;

void nc_metadata_init(nc_metadata *m);
void nc_metadata_free(nc_metadata *m);
// Sets key to value (replacing an existing value). Both must be valid UTF-8.
nc_status nc_metadata_set(nc_metadata *m, const char *key, const char *value);
const char *nc_metadata_get(const nc_metadata *m, const char *key);  // NULL when absent

// ---- files ------------------------------------------------------------------

// Writes path atomically: a temporary file "<path>.tmp.XXXXXX" in the same
// folder, fsync, rename over path, fsync of the folder. A write that fails or
// is interrupted at any point leaves an existing file at path untouched.
// meta may be NULL (no __metadata__ key is written when it is NULL or empty).
nc_status nc_safetensors_write(const char *path, const nc_tensor_list *l, const nc_metadata *meta);
// The same bytes in memory (*out is malloc'd; caller frees).
nc_status nc_safetensors_encode(const nc_tensor_list *l, const nc_metadata *meta, void **out, size_t *len);

// Reads and validates a whole file; tensors are appended to *out (which must
// not already hold any of the names) in data order, each with its own owned
// buffer. meta may be NULL. On error *out and *meta are left as they were.
nc_status nc_safetensors_read(const char *path, nc_tensor_list *out, nc_metadata *meta);
// The same from memory; label names the source in error messages.
nc_status nc_safetensors_decode(const void *data, size_t len, const char *label, nc_tensor_list *out,
                                nc_metadata *meta);

// ---- atomic files (used by the checkpoint code too) --------------------------

typedef struct {
  int fd;
  char *path, *tmp;
} nc_atomic_file;

// Creates the temporary file next to path.
nc_status nc_atomic_file_open(nc_atomic_file *f, const char *path);
nc_status nc_atomic_file_write(nc_atomic_file *f, const void *p, size_t n);
// fsync, close, rename over path, fsync of the folder; frees f. On error the
// temporary file is removed and path is untouched.
nc_status nc_atomic_file_commit(nc_atomic_file *f);
// Closes and removes the temporary file; frees f. Safe after a failed write.
void nc_atomic_file_abort(nc_atomic_file *f);
// Whole buffer in one call (open + write + commit).
nc_status nc_atomic_file_put(const char *path, const void *data, size_t len);

#endif
