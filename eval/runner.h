// The HumanEval runner: executes an untrusted Python program in a contained
// child process and reports whether it passed. docs/eval.md ("The code
// runner") lists the layers:
//  - a fresh temporary directory as cwd (removed afterwards), stdin from
//    /dev/null, stdout+stderr to a capped file there, a scrubbed environment,
//    python3 -I -B (no user site, no PYTHON* variables);
//  - rlimits: CPU seconds, address space + data, file size, processes, no core;
//  - a wall-clock timeout after which the whole process tree is SIGKILLed;
//  - when permitted (root, or unprivileged user namespaces), new PID, network
//    and mount namespaces: no network interface but a down loopback, every
//    mount remounted read-only except the temporary directory, and every
//    process of the program dies with it;
//  - as root, the program runs as nobody (uid/gid 65534), so RLIMIT_NPROC
//    applies and the tree outside the temporary directory is not writable;
//  - without namespaces (the fallback), an audit hook installed before the
//    program blocks socket creation/connection and writes outside the
//    directory, and the process group is killed on timeout.
#ifndef NC_EVAL_RUNNER_H
#define NC_EVAL_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "support/status.h"

typedef struct {
  double timeout_s;     // wall clock (default 5, nanochat's)
  int64_t mem_bytes;    // RLIMIT_AS and RLIMIT_DATA (default 256 MiB, nanochat's)
  int64_t fsize_bytes;  // RLIMIT_FSIZE (default 1 MiB)
  int nproc;            // RLIMIT_NPROC (default 16)
  const char *python;   // default /usr/bin/python3
  bool no_namespaces;   // force the fallback (tests)
} nc_runner_opts;
void nc_runner_opts_default(nc_runner_opts *o);

typedef enum {
  NC_RUN_PASS,     // exit status 0
  NC_RUN_FAIL,     // non-zero exit status (an exception, a failed assert)
  NC_RUN_TIMEOUT,  // wall clock or CPU limit reached: killed
  NC_RUN_SIGNAL,   // killed by another signal
} nc_run_outcome;
const char *nc_run_outcome_name(nc_run_outcome o);  // "passed" "failed" "timed out" "killed"

typedef struct {
  nc_run_outcome outcome;
  int exit_code;         // when exited
  int signal;            // when killed
  double seconds;
  char output[4096];     // the first bytes of stdout+stderr
  char isolation[96];    // "namespaces(pid,net,mount)+uid nobody" or "fallback(audit hook)"...
} nc_run_result;

// Runs program (Python source). Errors only when the runner itself cannot
// work (no temporary directory, fork failed, python missing); anything the
// program does is reported in r.
nc_status nc_runner_exec(const char *program, size_t len, const nc_runner_opts *o, nc_run_result *r);

#endif
