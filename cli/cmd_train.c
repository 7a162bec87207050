// nanochat base-train | mid-train | sft: the training stages (pipeline/run.h).
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/precision.h"
#include "frontend/spec.h"
#include "pipeline/run.h"

#define NC_TRAIN_MAX_FILES 256

static void nc_train_usage(FILE *f, nc_stage stage) {
  const char *cmd = stage == NC_STAGE_BASE ? "base-train" : stage == NC_STAGE_MID ? "mid-train" : "sft";
  if (stage == NC_STAGE_BASE)
    fprintf(f,
            "usage: nanochat base-train --spec SPEC (--data FILE... --val FILE | --data-dir DIR) [options]\n\n"
            "Pretrains a model from raw text as nanochat's base_train: BOS-aligned best-fit packing,\n"
            "horizon from a param:data ratio, auto batch size, warmup/warmdown, Muon + AdamW.\n"
            "  -s, --spec SPEC              model spec (models/specs/d4.xml ...)\n"
            "      --data FILE              training shard (text, JSONL \"text\", .gz); repeatable\n"
            "      --val FILE               validation shard; repeatable\n"
            "      --data-dir DIR           every file of DIR in name order; the last one is the val shard\n"
            "      --target-param-data-ratio R  tokens = R x scaling params (default 12)\n"
            "      --target-flops F         horizon from a FLOP budget\n");
  else
    fprintf(f,
            "usage: nanochat %s --data FILE[:EPOCHS]... [--val FILE...] [options]\n\n"
            "%s as nanochat: continues the %s checkpoint on conversations (JSONL {\"messages\":[...]}),\n"
            "best-fit packed with padding, loss on the assistant's tokens only; one epoch by default.\n"
            "      --data FILE[:EPOCHS]     a conversation source, with its epochs (default 1); repeatable\n"
            "      --val FILE               validation conversations; repeatable\n"
            "      --from DIR               checkpoint folder to start from (default: the previous stage's)\n",
            cmd, stage == NC_STAGE_MID ? "Midtraining" : "Supervised fine-tuning", stage == NC_STAGE_MID ? "base" : "mid (else base)");
  fprintf(f,
          "      --out DIR                base folder for runs (default $NANOCHAT_BASE_DIR, else ~/.cache/nanochat-c)\n"
          "      --model-tag TAG          run name (default d<depth>)\n"
          "      --tokenizer FILE         tokenizer (default BASE/tokenizer/tokenizer.tiktoken)\n"
          "      --num-iterations N       optimizer steps (overrides the horizon)\n"
          "      --time-budget SECONDS    as many steps as fit this time, measured on the first steps\n"
          "      --device-batch-size B    rows per micro-step (default 8)\n"
          "      --seq T                  tokens per row (default: the spec's sequence_len)\n"
          "      --total-batch-size N     tokens per optimizer step (default: auto; gradient accumulation fills it)\n"
          "      --embedding-lr X --unembedding-lr X --matrix-lr X --scalar-lr X   (0.3, 0.008, 0.02, 0.5)\n"
          "      --weight-decay X         Muon weight decay (default: nanochat's formula; 0 for mid/sft)\n"
          "      --warmup-steps N --warmdown-ratio X --final-lr-frac X --init-lr-frac X\n"
          "      --eval-every N           val bits per byte every N steps (default 250; 0 = at the end)\n"
          "      --eval-batches N         validation batches (default: all / 8 for conversations)\n"
          "      --sample-every N         greedy samples every N steps (default: at the end)\n"
          "      --save-every N           checkpoint every N steps (default: at the end)\n"
          "      --resume [STEP]          continue the run from its latest (or given) checkpoint\n"
          "      --overwrite              start over in a run folder that already holds checkpoints\n"
          "      --stop-after N           stop after step N without the final save (to test resume)\n"
          "  -d, --device D               cpu (default), cpu:avx2, opencl[:N|gpu|cpu|NAME], interp\n"
          "      --threads N              CPU threads (default: one per core)\n"
          NC_CLI_PRECISION_USAGE
          "      --seed N                 init / shuffle seed (default 42)\n"
          "      --skip-bad-data          skip malformed documents (counted) instead of stopping\n"
          "  -q, --quiet                  no progress bar\n");
}

static int nc_train_fail(const char *cmd, nc_status st) {
  int code = nc_status_code(st);
  fprintf(stderr, "nanochat %s: %s\n", cmd, nc_status_msg(st));
  nc_status_free(st);
  return code > 0 && code < 128 ? code : 1;
}

static int nc_train_bad(const char *cmd, const char *flag, const char *val, const char *want) {
  fprintf(stderr, "nanochat %s: %s wants %s, got '%s'\n", cmd, flag, want, val);
  return 2;
}

static bool nc_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool nc_parse_f(const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

static int nc_name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Regular files of dir in name order (malloc'd paths).
static int nc_list_dir(const char *dir, char **out, int max) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) out[n++] = strdup(path);
  }
  closedir(d);
  qsort(out, (size_t)n, sizeof *out, nc_name_cmp);
  return n;
}

static bool nc_dir_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int nc_train_main(int argc, char **argv, nc_stage stage) {
  const char *cmd = argv[0];
  enum {
    O_DATA = 256, O_VAL, O_DATADIR, O_OUT, O_TAG, O_TOK, O_FROM, O_ITERS, O_RATIO, O_FLOPS, O_DBS, O_SEQ, O_TBS, O_ELR, O_ULR,
    O_MLR, O_SLR, O_WD, O_WARMUP, O_WARMDOWN, O_FINAL, O_INITLR, O_EVAL, O_EVALB, O_SAMPLE, O_SAVE, O_RESUME, O_STOP, O_THREADS,
    O_SEED, O_SKIP, O_BUDGET, O_OVERWRITE, O_PRECISION
  };
  static const struct option opts[] = {
      {"spec", required_argument, 0, 's'}, {"data", required_argument, 0, O_DATA}, {"val", required_argument, 0, O_VAL},
      {"data-dir", required_argument, 0, O_DATADIR}, {"out", required_argument, 0, O_OUT}, {"model-tag", required_argument, 0, O_TAG},
      {"tokenizer", required_argument, 0, O_TOK}, {"from", required_argument, 0, O_FROM},
      {"num-iterations", required_argument, 0, O_ITERS}, {"target-param-data-ratio", required_argument, 0, O_RATIO},
      {"target-flops", required_argument, 0, O_FLOPS}, {"device-batch-size", required_argument, 0, O_DBS},
      {"seq", required_argument, 0, O_SEQ}, {"total-batch-size", required_argument, 0, O_TBS},
      {"embedding-lr", required_argument, 0, O_ELR}, {"unembedding-lr", required_argument, 0, O_ULR},
      {"matrix-lr", required_argument, 0, O_MLR}, {"scalar-lr", required_argument, 0, O_SLR},
      {"weight-decay", required_argument, 0, O_WD}, {"warmup-steps", required_argument, 0, O_WARMUP},
      {"warmdown-ratio", required_argument, 0, O_WARMDOWN}, {"final-lr-frac", required_argument, 0, O_FINAL},
      {"init-lr-frac", required_argument, 0, O_INITLR}, {"eval-every", required_argument, 0, O_EVAL},
      {"eval-batches", required_argument, 0, O_EVALB}, {"sample-every", required_argument, 0, O_SAMPLE},
      {"save-every", required_argument, 0, O_SAVE}, {"resume", optional_argument, 0, O_RESUME},
      {"stop-after", required_argument, 0, O_STOP}, {"device", required_argument, 0, 'd'},
      {"threads", required_argument, 0, O_THREADS}, {"seed", required_argument, 0, O_SEED},
      {"skip-bad-data", no_argument, 0, O_SKIP}, {"time-budget", required_argument, 0, O_BUDGET},
      {"overwrite", no_argument, 0, O_OVERWRITE}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
      {"precision", required_argument, 0, O_PRECISION}, {0, 0, 0, 0}};
  nc_run_opts o;
  nc_run_opts_default(&o, stage);
  char *train[NC_TRAIN_MAX_FILES], *val[NC_TRAIN_MAX_FILES];
  nc_sft_source src[NC_TRAIN_MAX_FILES], vsrc[NC_TRAIN_MAX_FILES];
  int ntrain = 0, nval = 0, rc = 0;
  const char *data_dir = NULL, *out = NULL, *tag = NULL, *tok = NULL, *from = NULL;
  int64_t threads = 0, v;
  double f;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "s:d:qh", opts, NULL)) != -1) {
    switch (c) {
      case 's': o.spec_path = optarg; break;
      case O_DATA:
      case O_VAL:
        if ((c == O_DATA ? ntrain : nval) >= NC_TRAIN_MAX_FILES) { fprintf(stderr, "nanochat %s: more than %d files\n", cmd, NC_TRAIN_MAX_FILES); rc = 2; goto done; }
        if (c == O_DATA) train[ntrain++] = strdup(optarg);
        else val[nval++] = strdup(optarg);
        break;
      case O_DATADIR: data_dir = optarg; break;
      case O_OUT: out = optarg; break;
      case O_TAG: tag = optarg; break;
      case O_TOK: tok = optarg; break;
      case O_FROM: from = optarg; break;
#define NC_I(F, LO, HI, DST) if (!nc_parse_i64(optarg, LO, HI, &v)) { rc = nc_train_bad(cmd, F, optarg, #LO ".." #HI); goto done; } DST = v; break;
#define NC_F(F, LO, HI, DST) if (!nc_parse_f(optarg, LO, HI, &f)) { rc = nc_train_bad(cmd, F, optarg, "a number in [" #LO ", " #HI "]"); goto done; } DST = f; break;
      case O_ITERS: NC_I("--num-iterations", 1, 100000000, o.h.num_iterations)
      case O_RATIO: NC_F("--target-param-data-ratio", 0.0001, 1e6, o.h.param_data_ratio)
      case O_FLOPS: NC_F("--target-flops", 1, 1e30, o.h.target_flops)
      case O_DBS: NC_I("--device-batch-size", 1, 4096, o.h.device_batch)
      case O_SEQ: NC_I("--seq", 1, 1048576, o.h.seq)
      case O_TBS: NC_I("--total-batch-size", 1, 1LL << 40, o.h.total_batch)
      case O_ELR: NC_F("--embedding-lr", 0, 100, o.lr.embedding_lr)
      case O_ULR: NC_F("--unembedding-lr", 0, 100, o.lr.unembedding_lr)
      case O_MLR: NC_F("--matrix-lr", 0, 100, o.lr.matrix_lr)
      case O_SLR: NC_F("--scalar-lr", 0, 100, o.lr.scalar_lr)
      case O_WD: NC_F("--weight-decay", 0, 100, o.weight_decay)
      case O_WARMUP: NC_I("--warmup-steps", 0, 100000000, o.warmup_steps)
      case O_WARMDOWN: NC_F("--warmdown-ratio", 0, 1, o.warmdown_ratio)
      case O_FINAL: NC_F("--final-lr-frac", 0, 1, o.final_lr_frac)
      case O_INITLR: NC_F("--init-lr-frac", 0, 10, o.init_lr_frac)
      case O_EVAL: NC_I("--eval-every", 0, 100000000, o.eval_every)
      case O_EVALB: NC_I("--eval-batches", 0, 100000000, o.eval_batches)
      case O_SAMPLE: NC_I("--sample-every", 0, 100000000, o.sample_every)
      case O_SAVE: NC_I("--save-every", 0, 100000000, o.save_every)
      case O_STOP: NC_I("--stop-after", 1, 100000000, o.stop_after)
      case O_THREADS: NC_I("--threads", 1, 1024, threads)
      case O_SEED: NC_I("--seed", 0, INT64_MAX, o.seed)
      case O_BUDGET: NC_F("--time-budget", 1, 1e7, o.time_budget_s)
#undef NC_I
#undef NC_F
      case O_RESUME:
        o.resume = true;
        if (optarg && !nc_parse_i64(optarg, 0, INT64_MAX, &o.resume_step)) { rc = nc_train_bad(cmd, "--resume", optarg, "a step number"); goto done; }
        break;
      case O_SKIP: o.skip_bad = true; break;
      case O_OVERWRITE: o.overwrite = true; break;
      case 'q': o.quiet = true; break;
      case O_PRECISION:
        if ((rc = nc_cli_precision_check(cmd, optarg))) goto done;
        o.precision = optarg;
        break;
      case 'd': {
        nc_status st = nc_device_parse(optarg, &o.device);
        if (st) { rc = nc_train_fail(cmd, st); goto done; }
        break;
      }
      case 'h': nc_train_usage(stdout, stage); goto done;
      default: nc_train_usage(stderr, stage); rc = 2; goto done;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "nanochat %s: unexpected argument '%s'\n", cmd, argv[optind]);
    rc = 2;
    goto done;
  }
  o.device.threads = (int)threads;
  nc_cli_precision_apply(o.precision, NULL, &o.device);
  if (data_dir) {
    if (stage != NC_STAGE_BASE) { fprintf(stderr, "nanochat %s: --data-dir is for base-train; use --data FILE\n", cmd); rc = 2; goto done; }
    char *files[NC_TRAIN_MAX_FILES];
    int n = nc_list_dir(data_dir, files, NC_TRAIN_MAX_FILES);
    if (n < 2) {
      fprintf(stderr, "nanochat %s: --data-dir %s %s\n", cmd, data_dir, n < 0 ? "cannot be read" : "needs at least 2 files (training shards, then the val shard)");
      for (int i = 0; i < n; i++) free(files[i]);
      rc = 2;
      goto done;
    }
    for (int i = 0; i < n; i++) {
      if (i == n - 1 && nval < NC_TRAIN_MAX_FILES) val[nval++] = files[i];
      else if (i < n - 1 && ntrain < NC_TRAIN_MAX_FILES) train[ntrain++] = files[i];
      else free(files[i]);
    }
  }
  // the base folder, the run's tag and folders
  char base[2048], dir[4096], tokpath[4096], fromdir[4096];
  const char *env = getenv("NANOCHAT_BASE_DIR"), *home = getenv("HOME");
  if (out) snprintf(base, sizeof base, "%s", out);
  else if (env && *env) snprintf(base, sizeof base, "%s", env);
  else snprintf(base, sizeof base, "%s/.cache/nanochat-c", home ? home : ".");
  if (strlen(base) > 1500 || (tag && strlen(tag) > 200)) {
    fprintf(stderr, "nanochat %s: the run folder path is too long\n", cmd);
    rc = 2;
    goto done;
  }
  char tagbuf[64];
  if (!tag) {
    if (stage == NC_STAGE_BASE && o.spec_path) {
      nc_model_spec s;
      nc_status st = nc_spec_load(o.spec_path, &s);
      if (st) { rc = nc_train_fail(cmd, st); goto done; }
      snprintf(tagbuf, sizeof tagbuf, "d%d", s.depth);
      tag = tagbuf;
    } else {
      // the only tag under the previous stage's folder, else an error asking for --model-tag
      char prev[2600], *names[NC_TRAIN_MAX_FILES];
      snprintf(prev, sizeof prev, "%s/%s", base, stage == NC_STAGE_BASE ? "base_checkpoints" : nc_stage_folder(stage == NC_STAGE_SFT ? NC_STAGE_MID : NC_STAGE_BASE));
      if (stage == NC_STAGE_SFT && !nc_dir_exists(prev)) snprintf(prev, sizeof prev, "%s/base_checkpoints", base);
      DIR *d = opendir(prev);
      int n = 0;
      struct dirent *e;
      while (d && (e = readdir(d)) && n < NC_TRAIN_MAX_FILES)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
      if (d) closedir(d);
      if (n == 1) snprintf(tagbuf, sizeof tagbuf, "%s", names[0]), tag = tagbuf;
      for (int i = 0; i < n; i++) free(names[i]);
      if (!tag) {
        fprintf(stderr, "nanochat %s: cannot tell which run to use: %s has %d runs; give --model-tag%s\n", cmd, prev, n,
                stage == NC_STAGE_BASE ? " or --spec" : "");
        rc = 2;
        goto done;
      }
    }
  }
  snprintf(dir, sizeof dir, "%s/%s/%s", base, nc_stage_folder(stage), tag);
  o.out_dir = dir;
  if (!tok) snprintf(tokpath, sizeof tokpath, "%s/tokenizer/tokenizer.tiktoken", base), tok = tokpath;
  o.tokenizer_path = tok;
  if (stage != NC_STAGE_BASE) {
    if (!from) {
      snprintf(fromdir, sizeof fromdir, "%s/%s/%s", base, nc_stage_folder(stage == NC_STAGE_SFT ? NC_STAGE_MID : NC_STAGE_BASE), tag);
      if (stage == NC_STAGE_SFT && !nc_dir_exists(fromdir)) snprintf(fromdir, sizeof fromdir, "%s/base_checkpoints/%s", base, tag);
      from = fromdir;
    }
    o.init_dir = from;
    for (int i = 0; i < ntrain; i++) {  // FILE[:EPOCHS]
      char *colon = strrchr(train[i], ':');
      int64_t ep = 1;
      if (colon && nc_parse_i64(colon + 1, 1, 1000, &ep)) *colon = 0;
      src[i] = (nc_sft_source){.path = train[i], .epochs = (int)ep};
    }
    for (int i = 0; i < nval; i++) vsrc[i] = (nc_sft_source){.path = val[i], .epochs = 1};
    o.sources = src, o.nsources = ntrain, o.val_sources = vsrc, o.nval_sources = nval;
  } else {
    o.train_paths = (const char *const *)train, o.ntrain = ntrain;
    o.val_paths = (const char *const *)val, o.nval = nval;
  }
  nc_dist dist;
  nc_dist_before_init(&o.device);  // OpenCL before MPI_Init (pipeline/dist.h)
  nc_status st = nc_dist_init(&dist);
  if (st) {
    rc = nc_train_fail(cmd, st);
    goto done;
  }
  o.dist = &dist;
  nc_run_result res;
  st = nc_run_train(&o, &res);
  if (st && dist.world > 1) {  // one rank failing ends the job: the others would wait forever
    fprintf(stderr, "nanochat %s: rank %d of %d: %s\n", cmd, dist.rank, dist.world, nc_status_msg(st));
    nc_status_free(st);
    nc_dist_abort(&dist, 1);
  }
  if (!st && dist.rank != 0) {
    nc_dist_finalize(&dist);
    goto done;
  }
  nc_dist_finalize(&dist);
  if (st) {
    rc = nc_train_fail(cmd, st);
    goto done;
  }
  if (res.stopped) {
    printf("{\"stage\":\"%s\",\"steps\":%lld,\"stopped\":true,\"train_loss\":%.6f}\n", nc_stage_name(stage), (long long)res.steps, res.final_loss);
    goto done;
  }
  printf("%s: %s trained %lld steps, %.3g tokens in %.0f s (%.0f tokens/s, MFU %.1f%%); train loss %.4f; val bpb %.4f",
         nc_stage_name(stage), res.spec_name, (long long)res.steps, res.tokens, res.seconds, res.tokens_per_s, 100 * res.mfu,
         res.final_loss, res.val_bpb);
  if (res.unigram_bpb == res.unigram_bpb && res.unigram_bpb > 0) printf(" (unigram baseline %.4f)", res.unigram_bpb);
  printf("\ncheckpoint: %s\n", dir);
  printf("{\"stage\":\"%s\",\"spec\":\"%s\",\"steps\":%lld,\"tokens\":%.0f,\"seconds\":%.1f,\"tokens_per_s\":%.1f,\"mfu\":%.4f,"
         "\"train_loss\":%.6f,\"val_bpb\":%.6f,\"unigram_bpb\":%.6f,\"checkpoint\":\"%s\"}\n",
         nc_stage_name(stage), res.spec_name, (long long)res.steps, res.tokens, res.seconds, res.tokens_per_s, res.mfu, res.final_loss,
         res.val_bpb, res.unigram_bpb == res.unigram_bpb ? res.unigram_bpb : -1.0, dir);
done:
  for (int i = 0; i < ntrain; i++) free(train[i]);
  for (int i = 0; i < nval; i++) free(val[i]);
  return rc;
}

int nc_cmd_base_train(int argc, char **argv) { return nc_train_main(argc, argv, NC_STAGE_BASE); }
int nc_cmd_mid_train(int argc, char **argv) { return nc_train_main(argc, argv, NC_STAGE_MID); }
int nc_cmd_sft(int argc, char **argv) { return nc_train_main(argc, argv, NC_STAGE_SFT); }
