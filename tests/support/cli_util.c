#include "cli_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

int nc_test_cli(const char *args, char *out, size_t n) {
  const char *bd = getenv("NC_BUILD_DIR"), *sd = getenv("NC_SOURCE_DIR");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s/cli/nanochat' %s 2>&1", sd ? sd : ".", bd ? bd : ".", args);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p, "popen: %s", cmd);
  size_t len = fread(out, 1, n - 1, p);
  out[len] = 0;
  int rc = pclose(p);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
