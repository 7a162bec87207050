// The HTTP side of `nanochat serve` (serve/server.h): routing, CORS, body
// limits, and chat completions streamed from the engine.
#include "serve/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct nc_server {
  nc_engine *engine;
  nc_server_opts opts;
  char host[64];
  struct MHD_Daemon *daemon;
  int port;
  int64_t created;
  const char *model;
  atomic_uint_fast64_t next_id;
  atomic_uint_fast64_t seed_state;  // requests without a seed get a fresh random one (as nanochat)
  atomic_int_fast64_t n_requests, n_cancelled, n_errors, n_inflight;
  atomic_bool stopping;
};

void nc_server_opts_default(nc_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->port = 8000;
  o->max_body = 1 << 20;
  o->max_connections = 256;
  nc_api_limits_default(&o->limits);
  o->log = true;
}

// ---- per-connection state --------------------------------------------------

typedef struct {
  nc_buf body;
  bool too_big;
} nc_conn;

// One chat completion in flight. The engine thread writes text/finish under
// mu; the connection thread reads them.
typedef struct {
  nc_server *srv;
  struct MHD_Connection *conn;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n;
  nc_buf *text;          // per sample: streaming: not yet sent; else: everything
  nc_finish *finish;     // per sample
  bool *finish_sent, *role_sent;
  int64_t *completion;   // per sample
  int64_t prompt_tokens;
  int ndone;
  char *error;
  uint64_t id;
  bool submitted;
  bool stream, include_usage, tail_sent;
  char cid[64];
  int64_t created;
  nc_buf out;            // formatted SSE bytes not yet handed to MHD
  size_t out_off;
  struct timespec t0;
  double last_check;     // nc_since(t0) when the socket was last polled
} nc_job;

static double nc_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static nc_job *nc_job_new(nc_server *s, struct MHD_Connection *c, int n) {
  nc_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->srv = s;
  j->conn = c;
  j->n = n;
  j->text = calloc((size_t)n, sizeof *j->text);
  j->finish = calloc((size_t)n, sizeof *j->finish);
  j->finish_sent = calloc((size_t)n, sizeof *j->finish_sent);
  j->role_sent = calloc((size_t)n, sizeof *j->role_sent);
  j->completion = calloc((size_t)n, sizeof *j->completion);
  if (!j->text || !j->finish || !j->finish_sent || !j->role_sent || !j->completion) {
    free(j->text), free(j->finish), free(j->finish_sent), free(j->role_sent), free(j->completion), free(j);
    return NULL;
  }
  for (int i = 0; i < n; i++) nc_buf_init(&j->text[i]);
  nc_buf_init(&j->out);
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  uint64_t k = atomic_fetch_add(&s->next_id, 1);
  j->created = (int64_t)time(NULL);
  snprintf(j->cid, sizeof j->cid, "chatcmpl-%08llx%06llx", (unsigned long long)j->created & 0xffffffffull,
           (unsigned long long)k);
  clock_gettime(CLOCK_MONOTONIC, &j->t0);
  atomic_fetch_add(&s->n_inflight, 1);
  return j;
}

static int64_t nc_job_completion_tokens(const nc_job *j) {
  int64_t c = 0;
  for (int i = 0; i < j->n; i++) c += j->completion[i];
  return c;
}

// Cancels the engine request if it still runs (no callback after this), frees.
static void nc_job_free(nc_job *j) {
  if (!j) return;
  nc_server *s = j->srv;
  if (j->submitted) {
    pthread_mutex_lock(&j->mu);
    bool done = j->ndone == j->n;
    pthread_mutex_unlock(&j->mu);
    nc_engine_cancel(s->engine, j->id);
    if (!done) {
      atomic_fetch_add(&s->n_cancelled, 1);
      if (s->opts.log) fprintf(stderr, "serve: %s cancelled (client gone) after %.2fs\n", j->cid, nc_since(&j->t0));
    } else if (s->opts.log) {
      fprintf(stderr, "serve: %s n=%d prompt=%lld completion=%lld %.2fs%s\n", j->cid, j->n,
              (long long)j->prompt_tokens, (long long)nc_job_completion_tokens(j), nc_since(&j->t0),
              j->stream ? " (stream)" : "");
    }
  }
  for (int i = 0; i < j->n; i++) nc_buf_free(&j->text[i]);
  free(j->text), free(j->finish), free(j->finish_sent), free(j->role_sent), free(j->completion);
  nc_buf_free(&j->out);
  free(j->error);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  atomic_fetch_sub(&s->n_inflight, 1);
  free(j);
}

// Engine worker thread: copy and signal only.
static void nc_job_on_event(void *user, const nc_gen_event *ev) {
  nc_job *j = user;
  if (ev->sample < 0 || ev->sample >= j->n) return;
  pthread_mutex_lock(&j->mu);
  if (ev->len) nc_buf_put(&j->text[ev->sample], ev->text, ev->len);
  if (ev->prompt_tokens > j->prompt_tokens) j->prompt_tokens = ev->prompt_tokens;
  j->completion[ev->sample] = ev->completion_tokens;
  if (ev->finish != NC_FINISH_NONE && j->finish[ev->sample] == NC_FINISH_NONE) {
    j->finish[ev->sample] = ev->finish;
    j->ndone++;
    if (ev->finish == NC_FINISH_ERROR && !j->error) j->error = strdup(ev->error ? ev->error : "engine error");
  }
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

// True when the client closed its side (or the server is stopping).
static bool nc_client_gone(nc_job *j) {
  if (atomic_load(&j->srv->stopping)) return true;
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(j->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!ci) return true;
  struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {  // EOF shows as readable with 0 bytes
    char c;
    ssize_t r = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

// Polls the socket at most every 20 ms (events may wake the waiter far more often).
static bool nc_client_gone_every(nc_job *j) {
  double t = nc_since(&j->t0);
  if (t - j->last_check < 0.02) return false;
  j->last_check = t;
  return nc_client_gone(j);
}

static void nc_deadline(struct timespec *ts, long ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_nsec += ms * 1000000L;
  ts->tv_sec += ts->tv_nsec / 1000000000L;
  ts->tv_nsec %= 1000000000L;
}

// ---- responses --------------------------------------------------------------

static void nc_cors(struct MHD_Response *r) {
  MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
  MHD_add_response_header(r, "Access-Control-Expose-Headers", "*");
}

static enum MHD_Result nc_reply(struct MHD_Connection *c, unsigned status, const char *ctype, char *body,
                                size_t len, bool take) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, body ? body : (char *)"", take && body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (take) free(body);
    return MHD_NO;
  }
  if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
  nc_cors(r);
  enum MHD_Result ok = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ok;
}

static enum MHD_Result nc_reply_json(struct MHD_Connection *c, unsigned status, char *json) {
  if (!json) return nc_reply(c, 500, "text/plain", (char *)"out of memory\n", 14, false);
  return nc_reply(c, status, "application/json", json, strlen(json), true);
}

static enum MHD_Result nc_reply_error(nc_server *s, struct MHD_Connection *c, const nc_api_error *e) {
  atomic_fetch_add(&s->n_errors, 1);
  char *js = nc_api_error_json(e);
  if (!js) return nc_reply(c, 500, "text/plain", (char *)"out of memory\n", 14, false);
  struct MHD_Response *r = MHD_create_response_from_buffer(strlen(js), js, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(js);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "application/json");
  nc_cors(r);
  if (e->http == 429 || e->http == 503) MHD_add_response_header(r, "Retry-After", "1");
  enum MHD_Result ok = MHD_queue_response(c, (unsigned)e->http, r);
  MHD_destroy_response(r);
  return ok;
}

static enum MHD_Result nc_reply_405(nc_server *s, struct MHD_Connection *c, const char *method, const char *url,
                                    const char *allow) {
  atomic_fetch_add(&s->n_errors, 1);
  nc_api_error e;
  nc_api_error_set(&e, 405, "invalid_request_error", "", "method_not_allowed", "%s %s: allowed methods are %s",
                   method, url, allow);
  char *js = nc_api_error_json(&e);
  struct MHD_Response *r = js ? MHD_create_response_from_buffer(strlen(js), js, MHD_RESPMEM_MUST_FREE) : NULL;
  if (!r) {
    free(js);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "application/json");
  MHD_add_response_header(r, "Allow", allow);
  nc_cors(r);
  enum MHD_Result ok = MHD_queue_response(c, 405, r);
  MHD_destroy_response(r);
  return ok;
}

// ---- streaming ---------------------------------------------------------------

static void nc_sse(nc_buf *out, char *json) {
  if (!json) {
    out->oom = true;
    return;
  }
  nc_buf_puts(out, "data: ");
  nc_buf_puts(out, json);
  nc_buf_puts(out, "\n\n");
  free(json);
}

static bool nc_job_has_news(const nc_job *j) {
  if (j->ndone == j->n && !j->tail_sent) return true;
  for (int i = 0; i < j->n; i++)
    if (!j->role_sent[i] || j->text[i].len || (j->finish[i] != NC_FINISH_NONE && !j->finish_sent[i])) return true;
  return false;
}

// Turns what arrived into SSE events in j->out (mu held).
static void nc_job_format(nc_job *j) {
  const char *model = j->srv->model;
  bool iu = j->include_usage;
  for (int i = 0; i < j->n; i++) {
    if (!j->role_sent[i]) {
      nc_sse(&j->out, nc_api_chunk_json(j->cid, j->created, model, i, true, "", 0, true, NULL, iu));
      j->role_sent[i] = true;
    }
    if (j->text[i].len) {
      nc_sse(&j->out, nc_api_chunk_json(j->cid, j->created, model, i, false, j->text[i].data, j->text[i].len, true,
                                        NULL, iu));
      j->text[i].len = 0;
    }
    if (j->finish[i] != NC_FINISH_NONE && !j->finish_sent[i]) {
      if (j->finish[i] == NC_FINISH_ERROR) {
        nc_api_error e;
        nc_api_error_set(&e, 500, "server_error", "", "engine_error", "generation failed: %s",
                         j->error ? j->error : "engine error");
        nc_sse(&j->out, nc_api_error_json(&e));
      } else {
        nc_sse(&j->out, nc_api_chunk_json(j->cid, j->created, model, i, false, NULL, 0, false,
                                          nc_api_finish_reason(j->finish[i]), iu));
      }
      j->finish_sent[i] = true;
    }
  }
  if (j->ndone == j->n && !j->tail_sent) {
    if (iu) nc_sse(&j->out, nc_api_usage_chunk_json(j->cid, j->created, model, j->prompt_tokens,
                                                    nc_job_completion_tokens(j)));
    nc_buf_puts(&j->out, "data: [DONE]\n\n");
    j->tail_sent = true;
  }
}

static ssize_t nc_job_read(void *cls, uint64_t pos, char *buf, size_t max) {
  nc_job *j = cls;
  for (;;) {
    if (j->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (j->out_off < j->out.len) {
      size_t k = j->out.len - j->out_off;
      if (k > max) k = max;
      memcpy(buf, j->out.data + j->out_off, k);
      j->out_off += k;
      if (j->out_off == j->out.len) j->out.len = j->out_off = 0;
      return (ssize_t)k;
    }
    if (j->tail_sent) return MHD_CONTENT_READER_END_OF_STREAM;
    if (nc_client_gone_every(j)) return MHD_CONTENT_READER_END_WITH_ERROR;  // nc_job_free cancels
    pthread_mutex_lock(&j->mu);
    while (!nc_job_has_news(j)) {
      struct timespec ts;
      nc_deadline(&ts, 20);
      if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT && !nc_job_has_news(j)) {
        pthread_mutex_unlock(&j->mu);
        if (nc_client_gone_every(j)) return MHD_CONTENT_READER_END_WITH_ERROR;
        pthread_mutex_lock(&j->mu);
      }
    }
    nc_job_format(j);
    pthread_mutex_unlock(&j->mu);
  }
}

static void nc_job_free_cb(void *cls) { nc_job_free(cls); }

// ---- chat completions ------------------------------------------------------------

static enum MHD_Result nc_chat(nc_server *s, struct MHD_Connection *c, const char *body, size_t len) {
  nc_api_error e;
  nc_api_request rq;
  nc_status st = nc_api_request_parse(body, len, &s->opts.limits, &rq, &e);
  if (st) {
    nc_status_free(st);
    nc_api_request_free(&rq);
    return nc_reply_error(s, c, &e);
  }
  if (rq.model && strcmp(rq.model, s->model) != 0) {
    nc_api_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                     "The model '%s' does not exist; this server serves '%s'", rq.model, s->model);
    nc_api_request_free(&rq);
    return nc_reply_error(s, c, &e);
  }
  nc_ids ids = {0};
  st = nc_tok_render_for_completion(nc_engine_tok(s->engine), rq.conv, rq.conv_len, &ids);
  if (st) {
    nc_api_error_set(&e, 400, "invalid_request_error", "messages", "invalid_value", "messages: %s",
                     nc_status_msg(st));
    nc_status_free(st);
    nc_ids_free(&ids);
    nc_api_request_free(&rq);
    return nc_reply_error(s, c, &e);
  }
  int64_t ctx = nc_engine_max_seq(s->engine);
  // The renderer keeps at most 2048 tokens; 2049 with <|assistant_start|> means it cut.
  if ((int64_t)ids.len >= ctx || ids.len > 2048) {
    nc_api_error_set(&e, 400, "invalid_request_error", "messages", "context_length_exceeded",
                     "This model's maximum context length is %lld tokens, but the messages take %s%zu tokens; "
                     "shorten the conversation",
                     (long long)ctx, ids.len > 2048 ? "more than " : "", ids.len);
    nc_ids_free(&ids);
    nc_api_request_free(&rq);
    return nc_reply_error(s, c, &e);
  }
  if (!rq.gen.seeded) {  // splitmix64 over a per-server counter
    uint64_t z = atomic_fetch_add(&s->seed_state, 0x9e3779b97f4a7c15ull) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    rq.gen.seeded = true;
    rq.gen.seed = z ^ (z >> 31);
  }
  nc_job *j = nc_job_new(s, c, rq.gen.n);
  if (!j) {
    nc_ids_free(&ids);
    nc_api_request_free(&rq);
    return nc_reply(c, 500, "text/plain", (char *)"out of memory\n", 14, false);
  }
  j->stream = rq.stream;
  j->include_usage = rq.include_usage;
  atomic_fetch_add(&s->n_requests, 1);
  st = nc_engine_submit(s->engine, ids.data, ids.len, &rq.gen, nc_job_on_event, j, &j->id);
  nc_ids_free(&ids);
  nc_api_request_free(&rq);  // the engine copied the options and stop strings
  if (st) {
    if (strstr(nc_status_msg(st), "queue full"))
      nc_api_error_set(&e, 503, "server_error", "", "queue_full",
                       "The server is busy (request queue full); retry shortly: %s", nc_status_msg(st));
    else if (nc_status_code(st) == NC_E_INVALID)
      nc_api_error_set(&e, 400, "invalid_request_error", "messages", "invalid_value", "%s", nc_status_msg(st));
    else
      nc_api_error_set(&e, 500, "server_error", "", "", "%s", nc_status_msg(st));
    nc_status_free(st);
    nc_job_free(j);
    return nc_reply_error(s, c, &e);
  }
  j->submitted = true;
  if (j->stream) {
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, nc_job_read, j,
                                                               nc_job_free_cb);
    if (!r) {
      nc_job_free(j);
      return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    nc_cors(r);
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);  // nc_job_free_cb runs when MHD is done with it
    return ok;
  }
  // Non-streaming: this connection's own thread waits for every sample.
  pthread_mutex_lock(&j->mu);
  while (j->ndone < j->n) {
    struct timespec ts;
    nc_deadline(&ts, 20);
    pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    if (j->ndone < j->n && nc_since(&j->t0) - j->last_check >= 0.02) {
      pthread_mutex_unlock(&j->mu);
      if (nc_client_gone_every(j)) {
        nc_job_free(j);
        return MHD_NO;  // closes the connection
      }
      pthread_mutex_lock(&j->mu);
    }
  }
  pthread_mutex_unlock(&j->mu);
  if (j->error) {
    nc_api_error_set(&e, 500, "server_error", "", "engine_error", "generation failed: %s", j->error);
    nc_job_free(j);
    return nc_reply_error(s, c, &e);
  }
  nc_api_choice ch[64];
  int n = j->n < 64 ? j->n : 64;
  for (int i = 0; i < n; i++) ch[i] = (nc_api_choice){j->text[i].data ? j->text[i].data : "", j->text[i].len,
                                                      j->finish[i]};
  char *js = nc_api_completion_json(j->cid, j->created, s->model, ch, n, j->prompt_tokens,
                                    nc_job_completion_tokens(j));
  nc_job_free(j);
  return nc_reply_json(c, 200, js);
}

// ---- routing ------------------------------------------------------------------

static char *nc_health_json(nc_server *s) {
  nc_engine_stats st;
  nc_engine_stats_get(s->engine, &st);
  json_t *o = json_pack("{s:s,s:b,s:s,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I}", "status", "ok", "ready", 1, "model",
                        s->model, "slots", st.slots, "active", st.active, "queued", st.queued, "context",
                        (json_int_t)nc_engine_max_seq(s->engine), "requests", (json_int_t)atomic_load(&s->n_requests),
                        "cancelled", (json_int_t)atomic_load(&s->n_cancelled), "errors",
                        (json_int_t)atomic_load(&s->n_errors), "in_flight", (json_int_t)atomic_load(&s->n_inflight));
  char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return js;
}

static enum MHD_Result nc_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **req_cls) {
  nc_server *s = cls;
  nc_conn *cn = *req_cls;
  if (!cn) {
    cn = calloc(1, sizeof *cn);
    if (!cn) return MHD_NO;
    nc_buf_init(&cn->body);
    *req_cls = cn;
    return MHD_YES;
  }
  if (*upload_data_size) {
    if (cn->too_big || cn->body.len + *upload_data_size > s->opts.max_body) {
      cn->too_big = true;  // read and drop the rest, then answer 413
      nc_buf_free(&cn->body);
    } else {
      nc_buf_put(&cn->body, upload_data, *upload_data_size);
    }
    *upload_data_size = 0;
    return MHD_YES;
  }
  nc_api_error e;
  bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
  bool post = !strcmp(method, "POST");
  if (!strcmp(method, "OPTIONS")) {  // CORS preflight
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (char *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    nc_cors(r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", h && *h ? h : "Content-Type, Authorization");
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    enum MHD_Result ok = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ok;
  }
  if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) {
    if (!post) return nc_reply_405(s, c, method, url, "POST, OPTIONS");
    if (cn->too_big) {
      nc_api_error_set(&e, 413, "invalid_request_error", "", "request_too_large",
                       "the request body is larger than %zu bytes", s->opts.max_body);
      return nc_reply_error(s, c, &e);
    }
    return nc_chat(s, c, cn->body.data, cn->body.len);
  }
  bool known = !strcmp(url, "/") || !strcmp(url, "/index.html") || !strcmp(url, "/health") ||
               !strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11);
  if (known && !get) return nc_reply_405(s, c, method, url, "GET, OPTIONS");
  if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
    return nc_reply(c, 200, "text/html; charset=utf-8", (char *)nc_serve_ui_html, nc_serve_ui_html_len, false);
  if (!strcmp(url, "/health")) return nc_reply_json(c, 200, nc_health_json(s));
  if (!strcmp(url, "/v1/models")) return nc_reply_json(c, 200, nc_api_models_json(s->model, s->created));
  if (!strncmp(url, "/v1/models/", 11)) {
    if (!strcmp(url + 11, s->model)) return nc_reply_json(c, 200, nc_api_model_json(s->model, s->created));
    nc_api_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                     "The model '%s' does not exist; this server serves '%s'", url + 11, s->model);
    return nc_reply_error(s, c, &e);
  }
  nc_api_error_set(&e, 404, "invalid_request_error", "", "unknown_url", "Unknown request URL: %s %s", method, url);
  return nc_reply_error(s, c, &e);
}

static void nc_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe) {
  nc_conn *cn = *req_cls;
  if (!cn) return;
  nc_buf_free(&cn->body);
  free(cn);
  *req_cls = NULL;
}

nc_status nc_server_start(nc_engine *e, const nc_server_opts *o, nc_server **out) {
  *out = NULL;
  if (o->port < 0 || o->port > 65535) return nc_errorf(NC_E_INVALID, "--port: %d is not a TCP port (0..65535)", o->port);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
  const char *host = o->host && *o->host ? o->host : "127.0.0.1";
  if (!strcmp(host, "localhost")) host = "127.0.0.1";
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
    return nc_errorf(NC_E_INVALID, "--host: '%s' is not an IPv4 address (e.g. 127.0.0.1 or 0.0.0.0)", host);
  nc_server *s = calloc(1, sizeof *s);
  if (!s) return nc_errorf(NC_E_NOMEM, "out of memory");
  s->engine = e;
  s->opts = *o;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->opts.host = s->host;
  s->model = nc_engine_model_name(e);
  s->created = (int64_t)time(NULL);
  atomic_init(&s->next_id, 1);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  atomic_init(&s->seed_state, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + (uint64_t)getpid());
  atomic_init(&s->n_requests, 0);
  atomic_init(&s->n_cancelled, 0);
  atomic_init(&s->n_errors, 0);
  atomic_init(&s->n_inflight, 0);
  atomic_init(&s->stopping, false);
  nc_engine_stats es;
  nc_engine_stats_get(e, &es);
  if (es.slots > 0 && s->opts.limits.max_n > es.slots) s->opts.limits.max_n = es.slots;
  // (no MHD_USE_ERROR_LOG: it reports every client that leaves mid-stream)
  s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
                               (uint16_t)o->port, NULL, NULL, nc_handle, s, MHD_OPTION_SOCK_ADDR,
                               (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
                               (unsigned)(o->max_connections > 0 ? o->max_connections : 256),
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_NOTIFY_COMPLETED,
                               nc_completed, s, MHD_OPTION_END);
  if (!s->daemon) {
    int err = errno;
    free(s);
    return nc_errorf(NC_E_IO, "cannot listen on %s:%d: %s", host, o->port, err ? strerror(err) : "libmicrohttpd failed");
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : o->port;
  *out = s;
  return NC_OK;
}

int nc_server_port(const nc_server *s) { return s->port; }

void nc_server_stop(nc_server *s) {
  if (!s) return;
  atomic_store(&s->stopping, true);
  MHD_stop_daemon(s->daemon);
  free(s);
}
