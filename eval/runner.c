// The HumanEval runner: untrusted Python in a contained child. See runner.h.
#include "eval/runner.h"
#include "support/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NC_NOBODY 65534
#define NC_RUN_MAX_MOUNTS 512

void nc_runner_opts_default(nc_runner_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_s = 5;
  o->mem_bytes = 256ll << 20;
  o->fsize_bytes = 1ll << 20;
  o->nproc = 16;
  o->python = "/usr/bin/python3";
}

const char *nc_run_outcome_name(nc_run_outcome o) {
  switch (o) {
    case NC_RUN_PASS: return "passed";
    case NC_RUN_FAIL: return "failed";
    case NC_RUN_TIMEOUT: return "timed out";
    case NC_RUN_SIGNAL: return "killed";
  }
  return "?";
}

// The fallback's guard (no namespaces): blocks sockets and writes outside the
// working directory through an audit hook, then runs program.py as __main__.
static const char nc_guard_py[] =
    "import os as _o, sys as _s\n"
    "_d = _o.path.realpath(_o.getcwd())\n"
    "def _inside(p):\n"
    "    try:\n"
    "        p = _o.fsdecode(p) if not isinstance(p, int) else None\n"
    "    except Exception:\n"
    "        return False\n"
    "    if p is None: return True\n"
    "    r = _o.path.realpath(_o.path.join(_d, p))\n"
    "    return r == _d or r.startswith(_d + '/') or r == '/dev/null'\n"
    "def _hook(ev, a):\n"
    "    if ev.startswith('socket.') and ev != 'socket.gethostname':\n"
    "        raise PermissionError('network disabled by the nanochat-c runner (%s)' % ev)\n"
    "    if ev == 'open' and len(a) > 1 and a[1] is not None and any(c in str(a[1]) for c in 'wax+') and not _inside(a[0]):\n"
    "        raise PermissionError('write outside the runner directory: %r' % (a[0],))\n"
    "    if ev == 'open' and len(a) > 2 and isinstance(a[2], int) and (a[2] & (_o.O_WRONLY | _o.O_RDWR | _o.O_CREAT)) and not _inside(a[0]):\n"
    "        raise PermissionError('write outside the runner directory: %r' % (a[0],))\n"
    "    if ev in ('os.remove', 'os.rmdir', 'os.mkdir', 'os.rename', 'os.chmod', 'os.chown', 'os.link', 'os.symlink', 'os.truncate', 'shutil.rmtree') and not all(_inside(x) for x in a[:2] if isinstance(x, (str, bytes))):\n"
    "        raise PermissionError('%s outside the runner directory' % ev)\n"
    "_s.addaudithook(_hook)\n"
    "del _hook\n"
    "_src = open('program.py').read()\n"
    "exec(compile(_src, 'program.py', 'exec'), {'__name__': '__main__', '__builtins__': __builtins__})\n";

static nc_status nc_write_file(const char *path, const char *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return nc_errorf(NC_E_IO, "runner: cannot create %s: %s", path, strerror(errno));
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return nc_errorf(NC_E_IO, "runner: cannot write %s: %s", path, strerror(errno));
    }
    off += (size_t)w;
  }
  close(fd);
  return NC_OK;
}

static int nc_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)ftw;
  if (flag == FTW_DP) rmdir(p);
  else unlink(p);
  return 0;
}

typedef struct {
  const char *dir;
  char *const *argv;
  char *const *envp;
  const nc_runner_opts *o;
  bool drop_uid;
  bool ns;                 // in new pid/net namespaces: run an init that reaps
  bool remount;            // in a new mount namespace: remount read-only
  char (*mounts)[256];
  int nmounts;
} nc_child_cfg;

// Runs in the child: only system calls (the parent may have threads).
static void nc_child_exec(const nc_child_cfg *c) {
  setpgid(0, 0);
  int in = open("/dev/null", O_RDONLY);
  if (in >= 0) dup2(in, 0);
  if (chdir(c->dir)) _exit(126);
  if (c->drop_uid) {
    if (setgroups(0, NULL) || setgid(NC_NOBODY) || setuid(NC_NOBODY)) _exit(126);
  }
  int out = open("output.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (out >= 0) dup2(out, 1), dup2(out, 2);
  struct rlimit rl;
  rl.rlim_cur = rl.rlim_max = (rlim_t)(c->o->timeout_s + 1.999);
  setrlimit(RLIMIT_CPU, &rl);
  rl.rlim_cur = rl.rlim_max = (rlim_t)c->o->mem_bytes;
  setrlimit(RLIMIT_AS, &rl);
  setrlimit(RLIMIT_DATA, &rl);
  rl.rlim_cur = rl.rlim_max = (rlim_t)c->o->fsize_bytes;
  setrlimit(RLIMIT_FSIZE, &rl);
  rl.rlim_cur = rl.rlim_max = (rlim_t)c->o->nproc;
  setrlimit(RLIMIT_NPROC, &rl);
  rl.rlim_cur = rl.rlim_max = 0;
  setrlimit(RLIMIT_CORE, &rl);
  execve(c->argv[0], c->argv, c->envp);
  _exit(127);
}

// Child in new namespaces: pid 1. Sets up the mounts, starts the program and
// reaps until it ends; its exit ends every other process of the namespace.
static void nc_child_init(const nc_child_cfg *c) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (c->remount) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) _exit(125);
    if (mount(c->dir, c->dir, NULL, MS_BIND, NULL)) _exit(125);
    for (int i = 0; i < c->nmounts; i++)
      mount(NULL, c->mounts[i], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
  }
  pid_t py = fork();
  if (py < 0) _exit(124);
  if (py == 0) nc_child_exec(c);
  int status = 0;
  for (;;) {
    pid_t w = wait(&status);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 || w == py) break;
  }
  if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
  _exit(WEXITSTATUS(status) > 127 ? 127 : WEXITSTATUS(status));
}

static int nc_read_mounts(char (*mps)[256], int cap, const char *skip) {
  FILE *f = fopen("/proc/self/mounts", "r");
  if (!f) return 0;
  char line[4096];
  int n = 0;
  while (n < cap && fgets(line, sizeof line, f)) {
    char dev[1024], mp[1024];
    if (sscanf(line, "%1023s %1023s", dev, mp) != 2) continue;
    if (strlen(mp) >= 256 || !strcmp(mp, skip) || strchr(mp, '\\')) continue;  // octal escapes: skip odd names
    snprintf(mps[n++], 256, "%s", mp);
  }
  fclose(f);
  return n;
}

nc_status nc_runner_exec(const char *program, size_t len, const nc_runner_opts *o, nc_run_result *r) {
  memset(r, 0, sizeof *r);
  nc_runner_opts d;
  if (!o) nc_runner_opts_default(&d), o = &d;
  const char *tmp = getenv("TMPDIR");
  char dir[512];
  snprintf(dir, sizeof dir, "%s/nc_run_XXXXXX", tmp && *tmp && strlen(tmp) < 400 ? tmp : "/tmp");
  if (!mkdtemp(dir)) return nc_errorf(NC_E_IO, "runner: cannot create a temporary directory in %s: %s", tmp ? tmp : "/tmp", strerror(errno));
  char path[600];
  snprintf(path, sizeof path, "%s/program.py", dir);
  nc_status st = nc_write_file(path, program, len);
  snprintf(path, sizeof path, "%s/guard.py", dir);
  if (!st) st = nc_write_file(path, nc_guard_py, sizeof nc_guard_py - 1);
  if (st) {
    nftw(dir, nc_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return st;
  }
  if (access(o->python, X_OK)) {
    nftw(dir, nc_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return nc_errorf(NC_E_IO, "runner: %s is not executable: %s", o->python, strerror(errno));
  }
  bool root = geteuid() == 0;
  if (root) {
    if (chown(dir, NC_NOBODY, NC_NOBODY)) root = false;  // cannot hand it over: run as ourselves
    snprintf(path, sizeof path, "%s/program.py", dir);
    if (root && chown(path, NC_NOBODY, NC_NOBODY)) root = false;
    snprintf(path, sizeof path, "%s/guard.py", dir);
    if (root && chown(path, NC_NOBODY, NC_NOBODY)) root = false;
  }
  chmod(dir, 0700);
  char env_home[600], env_tmp[600];
  snprintf(env_home, sizeof env_home, "HOME=%s", dir);
  snprintf(env_tmp, sizeof env_tmp, "TMPDIR=%s", dir);
  char *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", env_home, env_tmp, "PYTHONHASHSEED=0", NULL};
  char *argv_ns[] = {(char *)o->python, "-I", "-B", "program.py", NULL};
  char *argv_fb[] = {(char *)o->python, "-I", "-B", "guard.py", NULL};
  char (*mps)[256] = calloc(NC_RUN_MAX_MOUNTS, 256);
  int nm = mps ? nc_read_mounts(mps, NC_RUN_MAX_MOUNTS, dir) : 0;
  nc_child_cfg c = {dir, argv_ns, envp, o, root, true, root, mps, nm};
  double t0 = nc_clock_now();
  pid_t pid = -1;
  if (!o->no_namespaces) {
    if (root) pid = (pid_t)syscall(SYS_clone, SIGCHLD | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS, 0, 0, 0, 0);
    else pid = (pid_t)syscall(SYS_clone, SIGCHLD | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET, 0, 0, 0, 0);
    if (pid == 0) nc_child_init(&c);
  }
  if (pid < 0) {  // the fallback: no namespaces
    c.argv = argv_fb;
    c.ns = c.remount = false;
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      nc_child_exec(&c);
    }
    snprintf(r->isolation, sizeof r->isolation, "fallback(process group, audit hook)%s", root ? "+uid nobody" : "");
  } else {
    snprintf(r->isolation, sizeof r->isolation, "namespaces(pid,net%s)%s", root ? ",mount read-only" : ",user",
             root ? "+uid nobody" : "");
  }
  free(mps);
  if (pid < 0) {
    nftw(dir, nc_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return nc_errorf(NC_E_IO, "runner: fork failed: %s", strerror(errno));
  }
  int status = 0;
  bool timed_out = false;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (nc_clock_now() - t0 > o->timeout_s) {
      timed_out = true;
      kill(pid, SIGKILL);
      kill(-pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  kill(-pid, SIGKILL);  // whatever the program left in its process group
  r->seconds = nc_clock_now() - t0;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  if (c.ns && !timed_out && code > 128) r->signal = code - 128;  // the init's encoding
  else if (!c.ns && WIFSIGNALED(status)) r->signal = WTERMSIG(status);
  else r->exit_code = code;
  if (timed_out || r->signal == SIGXCPU) r->outcome = NC_RUN_TIMEOUT;
  else if (r->signal) r->outcome = NC_RUN_SIGNAL;
  else r->outcome = r->exit_code == 0 ? NC_RUN_PASS : NC_RUN_FAIL;
  if (r->outcome == NC_RUN_TIMEOUT && !r->signal) r->signal = SIGKILL;
  snprintf(path, sizeof path, "%s/output.txt", dir);
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, r->output, sizeof r->output - 1);
    r->output[n > 0 ? n : 0] = 0;
    close(fd);
  }
  if (r->exit_code == 125 || r->exit_code == 126 || r->exit_code == 127)
    snprintf(r->output + strlen(r->output), sizeof r->output - strlen(r->output), "\n[runner: child setup failed (%d)]", r->exit_code);
  nftw(dir, nc_rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return NC_OK;
}
