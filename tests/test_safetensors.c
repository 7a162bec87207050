// safetensors IO: round trips, exact bytes, the Python-written fixture, and
// strict rejection of malformed files.
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/safetensors.h"
#include "support/buf.h"

// ---- helpers --------------------------------------------------------------------

static char tmpdir[256];

static void setup_tmp(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/nc_st_XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown_tmp(void) {
  DIR *d = opendir(tmpdir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(tmpdir);
}

TestSuite(safetensors, .init = setup_tmp, .fini = teardown_tmp);

static char *tpath(const char *name) {
  static char p[512];
  snprintf(p, sizeof p, "%s/%s", tmpdir, name);
  return p;
}

static int count_files(void) {
  DIR *d = opendir(tmpdir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void ok(nc_status st) { cr_assert_null(st, "unexpected error: %s", nc_status_msg(st)); }

// Asserts st is an error whose message contains every word (NULL-terminated).
static void expect_err_words(nc_status st, const char *ctx, ...) {
  cr_assert_not_null(st, "%s: expected an error", ctx);
  va_list ap;
  va_start(ap, ctx);
  const char *w;
  while ((w = va_arg(ap, const char *)))
    cr_assert_not_null(strstr(nc_status_msg(st), w), "%s: message '%s' lacks '%s'", ctx, nc_status_msg(st), w);
  va_end(ap);
  nc_status_free(st);
}
#define EXPECT_ERR(st, ...) expect_err_words((st), #st, __VA_ARGS__, (const char *)NULL)

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static nc_tensor rand_tensor(nc_dtype dt, int rank, const int64_t *shape) {
  nc_tensor t;
  ok(nc_tensor_alloc(&t, dt, rank, shape));
  unsigned char *p = t.data;
  size_t nb = nc_tensor_nbytes(&t);
  for (size_t i = 0; i < nb; i++) p[i] = (unsigned char)rng();
  if (dt == NC_BOOL)
    for (size_t i = 0; i < nb; i++) p[i] &= 1;
  return t;
}

static void assert_lists_equal(const nc_tensor_list *a, const nc_tensor_list *b) {
  cr_assert_eq(a->len, b->len, "list sizes %zu vs %zu", a->len, b->len);
  for (size_t i = 0; i < a->len; i++) {
    const nc_named_tensor *x = &a->items[i];
    const nc_tensor *y = nc_tensor_list_find(b, x->name);
    cr_assert_not_null(y, "tensor '%s' missing after round trip", x->name);
    cr_assert_eq(x->t.dtype, y->dtype, "%s dtype", x->name);
    cr_assert_eq(x->t.rank, y->rank, "%s rank", x->name);
    for (int d = 0; d < x->t.rank; d++) cr_assert_eq(x->t.shape[d], y->shape[d], "%s dim %d", x->name, d);
    size_t nb = nc_tensor_nbytes(&x->t);
    cr_assert_eq(nb, nc_tensor_nbytes(y));
    if (nb) cr_assert(memcmp(x->t.data, y->data, nb) == 0, "%s bytes differ", x->name);
  }
}

static void *slurp(const char *path, size_t *len) {
  char *d;
  ok(nc_file_read(path, (size_t)1 << 30, &d, len));
  return d;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  if (n) cr_assert_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

// A file built from header text (no padding added) and data bytes.
static unsigned char *mk(const char *hdr, const void *data, size_t dlen, size_t *len) {
  size_t hl = strlen(hdr);
  *len = 8 + hl + dlen;
  unsigned char *p = malloc(*len);
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(p + 8, hdr, hl);
  if (dlen) memcpy(p + 8 + hl, data, dlen);
  return p;
}

static nc_status decode_hdr(const char *hdr, const void *data, size_t dlen) {
  size_t n;
  unsigned char *p = mk(hdr, data, dlen, &n);
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  nc_metadata m;
  nc_metadata_init(&m);
  nc_status st = nc_safetensors_decode(p, n, "bad.safetensors", &l, &m);
  if (st) cr_assert_eq(l.len, 0, "list changed on error");
  if (st) cr_assert_eq(m.len, 0, "metadata changed on error");
  nc_tensor_list_free(&l);
  nc_metadata_free(&m);
  free(p);
  return st;
}

static const unsigned char zeros[64];

// The tensors of tests/fixtures/safetensors (tools/make_safetensors_fixture.py).
static void fixture_list(nc_tensor_list *l, nc_metadata *m) {
  static float a[6] = {0.0f, 1.5f, -2.25f, 1e-3f, 65504.0f, -7.0f};
  static uint16_t b[4] = {0x3F80, 0xC000, 0x3F00, 0x4049};
  static uint16_t c[4] = {0x3C00, 0xC000, 0x3800, 0x7BFF};
  static int32_t d[3] = {-1, 0, 2147483647};
  static int64_t e[2] = {INT64_MIN, 1234567890123};
  static uint8_t f[5] = {0, 1, 127, 128, 255};
  static uint8_t g[2] = {1, 0};
  static float h = 42.0f;
  static float q[4] = {1, 2, 3, 4};
  nc_tensor t;
  t = nc_tensor_wrap(a, NC_F32, 2, (int64_t[]){2, 3}), ok(nc_tensor_list_add(l, "a.f32", &t));
  t = nc_tensor_wrap(b, NC_BF16, 1, (int64_t[]){4}), ok(nc_tensor_list_add(l, "b.bf16", &t));
  t = nc_tensor_wrap(c, NC_F16, 2, (int64_t[]){2, 2}), ok(nc_tensor_list_add(l, "c.f16", &t));
  t = nc_tensor_wrap(d, NC_I32, 1, (int64_t[]){3}), ok(nc_tensor_list_add(l, "d.i32", &t));
  t = nc_tensor_wrap(e, NC_I64, 2, (int64_t[]){2, 1}), ok(nc_tensor_list_add(l, "e.i64", &t));
  t = nc_tensor_wrap(f, NC_U8, 1, (int64_t[]){5}), ok(nc_tensor_list_add(l, "f.u8", &t));
  t = nc_tensor_wrap(g, NC_BOOL, 1, (int64_t[]){2}), ok(nc_tensor_list_add(l, "g.bool", &t));
  t = nc_tensor_wrap(&h, NC_F32, 0, NULL), ok(nc_tensor_list_add(l, "h.scalar", &t));
  t = nc_tensor_wrap(NULL, NC_F32, 2, (int64_t[]){0, 3}), ok(nc_tensor_list_add(l, "i.empty", &t));
  t = nc_tensor_wrap(q, NC_F32, 2, (int64_t[]){2, 2}), ok(nc_tensor_list_add(l, "transformer.h.0.attn.c_q.weight", &t));
  if (m) {
    ok(nc_metadata_set(m, "note", "h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac"));
    ok(nc_metadata_set(m, "format", "pt"));
  }
}

static char *fixture_path(const char *name) {
  static char p[1024];
  const char *src = getenv("NC_SOURCE_DIR");
  snprintf(p, sizeof p, "%s/tests/fixtures/safetensors/%s", src ? src : ".", name);
  return p;
}

static void *fixture_bytes(size_t *len) { return slurp(fixture_path("tiny.safetensors"), len); }

// ---- round trips ------------------------------------------------------------------

Test(safetensors, roundtrip_every_dtype_and_rank) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  for (int dt = 0; dt < NC_DTYPE_COUNT; dt++) {
    for (int rank = 0; rank <= NC_MAX_RANK; rank++) {
      int64_t shape[NC_MAX_RANK];
      for (int d = 0; d < rank; d++) shape[d] = 1 + (d + rank + dt) % 3;
      nc_tensor t = rand_tensor((nc_dtype)dt, rank, shape);
      char name[64];
      snprintf(name, sizeof name, "t.%s.r%d", nc_dtype_name((nc_dtype)dt), rank);
      ok(nc_tensor_list_add(&l, name, &t));
      cr_assert_null(t.data, "add must take over an owned buffer");
    }
    nc_tensor z = rand_tensor((nc_dtype)dt, 3, (int64_t[]){2, 0, 5});
    char name[64];
    snprintf(name, sizeof name, "zero.%s", nc_dtype_name((nc_dtype)dt));
    ok(nc_tensor_list_add(&l, name, &z));
  }
  nc_metadata m;
  nc_metadata_init(&m);
  ok(nc_metadata_set(&m, "format", "pt"));
  ok(nc_metadata_set(&m, "unicode \xf0\x9f\x98\x80", "caf\xc3\xa9 \"quoted\" back\\slash\nnewline\t\x01"));
  const char *path = tpath("all.safetensors");
  ok(nc_safetensors_write(path, &l, &m));

  nc_tensor_list r;
  nc_tensor_list_init(&r);
  nc_metadata rm;
  nc_metadata_init(&rm);
  ok(nc_safetensors_read(path, &r, &rm));
  assert_lists_equal(&l, &r);
  cr_assert_eq(rm.len, 2);
  cr_assert_str_eq(nc_metadata_get(&rm, "format"), "pt");
  cr_assert_str_eq(nc_metadata_get(&rm, "unicode \xf0\x9f\x98\x80"), nc_metadata_get(&m, "unicode \xf0\x9f\x98\x80"));
  for (size_t i = 0; i < r.len; i++) cr_assert(r.items[i].t.owned);

  // The file holds exactly the in-memory encoding, and decoding that agrees.
  size_t flen, elen;
  void *fb = slurp(path, &flen);
  void *eb;
  ok(nc_safetensors_encode(&l, &m, &eb, &elen));
  cr_assert_eq(flen, elen);
  cr_assert(memcmp(fb, eb, flen) == 0);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | ((unsigned char *)fb)[i];
  cr_assert_eq(hl % 8, 0, "header not padded to 8");
  nc_tensor_list r2;
  nc_tensor_list_init(&r2);
  ok(nc_safetensors_decode(eb, elen, "mem", &r2, NULL));
  assert_lists_equal(&l, &r2);
  // Rewriting what we read gives the same bytes.
  void *eb2;
  size_t elen2;
  ok(nc_safetensors_encode(&r2, &rm, &eb2, &elen2));
  cr_assert_eq(elen2, elen);
  cr_assert(memcmp(eb2, eb, elen) == 0);
  cr_assert_eq(count_files(), 1, "temporary file left behind");

  free(fb);
  free(eb);
  free(eb2);
  nc_tensor_list_free(&l);
  nc_tensor_list_free(&r);
  nc_tensor_list_free(&r2);
  nc_metadata_free(&m);
  nc_metadata_free(&rm);
}

Test(safetensors, empty_metadata_and_empty_list) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  void *b;
  size_t n;
  ok(nc_safetensors_encode(&l, NULL, &b, &n));
  cr_assert_eq(n, 16);
  cr_assert(memcmp(b, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
  free(b);
  nc_metadata m;
  nc_metadata_init(&m);
  ok(nc_safetensors_encode(&l, &m, &b, &n));  // empty metadata: no __metadata__ key
  cr_assert_eq(n, 16);
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  ok(nc_safetensors_decode(b, n, "mem", &r, &m));
  cr_assert_eq(r.len, 0);
  cr_assert_eq(m.len, 0);
  free(b);

  float x = 3;
  nc_tensor t = nc_tensor_wrap(&x, NC_F32, 1, (int64_t[]){1});
  ok(nc_tensor_list_add(&l, "x", &t));
  ok(nc_safetensors_write(tpath("x.safetensors"), &l, NULL));
  ok(nc_safetensors_read(tpath("x.safetensors"), &r, &m));
  cr_assert_eq(m.len, 0);
  assert_lists_equal(&l, &r);
  void *fb = slurp(tpath("x.safetensors"), &n);
  cr_assert_null(memmem(fb, n, "__metadata__", 12));
  free(fb);
  nc_tensor_list_free(&l);
  nc_tensor_list_free(&r);
  nc_metadata_free(&m);
}

Test(safetensors, exact_bytes_tiny) {
  float one = 1.0f;
  uint8_t b3[3] = {1, 2, 3};
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  nc_tensor t = nc_tensor_wrap(b3, NC_U8, 1, (int64_t[]){3});
  ok(nc_tensor_list_add(&l, "b", &t));  // added first, written second: keys are sorted
  t = nc_tensor_wrap(&one, NC_F32, 0, NULL);
  ok(nc_tensor_list_add(&l, "a", &t));
  nc_metadata m;
  nc_metadata_init(&m);
  ok(nc_metadata_set(&m, "k", "v"));
  static const char header[] =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]}}"
      "      ";  // 130 bytes of JSON + 6 spaces = 136 = 0x88
  cr_assert_eq(strlen(header), 136);
  unsigned char want[8 + 136 + 7];
  memcpy(want, "\x88\0\0\0\0\0\0\0", 8);
  memcpy(want + 8, header, 136);
  memcpy(want + 144, "\x00\x00\x80\x3f\x01\x02\x03", 7);
  ok(nc_safetensors_write(tpath("tiny.safetensors"), &l, &m));
  size_t n;
  unsigned char *got = slurp(tpath("tiny.safetensors"), &n);
  cr_assert_eq(n, sizeof want);
  cr_assert(memcmp(got, want, n) == 0, "bytes differ:\n%.*s", (int)(n - 8), got + 8);
  free(got);
  nc_tensor_list_free(&l);
  nc_metadata_free(&m);
}

Test(safetensors, json_escaping_of_names) {
  const char *names[] = {"quote\"d", "back\\slash", "new\nline", "ctl\x01\x1f", "tab\t", "slash/ok", "\xe6\x97\xa5\xe6\x9c\xac", ""};
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    nc_tensor t = rand_tensor(NC_I32, 1, (int64_t[]){(int64_t)i + 1});
    ok(nc_tensor_list_add(&l, names[i], &t));
  }
  void *b;
  size_t n;
  ok(nc_safetensors_encode(&l, NULL, &b, &n));
  cr_assert_not_null(memmem(b, n, "\"ctl\\u0001\\u001f\"", 17), "control characters escaped as serde_json does");
  cr_assert_not_null(memmem(b, n, "\"quote\\\"d\"", 10));
  cr_assert_not_null(memmem(b, n, "\"new\\nline\"", 11));
  cr_assert_not_null(memmem(b, n, "\"slash/ok\"", 10));
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  ok(nc_safetensors_decode(b, n, "mem", &r, NULL));
  assert_lists_equal(&l, &r);
  free(b);
  nc_tensor_list_free(&l);
  nc_tensor_list_free(&r);
}

Test(safetensors, large_tensor_streams_into_buffer) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  nc_tensor t = rand_tensor(NC_F32, 2, (int64_t[]){1024, 1537});
  ok(nc_tensor_list_add(&l, "big", &t));
  nc_tensor s = rand_tensor(NC_BF16, 1, (int64_t[]){3});
  ok(nc_tensor_list_add(&l, "small", &s));
  ok(nc_safetensors_write(tpath("big.safetensors"), &l, NULL));
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  ok(nc_safetensors_read(tpath("big.safetensors"), &r, NULL));
  assert_lists_equal(&l, &r);
  nc_tensor_list_free(&l);
  nc_tensor_list_free(&r);
}

// ---- the independent oracle (Python-written fixture) -------------------------------

static void check_fixture_values(const nc_tensor_list *r, const nc_metadata *m) {
  cr_assert_eq(r->len, 10);
  nc_tensor *t = nc_tensor_list_find(r, "a.f32");
  cr_assert(t && t->dtype == NC_F32 && t->rank == 2 && t->shape[0] == 2 && t->shape[1] == 3);
  const float *a = t->data;
  cr_assert(a[0] == 0.0f && a[1] == 1.5f && a[2] == -2.25f && a[3] == 1e-3f && a[4] == 65504.0f && a[5] == -7.0f);
  t = nc_tensor_list_find(r, "b.bf16");
  cr_assert(t && t->dtype == NC_BF16 && t->rank == 1 && t->shape[0] == 4);
  const uint16_t *b = t->data;
  cr_assert(nc_bf16_to_f32(b[0]) == 1.0f && nc_bf16_to_f32(b[1]) == -2.0f && nc_bf16_to_f32(b[2]) == 0.5f &&
            nc_bf16_to_f32(b[3]) == 3.140625f);
  t = nc_tensor_list_find(r, "c.f16");
  cr_assert(t && t->dtype == NC_F16 && t->rank == 2);
  const uint16_t *c = t->data;
  cr_assert(nc_f16_to_f32(c[0]) == 1.0f && nc_f16_to_f32(c[1]) == -2.0f && nc_f16_to_f32(c[2]) == 0.5f &&
            nc_f16_to_f32(c[3]) == 65504.0f);
  t = nc_tensor_list_find(r, "d.i32");
  cr_assert(t && t->dtype == NC_I32 && t->shape[0] == 3);
  const int32_t *d = t->data;
  cr_assert(d[0] == -1 && d[1] == 0 && d[2] == 2147483647);
  t = nc_tensor_list_find(r, "e.i64");
  cr_assert(t && t->dtype == NC_I64 && t->rank == 2 && t->shape[0] == 2 && t->shape[1] == 1);
  const int64_t *e = t->data;
  cr_assert(e[0] == INT64_MIN && e[1] == 1234567890123);
  t = nc_tensor_list_find(r, "f.u8");
  cr_assert(t && t->dtype == NC_U8 && t->shape[0] == 5);
  cr_assert(memcmp(t->data, "\x00\x01\x7f\x80\xff", 5) == 0);
  t = nc_tensor_list_find(r, "g.bool");
  cr_assert(t && t->dtype == NC_BOOL && t->shape[0] == 2);
  cr_assert(memcmp(t->data, "\x01\x00", 2) == 0);
  t = nc_tensor_list_find(r, "h.scalar");
  cr_assert(t && t->dtype == NC_F32 && t->rank == 0 && *(float *)t->data == 42.0f);
  t = nc_tensor_list_find(r, "i.empty");
  cr_assert(t && t->rank == 2 && t->shape[0] == 0 && t->shape[1] == 3 && nc_tensor_nbytes(t) == 0);
  t = nc_tensor_list_find(r, "transformer.h.0.attn.c_q.weight");
  cr_assert(t && t->dtype == NC_F32 && ((float *)t->data)[3] == 4.0f);
  cr_assert_eq(m->len, 2);
  cr_assert_str_eq(nc_metadata_get(m, "format"), "pt");
  cr_assert_str_eq(nc_metadata_get(m, "note"), "h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac");
}

Test(safetensors, python_fixture_reads) {
  const char *files[] = {"tiny.safetensors", "tiny_unordered.safetensors"};
  for (int i = 0; i < 2; i++) {
    nc_tensor_list r;
    nc_tensor_list_init(&r);
    nc_metadata m;
    nc_metadata_init(&m);
    ok(nc_safetensors_read(fixture_path(files[i]), &r, &m));
    check_fixture_values(&r, &m);
    nc_tensor_list_free(&r);
    nc_metadata_free(&m);
  }
}

Test(safetensors, writer_matches_python_fixture_bytes) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  nc_metadata m;
  nc_metadata_init(&m);
  fixture_list(&l, &m);
  void *b;
  size_t n, fn;
  ok(nc_safetensors_encode(&l, &m, &b, &n));
  void *fb = fixture_bytes(&fn);
  cr_assert_eq(n, fn);
  cr_assert(memcmp(b, fb, n) == 0, "C writer and the Python (Rust-layout) fixture differ");
  free(b);
  free(fb);
  nc_tensor_list_free(&l);
  nc_metadata_free(&m);
}

// ---- malformed files ---------------------------------------------------------------

Test(safetensors, truncated_at_every_offset) {
  size_t n;
  unsigned char *p = fixture_bytes(&n);
  for (size_t k = 0; k < n; k++) {
    nc_tensor_list r;
    nc_tensor_list_init(&r);
    nc_status st = nc_safetensors_decode(p, k, "cut.safetensors", &r, NULL);
    cr_assert_not_null(st, "prefix of %zu bytes accepted", k);
    cr_assert_not_null(strstr(nc_status_msg(st), "cut.safetensors"));
    cr_assert_eq(r.len, 0);
    nc_status_free(st);
    spit(tpath("cut.safetensors"), p, k);
    st = nc_safetensors_read(tpath("cut.safetensors"), &r, NULL);
    cr_assert_not_null(st, "file of %zu bytes accepted", k);
    cr_assert_not_null(strstr(nc_status_msg(st), tpath("cut.safetensors")), "%s", nc_status_msg(st));
    nc_status_free(st);
  }
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  ok(nc_safetensors_decode(p, n, "whole", &r, NULL));
  nc_tensor_list_free(&r);
  nc_tensor_list_init(&r);
  EXPECT_ERR(nc_safetensors_decode(p, 5, "x", &r, NULL), "truncated", "shorter than");
  free(p);
}

static nc_status decode_patched_len(const unsigned char *p, size_t n, uint64_t hl) {
  unsigned char *q = malloc(n);
  memcpy(q, p, n);
  for (int i = 0; i < 8; i++) q[i] = (unsigned char)(hl >> (8 * i));
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  nc_status st = nc_safetensors_decode(q, n, "len.safetensors", &r, NULL);
  nc_tensor_list_free(&r);
  free(q);
  return st;
}

Test(safetensors, bad_header_lengths) {
  size_t n;
  unsigned char *p = fixture_bytes(&n);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | p[i];
  cr_assert_null(decode_patched_len(p, n, hl));
  nc_status st = decode_patched_len(p, n, hl - 1);
  cr_assert_not_null(st);  // header cut inside the JSON or padding change -> data section misaligned
  nc_status_free(st);
  st = decode_patched_len(p, n, hl + 1);
  cr_assert_not_null(st);
  nc_status_free(st);
  st = decode_patched_len(p, n, hl - 8);  // cuts into the JSON text
  EXPECT_ERR(st, "not valid JSON");
  EXPECT_ERR(decode_patched_len(p, n, n - 7), "exceeds the file size");
  EXPECT_ERR(decode_patched_len(p, n, 100000001), "exceeds the limit");
  EXPECT_ERR(decode_patched_len(p, n, UINT64_MAX), "exceeds the limit");
  EXPECT_ERR(decode_patched_len(p, n, (uint64_t)1 << 63), "exceeds the limit");
  EXPECT_ERR(decode_patched_len(p, n, 0), "too small");
  free(p);
}

Test(safetensors, bad_shapes) {
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", zeros, 4),
             "bad.safetensors", "'x'", "overflow");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],\"data_offsets\":[0,4]}}", zeros, 4),
             "not valid JSON");  // beyond int64: jansson refuses the number
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807],\"data_offsets\":[0,4]}}", zeros, 4),
             "'x'", "absurd");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", zeros, 1), "rank 7");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", zeros, 1), "non-negative");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", zeros, 1), "non-negative");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[\"1\"],\"data_offsets\":[0,1]}}", zeros, 1), "non-negative");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", zeros, 1), "shape");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", zeros, 1), "missing shape");
  // A rank-6 tensor with big extents whose element count stays in range but
  // whose bytes are not in the file: a size mismatch, never an allocation.
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"I64\",\"shape\":[256,256,256,256,256,2],\"data_offsets\":[0,8]}}", zeros, 8),
             "size mismatch");
}

Test(safetensors, bad_offsets) {
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,5]}}", zeros, 4), "'x'", "beyond");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,18446744073709551615]}}", zeros, 4),
             "not valid JSON");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,2]}}", zeros, 4), "begin > end");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0]}}", zeros, 4), "data_offsets");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", zeros, 8), "data_offsets");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-1,3]}}", zeros, 4), "data_offsets");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":\"0,4\"}}", zeros, 4), "data_offsets");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4]}}", zeros, 4), "data_offsets");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", zeros, 4), "'x'", "size mismatch");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                        zeros, 6),
             "overlap", "'y'", "'x'");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                        zeros, 4),
             "overlap");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                        zeros, 10),
             "hole", "[4,6)");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", zeros, 6), "hole");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", zeros, 5), "trailing");
  EXPECT_ERR(decode_hdr("{}", zeros, 1), "trailing");
  // Zero-size tensors may sit anywhere on the covered range boundary.
  cr_assert_null(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                            "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                            "\"f\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[0,0]}}",
                            zeros, 4));
}

Test(safetensors, bad_json_and_dtypes) {
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4), "'x'",
             "unknown dtype 'F99'");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4), "unknown dtype");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", zeros, 8), "unsupported dtype");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4), "dtype");
  EXPECT_ERR(decode_hdr("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4), "dtype");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":1}}", zeros, 1),
             "unknown field 'extra'");
  EXPECT_ERR(decode_hdr("{\"x\":[1,2]}", zeros, 0), "'x'", "not a JSON object");
  EXPECT_ERR(decode_hdr("{not json}", zeros, 0), "not valid JSON");
  EXPECT_ERR(decode_hdr("{\"x\":{}", zeros, 0), "not valid JSON");
  EXPECT_ERR(decode_hdr("{} {}", zeros, 0), "not valid JSON");
  EXPECT_ERR(decode_hdr("[1,2,3]", zeros, 0), "not a JSON object");
  EXPECT_ERR(decode_hdr(" {}", zeros, 0), "not a JSON object");
  EXPECT_ERR(decode_hdr("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1), "UTF-8");
  EXPECT_ERR(decode_hdr("{\"\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1), "UTF-8");
  EXPECT_ERR(decode_hdr("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1), "not valid JSON");
  EXPECT_ERR(decode_hdr("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                        zeros, 2),
             "duplicate");
  EXPECT_ERR(decode_hdr("{\"__metadata__\":{\"a\":1}}", zeros, 0), "__metadata__", "'a'", "not a string");
  EXPECT_ERR(decode_hdr("{\"__metadata__\":{\"a\":null}}", zeros, 0), "not a string");
  EXPECT_ERR(decode_hdr("{\"__metadata__\":\"x\"}", zeros, 0), "__metadata__", "not a JSON object");
  EXPECT_ERR(decode_hdr("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", zeros, 0), "duplicate");
  // Deep nesting is refused by the parser, not by the stack.
  char deep[4200];
  size_t k = 0;
  deep[k++] = '{';
  memcpy(deep + k, "\"x\":", 4), k += 4;
  for (int i = 0; i < 2000; i++) deep[k++] = '[';
  for (int i = 0; i < 2000; i++) deep[k++] = ']';
  deep[k++] = '}';
  deep[k] = 0;
  nc_status st = decode_hdr(deep, zeros, 0);
  cr_assert_not_null(st);
  nc_status_free(st);
}

Test(safetensors, trailing_garbage_after_valid_file) {
  size_t n;
  unsigned char *p = fixture_bytes(&n);
  unsigned char *q = malloc(n + 3);
  memcpy(q, p, n);
  memcpy(q + n, "xyz", 3);
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  EXPECT_ERR(nc_safetensors_decode(q, n + 3, "g.safetensors", &r, NULL), "g.safetensors", "3 trailing bytes");
  spit(tpath("g.safetensors"), q, n + 3);
  EXPECT_ERR(nc_safetensors_read(tpath("g.safetensors"), &r, NULL), "trailing");
  free(p);
  free(q);
}

Test(safetensors, random_mutations_never_crash) {
  size_t n;
  unsigned char *p = fixture_bytes(&n);
  unsigned char *q = malloc(n);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | p[i];
  int accepted = 0;
  for (int it = 0; it < 4000; it++) {
    memcpy(q, p, n);
    int k = 1 + (int)(rng() % 4);
    for (int j = 0; j < k; j++) {
      // Mostly hit the header (where the structure is), sometimes anywhere.
      size_t at = (rng() % 4) ? 8 + rng() % hl : rng() % n;
      switch (rng() % 3) {
        case 0: q[at] = (unsigned char)rng(); break;
        case 1: q[at] ^= (unsigned char)(1u << (rng() % 8)); break;
        default: q[at] = "{}[],:\"0123456789-. e"[rng() % 21]; break;
      }
    }
    size_t len = (rng() % 8) ? n : rng() % (n + 1);
    nc_tensor_list r;
    nc_tensor_list_init(&r);
    nc_metadata m;
    nc_metadata_init(&m);
    nc_status st = nc_safetensors_decode(q, len, "mut", &r, &m);
    if (st) {
      cr_assert(strlen(nc_status_msg(st)) > 0);
      cr_assert_eq(r.len, 0);
      nc_status_free(st);
    } else {
      accepted++;  // e.g. a flipped data byte: still a valid file; re-encoding must work
      void *b;
      size_t bl;
      ok(nc_safetensors_encode(&r, &m, &b, &bl));
      nc_tensor_list r2;
      nc_tensor_list_init(&r2);
      ok(nc_safetensors_decode(b, bl, "re", &r2, NULL));
      assert_lists_equal(&r, &r2);
      nc_tensor_list_free(&r2);
      free(b);
    }
    nc_tensor_list_free(&r);
    nc_metadata_free(&m);
  }
  cr_log_info("random mutations: %d of 4000 still valid files", accepted);
  free(p);
  free(q);
}

// ---- API misuse and list semantics ------------------------------------------------------

Test(safetensors, list_rules) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  float x[2] = {1, 2};
  nc_tensor t = nc_tensor_wrap(x, NC_F32, 1, (int64_t[]){2});
  ok(nc_tensor_list_add(&l, "x", &t));
  cr_assert_eq(t.data, x, "a wrapped tensor stays the caller's");
  EXPECT_ERR(nc_tensor_list_add(&l, "x", &t), "duplicate", "'x'");
  EXPECT_ERR(nc_tensor_list_add(&l, "__metadata__", &t), "reserved");
  EXPECT_ERR(nc_tensor_list_add(&l, "bad\xff", &t), "UTF-8");
  nc_tensor bad = nc_tensor_wrap(x, NC_F32, 1, (int64_t[]){-2});
  EXPECT_ERR(nc_tensor_list_add(&l, "neg", &bad), "'neg'", "extent");
  bad = nc_tensor_wrap(NULL, NC_F32, 1, (int64_t[]){2});
  EXPECT_ERR(nc_tensor_list_add(&l, "nodata", &bad), "no data");
  bad = t;
  bad.rank = 7;
  EXPECT_ERR(nc_tensor_list_add(&l, "r7", &bad), "rank");
  ok(nc_tensor_list_add_copy(&l, "copy", &t));
  cr_assert_neq(nc_tensor_list_find(&l, "copy")->data, x);
  cr_assert_null(nc_tensor_list_find(&l, "nope"));
  // A hand-built list with duplicates is refused by the writer.
  l.items[1].name[0] = 'x';
  l.items[1].name[1] = 0;
  EXPECT_ERR(nc_safetensors_write(tpath("dup.safetensors"), &l, NULL), "duplicate");
  cr_assert_eq(count_files(), 0);

  nc_metadata m;
  nc_metadata_init(&m);
  ok(nc_metadata_set(&m, "a", "1"));
  ok(nc_metadata_set(&m, "a", "2"));
  cr_assert_eq(m.len, 1);
  cr_assert_str_eq(nc_metadata_get(&m, "a"), "2");
  EXPECT_ERR(nc_metadata_set(&m, "b", "\xc3"), "UTF-8");
  nc_metadata_free(&m);
  nc_tensor_list_free(&l);
}

Test(safetensors, read_refuses_names_already_in_list) {
  size_t n;
  unsigned char *p = fixture_bytes(&n);
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  float v = 1;
  nc_tensor t = nc_tensor_wrap(&v, NC_F32, 0, NULL);
  ok(nc_tensor_list_add(&r, "d.i32", &t));
  EXPECT_ERR(nc_safetensors_decode(p, n, "f", &r, NULL), "'d.i32'", "already present");
  cr_assert_eq(r.len, 1);
  nc_tensor_list_free(&r);
  free(p);
}

Test(safetensors, read_errors_name_the_file) {
  nc_tensor_list r;
  nc_tensor_list_init(&r);
  EXPECT_ERR(nc_safetensors_read(tpath("missing.safetensors"), &r, NULL), "missing.safetensors", "cannot open");
  EXPECT_ERR(nc_safetensors_read(tmpdir, &r, NULL), "not a regular file");
  nc_tensor_list_free(&r);
}

// ---- atomicity ---------------------------------------------------------------------------

static void write_original(nc_tensor_list *l, void **bytes, size_t *n) {
  nc_tensor_list_init(l);
  nc_tensor t = rand_tensor(NC_F32, 2, (int64_t[]){64, 64});
  ok(nc_tensor_list_add(l, "w", &t));
  ok(nc_safetensors_write(tpath("m.safetensors"), l, NULL));
  *bytes = slurp(tpath("m.safetensors"), n);
}

// Rewrites m.safetensors with a 4 MB tensor in a child limited to `limit`
// bytes per file. kill_child: SIGXFSZ keeps its default action (the process
// dies mid-write, as on a crash); else it is ignored (write fails with EFBIG).
static int child_write_limited(rlim_t limit, bool kill_child) {
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    signal(SIGXFSZ, kill_child ? SIG_DFL : SIG_IGN);
    struct rlimit rl = {limit, limit};
    setrlimit(RLIMIT_FSIZE, &rl);
    nc_tensor_list l;
    nc_tensor_list_init(&l);
    nc_tensor t;
    if (nc_tensor_alloc(&t, NC_F32, 1, (int64_t[]){1 << 20})) _exit(3);
    if (nc_tensor_list_add(&l, "w", &t)) _exit(3);
    nc_status st = nc_safetensors_write(tpath("m.safetensors"), &l, NULL);
    _exit(st ? 1 : 0);
  }
  int ws;
  cr_assert_eq(waitpid(pid, &ws, 0), pid);
  return ws;
}

Test(safetensors, failed_write_keeps_existing_file) {
  nc_tensor_list l;
  void *orig;
  size_t on;
  write_original(&l, &orig, &on);
  for (rlim_t lim = 0; lim <= 1u << 20; lim = lim ? lim * 4 : 1) {
    int ws = child_write_limited(lim, false);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 1, "limited write at %lu should fail cleanly", (unsigned long)lim);
    size_t n;
    void *now = slurp(tpath("m.safetensors"), &n);
    cr_assert(n == on && memcmp(now, orig, n) == 0, "existing file damaged (limit %lu)", (unsigned long)lim);
    free(now);
    cr_assert_eq(count_files(), 1, "temporary file not removed after a failed write");
  }
  free(orig);
  nc_tensor_list_free(&l);
}

Test(safetensors, killed_write_keeps_existing_file) {
  nc_tensor_list l;
  void *orig;
  size_t on;
  write_original(&l, &orig, &on);
  for (rlim_t lim = 1; lim <= 1u << 20; lim *= 8) {
    int ws = child_write_limited(lim, true);
    cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGXFSZ, "child should die mid-write");
    size_t n;
    void *now = slurp(tpath("m.safetensors"), &n);
    cr_assert(n == on && memcmp(now, orig, n) == 0, "existing file damaged (limit %lu)", (unsigned long)lim);
    free(now);
    nc_tensor_list r;
    nc_tensor_list_init(&r);
    ok(nc_safetensors_read(tpath("m.safetensors"), &r, NULL));
    assert_lists_equal(&l, &r);
    nc_tensor_list_free(&r);
  }
  cr_assert(count_files() > 1, "the killed writer leaves its temporary files (and only those)");
  free(orig);
  nc_tensor_list_free(&l);
}

Test(safetensors, write_into_missing_folder_fails) {
  nc_tensor_list l;
  nc_tensor_list_init(&l);
  EXPECT_ERR(nc_safetensors_write(tpath("no/such/dir/x.safetensors"), &l, NULL), "no/such/dir/x.safetensors");
  EXPECT_ERR(nc_safetensors_write(tpath(""), &l, NULL), "not a file path");
}

// Files written by other tools in the tree (tools/gen_fixtures.py's model
// fixtures): they read, and re-encoding gives the same bytes. Skipped when
// the folder is absent.
#include <glob.h>
Test(safetensors, other_fixtures_reencode_identically) {
  char pat[1024];
  const char *src = getenv("NC_SOURCE_DIR");
  snprintf(pat, sizeof pat, "%s/tests/fixtures/model/*/*.safetensors", src ? src : ".");
  glob_t g;
  if (glob(pat, 0, NULL, &g) != 0) cr_skip_test("no model fixtures");
  for (size_t i = 0; i < g.gl_pathc; i++) {
    size_t n;
    void *d = slurp(g.gl_pathv[i], &n);
    nc_tensor_list l;
    nc_tensor_list_init(&l);
    nc_metadata m;
    nc_metadata_init(&m);
    ok(nc_safetensors_read(g.gl_pathv[i], &l, &m));
    cr_assert(l.len > 0);
    void *e;
    size_t en;
    ok(nc_safetensors_encode(&l, &m, &e, &en));
    cr_assert(en == n && memcmp(e, d, n) == 0, "%s: re-encoding differs", g.gl_pathv[i]);
    free(e);
    free(d);
    nc_tensor_list_free(&l);
    nc_metadata_free(&m);
  }
  globfree(&g);
}
