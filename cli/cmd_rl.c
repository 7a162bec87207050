// nanochat rl: REINFORCE on "#### N" questions (pipeline/rl.h).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/precision.h"
#include "pipeline/rl.h"

static void nc_rl_usage(FILE *f) {
  fprintf(f,
          "usage: nanochat rl --data FILE... [options]\n\n"
          "Reinforcement learning as nanochat's chat_rl: samples answers from the SFT model\n"
          "(calculator live), rewards a correct final \"#### N\", REINFORCE with the mean reward as\n"
          "baseline. FILE: conversations whose last assistant message ends with \"#### N\"\n"
          "(nanochat data gsm8k, nanochat data synth arithmetic).\n"
          "Under `mpirun -np N` each rank samples every N-th question of a step and the\n"
          "gradients are summed over the ranks (docs/distributed.md).\n"
          "      --data FILE             training questions; repeatable\n"
          "      --val FILE              held-out questions for pass@k; repeatable (default: the training ones)\n"
          "      --out DIR               base folder (default $NANOCHAT_BASE_DIR, else ~/.cache/nanochat-c)\n"
          "      --model-tag TAG         run name (default d4)\n"
          "      --from DIR              checkpoint to start from (default BASE/chatsft_checkpoints/TAG)\n"
          "      --num-iterations N      steps (default: one pass over the questions)\n"
          "      --examples-per-step N   questions per step (default 16)\n"
          "      --samples N             samples per question (default 16)\n"
          "      --max-new-tokens N      per sample (default 256)\n"
          "  -t, --temperature T         (default 1.0)\n"
          "  -k, --top-k K               (default 50)\n"
          "      --lr-frac X             multiplies the base learning rates (default 0.05)\n"
          "      --eval-every N          pass@k every N steps (default 60; 0 = at the end)\n"
          "      --eval-examples N       held-out questions per evaluation (default 100)\n"
          "      --eval-k K              samples per held-out question (default 8)\n"
          "      --save-every N          checkpoint every N steps (default 60)\n"
          "  -d, --device D              cpu (default), cpu:avx2, opencl[:N|gpu|cpu|NAME], interp\n"
          "                              (under mpirun, opencl and opencl:gpu give each rank its own GPU)\n"
          "      --threads N             CPU threads\n"
          "      --precision P           fp32 or bf16 (bf16 activations and matmuls, fp32 weights; default: the checkpoint's)\n"
          "      --seed N                (default 42)\n"
          "      --overwrite             replace an earlier rl run's checkpoints\n"
          "  -q, --quiet                 a log line every 10 steps only\n");
}

int nc_cmd_rl(int argc, char **argv) {
  enum { O_DATA = 256, O_VAL, O_OUT, O_TAG, O_FROM, O_ITERS, O_EPS, O_SAMPLES, O_MAXNEW, O_LRF, O_EVAL, O_EVALN, O_EVALK, O_SAVE, O_THREADS, O_SEED, O_OVER, O_PREC };
  static const struct option opts[] = {
      {"data", required_argument, 0, O_DATA}, {"val", required_argument, 0, O_VAL}, {"out", required_argument, 0, O_OUT},
      {"model-tag", required_argument, 0, O_TAG}, {"from", required_argument, 0, O_FROM}, {"num-iterations", required_argument, 0, O_ITERS},
      {"examples-per-step", required_argument, 0, O_EPS}, {"samples", required_argument, 0, O_SAMPLES},
      {"max-new-tokens", required_argument, 0, O_MAXNEW}, {"temperature", required_argument, 0, 't'}, {"top-k", required_argument, 0, 'k'},
      {"lr-frac", required_argument, 0, O_LRF}, {"eval-every", required_argument, 0, O_EVAL}, {"eval-examples", required_argument, 0, O_EVALN},
      {"eval-k", required_argument, 0, O_EVALK}, {"save-every", required_argument, 0, O_SAVE}, {"device", required_argument, 0, 'd'},
      {"threads", required_argument, 0, O_THREADS}, {"seed", required_argument, 0, O_SEED}, {"overwrite", no_argument, 0, O_OVER},
      {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {"precision", required_argument, 0, O_PREC}, {0, 0, 0, 0}};
  nc_rl_opts o;
  nc_rl_opts_default(&o);
  const char *train[64], *val[64], *out = NULL, *tag = "d4", *from = NULL;
  int ntrain = 0, nval = 0, c;
  long threads = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "t:k:d:qh", opts, NULL)) != -1) {
    char *end = NULL;
    long v = 0;
    double f = 0;
    switch (c) {
      case O_DATA: if (ntrain == 64) { fprintf(stderr, "nanochat rl: more than 64 --data files\n"); return 2; } train[ntrain++] = optarg; break;
      case O_VAL: if (nval == 64) { fprintf(stderr, "nanochat rl: more than 64 --val files\n"); return 2; } val[nval++] = optarg; break;
      case O_OUT: out = optarg; break;
      case O_TAG: tag = optarg; break;
      case O_FROM: from = optarg; break;
#define NC_INT(FLAG, LO, HI, DST) v = strtol(optarg, &end, 10); if (end == optarg || *end || v < LO || v > HI) { fprintf(stderr, "nanochat rl: %s wants %d..%d, got '%s'\n", FLAG, LO, HI, optarg); return 2; } DST = v; break;
#define NC_FLT(FLAG, LO, HI, DST) f = strtod(optarg, &end); if (end == optarg || *end || !(f >= LO && f <= HI)) { fprintf(stderr, "nanochat rl: %s wants a number in [%g, %g], got '%s'\n", FLAG, (double)LO, (double)HI, optarg); return 2; } DST = f; break;
      case O_ITERS: NC_INT("--num-iterations", 1, 100000000, o.steps)
      case O_EPS: NC_INT("--examples-per-step", 1, 4096, o.examples_per_step)
      case O_SAMPLES: NC_INT("--samples", 2, 1024, o.samples)
      case O_MAXNEW: NC_INT("--max-new-tokens", 1, 65536, o.max_new_tokens)
      case 't': NC_FLT("--temperature", 0, 2, o.temperature)
      case 'k': NC_INT("--top-k", 0, 100000, o.top_k)
      case O_LRF: NC_FLT("--lr-frac", 0, 10, o.lr_frac)
      case O_EVAL: NC_INT("--eval-every", 0, 100000000, o.eval_every)
      case O_EVALN: NC_INT("--eval-examples", 1, 1000000, o.eval_examples)
      case O_EVALK: NC_INT("--eval-k", 1, 1024, o.eval_k)
      case O_SAVE: NC_INT("--save-every", 0, 100000000, o.save_every)
      case O_THREADS: NC_INT("--threads", 1, 1024, threads)
      case O_SEED: NC_INT("--seed", 0, 2147483647, o.seed)
#undef NC_INT
#undef NC_FLT
      case O_OVER: o.overwrite = true; break;
      case O_PREC:
        if (nc_cli_precision_check("rl", optarg)) return 2;
        o.precision = optarg;
        break;
      case 'q': o.quiet = true; break;
      case 'd': {
        nc_status st = nc_device_parse(optarg, &o.device);
        if (st) {
          fprintf(stderr, "nanochat rl: %s\n", nc_status_msg(st));
          nc_status_free(st);
          return 2;
        }
        break;
      }
      case 'h': nc_rl_usage(stdout); return 0;
      default: nc_rl_usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "nanochat rl: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!ntrain) {
    fprintf(stderr, "nanochat rl: no questions: give --data FILE (see --help)\n");
    return 2;
  }
  o.device.threads = (int)threads;
  nc_cli_precision_apply(o.precision, NULL, &o.device);
  char base[2048], dir[4096], fromdir[4096];
  const char *env = getenv("NANOCHAT_BASE_DIR"), *home = getenv("HOME");
  if (out) snprintf(base, sizeof base, "%s", out);
  else if (env && *env) snprintf(base, sizeof base, "%s", env);
  else snprintf(base, sizeof base, "%s/.cache/nanochat-c", home ? home : ".");
  if (strlen(base) > 1500 || strlen(tag) > 200) {
    fprintf(stderr, "nanochat rl: the run folder path is too long\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "%s/chatrl_checkpoints/%s", base, tag);
  if (!from) snprintf(fromdir, sizeof fromdir, "%s/chatsft_checkpoints/%s", base, tag), from = fromdir;
  o.init_dir = from, o.out_dir = dir;
  o.train_paths = train, o.ntrain = ntrain, o.val_paths = val, o.nval = nval;
  nc_dist dist;  // mpirun: data parallel (docs/distributed.md)
  nc_dist_before_init(&o.device);  // OpenCL before MPI_Init (pipeline/dist.h)
  nc_status st = nc_dist_init(&dist);
  if (st) {
    fprintf(stderr, "nanochat rl: %s\n", nc_status_msg(st));
    nc_status_free(st);
    return 1;
  }
  o.dist = &dist;
  nc_rl_result res;
  st = nc_rl_train(&o, &res);
  if (st && dist.world > 1) {  // one rank failing ends the job: the others would wait forever
    fprintf(stderr, "nanochat rl: rank %d of %d: %s\n", dist.rank, dist.world, nc_status_msg(st));
    nc_status_free(st);
    nc_dist_abort(&dist, 1);
  }
  int rank = dist.rank;
  nc_dist_finalize(&dist);
  if (!st && rank != 0) return 0;
  if (st) {
    int code = nc_status_code(st);
    fprintf(stderr, "nanochat rl: %s\n", nc_status_msg(st));
    nc_status_free(st);
    return code > 0 && code < 128 ? code : 1;
  }
  printf("rl: %lld steps in %.0f s; mean reward %.4f; pass@1 %.4f, pass@%d %.4f\ncheckpoint: %s\n", (long long)res.steps, res.seconds,
         res.mean_reward, res.pass1, o.eval_k, res.passk, dir);
  printf("{\"stage\":\"rl\",\"steps\":%lld,\"seconds\":%.1f,\"mean_reward\":%.6f,\"pass_at_1\":%.6f,\"pass_at_k\":%.6f,\"k\":%d,\"checkpoint\":\"%s\"}\n",
         (long long)res.steps, res.seconds, res.mean_reward, res.pass1, res.passk, o.eval_k, dir);
  return 0;
}
