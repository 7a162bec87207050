// The tuning database: the autotuner's winners (runtime/tuner.h), one entry
// per (device, driver, kernel signature, shape) with the knobs, the winner's
// and the default's time, and the date. A human-readable JSON file
// (docs/tuning.md has the format):
//   {"format": "nanochat-c tuning database", "version": 1, "entries": [
//     {"device": "cpu znver4", "driver": "LLVM 19.1.7",
//      "kernel": "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=16 threads=2",
//      "shape": "batch=1 m=2048 n=768 k=256",
//      "knobs": {"mr": 6, "nr": 64, ...}, "time_us": 3502.1, "default_time_us": 3790.4,
//      "date": "2026-11-26T15:02:11Z"}, ...]}
// The kernel signature starts with the template's knob space (codegen/tune.h).
//
// Location: --db PATH, else $NC_TUNE_DB ("off" disables lookups), else
// $NC_CACHE_DIR/tune.json, else $XDG_CACHE_HOME/nanochat-c/tune.json, else
// ~/.cache/nanochat-c/tune.json. Writes are atomic (temporary file + rename).
//
// Nothing here fails on bad content: a file that is not JSON, of another
// format or version, is read as empty; an entry with a missing or mistyped
// field, an unknown knob or a knob out of its declared range is dropped; an
// entry whose driver differs from the current one is stale. Each case gives
// one warning naming the file and the entry (kept in the database and printed
// to stderr when loading with print set).
#ifndef NC_RUNTIME_TUNEDB_H
#define NC_RUNTIME_TUNEDB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codegen/host.h"
#include "codegen/tune.h"
#include "runtime/ocl_device.h"
#include "support/status.h"

#define NC_TUNEDB_VERSION 1
#define NC_TUNEDB_FORMAT "nanochat-c tuning database"

typedef struct {
  char device[192], driver[192], kernel[128], shape[96], date[32];
  int nknobs;
  char knob_names[NC_KNOB_MAX][24];
  int knob_values[NC_KNOB_MAX];
  double time_us, default_time_us;
} nc_tune_entry;

typedef struct nc_tunedb nc_tunedb;

// The database path for an explicit --db (NULL: the default, see above) into
// buf; false when lookups are disabled (NC_TUNE_DB=off, no cache folder).
bool nc_tunedb_path(const char *override, char *buf, size_t n);
// Reads path (a missing file is an empty database). Never fails on content;
// only out of memory is an error. print: warnings also go to stderr.
nc_status nc_tunedb_load(const char *path, bool print, nc_tunedb **out);
// The default database (nc_tunedb_path(NULL)), or NULL when disabled.
nc_tunedb *nc_tunedb_open_default(void);
void nc_tunedb_free(nc_tunedb *db);
const char *nc_tunedb_file(const nc_tunedb *db);

int nc_tunedb_count(const nc_tunedb *db);
const nc_tune_entry *nc_tunedb_entry(const nc_tunedb *db, int i);
int nc_tunedb_nwarnings(const nc_tunedb *db);
const char *nc_tunedb_warning(const nc_tunedb *db, int i);

// The entry for exactly this key, or NULL.
const nc_tune_entry *nc_tunedb_find(const nc_tunedb *db, const char *device, const char *driver, const char *kernel,
                                    const char *shape);
// Entries of (device, kernel) under driver, up to max into out. Those of
// (device, kernel) under another driver are stale: one warning each.
int nc_tunedb_select(nc_tunedb *db, const char *device, const char *driver, const char *kernel, const nc_tune_entry **out,
                     int max);
// The entry's knobs over *knobs (a struct of space s holding the defaults),
// checked against the space: on error *knobs is unchanged and the error
// names the knob (the caller warns and ignores the entry).
nc_status nc_tune_entry_apply(const nc_tune_entry *e, const nc_knob_space *s, void *knobs);
// Fills e's knobs from a knob struct of space s (every knob).
void nc_tune_entry_set_knobs(nc_tune_entry *e, const nc_knob_space *s, const void *knobs);
// Adds e, replacing the entry with the same key.
nc_status nc_tunedb_put(nc_tunedb *db, const nc_tune_entry *e);
// Writes the database to path (atomically), creating its folder.
nc_status nc_tunedb_save(const nc_tunedb *db, const char *path);
// Adds a warning (and prints it when the database prints).
void nc_tunedb_warn(nc_tunedb *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Key strings shared by the tuner and the backends.
void nc_tune_shape_str(int64_t batch, int64_t m, int64_t n, int64_t k, char *buf, size_t len);
// The CPU GEMM's signature for a GEMM variant of runtime/cpu.h: "cpu.gemm_f32 ta=0 tb=1 sym=0 vw=16
// threads=2" (0..7: sym*4 + ta*2 + tb, the plain GEMM), with " epi=relu2" (16..19: the ReLU^2
// epilogue) or " epi=addend" (20..27: C = alpha AB + beta E); "cpu.gemm_bf16 ta=0 tb=1 vw=16
// threads=2" (8..11: bf16 buffers, the bf16 GEMM's space).
void nc_tune_cpu_kernel(int variant, int vw, int threads, char *buf, size_t len);
// The database's device and driver strings of the host CPU (as LLVM names
// it) and of an OpenCL device.
void nc_tune_cpu_ids(const nc_host_cpu *hc, char *device, size_t dn, char *driver, size_t rn);
void nc_tune_ocl_ids(const nc_ocl_device_desc *d, char *device, size_t dn, char *driver, size_t rn);
// "ocl.gemm_f32 ta=0 tb=1" or "ocl.gemm_bf16 ta=0 tb=1 mode=1" (mode: gemm_tc)
void nc_tune_ocl_kernel(int variant, int tc_mode, char *buf, size_t len);
// The pipelined bf16 GEMM's signature (tc_stages > 0, mma.sync or wgmma): "ocl.gemm_bf16p ta=0 tb=1 mode=1"
// (mode: gemm_tc, 2 emulated). Its per-shape knobs serve the form's launches over f32 or bf16 buffers;
// in-place, MN-major, zero-filling and bf16-C variants are chosen per launch as for the defaults.
void nc_tune_ocl_pkernel(int variant, int tc_mode, char *buf, size_t len);

#endif
