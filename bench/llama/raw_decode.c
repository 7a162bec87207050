// llama.cpp f32 batch-1 decode through the prebuilt libllama.so of node-llama-cpp directly
// (no node in the loop), to check decode.mjs's figure. The package ships no headers, so the
// few llama.h declarations needed are written here; the parameter structs are treated as opaque
// blobs larger than the real ones (returned and passed through memory by the x86-64 SysV ABI)
// and only their leading n_ctx/n_batch fields are set; threads go through llama_set_n_threads.
// Build/run: see run.sh (RAW=1). Usage: raw_decode MODEL.gguf [threads 2] [tokens 128] [prompt 32] [reps 3]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int32_t llama_token;
typedef struct { unsigned char b[1024]; } blob_params;  // >= sizeof llama_{model,context}_params
typedef struct {
  int32_t n_tokens; llama_token *token; float *embd; int32_t *pos; int32_t *n_seq_id; int32_t **seq_id; int8_t *logits;
} llama_batch;
void llama_backend_init(void);
void ggml_backend_load_all_from_path(const char *dir);
blob_params llama_model_default_params(void);
blob_params llama_context_default_params(void);
void *llama_model_load_from_file(const char *path, blob_params p);
void *llama_init_from_model(void *model, blob_params p);
void llama_set_n_threads(void *ctx, int32_t n_threads, int32_t n_threads_batch);
llama_batch llama_batch_get_one(llama_token *tokens, int32_t n_tokens);
int32_t llama_decode(void *ctx, llama_batch batch);
float *llama_get_logits_ith(void *ctx, int32_t i);
void *llama_get_memory(void *ctx);
void llama_memory_clear(void *mem, _Bool data);
uint32_t llama_n_ctx(const void *ctx);
const void *llama_model_get_vocab(const void *model);
int32_t llama_vocab_n_tokens(const void *vocab);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: raw_decode MODEL.gguf [threads] [tokens] [prompt] [reps]\n"); return 2; }
  int threads = argc > 2 ? atoi(argv[2]) : 2, N = argc > 3 ? atoi(argv[3]) : 128, P = argc > 4 ? atoi(argv[4]) : 32,
      reps = argc > 5 ? atoi(argv[5]) : 3;
  const char *dir = getenv("GGML_BACKEND_DIR");  // the folder of the libggml-cpu-*.so variants
  ggml_backend_load_all_from_path(dir);
  llama_backend_init();
  void *model = llama_model_load_from_file(argv[1], llama_model_default_params());
  if (!model) { fprintf(stderr, "load failed\n"); return 1; }
  blob_params cp = llama_context_default_params();
  uint32_t nctx = 256, nbatch = 256;
  memcpy(cp.b, &nctx, 4); memcpy(cp.b + 4, &nbatch, 4); memcpy(cp.b + 8, &nbatch, 4);  // n_ctx, n_batch, n_ubatch
  void *ctx = llama_init_from_model(model, cp);
  if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
  llama_set_n_threads(ctx, threads, threads);
  int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_token prompt[512];
  uint32_t seed = 12345;
  for (int i = 0; i < P; i++) prompt[i] = (llama_token)((seed = seed * 1103515245u + 12345u) % 8000u);
  double *tps = calloc(reps + 1, sizeof *tps);
  for (int r = 0; r <= reps; r++) {  // r = 0: warm-up
    llama_memory_clear(llama_get_memory(ctx), 1);
    double t_start = now();
    if (llama_decode(ctx, llama_batch_get_one(prompt, P))) { fprintf(stderr, "decode failed\n"); return 1; }
    double t0 = 0;
    llama_token tok = 0;
    for (int n = 0; n <= N; n++) {
      const float *lg = llama_get_logits_ith(ctx, -1);
      int best = 0;
      for (int v = 1; v < V; v++) if (lg[v] > lg[best]) best = v;
      tok = best;
      if (n == 0) t0 = now();
      if (n == N) break;
      if (llama_decode(ctx, llama_batch_get_one(&tok, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
    }
    double t1 = now();
    if (r > 0) {
      tps[r - 1] = N / (t1 - t0);
      printf("raw run %d: %.1f tok/s (%d tokens after the first; prompt %d, first token %.1f ms)\n", r, tps[r - 1], N, P, 1e3 * (t0 - t_start));
    }
  }
  qsort(tps, reps, sizeof *tps, cmp);
  printf("llama.cpp f32 batch-1 decode (libllama direct) %.1f tok/s (median of %d, best %.1f; %d threads, ctx %u, vocab %d)\n",
         tps[reps / 2], reps, tps[reps - 1], threads, llama_n_ctx(ctx), V);
  return 0;
}
