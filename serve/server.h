// `nanochat serve`'s HTTP server (libmicrohttpd, a thread per connection):
// the OpenAI-compatible API of serve/api.h over an open engine, and the web
// UI (serve/ui.html, embedded) at GET /. docs/api.md is the reference.
//
// Threads: the engine's event callbacks only copy text into the request's
// own buffer and signal it; each connection's thread formats and writes, so
// a slow client never blocks the engine. While a connection waits for text
// it polls its socket: a client that went away has its engine request
// cancelled (its slot freed) within ~20 ms.
#ifndef NC_SERVE_SERVER_H
#define NC_SERVE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "serve/api.h"
#include "support/status.h"

typedef struct {
  const char *host;     // IPv4 address to bind; default "127.0.0.1"
  int port;             // default 8000; 0 = any free port (see nc_server_port)
  size_t max_body;      // request bodies above this get 413; default 1 MiB
  int max_connections;  // default 256
  nc_api_limits limits;
  bool log;             // one line per completion on stderr
} nc_server_opts;
void nc_server_opts_default(nc_server_opts *o);

typedef struct nc_server nc_server;
// Starts serving e (which must outlive the server) in background threads.
nc_status nc_server_start(nc_engine *e, const nc_server_opts *o, nc_server **out);
int nc_server_port(const nc_server *s);
// Closes every connection (cancelling their requests), joins the threads.
void nc_server_stop(nc_server *s);

// The web UI page (serve/ui.html, turned into a C array at build time).
extern const char nc_serve_ui_html[];
extern const size_t nc_serve_ui_html_len;

#endif
