// The GEMM generators' IR (codegen/gemm.c, codegen/gemm_bf16.c) and the plan
// kernels' IR (codegen/llvm_kir.c), as printed text, for a spread of specs:
//   - fp32: every ta/tb, AVX-512 (vw 16) and AVX2 (vw 8) knobs, 8 knob sets
//     each (the default and others from the knob table's values), one GEMM a
//     module, plus one module with all four ta/tb (shared helpers);
//   - bf16: every ta/tb, bf16_io off and on, 8 knob sets (vw 16; the bf16
//     default first);
//   - the kernels of the d4 training plan (models/specs/d4.xml), one module.
// Every module must verify (LLVMVerifyModule) and print the same text when
// emitted twice. With NC_GEMM_IR_DUMP=DIR the text of each is written to
// DIR/<name>.ll: a refactor of the generators must leave these files identical
// (diff -r a dump made before against one made after).
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>

#include "codegen/gemm.h"
#include "codegen/gemm_bf16.h"
#include "codegen/jit.h"
#include "codegen/llvm_kir.h"
#include "frontend/spec.h"
#include "models/train.h"
#include "passes/lower.h"
#include "runtime/aot.h"
#include "tests/support/model_util.h"

#define OK(expr)                                                  \
  do {                                                            \
    nc_status st_ = (expr);                                       \
    cr_assert(st_ == NC_OK, "%s: %s", #expr, nc_status_msg(st_)); \
  } while (0)

// mr, nr, kc, mc, nc, ku, order, prefetch_b (vw set by the caller); values from
// the knob table (codegen/gemm_knobs.c), chosen so that every set is valid for
// vw 8 and 16 and kc is even (bf16). Set 0 is replaced by the default.
static const int k_sets[8][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0},         {4, 96, 256, 96, 384, 8, 0, 8},   {8, 32, 128, 48, 192, 1, 0, 16},
    {12, 32, 192, 240, 576, 2, 1, 0}, {14, 32, 512, 336, 768, 4, 0, 8}, {6, 16, 768, 168, 1152, 8, 1, 16},
    {4, 64, 384, 120, 1536, 1, 0, 0}, {8, 48, 256, 48, 384, 2, 1, 8},
};

static nc_gemm_knobs knobs_for(int set, int vw, nc_gemm_knobs def) {
  if (set == 0) return def;
  const int *s = k_sets[set];
  nc_gemm_knobs k = {.vw = vw, .mr = s[0], .nr = s[1], .kc = s[2], .mc = s[3], .nc = s[4], .ku = s[5],
                     .order = s[6], .prefetch_b = s[7]};
  if (vw == 8 && k.mr * k.nr / 8 > 32) k.nr /= 2;  // keep the accumulators within 32
  if (k.nc % k.nr) k.nc = k.nr * (k.nc / k.nr + 1);
  return k;
}

// A CPU the bf16 generator accepts (IR only: nothing runs here).
static const nc_host_cpu k_bf16_cpu = {.triple = "x86_64-unknown-linux-gnu", .cpu = "sapphirerapids",
                                       .avx2 = true, .avx512f = true, .avx512bf16 = true, .fma = true};

// Verifies m, returns its text (malloc'ed) and writes it to $NC_GEMM_IR_DUMP/name.ll.
static char *module_text(LLVMModuleRef m, const char *name) {
  char *err = NULL;
  bool bad = LLVMVerifyModule(m, LLVMReturnStatusAction, &err);
  cr_assert(!bad, "%s does not verify: %s", name, err ? err : "?");
  LLVMDisposeMessage(err);
  char *s = LLVMPrintModuleToString(m);
  char *copy = strdup(s);
  LLVMDisposeMessage(s);
  const char *dir = getenv("NC_GEMM_IR_DUMP");
  if (dir && *dir) {
    cr_assert(mkdir(dir, 0777) == 0 || errno == EEXIST, "mkdir %s", dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.ll", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(copy, f);
    fclose(f);
  }
  return copy;
}

// Lines "!N = distinct !{!N, ...}" of a printed module: loop ids whose first
// operand is the id itself (else LLVM ignores them).
static int self_ids(const char *text) {
  int n = 0;
  for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
    int a, b;
    if (sscanf(l, "!%d = distinct !{!%d,", &a, &b) == 2 && a == b) n++;
  }
  return n;
}

// m's text (malloc'ed): with dump, verified and written out (module_text).
static char *print_module(LLVMModuleRef m, const char *name, bool dump) {
  if (dump) return module_text(m, name);
  char *s = LLVMPrintModuleToString(m);
  char *text = strdup(s);
  LLVMDisposeMessage(s);
  return text;
}

typedef enum { GEN_F32, GEN_BF16 } gen_kind;

// One module (own context) with the GEMMs of specs[0..n), printed.
static char *emit_text(gen_kind gen, const nc_gemm_spec *specs, int n, const char *name, bool dump) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(name, ctx);
  for (int i = 0; i < n; i++)
    OK(gen == GEN_F32 ? nc_gemm_emit(m, &specs[i]) : nc_gemm_bf16_emit(m, &k_bf16_cpu, &specs[i]));
  char *text = print_module(m, name, dump);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  return text;
}

static void check_emit(gen_kind gen, const nc_gemm_spec *specs, int n, const char *name) {
  char *a = emit_text(gen, specs, n, name, true);
  char *b = emit_text(gen, specs, n, name, false);
  cr_assert(strlen(a) > 1000, "%s: %zu bytes of IR", name, strlen(a));
  cr_assert(!strcmp(a, b), "%s: two emissions print differently", name);
  // fp32: the cold loops' ids (nc_loop_end_cold)
  cr_assert(gen != GEN_F32 || self_ids(a) > 0, "%s: no self-referencing loop id", name);
  free(a);
  free(b);
}

Test(gemm_ir, fp32_modules_verify_and_print_deterministically) {
  nc_host_cpu c512 = {.avx2 = true, .avx512f = true, .fma = true}, c2 = {.avx2 = true, .fma = true};
  for (int isa = 0; isa < 2; isa++) {
    nc_gemm_knobs def = nc_gemm_knobs_default(isa ? &c2 : &c512);
    for (int set = 0; set < 8; set++) {
      nc_gemm_knobs k = knobs_for(set, def.vw, def);
      OK(nc_gemm_knobs_check(&k));
      nc_gemm_spec all[4];
      for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "f32_%s_s%d_t%d%d", isa ? "avx2" : "avx512", set, t / 2, t % 2);
        all[t] = (nc_gemm_spec){.name = "gemm", .ta = t / 2, .tb = t % 2, .knobs = k};
        check_emit(GEN_F32, &all[t], 1, name);
      }
      // all four in one module: the helpers named after ta or tb are shared
      const char *names[4] = {"g00", "g01", "g10", "g11"};
      for (int t = 0; t < 4; t++) all[t].name = names[t];
      char name[64];
      snprintf(name, sizeof name, "f32_%s_s%d_all", isa ? "avx2" : "avx512", set);
      check_emit(GEN_F32, all, 4, name);
    }
  }
}

Test(gemm_ir, bf16_modules_verify_and_print_deterministically) {
  nc_gemm_knobs def = nc_gemm_bf16_knobs_default(&k_bf16_cpu);
  for (int set = 0; set < 8; set++) {
    nc_gemm_knobs k = knobs_for(set, 16, def);
    OK(nc_gemm_bf16_knobs_check(&k));
    for (int io = 0; io < 2; io++)
      for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "bf16_%s_s%d_t%d%d", io ? "io" : "f32", set, t / 2, t % 2);
        nc_gemm_spec s = {.name = "gemm", .ta = t / 2, .tb = t % 2, .knobs = k, .bf16_io = io};
        check_emit(GEN_BF16, &s, 1, name);
      }
  }
}

// The d4 training step's loop-nest kernels (the plan's, before any GEMM),
// emitted as runtime/cpu_jit.c emits them, into one module.
static char *plan_text(nc_jit *jit, const nc_plan *p, const char *name, bool dump, int *nemitted) {
  LLVMModuleRef m;
  OK(nc_jit_module_new(jit, "plan", &m));
  int n = 0;
  for (int i = 0; i < p->nkernels; i++) {
    const nc_kernel *k = &p->kernels[i].k;
    if (nc_kernel_is_template(k)) continue;
    char kname[32];
    snprintf(kname, sizeof kname, "k%d", i);
    OK(nc_llvm_emit_kernel(jit, m, k, kname));
    n++;
  }
  char *text = print_module(m, name, dump);
  LLVMDisposeModule(m);
  *nemitted = n;
  return text;
}

Test(gemm_ir, d4_train_plan_kernels_verify_and_print_deterministically) {
  char path[1024];
  nc_model_spec s;
  OK(nc_spec_load(nc_test_path(path, sizeof path, "models/specs/d4.xml"), &s));
  nc_optim_cfg oc;
  nc_optim_defaults(&oc);
  nc_train_opts to = {.kind = NC_TRAIN_STEP};
  nc_graph *g, *lowered;
  nc_plan *p;
  OK(nc_train_build(&s, &oc, &to, &g));
  OK(nc_aot_plan_build(g, &lowered, &p));
  nc_jit_options jo = {.no_jit = true};
  nc_jit *jit;
  OK(nc_jit_create(&jo, &jit));
  int n1, n2;
  char *a = plan_text(jit, p, "plan_d4_train", true, &n1);
  char *b = plan_text(jit, p, "plan_d4_train", false, &n2);
  cr_assert(n1 > 50 && n1 == n2, "%d kernels emitted", n1);
  cr_assert(!strcmp(a, b), "the plan's kernels print differently when emitted twice");
  free(a);
  free(b);
  // The lowering schedules no unroll today: give every loop unroll(4) (the
  // loop ids of codegen/llvm_kir.c: a distinct node whose first operand is itself).
  for (int i = 0; i < p->nkernels; i++)
    for (int j = 0; j < p->kernels[i].k.ns; j++) {
      nc_kstmt *st = &p->kernels[i].k.s[j];
      if (st->kind == NC_KS_FOR) st->sched |= NC_KSCHED_UNROLL, st->unroll = 4;
    }
  a = plan_text(jit, p, "plan_d4_unroll4", true, &n1);
  b = plan_text(jit, p, "plan_d4_unroll4", false, &n2);
  cr_assert(!strcmp(a, b), "the unrolled plan's kernels print differently when emitted twice");
  cr_assert(strstr(a, "!{!\"llvm.loop.unroll.count\", i32 4}"), "loop ids with unroll counts");
  cr_assert(self_ids(a) > 10, "%d self-referencing loop ids", self_ids(a));
  free(a);
  free(b);
  nc_jit_free(jit);
  nc_plan_free(p);
  nc_graph_free(lowered);
  nc_graph_free(g);
}
