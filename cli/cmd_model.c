// nanochat init / forward: create a checkpoint from a spec, run a model.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/precision.h"
#include "chat/model_io.h"
#include "cli/commands.h"
#include "models/gpt.h"
#include "runtime/exec.h"
#include "runtime/safetensors.h"
#include "runtime/session.h"

static int nc_model_fail(const char *cmd, nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat %s: %s\n", cmd, nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

static bool nc_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int nc_cmd_init(int argc, char **argv) {
  static const struct option opts[] = {{"spec", required_argument, 0, 's'}, {"output", required_argument, 0, 'o'},
                                       {"seed", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *spec_path = NULL, *out = NULL;
  int64_t seed = -1;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "s:o:h", opts, NULL)) != -1) {
    switch (c) {
      case 's': spec_path = optarg; break;
      case 'o': out = optarg; break;
      case 'S':
        if (!nc_parse_i64(optarg, 0, INT32_MAX, &seed)) {
          fprintf(stderr, "nanochat init: --seed wants an integer 0..2147483647, got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'h':
        printf("usage: nanochat init --spec SPEC -o CKPT_DIR [--seed N]\n\n"
               "Writes an initialized checkpoint (step 0) of the model SPEC describes:\n"
               "model_000000.safetensors (nanochat state_dict names) and meta_000000.json.\n"
               "  -s, --spec SPEC     model spec (XML, e.g. models/specs/d4.xml)\n"
               "  -o, --output DIR    checkpoint folder (created if needed)\n"
               "      --seed N        init seed (default: the spec's, 42)\n");
        return 0;
      default: return 2;
    }
  }
  if (!spec_path || !out || optind != argc) {
    fprintf(stderr, "usage: nanochat init --spec SPEC -o CKPT_DIR [--seed N]\n");
    return 2;
  }
  nc_model_spec s;
  nc_status st = nc_spec_load(spec_path, &s);
  if (st) return nc_model_fail("init", st);
  if (seed >= 0) s.seed = (int)seed;
  nc_session *sess = nc_session_new();
  st = nc_model_init_session(&s, (uint64_t)s.seed, sess);
  if (!st) st = nc_model_ckpt_save(out, 0, &s, sess, NULL, NULL);
  nc_session_free(sess);
  if (st) return nc_model_fail("init", st);
  printf("wrote %s/model_000000.safetensors (%s: %d layers, width %d, vocab %d, seed %d)\n", out, s.name, s.depth,
         s.model_dim, s.vocab_size, s.seed);
  return 0;
}

int nc_cmd_forward(int argc, char **argv) {
  static const struct option opts[] = {{"ckpt", required_argument, 0, 'c'},   {"input", required_argument, 0, 'i'},
                                       {"output", required_argument, 0, 'o'}, {"step", required_argument, 0, 'S'},
                                       {"device", required_argument, 0, 'd'}, {"threads", required_argument, 0, 'T'},
                                       {"verbose", no_argument, 0, 'v'},      {"help", no_argument, 0, 'h'},
                                       {"precision", required_argument, 0, 'X'}, {0, 0, 0, 0}};
  const char *ckpt = NULL, *in = NULL, *out = NULL, *precision = NULL;
  int64_t step = -1, threads = 0;
  nc_device dev = {.kind = NC_DEV_CPU};
  bool verbose = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "c:i:o:d:vh", opts, NULL)) != -1) {
    switch (c) {
      case 'c': ckpt = optarg; break;
      case 'i': in = optarg; break;
      case 'o': out = optarg; break;
      case 'S':
        if (!nc_parse_i64(optarg, 0, INT64_MAX, &step)) {
          fprintf(stderr, "nanochat forward: --step wants a non-negative integer, got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'd': {
        nc_status dst = nc_device_parse(optarg, &dev);
        if (dst) return nc_model_fail("forward", dst);
        break;
      }
      case 'T':
        if (!nc_parse_i64(optarg, 1, 1024, &threads)) {
          fprintf(stderr, "nanochat forward: --threads wants 1..1024, got '%s'\n", optarg);
          return 2;
        }
        break;
      case 'v': verbose = true; break;
      case 'X':
        if (nc_cli_precision_check("forward", optarg)) return 2;
        precision = optarg;
        break;
      case 'h':
        printf("usage: nanochat forward --ckpt DIR --input IN.safetensors -o OUT.safetensors [--step N]\n\n"
               "Runs the model of a checkpoint on int32 'tokens' (B,T) and, when present,\n"
               "int32 'targets' (B,T) (-1 = ignored), writing f32 'logits' (B,T,vocab) and 'loss'.\n"
               "  -c, --ckpt DIR      checkpoint folder (latest step unless --step)\n"
               "  -i, --input PATH    safetensors with tokens [and targets]\n"
               "  -o, --output PATH   safetensors to write (atomically)\n"
               "  -d, --device D      cpu (default: LLVM JIT), cpu:avx2, opencl[:N|gpu|cpu|NAME], interp (reference)\n"
               "      --threads N     CPU threads (default: one per core)\n"
               "      --precision P   fp32 or bf16 (default: the checkpoint's)\n"
               "  -v, --verbose       print the generated kernels and timings\n");
        return 0;
      default: return 2;
    }
  }
  if (!ckpt || !in || !out || optind != argc) {
    fprintf(stderr, "usage: nanochat forward --ckpt DIR --input IN.safetensors -o OUT.safetensors\n");
    return 2;
  }
  nc_model_spec s;
  nc_session *sess = nc_session_new();
  nc_tensor_list inputs, outputs;
  nc_tensor_list_init(&inputs);
  nc_tensor_list_init(&outputs);
  nc_graph *g = NULL;
  nc_status st = nc_model_ckpt_load(ckpt, step, &s, sess, NULL, NULL);
  if (!st) nc_cli_precision_apply(precision, &s, &dev);
  if (!st) st = nc_safetensors_read(in, &inputs, NULL);
  const nc_tensor *tok = NULL, *tgt = NULL;
  if (!st) {
    tok = nc_tensor_list_find(&inputs, "tokens");
    tgt = nc_tensor_list_find(&inputs, "targets");
    for (size_t k = 0; k < inputs.len && !st; k++)
      if (strcmp(inputs.items[k].name, "tokens") && strcmp(inputs.items[k].name, "targets"))
        st = nc_errorf(NC_E_INVALID, "%s: unexpected tensor '%s' (expected tokens and optional targets)", in, inputs.items[k].name);
    if (!st && !tok) st = nc_errorf(NC_E_INVALID, "%s: no 'tokens' tensor", in);
    char ty[64];
    if (!st && (tok->dtype != NC_I32 || tok->rank != 2))
      st = nc_errorf(NC_E_INVALID, "%s: 'tokens' must be i32 (B,T), got %s", in, nc_tensor_type_str(tok, ty, sizeof ty));
    if (!st && tgt && (tgt->dtype != NC_I32 || tgt->rank != 2 || tgt->shape[0] != tok->shape[0] || tgt->shape[1] != tok->shape[1]))
      st = nc_errorf(NC_E_INVALID, "%s: 'targets' must be i32 with the shape of tokens, got %s", in, nc_tensor_type_str(tgt, ty, sizeof ty));
    if (!st && (tok->shape[0] < 1 || tok->shape[1] < 1))
      st = nc_errorf(NC_E_INVALID, "%s: 'tokens' is empty", in);
    // compiled kernels clamp ids; reject bad ones here, where they enter
    for (int64_t i = 0; !st && i < nc_tensor_numel(tok); i++) {
      int32_t v = ((const int32_t *)tok->data)[i];
      if (v < 0 || v >= s.vocab_size)
        st = nc_errorf(NC_E_INVALID, "%s: tokens[%lld][%lld] = %d is outside the vocabulary [0, %d)", in,
                       (long long)(i / tok->shape[1]), (long long)(i % tok->shape[1]), v, s.vocab_size);
    }
    for (int64_t i = 0; !st && tgt && i < nc_tensor_numel(tgt); i++) {
      int32_t v = ((const int32_t *)tgt->data)[i];
      if (v != -1 && (v < 0 || v >= s.vocab_size))
        st = nc_errorf(NC_E_INVALID, "%s: targets[%lld][%lld] = %d is neither -1 (ignored) nor in [0, %d)", in,
                       (long long)(i / tgt->shape[1]), (long long)(i % tgt->shape[1]), v, s.vocab_size);
    }
    if (!st && tok->shape[1] > s.sequence_len)
      st = nc_errorf(NC_E_INVALID, "%s: sequence length %lld exceeds the model's %d", in, (long long)tok->shape[1], s.sequence_len);
  }
  if (!st) {
    nc_gpt_opts o = {.with_logits = true, .with_loss = tgt != NULL};
    st = nc_gpt_build(&s, &o, &g);
  }
  if (!st) st = nc_session_put_copy(sess, "tokens", tok);
  if (!st && tgt) st = nc_session_put_copy(sess, "targets", tgt);
  dev.threads = (int)threads;
  dev.verbose = verbose;
  nc_exec *ex = NULL;
  if (!st) st = nc_exec_new(g, &dev, &ex);
  if (!st && verbose)
    fprintf(stderr, "forward: %d kernels, prepared for %s in %.3f s\n", nc_exec_nkernels(ex), nc_device_name(&dev),
            nc_exec_compile_seconds(ex));
  if (!st) st = nc_session_run_exec(sess, ex);
  nc_exec_free(ex);
  if (!st) st = nc_tensor_list_add_copy(&outputs, "logits", nc_session_get(sess, "logits"));
  if (!st && tgt) st = nc_tensor_list_add_copy(&outputs, "loss", nc_session_get(sess, "loss"));
  if (!st) st = nc_safetensors_write(out, &outputs, NULL);
  if (!st && tgt) printf("loss %.6f\n", *(float *)nc_session_get(sess, "loss")->data);
  nc_graph_free(g);
  nc_tensor_list_free(&inputs);
  nc_tensor_list_free(&outputs);
  nc_session_free(sess);
  if (st) return nc_model_fail("forward", st);
  printf("wrote %s\n", out);
  return 0;
}
