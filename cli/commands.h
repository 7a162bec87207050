// The nanochat command's subcommands. Each takes argv with argv[0] = the
// subcommand name and returns the process exit code (0 ok, 1..127 error).
#ifndef NC_CLI_COMMANDS_H
#define NC_CLI_COMMANDS_H

int nc_cmd_graph(int argc, char **argv);
int nc_cmd_devices(int argc, char **argv);
int nc_cmd_init(int argc, char **argv);
int nc_cmd_forward(int argc, char **argv);
int nc_cmd_bench(int argc, char **argv);
int nc_cmd_compile(int argc, char **argv);
int nc_cmd_tok(int argc, char **argv);
int nc_cmd_serve(int argc, char **argv);
int nc_cmd_chat(int argc, char **argv);
int nc_cmd_base_train(int argc, char **argv);
int nc_cmd_mid_train(int argc, char **argv);
int nc_cmd_sft(int argc, char **argv);
int nc_cmd_report(int argc, char **argv);
int nc_cmd_rl(int argc, char **argv);
int nc_cmd_data(int argc, char **argv);
int nc_cmd_eval(int argc, char **argv);
int nc_cmd_tune(int argc, char **argv);

#endif
