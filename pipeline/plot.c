// PNG line plots (plot.h).
#include "pipeline/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "support/buf.h"

static void nc_png_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

// Appends one chunk: length, type, data, CRC-32 over type and data.
static nc_status nc_png_chunk(nc_buf *b, const char *type, const uint8_t *data, size_t n) {
  uint8_t hdr[8];
  nc_png_u32(hdr, (uint32_t)n);
  memcpy(hdr + 4, type, 4);
  uLong crc = crc32(0, (const Bytef *)type, 4);
  if (n) crc = crc32(crc, data, (uInt)n);
  uint8_t tail[4];
  nc_png_u32(tail, (uint32_t)crc);
  nc_buf_put(b, hdr, 8);
  if (n) nc_buf_put(b, data, n);
  nc_buf_put(b, tail, 4);
  return b->oom ? nc_errorf(NC_E_NOMEM, "png: out of memory") : NC_OK;
}

nc_status nc_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len) {
  if (w < 1 || h < 1 || w > 16384 || h > 16384) return nc_errorf(NC_E_INVALID, "png: image size %dx%d out of range", w, h);
  size_t stride = (size_t)w * 3 + 1, raw_n = stride * (size_t)h;
  uint8_t *raw = malloc(raw_n);
  uLongf zn = compressBound((uLong)raw_n);
  uint8_t *z = malloc(zn);
  if (!raw || !z) {
    free(raw), free(z);
    return nc_errorf(NC_E_NOMEM, "png: out of memory for a %dx%d image", w, h);
  }
  for (int y = 0; y < h; y++) {  // filter type 0 (none) on every row
    raw[(size_t)y * stride] = 0;
    memcpy(raw + (size_t)y * stride + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
  }
  int zr = compress2(z, &zn, raw, (uLong)raw_n, 9);
  free(raw);
  if (zr != Z_OK) {
    free(z);
    return nc_errorf(NC_E_INTERNAL, "png: zlib compress failed (%d)", zr);
  }
  nc_buf b = {0};
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  uint8_t ihdr[13];
  nc_png_u32(ihdr, (uint32_t)w);
  nc_png_u32(ihdr + 4, (uint32_t)h);
  ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;  // 8-bit RGB, deflate, no interlace
  nc_buf_put(&b, sig, 8);
  nc_status st = nc_png_chunk(&b, "IHDR", ihdr, 13);
  if (!st) st = nc_png_chunk(&b, "IDAT", z, zn);
  if (!st) st = nc_png_chunk(&b, "IEND", NULL, 0);
  free(z);
  if (st) {
    nc_buf_free(&b);
    return st;
  }
  *len = b.len;
  *out = (uint8_t *)nc_buf_take(&b);
  return NC_OK;
}

// ---- raster ------------------------------------------------------------------

typedef struct {
  uint8_t *px;
  int w, h;
} nc_canvas;

static void nc_canvas_set(nc_canvas *c, int x, int y, uint32_t rgb) {
  if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
  uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
  p[0] = (uint8_t)(rgb >> 16), p[1] = (uint8_t)(rgb >> 8), p[2] = (uint8_t)rgb;
}

// Bresenham, 2 px thick.
static void nc_canvas_line(nc_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, int thick) {
  int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
  for (;;) {
    for (int t = 0; t < thick; t++) nc_canvas_set(c, x0, y0 + t, rgb);
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

// A 3x5 pixel font for tick labels: digits, '.', '-', 'e', '+', 'k', 'M'.
static const char *nc_glyph(char ch) {
  switch (ch) {
    case '0': return "111101101101111";
    case '1': return "010110010010111";
    case '2': return "111001111100111";
    case '3': return "111001111001111";
    case '4': return "101101111001001";
    case '5': return "111100111001111";
    case '6': return "111100111101111";
    case '7': return "111001001010010";
    case '8': return "111101111101111";
    case '9': return "111101111001111";
    case '.': return "000000000000010";
    case '-': return "000000111000000";
    case '+': return "000010111010000";
    case 'e': return "000111111100111";
    case 'k': return "100101110101101";
    case 'M': return "101111111101101";
    default: return "000000000000000";
  }
}

static void nc_canvas_text(nc_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
  for (; *s; s++, x += 4 * scale) {
    const char *g = nc_glyph(*s);
    for (int r = 0; r < 5; r++)
      for (int q = 0; q < 3; q++)
        if (g[r * 3 + q] == '1')
          for (int a = 0; a < scale; a++)
            for (int b = 0; b < scale; b++) nc_canvas_set(c, x + q * scale + b, y + r * scale + a, rgb);
  }
}

// A "nice" tick step (1, 2 or 5 x 10^k) giving about n ticks over [lo, hi].
static double nc_plot_step(double lo, double hi, int n) {
  double raw = (hi - lo) / n, p = pow(10, floor(log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void nc_plot_label(char *out, size_t n, double v, double step) {
  if (fabs(v) < step * 1e-6) v = 0;
  if (fabs(v) >= 1e6) snprintf(out, n, "%gM", v / 1e6);
  else if (fabs(v) >= 1e4) snprintf(out, n, "%gk", v / 1e3);
  else snprintf(out, n, "%g", v);
}

nc_status nc_plot_png(const char *path, const nc_plot_series *s, int ns, int w, int h) {
  if (w < 64 || h < 64 || w > 8192 || h > 8192) return nc_errorf(NC_E_INVALID, "plot %s: size %dx%d out of range", path, w, h);
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (int k = 0; k < ns; k++)
    for (int i = 0; i < s[k].n; i++)
      if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) {
        x0 = fmin(x0, s[k].x[i]), x1 = fmax(x1, s[k].x[i]);
        y0 = fmin(y0, s[k].y[i]), y1 = fmax(y1, s[k].y[i]);
      }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;  // nothing to draw: empty axes
  if (x1 - x0 < 1e-12) x1 = x0 + 1;
  if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
  double ys = nc_plot_step(y0, y1, 6), xs = nc_plot_step(x0, x1, 8);
  y0 = floor(y0 / ys) * ys, y1 = ceil(y1 / ys) * ys;
  nc_canvas c = {calloc((size_t)w * (size_t)h, 3), w, h};
  if (!c.px) return nc_errorf(NC_E_NOMEM, "plot %s: out of memory", path);
  memset(c.px, 255, (size_t)w * (size_t)h * 3);
  int L = 70, R = w - 20, T = 20, B = h - 40;  // plot area
#define NC_PX(v) (L + (int)lround(((v) - x0) / (x1 - x0) * (R - L)))
#define NC_PY(v) (B - (int)lround(((v) - y0) / (y1 - y0) * (B - T)))
  char lab[32];
  for (double v = y0; v <= y1 + ys * 0.5; v += ys) {
    int py = NC_PY(v);
    nc_canvas_line(&c, L, py, R, py, 0xe0e0e0, 1);
    nc_plot_label(lab, sizeof lab, v, ys);
    nc_canvas_text(&c, L - 8 - (int)strlen(lab) * 8, py - 5, lab, 0x404040, 2);
  }
  for (double v = ceil(x0 / xs) * xs; v <= x1 + xs * 1e-9; v += xs) {
    int px = NC_PX(v);
    nc_canvas_line(&c, px, T, px, B, 0xe0e0e0, 1);
    nc_plot_label(lab, sizeof lab, v, xs);
    nc_canvas_text(&c, px - (int)strlen(lab) * 4, B + 10, lab, 0x404040, 2);
  }
  nc_canvas_line(&c, L, B, R, B, 0x000000, 1);
  nc_canvas_line(&c, L, T, L, B, 0x000000, 1);
  for (int k = 0; k < ns; k++) {
    int px = -1, py = -1;
    for (int i = 0; i < s[k].n; i++) {
      if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) continue;
      int qx = NC_PX(s[k].x[i]), qy = NC_PY(s[k].y[i]);
      if (px >= 0) nc_canvas_line(&c, px, py, qx, qy, s[k].rgb, 2);
      else nc_canvas_set(&c, qx, qy, s[k].rgb);
      px = qx, py = qy;
    }
  }
#undef NC_PX
#undef NC_PY
  uint8_t *png;
  size_t n;
  nc_status st = nc_png_encode(c.px, w, h, &png, &n);
  free(c.px);
  if (st) return nc_status_prefix(st, "plot %s: ", path);
  st = nc_file_write_atomic(path, png, n);
  free(png);
  return st;
}
