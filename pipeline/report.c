// report.md from the stages' run.json files (report.h).
#include "pipeline/report.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "support/buf.h"

static const struct {
  const char *name, *folder;
} nc_report_stages[] = {{"base", "base_checkpoints"}, {"mid", "mid_checkpoints"}, {"sft", "chatsft_checkpoints"}, {"rl", "chatrl_checkpoints"}};
#define NC_NSTAGES 4

static void nc_report_machine(nc_buf *b) {
  char model[256] = "unknown CPU", line[512];
  long mem_kb = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10)) {
      char *c = strchr(line, ':');
      if (c) snprintf(model, sizeof model, "%s", c + 2);
      model[strcspn(model, "\n")] = 0;
      break;
    }
  if (f) fclose(f);
  f = fopen("/proc/meminfo", "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "MemTotal: %ld kB", &mem_kb) == 1) break;
  if (f) fclose(f);
  struct utsname u;
  if (uname(&u) != 0) strcpy(u.sysname, "?"), strcpy(u.release, "?"), strcpy(u.machine, "?");
  nc_buf_printf(b, "- Machine: %s, %ld cores, %.1f GiB memory, %s %s %s\n", model, sysconf(_SC_NPROCESSORS_ONLN),
                (double)mem_kb / 1048576.0, u.sysname, u.release, u.machine);
}

static void nc_report_git(nc_buf *b) {
  FILE *p = popen("git rev-parse --short HEAD 2>/dev/null && git status --porcelain 2>/dev/null | head -1", "r");
  char sha[64] = "", dirty[256] = "";
  if (p) {
    if (!fgets(sha, sizeof sha, p)) sha[0] = 0;
    if (!fgets(dirty, sizeof dirty, p)) dirty[0] = 0;
    pclose(p);
  }
  sha[strcspn(sha, "\n")] = 0;
  nc_buf_printf(b, "- Code: nanochat-c %s%s\n", sha[0] ? sha : "(not a git checkout)", dirty[0] ? " (with uncommitted changes)" : "");
}

static double nc_jnum(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static void nc_report_num(nc_buf *b, double v, const char *fmt) {
  if (isfinite(v)) nc_buf_printf(b, fmt, v);
  else nc_buf_puts(b, "-");
}

nc_status nc_report_write(const char *base, const char *tag, const char *out_path) {
  json_t *runs[NC_NSTAGES] = {0};
  char path[PATH_MAX];
  int found = 0;
  for (int s = 0; s < NC_NSTAGES; s++) {
    snprintf(path, sizeof path, "%s/%s/%s/run.json", base, nc_report_stages[s].folder, tag);
    if (access(path, R_OK) != 0) continue;
    json_error_t e;
    runs[s] = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!runs[s] || !json_is_object(runs[s])) {
      for (int k = 0; k < NC_NSTAGES; k++) json_decref(runs[k]);
      return nc_errorf(NC_E_PARSE, "%s:%d: %s", path, e.line, runs[s] ? "not a JSON object" : e.text);
    }
    found++;
  }
  if (!found) return nc_errorf(NC_E_INVALID, "report: no stage of run '%s' under %s has finished (no run.json)", tag, base);
  // evaluations (nanochat eval base|chat) written next to each stage's checkpoints
  json_t *evals[NC_NSTAGES] = {0};
  for (int s = 0; s < NC_NSTAGES; s++) {
    json_t *acc = json_object();
    static const char *files[] = {"eval_base.json", "eval_chat.json"};
    for (int f = 0; f < 2; f++) {
      snprintf(path, sizeof path, "%s/%s/%s/%s", base, nc_report_stages[s].folder, tag, files[f]);
      json_t *j = access(path, R_OK) == 0 ? json_load_file(path, 0, NULL) : NULL;
      if (json_is_object(j)) json_object_update(acc, j);
      json_decref(j);
    }
    if (json_object_size(acc)) evals[s] = acc;
    else json_decref(acc);
  }
  nc_buf b = {0};
  time_t now = time(NULL);
  char date[64];
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  nc_buf_printf(&b, "# nanochat-c report: %s\n\nGenerated %s.\n\n", tag, date);
  nc_report_machine(&b);
  nc_report_git(&b);
  nc_buf_printf(&b, "- Run folder: %s\n", base);
  json_t *first = NULL;
  for (int s = 0; s < NC_NSTAGES && !first; s++) first = runs[s];
  json_t *tokp = json_object_get(first, "tokenizer");
  if (json_is_string(tokp)) nc_buf_printf(&b, "- Tokenizer: %s\n", json_string_value(tokp));
  // summary table
  nc_buf_puts(&b, "\n## Summary\n\n| Metric | BASE | MID | SFT | RL |\n|---|---|---|---|---|\n");
  static const struct {
    const char *label, *key, *fmt;
  } rows[] = {{"val bits per byte", "val_bpb", "%.4f"},        {"unigram baseline bpb", "unigram_bpb", "%.4f"},
              {"train loss", "train_loss", "%.4f"},           {"steps", "steps", "%.0f"},
              {"tokens", "tokens", "%.3g"},                   {"training time (s)", "seconds", "%.0f"},
              {"tokens/s", "tokens_per_s", "%.0f"},           {"MFU (of 234 GFLOP/s)", "mfu", "%.3f"},
              {"RL mean reward", "mean_reward", "%.4f"},      {"RL pass@1", "pass_at_1", "%.4f"},
              {"RL pass@k", "pass_at_k", "%.4f"},             {"CORE", "eval.core", "%.4f"},
              {"ChatCORE", "eval.chatcore", "%.4f"}};
  double total = 0;
  for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
    nc_buf_printf(&b, "| %s |", rows[r].label);
    for (int s = 0; s < NC_NSTAGES; s++) {
      nc_buf_puts(&b, " ");
      double v = NAN;
      if (!strncmp(rows[r].key, "eval.", 5)) v = evals[s] ? nc_jnum(evals[s], rows[r].key + 5) : NAN;
      else if (runs[s]) v = nc_jnum(runs[s], rows[r].key);
      nc_report_num(&b, v, rows[r].fmt);
      nc_buf_puts(&b, " |");
    }
    nc_buf_puts(&b, "\n");
  }
  for (int s = 0; s < NC_NSTAGES; s++)
    if (runs[s] && isfinite(nc_jnum(runs[s], "seconds"))) total += nc_jnum(runs[s], "seconds");
  nc_buf_printf(&b, "\nTotal training time: %dm%02ds\n", (int)total / 60, (int)total % 60);
  // per stage
  for (int s = 0; s < NC_NSTAGES; s++) {
    nc_buf_printf(&b, "\n## %s\n\n", nc_report_stages[s].name);
    if (!runs[s]) {
      nc_buf_puts(&b, "Not run.\n");
      continue;
    }
    json_t *j = runs[s];
    nc_buf_printf(&b, "- Model: %s on device %s\n", json_string_value(json_object_get(j, "spec")) ?: "?",
                  json_string_value(json_object_get(j, "device")) ?: "?");
    nc_buf_printf(&b, "- Batch: %.0f tokens per step (%.0f rows x %.0f tokens x %.0f micro-steps)\n", nc_jnum(j, "total_batch_size"),
                  nc_jnum(j, "device_batch_size"), nc_jnum(j, "seq"), nc_jnum(j, "grad_accum"));
    nc_buf_printf(&b, "- Scaling params: %.0f; FLOPs planned: %.3g; Muon weight decay: %.4g\n", nc_jnum(j, "scaling_params"), nc_jnum(j, "flops"),
                  nc_jnum(j, "muon_weight_decay"));
    json_t *data = json_object_get(j, "data"), *d;
    size_t i;
    if (json_array_size(data)) {
      nc_buf_puts(&b, "- Data:");
      json_array_foreach(data, i, d) {
        if (json_is_string(d)) nc_buf_printf(&b, " `%s`", json_string_value(d));
        else if (json_is_object(d))
          nc_buf_printf(&b, " `%s` x%lld", json_string_value(json_object_get(d, "path")) ?: "?", (long long)json_integer_value(json_object_get(d, "epochs")));
      }
      nc_buf_puts(&b, "\n");
    }
    nc_buf_printf(&b, "\n![training loss](%s/%s/loss.png)\n", nc_report_stages[s].folder, tag);
    snprintf(path, sizeof path, "%s/%s/%s/val_bpb.png", base, nc_report_stages[s].folder, tag);
    if (access(path, R_OK) == 0) nc_buf_printf(&b, "![validation bpb](%s/%s/val_bpb.png)\n", nc_report_stages[s].folder, tag);
    json_t *samples = json_object_get(j, "samples"), *sm;
    if (json_array_size(samples)) {
      nc_buf_puts(&b, "\nGreedy samples:\n\n```\n");
      json_array_foreach(samples, i, sm) {
        nc_buf_printf(&b, "%s", json_string_value(json_object_get(sm, "prompt")) ?: "");
        const char *c = json_string_value(json_object_get(sm, "completion"));
        for (; c && *c; c++) nc_buf_put(&b, *c == '\n' ? " " : c, 1);  // one line per sample
        nc_buf_puts(&b, "\n");
      }
      nc_buf_puts(&b, "```\n");
    }
    json_t *tasks = evals[s] ? json_object_get(evals[s], "tasks") : NULL, *tv;
    const char *tn;
    if (json_object_size(tasks)) {
      nc_buf_puts(&b, "\n| Task | accuracy | centered | examples |\n|---|---|---|---|\n");
      json_object_foreach(tasks, tn, tv) {
        nc_buf_printf(&b, "| %s | ", tn);
        nc_report_num(&b, nc_jnum(tv, "accuracy"), "%.4f");
        nc_buf_puts(&b, " | ");
        nc_report_num(&b, nc_jnum(tv, "centered"), "%.4f");
        nc_buf_puts(&b, " | ");
        nc_report_num(&b, nc_jnum(tv, "n"), "%.0f");
        nc_buf_puts(&b, " |\n");
      }
    }
  }
  for (int k = 0; k < NC_NSTAGES; k++) json_decref(runs[k]), json_decref(evals[k]);
  if (b.oom) {
    nc_buf_free(&b);
    return nc_errorf(NC_E_NOMEM, "report: out of memory");
  }
  nc_status st = nc_file_write_atomic(out_path, b.data, b.len);
  nc_buf_free(&b);
  return st;
}
