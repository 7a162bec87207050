#include "corpus_util.h"

#include <criterion/criterion.h>
#include <stdio.h>

void nc_test_write_corpus(const char *dir) {
  static const char *w[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "slept", "under", "tree"};
  for (int f = 0; f < 2; f++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, f ? "val.txt" : "train.txt");
    FILE *o = fopen(path, "w");
    cr_assert(o, "cannot write %s", path);
    unsigned x = f ? 7u : 1u;
    for (int d = 0; d < (f ? 40 : 400); d++) {
      int len = 5 + (int)(x % 40);
      for (int k = 0; k < len; k++) {
        x = x * 1103515245u + 12345u;
        fprintf(o, "%s%s", k ? " " : "", w[(x >> 16) % 15]);
      }
      fprintf(o, ".\n\n");
    }
    fclose(o);
  }
}
