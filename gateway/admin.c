/* Admin listener. See admin.h. */
#include "gateway/admin.h"

#include <llhttp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/addr.h"
#include "tunnel/log.h"

#define ADMIN_REQUEST_MAX 8192
#define ADMIN_TIMEOUT_MS 10000

struct gw_admin {
  uv_tcp_t tcp;
  struct sockaddr_storage bound;
  gw_admin_status_fn status;
  void *status_arg;
  unsigned conns;        /* open connections */
  bool listener_closed;  /* its close callback ran */
};

typedef struct admin_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write_req;
  gw_admin *admin;
  llhttp_t parser;
  char path[256];
  size_t path_len;
  size_t bytes;
  bool done;
  int handles;
  char *response;
} admin_conn;

/* The admin object goes once its listener and every connection are closed. */
static void maybe_free_admin(gw_admin *a) {
  if (a->listener_closed && a->conns == 0)
    free(a);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  admin_conn *c = h->data;
  if (--c->handles > 0)
    return;
  gw_admin *a = c->admin;
  free(c->response);
  free(c);
  a->conns--;
  maybe_free_admin(a);
}

static void conn_close(admin_conn *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_written(uv_write_t *req, int status) { conn_close(req->data); }

static const char *reason_phrase(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 431: return "Request Header Fields Too Large";
  default: return "Internal Server Error";
  }
}

static void respond(admin_conn *c, int status, const char *type, const char *body) {
  size_t blen = strlen(body);
  size_t cap = blen + 256;
  c->response = malloc(cap);
  if (!c->response)
    return conn_close(c);
  int n = snprintf(c->response, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n%s",
                   status, reason_phrase(status), type, blen,
                   status == 405 ? "Allow: GET\r\n" : "", body);
  uv_buf_t b = uv_buf_init(c->response, (unsigned)n);
  c->write_req.data = c;
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
    conn_close(c);
}

static void respond_status(admin_conn *c) {
  json_t *doc = c->admin->status(c->admin->status_arg);
  char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (!body)
    return respond(c, 500, "text/plain", "status unavailable\n");
  size_t len = strlen(body);
  char *nl = realloc(body, len + 2);
  if (nl) {
    body = nl;
    memcpy(body + len, "\n", 2);
  }
  respond(c, 200, "application/json", body);
  free(body);
}

static void route(admin_conn *c) {
  int method = llhttp_get_method(&c->parser);
  c->path[c->path_len] = '\0';
  char *q = strchr(c->path, '?');
  if (q)
    *q = '\0';
  bool known = strcmp(c->path, "/healthz") == 0 || strcmp(c->path, "/status") == 0;
  if (!known)
    return respond(c, 404, "text/plain", "not found\n");
  if (method != HTTP_GET && method != HTTP_HEAD)
    return respond(c, 405, "text/plain", "method not allowed\n");
  if (strcmp(c->path, "/healthz") == 0)
    return respond(c, 200, "text/plain", "ok\n");
  respond_status(c);
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  admin_conn *c = p->data;
  if (len > sizeof(c->path) - 1 - c->path_len)
    return -1;
  memcpy(c->path + c->path_len, at, len);
  c->path_len += len;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  ((admin_conn *)p->data)->done = true;
  return HPE_PAUSED;
}

static const llhttp_settings_t admin_settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[4096]; /* one loop thread; consumed before the next read */
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  admin_conn *c = s->data;
  if (nread < 0)
    return conn_close(c);
  if (nread == 0 || c->done)
    return;
  c->bytes += (size_t)nread;
  llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
  if (c->done)
    route(c);
  else if (err != HPE_OK)
    respond(c, 400, "text/plain", "bad request\n");
  else if (c->bytes > ADMIN_REQUEST_MAX)
    respond(c, 431, "text/plain", "request too large\n");
}

static void on_timeout(uv_timer_t *t) {
  admin_conn *c = t->data;
  if (!c->done)
    respond(c, 408, "text/plain", "request timeout\n");
}

static void on_connection(uv_stream_t *server, int status) {
  gw_admin *a = server->data;
  if (status < 0)
    return;
  admin_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return;
  c->admin = a;
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  a->conns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0)
    return conn_close(c);
  llhttp_init(&c->parser, HTTP_REQUEST, &admin_settings);
  c->parser.data = c;
  uv_timer_start(&c->timer, on_timeout, ADMIN_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_listener_closed(uv_handle_t *h) {
  gw_admin *a = h->data;
  a->listener_closed = true;
  maybe_free_admin(a);
}

int gw_admin_start(uv_loop_t *loop, const struct sockaddr_storage *addr,
                   gw_admin_status_fn status, void *arg, gw_admin **out) {
  char text[TN_ADDRSTR_MAX];
  gw_admin *a = calloc(1, sizeof(*a));
  if (!a)
    return UV_ENOMEM;
  a->status = status;
  a->status_arg = arg;
  uv_tcp_init(loop, &a->tcp);
  a->tcp.data = a;
  int err = uv_tcp_bind(&a->tcp, (const struct sockaddr *)addr, 0);
  if (!err)
    err = uv_listen((uv_stream_t *)&a->tcp, 128, on_connection);
  if (err) {
    tn_addr_format((const struct sockaddr *)addr, text, sizeof(text));
    tn_log(TN_LOG_ERROR, "listen_failed", TN_S("kind", "admin"), TN_S("addr", text),
           TN_S("error", uv_strerror(err)), TN_LOG_END);
    uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
    return err;
  }
  int len = sizeof(a->bound);
  uv_tcp_getsockname(&a->tcp, (struct sockaddr *)&a->bound, &len);
  tn_addr_format((const struct sockaddr *)&a->bound, text, sizeof(text));
  tn_log(TN_LOG_INFO, "listening", TN_S("kind", "admin"), TN_S("addr", text), TN_LOG_END);
  *out = a;
  return 0;
}

int gw_admin_addr(const gw_admin *a, struct sockaddr_storage *out) {
  *out = a->bound;
  return 0;
}

void gw_admin_close(gw_admin *a) {
  uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
}
