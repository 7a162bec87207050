// `nanochat serve` end to end: builds a small test checkpoint (an init
// checkpoint of a 2-layer spec + a 512-token tokenizer trained here), starts
// the server on a free port and drives it with node scripts in tests/js: the
// official openai client (serve_api.mjs), a 200-request / 16-client load test
// (serve_load.mjs), the bounded queue (serve_queue.mjs) and the web UI in
// headless Chromium (serve_ui.mjs). The server must then shut down cleanly on
// SIGTERM with exit status 0 (in the ASan build: no leak, no error).
// Skips when node, tests/js/node_modules (scripts/test.sh runs npm ci) or
// /usr/bin/chromium (UI test only) are missing.
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *env_or(const char *k, const char *d) {
  const char *v = getenv(k);
  return v && *v ? v : d;
}
static const char *src_dir(void) { return env_or("NC_SOURCE_DIR", "."); }
static const char *build_dir(void) { return env_or("NC_BUILD_DIR", "build"); }

static void sh(const char *cmd) {
  int rc = system(cmd);
  cr_assert(rc == 0, "command failed (%d): %s", rc, cmd);
}

static bool file_exists(const char *p) { return access(p, F_OK) == 0; }

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return strdup("");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t k = fread(s, 1, (size_t)n, f);
  s[k] = 0;
  fclose(f);
  return s;
}

// The test checkpoint: built once per build folder, reused afterwards.
static void prepare(char *ckpt, size_t n) {
  char dir[900], cmd[4096], path[1200];
  snprintf(dir, sizeof dir, "%s/serve_e2e", build_dir());
  snprintf(ckpt, n, "%s/ckpt", dir);
  snprintf(path, sizeof path, "%s/tokenizer.tiktoken.json", ckpt);
  if (file_exists(path)) return;
  mkdir(dir, 0755);
  // corpus: words of the system dictionary if present, else generated words
  snprintf(path, sizeof path, "%s/corpus.txt", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "cannot write %s", path);
  FILE *w = fopen("/usr/share/dict/words", "r");
  char line[256];
  int k = 0;
  if (w) {
    while (k < 30000 && fgets(line, sizeof line, w)) {
      line[strcspn(line, "\n")] = 0;
      fprintf(f, "%s%s", line, ++k % 12 ? " " : ".\n");
    }
    fclose(w);
  }
  uint64_t s = 42;
  for (; k < 30000; k++) {  // fallback: pseudo-words
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    fprintf(f, "%c%c%c%s", 'a' + (int)(s >> 59), 'a' + (int)((s >> 40) % 26), 'a' + (int)((s >> 20) % 26),
            k % 12 ? " " : ".\n");
  }
  fclose(f);
  snprintf(path, sizeof path, "%s/spec.xml", dir);
  f = fopen(path, "w");
  cr_assert_not_null(f);
  // 512-token vocabulary (= the tokenizer's, specials included), 1024 context
  fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<model version=\"1\" name=\"serve-test\">\n"
        "  <dims depth=\"2\" aspect_ratio=\"64\" head_dim=\"64\" vocab_size=\"512\" sequence_len=\"1024\"/>\n"
        "  <attention rope_base=\"10000\" window_pattern=\"L\"/>\n  <output softcap=\"15\"/>\n</model>\n",
        f);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "'%s/cli/nanochat' init --spec '%s/spec.xml' -o '%s.tmp' >/dev/null && "
           "'%s/cli/nanochat' tok train -q -i '%s/corpus.txt' --vocab-size 512 -o '%s.tmp/tokenizer.tiktoken' && "
           "rm -rf '%s' && mv '%s.tmp' '%s'",
           build_dir(), dir, ckpt, build_dir(), dir, ckpt, ckpt, ckpt, ckpt);
  sh(cmd);
}

typedef struct {
  pid_t pid;
  int port;
  char log[1024];
  char url[64];
} srv;

static void srv_start(srv *s, const char *ckpt, const char *name, const char *extra) {
  char cmd[4096];
  snprintf(s->log, sizeof s->log, "%s/serve_e2e/%s.log", build_dir(), name);
  snprintf(cmd, sizeof cmd, "exec '%s/cli/nanochat' serve --ckpt '%s' --port 0 %s > '%s' 2>&1", build_dir(), ckpt,
           extra, s->log);
  unlink(s->log);  // a stale log of an earlier run must not be read for this one
  char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  cr_assert_eq(posix_spawn(&s->pid, "/bin/sh", NULL, NULL, argv, environ), 0);
  // the engine compiles its plans first: wait for the "listening on" line
  for (int i = 0; i < 6000; i++) {
    char *log = slurp(s->log);
    char *at = strstr(log, "listening on http://127.0.0.1:");
    if (at) {
      s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
      free(log);
      snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
      cr_assert(s->port > 0);
      return;
    }
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      fprintf(stderr, "--- server log ---\n%s\n", log);
      free(log);
      cr_assert_fail("nanochat serve exited before listening (log above)");
    }
    free(log);
    usleep(20000);
  }
  kill(s->pid, SIGKILL);
  cr_assert_fail("nanochat serve did not start in 120 s (log %s)", s->log);
}

// SIGTERM, then the exit status must be 0 (sanitizer reports make it non-zero).
static void srv_stop(srv *s) {
  kill(s->pid, SIGTERM);
  int st = 0;
  for (int i = 0; i < 3000; i++) {
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char *log = slurp(s->log);
        fprintf(stderr, "--- server log ---\n%s\n", log);
        free(log);
        cr_assert_fail("nanochat serve exited with status %d on SIGTERM (log above)",
                       WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
      }
      return;
    }
    usleep(20000);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, &st, 0);
  cr_assert_fail("nanochat serve did not stop within 60 s of SIGTERM");
}

static bool have_node(void) {
  char p[1200];
  snprintf(p, sizeof p, "%s/tests/js/node_modules/openai/package.json", src_dir());
  return system("node --version >/dev/null 2>&1") == 0 && file_exists(p);
}

// Runs a node script against s; on failure shows the script's and server's output.
static void node(srv *s, const char *script, const char *args) {
  char cmd[4096], out[1200];
  snprintf(out, sizeof out, "%s.%s.out", s->log, script);
  // Under sanitizers the server's host code runs several times slower, and CI runs two tests
  // at once on two cores: the scripts' "slot freed at once" deadline (2 s) gets 5x slack there.
#ifdef NC_SANITIZED
  const char *slack = "SERVE_TEST_SLACK=5 ";
#else
  const char *slack = "";
#endif
  snprintf(cmd, sizeof cmd, "%snode '%s/tests/js/%s' %s %s > '%s' 2>&1", slack, src_dir(), script, s->url, args, out);
  int rc = system(cmd);
  char *o = slurp(out);
  if (rc != 0) {
    char *log = slurp(s->log);
    size_t n = strlen(log);
    kill(s->pid, SIGKILL);
    fprintf(stderr, "%s failed (%d):\n%s\n--- server log (tail) ---\n%s\n", script, rc, o,
            n > 6000 ? log + n - 6000 : log);
    free(log);
    free(o);
    cr_assert_fail("%s failed (exit %d); its output and the server log are above", script, rc);
  }
  fprintf(stderr, "%s", o);
  free(o);
}

TestSuite(serve_e2e, .timeout = 600);

Test(serve_e2e, openai_client_and_load) {
  if (!have_node()) cr_skip_test("node or tests/js/node_modules missing (scripts/test.sh runs npm ci)");
  char ckpt[1024];
  prepare(ckpt, sizeof ckpt);
  srv s;
  srv_start(&s, ckpt, "api", "--slots 8 --queue 256 -q");
  node(&s, "serve_api.mjs", "");
  node(&s, "serve_load.mjs", "200 16");
  srv_stop(&s);
}

Test(serve_e2e, bounded_queue) {
  if (!have_node()) cr_skip_test("node or tests/js/node_modules missing");
  char ckpt[1024];
  prepare(ckpt, sizeof ckpt);
  srv s;
  srv_start(&s, ckpt, "queue", "--slots 1 --queue 1 -q");
  node(&s, "serve_queue.mjs", "");
  srv_stop(&s);
}

Test(serve_e2e, web_ui_headless_chromium) {
  if (!have_node()) cr_skip_test("node or tests/js/node_modules missing");
  if (!file_exists("/usr/bin/chromium")) cr_skip_test("/usr/bin/chromium missing (scripts/setup.sh installs it)");
  char ckpt[1024];
  prepare(ckpt, sizeof ckpt);
  srv s;
  srv_start(&s, ckpt, "ui", "--slots 4 -m 128");
  node(&s, "serve_ui.mjs", "/usr/bin/chromium");
  srv_stop(&s);
}

// Bad flags and inputs: a clear message naming the culprit, no crash.
static void expect_fail(const char *args, int code, const char *needle) {
  char cmd[4096], out[1200];
  snprintf(out, sizeof out, "%s/serve_e2e/cli.out", build_dir());
  snprintf(cmd, sizeof cmd, "'%s/cli/nanochat' serve %s > '%s' 2>&1", build_dir(), args, out);
  int rc = system(cmd);
  char *o = slurp(out);
  bool good = WIFEXITED(rc) && WEXITSTATUS(rc) == code && strstr(o, needle);
  if (!good) fprintf(stderr, "nanochat serve %s: exit %d, output:\n%s\n", args, WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, o);
  free(o);
  cr_assert(good, "nanochat serve %s: want exit %d and a message with '%s' (got: above)", args, code, needle);
}

Test(serve_e2e, cli_errors) {
  char ckpt[1024], args[2048];
  prepare(ckpt, sizeof ckpt);
  expect_fail("", 2, "--ckpt DIR is required");
  expect_fail("--ckpt /nonexistent/ckpt --port 0", 1, "/nonexistent/ckpt");
  expect_fail("--ckpt x --port 70000", 2, "--port wants an integer in 0..65535, got '70000'");
  expect_fail("--ckpt x --slots 0", 2, "--slots");
  expect_fail("--ckpt x --device gpu9", 2, "--device");
  expect_fail("--ckpt x extra", 2, "unexpected argument 'extra'");
  snprintf(args, sizeof args, "--ckpt '%s' --host not-an-ip --port 0", ckpt);
  expect_fail(args, 1, "--host: 'not-an-ip' is not an IPv4 address");
  char help[1200];
  snprintf(help, sizeof help, "'%s/cli/nanochat' serve --help | grep -q -- '--slots N'", build_dir());
  sh(help);
}
