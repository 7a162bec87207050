// Line plots as PNG files (zlib-compressed, no other dependency): the loss
// curves of a training run. Axes, grid and numeric tick labels are drawn;
// titles and legends belong in the report that shows the picture.
#ifndef NC_PIPELINE_PLOT_H
#define NC_PIPELINE_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "support/status.h"

typedef struct {
  const double *x, *y;  // n points; non-finite y values are skipped
  int n;
  uint32_t rgb;         // 0xRRGGBB
} nc_plot_series;

// Writes a width x height RGB PNG (atomically) with the series on shared axes.
nc_status nc_plot_png(const char *path, const nc_plot_series *s, int ns, int width, int height);

// Encodes an RGB image (3 bytes per pixel, rows top to bottom) as PNG into a
// malloc'd buffer.
nc_status nc_png_encode(const uint8_t *rgb, int width, int height, uint8_t **out, size_t *len);

#endif
