// The HumanEval runner against hostile programs: an infinite loop, a fork
// bomb, a huge allocation, writes outside its directory, a network
// connection; each contained and reported. Also a passing and a failing
// program, in both isolation modes (namespaces and the fallback).
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eval/runner.h"

static nc_run_result run(const char *prog, bool fallback, double timeout) {
  nc_runner_opts o;
  nc_runner_opts_default(&o);
  o.timeout_s = timeout;
  o.no_namespaces = fallback;
  nc_run_result r;
  nc_status st = nc_runner_exec(prog, strlen(prog), &o, &r);
  cr_assert_null(st, "%s", nc_status_msg(st));
  return r;
}

static int count_nobody_procs(void) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char p[300], line[256];
    snprintf(p, sizeof p, "/proc/%s/status", e->d_name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    bool zombie = false;
    while (fgets(line, sizeof line, f)) {
      if (!strncmp(line, "State:", 6)) zombie = strchr(line, 'Z') || strchr(line, 'X');
      if (!strncmp(line, "Uid:", 4)) {
        n += atoi(line + 4) == 65534 && !zombie;
        break;
      }
    }
    fclose(f);
  }
  if (d) closedir(d);
  return n;
}

#define MODES for (int fb = 0; fb < 2; fb++)

Test(runner, pass_and_fail) {
  MODES {
    nc_run_result r = run("def f(x):\n    return x + 1\nassert f(1) == 2\nprint('ok')\n", fb, 5);
    cr_assert_eq(r.outcome, NC_RUN_PASS, "[%s] %s", r.isolation, r.output);
    cr_assert(strstr(r.output, "ok"));
    r = run("assert 1 == 2, 'nope'\n", fb, 5);
    cr_assert_eq(r.outcome, NC_RUN_FAIL);
    cr_assert(strstr(r.output, "AssertionError"), "%s", r.output);
  }
}

Test(runner, infinite_loop_times_out) {
  MODES {
    nc_run_result r = run("while True:\n    pass\n", fb, 1);
    cr_assert_eq(r.outcome, NC_RUN_TIMEOUT, "[%s] %s", r.isolation, nc_run_outcome_name(r.outcome));
    cr_assert_lt(r.seconds, 3.0);
  }
}

Test(runner, fork_bomb_contained, .timeout = 60) {
  MODES {
    nc_run_result r = run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", fb, 2);
    cr_assert_neq(r.outcome, NC_RUN_PASS);
    cr_assert_lt(r.seconds, 5.0, "%.1f s", r.seconds);
    if (geteuid() == 0) {
      int left = 0;
      for (int i = 0; i < 20 && (left = count_nobody_procs()) > 0; i++) usleep(100000);  // dying processes
      cr_assert_eq(left, 0, "[%s] processes of the program survived", r.isolation);
    }
  }
}

Test(runner, huge_allocation_fails) {
  MODES {
    nc_run_result r = run("x = bytearray(8 * 1024 ** 3)\nprint('allocated')\n", fb, 5);
    cr_assert_eq(r.outcome, NC_RUN_FAIL, "[%s] %s", r.isolation, r.output);
    cr_assert(strstr(r.output, "MemoryError"), "%s", r.output);
    r = run("a = []\nwhile True:\n    a.append(' ' * 10 ** 7)\n", fb, 5);
    cr_assert_neq(r.outcome, NC_RUN_PASS);
  }
}

Test(runner, writes_outside_blocked) {
  MODES {
    char target[128], prog[1024];
    snprintf(target, sizeof target, "/tmp/nc_runner_escape_%d_%d", (int)getpid(), fb);
    unlink(target);
    snprintf(prog, sizeof prog,
             "open('inside.txt', 'w').write('fine')\n"
             "ok = 0\n"
             "for p in ['%s', '../nc_runner_escape_up', '/nc_runner_escape_root']:\n"
             "    try:\n"
             "        open(p, 'w').write('escaped')\n"
             "        ok += 1\n"
             "    except OSError as e:\n"
             "        print('blocked', p, e)\n"
             "assert ok == 0\n",
             target);
    nc_run_result r = run(prog, fb, 5);
    cr_assert_eq(r.outcome, NC_RUN_PASS, "[%s] %s", r.isolation, r.output);
    cr_assert_neq(access(target, F_OK), 0, "[%s] %s was written", r.isolation, target);
    cr_assert_neq(access("/tmp/nc_runner_escape_up", F_OK), 0);
    cr_assert_neq(access("/nc_runner_escape_root", F_OK), 0);
    // a huge file stops at RLIMIT_FSIZE
    r = run("open('big', 'wb').write(b'x' * (64 << 20))\n", fb, 5);
    cr_assert_neq(r.outcome, NC_RUN_PASS, "[%s] %s", r.isolation, r.output);
  }
}

Test(runner, network_blocked) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(ls, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  getsockname(ls, (struct sockaddr *)&a, &al);
  cr_assert_eq(listen(ls, 4), 0);
  fcntl(ls, F_SETFL, O_NONBLOCK);
  MODES {
    char prog[512];
    snprintf(prog, sizeof prog,
             "import socket\n"
             "s = socket.create_connection(('127.0.0.1', %d), timeout=1)\n"
             "s.sendall(b'escaped')\n"
             "print('CONNECTED')\n",
             ntohs(a.sin_port));
    nc_run_result r = run(prog, fb, 5);
    cr_assert_eq(r.outcome, NC_RUN_FAIL, "[%s] %s", r.isolation, r.output);
    cr_assert_null(strstr(r.output, "CONNECTED"));
    int c = accept(ls, NULL, NULL);
    cr_assert_lt(c, 0, "[%s] the program reached the listener", r.isolation);
  }
  close(ls);
}

Test(runner, bad_python_is_an_error) {
  nc_runner_opts o;
  nc_runner_opts_default(&o);
  o.python = "/nonexistent/python3";
  nc_run_result r;
  nc_status st = nc_runner_exec("print(1)", 8, &o, &r);
  cr_assert_not_null(st);
  cr_assert(strstr(nc_status_msg(st), "/nonexistent/python3"));
  nc_status_free(st);
}
