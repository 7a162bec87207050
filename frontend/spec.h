// Model specs: an XML file naming the GPT architecture and its
// hyperparameters, with nanochat's depth dial. Format in docs/model-spec.md.
#ifndef NC_FRONTEND_SPEC_H
#define NC_FRONTEND_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "support/status.h"

#define NC_SPEC_VERSION 1
#define NC_SPEC_MAX_LAYERS 256

typedef struct {
  char name[64];
  // <dims>
  int depth;           // n_layer
  int aspect_ratio;    // model_dim = depth * aspect_ratio rounded up to head_dim
  int head_dim;
  int vocab_size;
  int sequence_len;
  // derived (filled in by the loader)
  int model_dim, n_head, n_kv_head;
  // <attention>
  double rope_base;
  char window_pattern[NC_SPEC_MAX_LAYERS + 1];  // e.g. "SSSL", tiled over layers
  int short_window;    // tokens an S layer's query sees, itself included (0 = nanochat's rule)
  double qk_scale;     // multiplies q and k after their norm (1 = off)
  // <output>
  double softcap;      // 0 = off
  // <features>
  bool value_embeds, resid_lambdas, smear, backout;
  // <init>
  char init[16];       // "2025-10" (nanochat's October 2025 scheme) or "head"
  int seed;
  // <precision compute="fp32|bf16">: "bf16" builds nanochat's mixed precision
  // (bf16 activations and matmuls, fp32 master weights, norms, attention,
  // logits and loss; docs/model-spec.md). Default "fp32".
  char precision[8];
} nc_model_spec;

// Fills defaults (nanochat d12 at vocab 32768) so code can build specs directly.
void nc_spec_defaults(nc_model_spec *s);
// Derives model_dim, n_head, n_kv_head and checks every field.
nc_status nc_spec_finalize(nc_model_spec *s);
nc_status nc_spec_load(const char *path, nc_model_spec *out);
nc_status nc_spec_parse(const char *src, size_t len, const char *filename, nc_model_spec *out);
// Tokens a query of layer i sees (itself included): sequence_len for L layers.
int nc_spec_window(const nc_model_spec *s, int layer);
// Whether layer i has a value embedding (nanochat: i % 2 == (L-1) % 2).
bool nc_spec_has_ve(const nc_model_spec *s, int layer);
// Sets s->precision from a --precision value ("fp32" or "bf16"); the error
// names `what` (the flag) and the bad value.
nc_status nc_spec_set_precision(nc_model_spec *s, const char *value, const char *what);
// Whether the spec computes in bf16 (precision "bf16").
bool nc_spec_bf16(const nc_model_spec *s);
// Writes the spec back as XML.
nc_status nc_spec_to_xml(const nc_model_spec *s, char **out);

#endif
