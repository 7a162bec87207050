// Helpers shared by the tuning tests (tests/test_tune.c, tests/test_tune_flash.c): a scratch folder
// per test process, text files, the database's warnings and hand-written database entries.
#ifndef NC_TESTS_TUNE_UTIL_H
#define NC_TESTS_TUNE_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/ocl_device.h"
#include "runtime/tunedb.h"

// The opening of a database file; entries follow, then "]}".
#define NC_TEST_TUNEDB_HEAD "{\"format\": \"nanochat-c tuning database\", \"version\": 1, \"entries\": ["

// "/tmp/<prefix>_<pid>" into dir, emptied and created (asserts on failure); and removed.
void nc_test_scratch_make(char *dir, size_t n, const char *prefix);
void nc_test_scratch_remove(const char *dir);
// Writes text to path (asserts on failure).
void nc_test_write_text(const char *path, const char *text);
// True when one of db's warnings contains needle.
bool nc_test_tunedb_warned(const nc_tunedb *db, const char *needle);
// A database entry for OpenCL device d (kernel signature, shape, knobs as JSON text) into buf.
void nc_test_ocl_entry(char *buf, size_t n, const nc_ocl_device_desc *d, const char *kernel, const char *shape, const char *knobs);

#endif
