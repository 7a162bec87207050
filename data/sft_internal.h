// Helpers shared inside the data layer (not part of its API).
#ifndef NC_DATA_SFT_INTERNAL_H
#define NC_DATA_SFT_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "support/buf.h"
#include "support/status.h"

// splitmix64: the data layer's deterministic random numbers.
uint64_t nc_data_splitmix64(uint64_t *state);
// Uniform in [0, n) (n >= 1), Lemire's multiply-shift.
uint64_t nc_data_rand_below(uint64_t *state, uint64_t n);
// Appends a whole (optionally gzipped) file; a truncated gzip is an error
// naming path:line (the first incomplete line) while out keeps what was read.
nc_status nc_data_read_all(const char *path, nc_buf *out);
// Writes data atomically to path, gzipped when path ends in ".gz"
// (deterministic bytes: no name or time in the gzip header).
nc_status nc_data_write_maybe_gz(const char *path, const void *data, size_t len);
// nanochat's conversation rules (the checks render_conversation makes),
// without the tokenizer: an error naming the message / part.
nc_status nc_data_conversation_check(json_t *root);

#endif
