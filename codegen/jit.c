#include "codegen/jit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef NC_HAVE_LLVM
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>

struct nc_jit {
  nc_host_cpu cpu;    // effective CPU (features possibly restricted)
  int opt_level;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm;  // for the IR pipeline and object emission
  char *data_layout;        // LLVMCopyStringRepOfTargetData
  LLVMOrcThreadSafeContextRef tsctx;
  LLVMOrcLLJITRef lljit;    // NULL with no_jit
};

// Takes the LLVMErrorRef and turns it into an nc_status with LLVM's message.
static nc_status nc_llvm_error(LLVMErrorRef err, const char *what) {
  char *msg = LLVMGetErrorMessage(err);
  nc_status st = nc_errorf(NC_E_INTERNAL, "LLVM %s: %s", what, msg ? msg : "(no message)");
  LLVMDisposeErrorMessage(msg);
  return st;
}

// Rewrites "+avx512f,+avx2,..." so that every AVX-512 family feature (and the
// AVX10/AMX ones that imply 512-bit registers) is disabled.
static void nc_features_restrict_avx2(char *features) {
  static const char *const drop[] = {"avx512", "avx10", "evex512", "amx"};
  for (char *p = features; *p;) {
    if (*p == '+') {
      for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
        if (!strncmp(p + 1, drop[i], strlen(drop[i]))) {
          *p = '-';
          break;
        }
    }
    char *comma = strchr(p, ',');
    if (!comma) break;
    p = comma + 1;
  }
}

static LLVMCodeGenOptLevel nc_cg_level(int opt) {
  return opt <= 0 ? LLVMCodeGenLevelNone
         : opt == 1 ? LLVMCodeGenLevelLess
         : opt == 2 ? LLVMCodeGenLevelDefault
                    : LLVMCodeGenLevelAggressive;
}

static LLVMTargetMachineRef nc_jit_make_tm(const nc_jit *jit) {
  return LLVMCreateTargetMachine(jit->target, jit->cpu.triple, jit->cpu.cpu, jit->cpu.features,
                                 nc_cg_level(jit->opt_level), LLVMRelocPIC, LLVMCodeModelDefault);
}

nc_status nc_jit_create(const nc_jit_options *opts, nc_jit **out) {
  *out = NULL;
  nc_jit_options o = {0};
  if (opts) o = *opts;
  if (o.opt_level == 0) o.opt_level = 3;
  if (o.opt_level < 0 || o.opt_level > 3)
    return nc_errorf(NC_E_INVALID, "nc_jit_create: opt_level %d is not in 0..3", o.opt_level);
  // LLVM's own one-time registration (idempotent, guarded inside LLVM).
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    return nc_errorf(NC_E_UNSUPPORTED, "LLVM has no native target for this host");
  nc_jit *jit = calloc(1, sizeof *jit);
  if (!jit) return nc_errorf(NC_E_NOMEM, "nc_jit_create: out of memory");
  jit->opt_level = o.opt_level;
  nc_status st = nc_host_cpu_query(&jit->cpu);
  if (st) {
    free(jit);
    return st;
  }
  if (o.avx2_only) {
    if (!jit->cpu.avx2 || !jit->cpu.fma) {
      st = nc_errorf(NC_E_UNSUPPORTED, "nc_jit_create: avx2_only asked but host CPU '%s' lacks AVX2/FMA",
                     jit->cpu.cpu);
      free(jit);
      return st;
    }
    nc_features_restrict_avx2(jit->cpu.features);
    jit->cpu.avx512f = jit->cpu.avx512bf16 = false;
  }
  char *err = NULL;
  if (LLVMGetTargetFromTriple(jit->cpu.triple, &jit->target, &err)) {
    st = nc_errorf(NC_E_UNSUPPORTED, "LLVM target for '%s': %s", jit->cpu.triple, err ? err : "?");
    LLVMDisposeMessage(err);
    free(jit);
    return st;
  }
  jit->tm = nc_jit_make_tm(jit);
  if (!jit->tm) {
    st = nc_errorf(NC_E_UNSUPPORTED, "LLVM could not create a target machine for %s/%s", jit->cpu.triple,
                   jit->cpu.cpu);
    free(jit);
    return st;
  }
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(jit->tm);
  jit->data_layout = LLVMCopyStringRepOfTargetData(td);
  LLVMDisposeTargetData(td);
  jit->tsctx = LLVMOrcCreateNewThreadSafeContext();
  if (!o.no_jit) {
    // LLJIT codegens with its own target machine, built from the same
    // triple/CPU/features (the builder takes ownership of this second TM).
    LLVMTargetMachineRef jtm = nc_jit_make_tm(jit);
    if (!jtm) {
      nc_jit_free(jit);
      return nc_errorf(NC_E_UNSUPPORTED, "LLVM could not create the JIT's target machine");
    }
    LLVMOrcLLJITBuilderRef b = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
        b, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&jit->lljit, b);  // consumes b
    if (e) {
      jit->lljit = NULL;
      nc_jit_free(jit);
      return nc_llvm_error(e, "creating the ORC LLJIT");
    }
    // The O3 pipeline may turn copy/zero loops into memcpy/memset calls:
    // resolve such symbols from the host process.
    LLVMOrcDefinitionGeneratorRef gen = NULL;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
        &gen, LLVMOrcLLJITGetGlobalPrefix(jit->lljit), NULL, NULL);
    if (e) {
      nc_jit_free(jit);
      return nc_llvm_error(e, "creating the process symbol generator");
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit->lljit), gen);
  }
  *out = jit;
  return NC_OK;
}

void nc_jit_free(nc_jit *jit) {
  if (!jit) return;
  if (jit->lljit) {
    LLVMErrorRef e = LLVMOrcDisposeLLJIT(jit->lljit);
    if (e) LLVMConsumeError(e);  // nothing useful to do at teardown
  }
  if (jit->tsctx) LLVMOrcDisposeThreadSafeContext(jit->tsctx);
  if (jit->tm) LLVMDisposeTargetMachine(jit->tm);
  LLVMDisposeMessage(jit->data_layout);
  free(jit);
}

const nc_host_cpu *nc_jit_cpu(const nc_jit *jit) { return &jit->cpu; }

LLVMContextRef nc_jit_context(nc_jit *jit) { return LLVMOrcThreadSafeContextGetContext(jit->tsctx); }

nc_status nc_jit_module_new(nc_jit *jit, const char *name, LLVMModuleRef *out) {
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(name, nc_jit_context(jit));
  if (!m) return nc_errorf(NC_E_NOMEM, "LLVM could not create module '%s'", name);
  LLVMSetTarget(m, jit->cpu.triple);
  LLVMSetDataLayout(m, jit->data_layout);
  *out = m;
  return NC_OK;
}

nc_status nc_jit_optimize(nc_jit *jit, LLVMModuleRef m) {
  char *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    size_t n = 0;
    const char *name = LLVMGetModuleIdentifier(m, &n);
    nc_status st = nc_errorf(NC_E_INTERNAL, "LLVM module '%.*s' does not verify: %s", (int)n, name,
                             msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return st;
  }
  LLVMDisposeMessage(msg);
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", jit->opt_level);
  LLVMPassBuilderOptionsRef pbo = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(pbo, jit->opt_level >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(pbo, jit->opt_level >= 2);
  LLVMPassBuilderOptionsSetLoopUnrolling(pbo, jit->opt_level >= 2);
  LLVMPassBuilderOptionsSetLoopInterleaving(pbo, jit->opt_level >= 2);
  LLVMErrorRef e = LLVMRunPasses(m, pipeline, jit->tm, pbo);
  LLVMDisposePassBuilderOptions(pbo);
  if (e) return nc_llvm_error(e, pipeline);
  return NC_OK;
}

nc_status nc_jit_add_module(nc_jit *jit, LLVMModuleRef m) {
  if (!jit->lljit) {
    LLVMDisposeModule(m);
    return nc_errorf(NC_E_INVALID, "nc_jit_add_module: this nc_jit was created with no_jit");
  }
  nc_status st = nc_jit_optimize(jit, m);
  if (st) {
    LLVMDisposeModule(m);
    return st;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, jit->tsctx);
  LLVMErrorRef e =
      LLVMOrcLLJITAddLLVMIRModule(jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), tsm);
  if (e) return nc_llvm_error(e, "adding a module to the JIT");  // tsm consumed either way
  return NC_OK;
}

nc_status nc_jit_add_object(nc_jit *jit, const void *data, size_t size, const char *name) {
  if (!jit->lljit) return nc_errorf(NC_E_INVALID, "nc_jit_add_object: this nc_jit was created with no_jit");
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(data, size, name ? name : "object");
  if (!mb) return nc_errorf(NC_E_NOMEM, "out of memory copying object %s", name ? name : "");
  LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), mb);
  if (e) return nc_llvm_error(e, "adding an object file to the JIT");  // the buffer is consumed either way
  return NC_OK;
}

nc_status nc_jit_lookup(nc_jit *jit, const char *name, void **out) {
  *out = NULL;
  if (!jit->lljit) return nc_errorf(NC_E_INVALID, "nc_jit_lookup('%s'): no JIT (no_jit)", name);
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(jit->lljit, &addr, name);
  if (e) return nc_status_prefix(nc_llvm_error(e, "lookup"), "symbol '%s': ", name);
  *out = (void *)(uintptr_t)addr;
  return NC_OK;
}

nc_status nc_jit_emit_object(nc_jit *jit, LLVMModuleRef m, const char *path, void **data,
                             size_t *size) {
  if (data) *data = NULL;
  if (size) *size = 0;
  if (!path && (!data || !size)) {
    LLVMDisposeModule(m);
    return nc_errorf(NC_E_INVALID, "nc_jit_emit_object: need a path or data+size");
  }
  nc_status st = nc_jit_optimize(jit, m);
  if (st) {
    LLVMDisposeModule(m);
    return st;
  }
  char *err = NULL;
  if (path) {
    // EmitToFile takes a non-const char* but does not modify it.
    char *p = strdup(path);
    LLVMBool bad = !p || LLVMTargetMachineEmitToFile(jit->tm, m, p, LLVMObjectFile, &err);
    free(p);
    LLVMDisposeModule(m);
    if (bad) {
      st = nc_errorf(NC_E_IO, "writing object file '%s': %s", path, err ? err : "out of memory");
      LLVMDisposeMessage(err);
      return st;
    }
    return NC_OK;
  }
  LLVMMemoryBufferRef mb = NULL;
  LLVMBool bad = LLVMTargetMachineEmitToMemoryBuffer(jit->tm, m, LLVMObjectFile, &err, &mb);
  LLVMDisposeModule(m);
  if (bad) {
    st = nc_errorf(NC_E_INTERNAL, "LLVM object emission: %s", err ? err : "?");
    LLVMDisposeMessage(err);
    return st;
  }
  size_t n = LLVMGetBufferSize(mb);
  void *copy = malloc(n ? n : 1);
  if (!copy) {
    LLVMDisposeMemoryBuffer(mb);
    return nc_errorf(NC_E_NOMEM, "nc_jit_emit_object: %zu bytes", n);
  }
  memcpy(copy, LLVMGetBufferStart(mb), n);
  LLVMDisposeMemoryBuffer(mb);
  *data = copy;
  *size = n;
  return NC_OK;
}

#else  // !NC_HAVE_LLVM

nc_status nc_jit_create(const nc_jit_options *opts, nc_jit **out) {
  (void)opts;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "this build has no LLVM (configured with -DNC_WITH_LLVM=OFF)");
}
void nc_jit_free(nc_jit *jit) { (void)jit; }
const nc_host_cpu *nc_jit_cpu(const nc_jit *jit) {
  (void)jit;
  return NULL;
}
nc_status nc_jit_add_object(nc_jit *jit, const void *data, size_t size, const char *name) {
  (void)jit;
  (void)data;
  (void)size;
  return nc_errorf(NC_E_UNSUPPORTED, "nc_jit_add_object(%s): this build has no LLVM", name ? name : "");
}

nc_status nc_jit_lookup(nc_jit *jit, const char *name, void **out) {
  (void)jit;
  *out = NULL;
  return nc_errorf(NC_E_UNSUPPORTED, "nc_jit_lookup('%s'): this build has no LLVM", name);
}
#endif
