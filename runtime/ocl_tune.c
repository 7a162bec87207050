// Tuned GEMM kernels for OpenCL programs (runtime/ocl_tune.h).
#include "runtime/ocl_tune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/tune.h"
#include "runtime/tunedb.h"

int nc_ocl_tuned_collect(const nc_ocl_device_desc *d, const nc_ocl_knobs *def, const bool need[8], nc_ocl_tuned_gemm *out, int max) {
  nc_tunedb *db = nc_tunedb_open_default();
  if (!db) return 0;
  char device[192], driver[192], kernel[128];
  nc_tune_ocl_ids(d, device, sizeof device, driver, sizeof driver);
  bool packed = def->gemm_tc && def->tc_stages > 0;  // the pipelined kernel: its own space, keyed by form (ta, tb)
  const nc_knob_space *sp = packed ? &nc_ocl_tcp_knob_space : def->gemm_tc ? &nc_ocl_tc_knob_space : &nc_ocl_gemm_knob_space;
  int n = 0;
  for (int v = 0; v < 4; v++) {
    if (!need[v] && !(packed && need[v | NC_OCL_GEMM_BF16])) continue;
    if (packed) nc_tune_ocl_pkernel(v, def->gemm_tc, kernel, sizeof kernel);
    else nc_tune_ocl_kernel(v, def->gemm_tc, kernel, sizeof kernel);
    const nc_tune_entry *es[NC_OCL_MAX_TUNED];
    int ne = nc_tunedb_select(db, device, driver, kernel, es, NC_OCL_MAX_TUNED);
    for (int i = 0; i < ne && n < max; i++) {
      long long b, m, nn, k;
      char tail;
      if (sscanf(es[i]->shape, "batch=%lld m=%lld n=%lld k=%lld%c", &b, &m, &nn, &k, &tail) != 4 || b < 1 || m < 1 || nn < 1 || k < 1) {
        nc_tunedb_warn(db, "tuning database %s: entry (%s, %s): shape '%s' is not 'batch=B m=M n=N k=K'; ignored", nc_tunedb_file(db),
                       es[i]->device, es[i]->kernel, es[i]->shape);
        continue;
      }
      nc_ocl_knobs kn = *def;
      nc_status st = nc_tune_entry_apply(es[i], sp, &kn);
      if (!st && packed && kn.tc_wg && !def->tc_wg && def->gemm_tc == 1)
        st = nc_errorf(NC_E_UNSUPPORTED, "tc_wg=%d needs the wgmma kernel, which this compilation does not use (not Hopper, or NC_OCL_WGMMA=0)", kn.tc_wg);
      if (st) {
        nc_tunedb_warn(db, "tuning database %s: entry (%s, %s, %s): %s (stale); ignored", nc_tunedb_file(db), es[i]->device, es[i]->kernel,
                       es[i]->shape, nc_status_msg(st));
        nc_status_free(st);
        continue;
      }
      if (!memcmp(&kn, def, sizeof kn)) continue;  // the default won
      nc_ocl_tuned_gemm *t = &out[n];
      *t = (nc_ocl_tuned_gemm){.variant = v, .batch = b, .m = m, .n = nn, .k = k, .knobs = kn, .packed = packed};
      int j = 0;  // equal knobs share one kernel (the pipelined kernels: whatever the form)
      while (j < n && !((packed || out[j].variant == v) && !memcmp(&out[j].knobs, &kn, sizeof kn))) j++;
      if (packed) snprintf(t->name, sizeof t->name, "nc_gemmp_t%d", j < n ? out[j].set : n);
      else snprintf(t->name, sizeof t->name, "%s_t%d", nc_ocl_gemm_name(v), j);
      t->set = j < n ? out[j].set : n;
      n++;
    }
  }
  const char *dbg = getenv("NC_DEBUG");
  if (dbg && atoi(dbg) >= 1) fprintf(stderr, "opencl: %d tuned GEMM shapes from %s\n", n, nc_tunedb_file(db));
  nc_tunedb_free(db);
  return n;
}

nc_status nc_ocl_tuned_emit(const nc_ocl_tuned_gemm *t, int n, nc_buf *src) {
  for (int i = 0; i < n; i++) {
    if (t[i].packed) continue;  // runtime/ocl_device.c emits the pipelined kernels' variants
    bool first = true;
    for (int j = 0; j < i && first; j++) first = strcmp(t[j].name, t[i].name) != 0;
    if (first) NC_TRY(nc_ocl_emit_gemm_named(&t[i].knobs, t[i].variant, t[i].name, src));
  }
  return NC_OK;
}

int nc_ocl_flash_collect(const nc_ocl_device_desc *d, int tc, int dp, int dvp, const nc_ocl_attn_blocks *def, nc_ocl_tuned_flash *out,
                         int max, int *nsets) {
  *nsets = 0;
  nc_tunedb *db = nc_tunedb_open_default();
  if (!db) return 0;
  int n = nc_ocl_flash_select(db, d, tc, dp, dvp, def, out, max, nsets);
  const char *dbg = getenv("NC_DEBUG");
  if (dbg && atoi(dbg) >= 1) fprintf(stderr, "opencl: %d tuned flash-attention shapes (%d block sets) for head dims %d/%d from %s\n", n, *nsets, dp, dvp, nc_tunedb_file(db));
  nc_tunedb_free(db);
  return n;
}

int nc_ocl_flash_select(nc_tunedb *db, const nc_ocl_device_desc *d, int tc, int dp, int dvp, const nc_ocl_attn_blocks *def,
                        nc_ocl_tuned_flash *out, int max, int *nsets) {
  *nsets = 0;
  char device[192], driver[192], kernel[128];
  nc_tune_ocl_ids(d, device, sizeof device, driver, sizeof driver);
  nc_ocl_flash_signature(tc, dp, dvp, kernel, sizeof kernel);
  const nc_tune_entry *es[64];
  int ne = nc_tunedb_select(db, device, driver, kernel, es, 64), n = 0;
  for (int i = 0; i < ne && n < max; i++) {
    nc_ocl_flash_shape sh;
    if (!nc_ocl_flash_shape_parse(es[i]->shape, &sh)) {
      nc_tunedb_warn(db, "tuning database %s: entry (%s, %s): shape '%s' is not 'batch=B tq=Tq tk=Tk hq=Hq hkv=Hkv causal=0|1 window=W'; ignored",
                     nc_tunedb_file(db), es[i]->device, es[i]->kernel, es[i]->shape);
      continue;
    }
    nc_ocl_flash_knobs kn = {.bl = *def, .tc = tc, .dp = dp, .dvp = dvp};
    nc_status st = nc_tune_entry_apply(es[i], &nc_ocl_flash_knob_space, &kn);
    if (st) {
      nc_tunedb_warn(db, "tuning database %s: entry (%s, %s, %s): %s (stale); ignored", nc_tunedb_file(db), es[i]->device, es[i]->kernel,
                     es[i]->shape, nc_status_msg(st));
      nc_status_free(st);
      continue;
    }
    if (!memcmp(&kn.bl, def, sizeof kn.bl)) continue;  // the default won
    int j = 0;
    while (j < n && memcmp(&out[j].bl, &kn.bl, sizeof kn.bl)) j++;
    out[n] = (nc_ocl_tuned_flash){.shape = sh, .bl = kn.bl, .set = j < n ? out[j].set : (*nsets)++};
    n++;
  }
  return n;
}

// What tells the loop-space classes apart: their knob, their shape's form and its parser (to a slot).
typedef struct {
  const char *knob, *want, *what;
  int nslots;
  bool (*slot)(const char *shape, int *slot);
} nc_ocl_wg_class;

static bool nc_ocl_loop_slot(const char *shape, int *slot) {
  int k = -1, used = -1;
  if (sscanf(shape, "items=2^%d%n", &k, &used) != 1 || used < 0 || shape[used] || k < 0 || k >= NC_OCL_LOOP_BUCKETS) return false;
  return *slot = k, true;
}

static bool nc_ocl_row_slot_of(const char *shape, int *slot) {
  int b;
  if (!nc_ocl_row_shape_parse(shape, &b) || b >= NC_OCL_LOOP_BUCKETS) return false;
  return *slot = nc_ocl_row_slot(b), true;
}

static bool nc_ocl_reduce_slot_of(const char *shape, int *slot) {
  int b;
  if (!nc_ocl_reduce_shape_parse(shape, &b) || b >= NC_OCL_LOOP_BUCKETS) return false;
  return *slot = nc_ocl_row_slot(b), true;
}

static const nc_ocl_wg_class nc_ocl_wg_classes[3] = {
    [NC_OCL_LOOP_ELEMENTWISE] = {"loop_wg", "'items=2^K' with K in 0..47", "loop work-group", NC_OCL_LOOP_BUCKETS, nc_ocl_loop_slot},
    [NC_OCL_LOOP_ROW] = {"row_wg", "'cols=2^K' (K in 0..40) or 'cols=var'", "row work-group", NC_OCL_ROW_SLOTS, nc_ocl_row_slot_of},
    [NC_OCL_LOOP_REDUCE] = {"reduce_wg", "'items=2^K' (K in 0..40) or 'items=var'", "reduction work-group", NC_OCL_ROW_SLOTS, nc_ocl_reduce_slot_of},
};

int nc_ocl_wg_collect(const nc_ocl_device_desc *d, const nc_ocl_knobs *def, nc_ocl_loop_class cls, int max_wg, int wg[NC_OCL_WG_SLOTS]) {
  memset(wg, 0, NC_OCL_WG_SLOTS * sizeof *wg);
  nc_tunedb *db = nc_tunedb_open_default();
  if (!db) return 0;
  int n = nc_ocl_wg_select(db, d, def, cls, max_wg, wg);
  const char *dbg = getenv("NC_DEBUG");
  if (dbg && atoi(dbg) >= 1) fprintf(stderr, "opencl: %d tuned %s buckets from %s\n", n, nc_ocl_wg_classes[cls].what, nc_tunedb_file(db));
  nc_tunedb_free(db);
  return n;
}

int nc_ocl_wg_select(nc_tunedb *db, const nc_ocl_device_desc *d, const nc_ocl_knobs *def, nc_ocl_loop_class cls, int max_wg,
                     int wg[NC_OCL_WG_SLOTS]) {
  memset(wg, 0, NC_OCL_WG_SLOTS * sizeof *wg);
  const nc_ocl_wg_class *wc = &nc_ocl_wg_classes[cls];
  const nc_knob_space *sp = &nc_ocl_loop_knob_space;
  int ik = nc_knob_find(sp, wc->knob);
  char device[192], driver[192], kernel[128];
  nc_tune_ocl_ids(d, device, sizeof device, driver, sizeof driver);
  nc_ocl_loop_signature(cls, kernel, sizeof kernel);
  nc_ocl_knobs base = *def;
  base.reduce_wg = nc_ocl_reduce_wg_of(def);  // the work-group the default gives (0 follows loop_wg)
  int dv = nc_knob_get(sp, &base, ik);
  const nc_tune_entry *es[NC_OCL_WG_SLOTS];
  int ne = nc_tunedb_select(db, device, driver, kernel, es, NC_OCL_WG_SLOTS), n = 0;
  for (int i = 0; i < ne; i++) {
    int slot;
    if (!wc->slot(es[i]->shape, &slot)) {
      nc_tunedb_warn(db, "tuning database %s: entry (%s, %s): shape '%s' is not %s; ignored", nc_tunedb_file(db), es[i]->device, es[i]->kernel,
                     es[i]->shape, wc->want);
      continue;
    }
    nc_ocl_knobs kn = base;
    nc_status st = nc_tune_entry_apply(es[i], sp, &kn);
    int v = nc_knob_get(sp, &kn, ik);
    if (!st && cls == NC_OCL_LOOP_REDUCE && v < 1)
      st = nc_errorf(NC_E_INVALID, "OpenCL knob reduce_wg=%d: an entry must give a work-group (1..1024)", v);
    if (!st && max_wg > 0 && v > max_wg)
      st = nc_errorf(NC_E_INVALID, "OpenCL knob %s=%d: over this device's largest work-group (%d)", wc->knob, v, max_wg);
    if (st) {
      nc_tunedb_warn(db, "tuning database %s: entry (%s, %s, %s): %s (stale); ignored", nc_tunedb_file(db), es[i]->device, es[i]->kernel,
                     es[i]->shape, nc_status_msg(st));
      nc_status_free(st);
      continue;
    }
    if (v == dv) continue;  // the default won
    if (!wg[slot]) n++;
    wg[slot] = v;
  }
  return n;
}
