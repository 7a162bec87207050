// nanochat's horizon, batch and schedule arithmetic (schedule.h).
#include "pipeline/schedule.h"

#include <math.h>
#include <stdlib.h>

// nanochat's reference: d12 at vocab 32768 has 110,100,480 scaling params
// (12 layers x 12 x 768^2 block matrices + 32768 x 768 lm_head); its ratio-D
// gets the reference batch of 2^19 tokens.
#define NC_D12_SCALING_PARAMS 110100480.0
#define NC_B_REF 524288.0

int64_t nc_sched_scaling_params(const nc_model_spec *s) {
  nc_param_desc *ps;
  int np;
  if (nc_gpt_params(s, &ps, &np)) return 0;
  int64_t w = 0;
  for (int i = 0; i < np; i++)
    if (ps[i].rank == 2 && ps[i].group != NC_GROUP_WTE && ps[i].group != NC_GROUP_VALUE_EMBEDS)
      w += ps[i].shape[0] * ps[i].shape[1];
  free(ps);
  return w;
}

double nc_sched_flops_per_token(const nc_model_spec *s, int64_t T) {
  double attn = 0;
  for (int l = 0; l < s->depth; l++) attn += 12.0 * s->n_head * s->head_dim * fmin(nc_spec_window(s, l), (double)T);
  return 6.0 * (double)nc_sched_scaling_params(s) + attn;
}

nc_status nc_horizon_compute(const nc_model_spec *s, nc_horizon *h) {
  if (h->device_batch < 1) return nc_errorf(NC_E_INVALID, "--device-batch-size must be at least 1, got %lld", (long long)h->device_batch);
  if (h->seq < 1 || h->seq > s->sequence_len)
    return nc_errorf(NC_E_INVALID, "--seq %lld is outside 1..%d (the spec's sequence_len)", (long long)h->seq, s->sequence_len);
  if (h->world < 1) h->world = 1;
  double ratio = h->param_data_ratio > 0 ? h->param_data_ratio : 12.0;
  double n = (double)nc_sched_scaling_params(s);
  double fpt = nc_sched_flops_per_token(s, h->seq);
  double d_ref = ratio * NC_D12_SCALING_PARAMS;
  double d_target = ratio * n;  // the tokens a ratio-horizon wants
  int64_t micro = h->device_batch * h->seq * h->world;
  if (h->total_batch > 0) {
    h->batch_tokens = h->total_batch;
  } else {
    double b = NC_B_REF * pow(d_target / d_ref, 0.383);
    h->batch_tokens = (int64_t)llround(exp2(round(log2(b))));
    if (h->batch_tokens < micro) h->batch_tokens = micro;
  }
  if (h->batch_tokens % micro)
    return nc_errorf(NC_E_INVALID,
                     "--total-batch-size %lld is not a multiple of device batch x seq x ranks = %lld x %lld x %d = %lld",
                     (long long)h->batch_tokens, (long long)h->device_batch, (long long)h->seq, h->world, (long long)micro);
  h->grad_accum = h->batch_tokens / micro;
  if (h->num_iterations > 0) h->steps = h->num_iterations;
  else if (h->target_flops > 0) h->steps = (int64_t)(h->target_flops / (fpt * (double)h->batch_tokens));
  else h->steps = (int64_t)(d_target / (double)h->batch_tokens);
  if (h->steps < 1) return nc_errorf(NC_E_INVALID, "the horizon comes to %lld steps (batch %lld tokens): raise the ratio, flops or iterations", (long long)h->steps, (long long)h->batch_tokens);
  h->tokens = (double)h->steps * (double)h->batch_tokens;
  h->flops = h->tokens * fpt;
  h->batch_lr_scale = sqrt((double)h->batch_tokens / NC_B_REF);
  h->muon_wd = 0.28 * h->batch_lr_scale * (d_ref / h->tokens);
  return NC_OK;
}

void nc_sched_defaults(nc_sched *s, int64_t steps) {
  *s = (nc_sched){.steps = steps, .warmup_steps = 40, .warmdown_ratio = 0.65, .final_lr_frac = 0.05, .init_lr_frac = 1.0,
                  .momentum_ramp = 400, .momentum_start = 0.85, .momentum_peak = 0.97, .momentum_end = 0.90,
                  .muon_wd_cosine = true};
}

static int64_t nc_sched_warmdown(const nc_sched *s) { return (int64_t)llround(s->warmdown_ratio * (double)s->steps); }

double nc_sched_lr_mult(const nc_sched *s, int64_t step) {
  int64_t wd = nc_sched_warmdown(s);
  if (step < s->warmup_steps) return s->init_lr_frac * (double)(step + 1) / (double)s->warmup_steps;
  if (step <= s->steps - wd) return s->init_lr_frac;
  double p = (double)(s->steps - step) / (double)wd;  // 1 -> 0 across the warmdown
  if (p < 0) p = 0;
  return s->init_lr_frac * (p + (1 - p) * s->final_lr_frac);
}

double nc_sched_momentum(const nc_sched *s, int64_t step) {
  double f = s->momentum_ramp > 0 ? fmin((double)step / (double)s->momentum_ramp, 1.0) : 1.0;
  double m = (1 - f) * s->momentum_start + f * s->momentum_peak;
  int64_t wd = nc_sched_warmdown(s), start = s->steps - wd;
  if (wd > 0 && step > start) {
    double p = fmin((double)(step - start) / (double)wd, 1.0);  // 0 -> 1 across the warmdown
    m = (1 - p) * m + p * s->momentum_end;
  }
  return m;
}

double nc_sched_wd_mult(const nc_sched *s, int64_t step) {
  if (!s->muon_wd_cosine || s->steps <= 0) return 1.0;
  return 0.5 * (1 + cos(M_PI * (double)step / (double)s->steps));
}

void nc_lr_cfg_defaults(nc_lr_cfg *c) { *c = (nc_lr_cfg){.embedding_lr = 0.3, .unembedding_lr = 0.008, .matrix_lr = 0.02, .scalar_lr = 0.5}; }

void nc_group_rates(const nc_model_spec *s, const nc_lr_cfg *c, double bs, double muon_wd, double lr[NC_GROUP_COUNT],
                    double wd[NC_GROUP_COUNT]) {
  double dm = pow((double)s->model_dim / 768.0, -0.5);
  lr[NC_GROUP_LM_HEAD] = c->unembedding_lr * dm * bs;
  lr[NC_GROUP_WTE] = c->embedding_lr * dm * bs;
  lr[NC_GROUP_VALUE_EMBEDS] = c->embedding_lr * dm * 0.5 * bs;
  lr[NC_GROUP_RESID_LAMBDAS] = c->scalar_lr * 0.01 * bs;
  lr[NC_GROUP_X0_LAMBDAS] = c->scalar_lr * bs;
  lr[NC_GROUP_SMEAR_BACKOUT] = 0.2;
  lr[NC_GROUP_MUON] = c->matrix_lr * bs;
  wd[NC_GROUP_LM_HEAD] = 0.01;
  wd[NC_GROUP_WTE] = 0.001;
  wd[NC_GROUP_VALUE_EMBEDS] = 0.01;
  wd[NC_GROUP_RESID_LAMBDAS] = 0.05;
  wd[NC_GROUP_X0_LAMBDAS] = 0;
  wd[NC_GROUP_SMEAR_BACKOUT] = 0;
  wd[NC_GROUP_MUON] = muon_wd;
}
