// nanochat: the one command of nanochat-c. Dispatches to subcommands.
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} nc_command;

static const nc_command nc_commands[] = {
    {"graph", nc_cmd_graph, "inspect graphs: dump (text, XML, DOT), check"},
    {"init", nc_cmd_init, "write an initialized checkpoint from a model spec"},
    {"forward", nc_cmd_forward, "run a checkpoint on tokens: logits and loss"},
    {"compile", nc_cmd_compile, "compile a graph or spec ahead of time: object file + plan manifest"},
    {"bench", nc_cmd_bench, "benchmarks: training throughput (tokens/s, MFU)"},
    {"devices", nc_cmd_devices, "list the host CPU and the OpenCL devices"},
    {"tok", nc_cmd_tok, "tokenizer: train, encode, decode, eval (BPE, tiktoken files)"},
    {"data", nc_cmd_data, "data: default corpus, synthetic tasks, GSM8K, stats, packing"},
    {"chat", nc_cmd_chat, "talk to a checkpoint in the terminal (REPL or -p PROMPT)"},
    {"serve", nc_cmd_serve, "OpenAI-compatible HTTP server and web UI over a checkpoint"},
    {"base-train", nc_cmd_base_train, "pretrain a model on text shards (nanochat's base_train)"},
    {"mid-train", nc_cmd_mid_train, "midtrain a base model on conversations"},
    {"sft", nc_cmd_sft, "supervised fine-tuning on conversations"},
    {"rl", nc_cmd_rl, "reinforcement learning on \"#### N\" questions (nanochat's chat_rl)"},
    {"report", nc_cmd_report, "write the report card (report.md) of a run"},
    {"eval", nc_cmd_eval, "evaluate a checkpoint: CORE and bpb (base), chat evals and ChatCORE (chat)"},
    {"tune", nc_cmd_tune, "autotune the GEMM knobs for a spec's shapes on a device (tuning database)"},
};
#define NC_NCOMMANDS ((int)(sizeof nc_commands / sizeof nc_commands[0]))

static void nc_usage(FILE *f) {
  fprintf(f,
          "nanochat - train and serve small chat models, from one C codebase\n"
          "\n"
          "usage: nanochat <command> [options]   (nanochat <command> --help for details)\n"
          "\n"
          "commands:\n");
  for (int i = 0; i < NC_NCOMMANDS; i++) fprintf(f, "  %-12s %s\n", nc_commands[i].name, nc_commands[i].summary);
  fprintf(f, "\nEnvironment: NC_DEBUG=0..3 sets the log level.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    nc_usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    nc_usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("nanochat-c 0.1\n");
    return 0;
  }
  for (int i = 0; i < NC_NCOMMANDS; i++)
    if (!strcmp(argv[1], nc_commands[i].name)) return nc_commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "nanochat: unknown command '%s'\n\n", argv[1]);
  nc_usage(stderr);
  return 2;
}
