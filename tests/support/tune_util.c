// Helpers shared by the tuning tests (tests/support/tune_util.h).
#include "tests/support/tune_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/tune.h"

void nc_test_scratch_make(char *dir, size_t n, const char *prefix) {
  snprintf(dir, n, "/tmp/%s_%d", prefix, (int)getpid());
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  cr_assert_eq(system(cmd), 0);
}

void nc_test_scratch_remove(const char *dir) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

void nc_test_write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s", path);
  fputs(text, f);
  fclose(f);
}

bool nc_test_tunedb_warned(const nc_tunedb *db, const char *needle) {
  for (int i = 0; i < nc_tunedb_nwarnings(db); i++)
    if (strstr(nc_tunedb_warning(db, i), needle)) return true;
  return false;
}

void nc_test_ocl_entry(char *buf, size_t n, const nc_ocl_device_desc *d, const char *kernel, const char *shape, const char *knobs) {
  char device[192], driver[192];
  nc_tune_ocl_ids(d, device, sizeof device, driver, sizeof driver);
  snprintf(buf, n, "{\"device\": \"%s\", \"driver\": \"%s\", \"kernel\": \"%s\", \"shape\": \"%s\", \"knobs\": %s, \"time_us\": 1, \"default_time_us\": 2}",
           device, driver, kernel, shape, knobs);
}
