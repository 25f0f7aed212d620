/* Admin listener. See admin.h. */
#include "gateway/ops/admin.h"

#include "csc1/append.h"

#include <llhttp.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/log.h"
#include "tunnel/addr.h"
#include "tunnel/spare.h"

#define ADMIN_HEAD_MAX 8192
#define ADMIN_BODY_MAX 16384
#define ADMIN_TIMEOUT_MS 10000
#define ADMIN_HEADER_VALUE_MAX 1024

typedef struct route {
  char method[8];
  char *path;
  gw_admin_handler handler;
  void *arg;
  bool is_public; /* served without the admin token */
} route;

struct gw_admin {
  uv_tcp_t tcp;
  struct sockaddr_storage bound;
  route *routes;
  size_t n_routes;
  struct gw_admin_req *conns; /* open connections, for gw_admin_close */
  bool listener_closed;
  tn_spare spare;       /* drops a connection when memory is short */
  bool token_set;
  unsigned char token_hash[SHA256_DIGEST_LENGTH];
  uint64_t unauthorized;      /* 401s sent */
  uint64_t last_401_log_ms;
};

/* Kept request headers, by index. */
enum { H_AUTHORIZATION = 0, H_ACCEPT, H_HOST, H_CONTENT_TYPE, H_SEC_FETCH_SITE, H_COUNT_ };
static const char *const kept_headers[H_COUNT_] = {"authorization", "accept", "host",
                                                   "content-type", "sec-fetch-site"};

struct gw_admin_req {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write_req;
  gw_admin *admin;         /* NULL once the connection is closed */
  struct gw_admin_req *next, *prev;
  llhttp_t parser;
  struct sockaddr_storage peer;
  char target[512];
  size_t target_len;
  char field[32];
  size_t field_len;
  int cur_header;          /* kept header being read, or -1 */
  char *headers[H_COUNT_];
  char *body;
  size_t body_len;
  size_t head_bytes;
  char *query;             /* points into target */
  bool complete;           /* request parsed */
  bool pending;            /* handed to a handler, not yet answered */
  bool oom;                /* parsing stopped because memory ran out */
  int handles;             /* open uv handles */
  char *response;
};

/* ---- lifetime ---- */

static void maybe_free_admin(gw_admin *a) {
  if (!a->listener_closed || a->conns || a->spare.busy)
    return;
  for (size_t i = 0; i < a->n_routes; i++)
    free(a->routes[i].path);
  free(a->routes);
  free(a);
}

static void req_free(gw_admin_req *r) {
  for (int i = 0; i < H_COUNT_; i++)
    free(r->headers[i]);
  free(r->body);
  free(r->response);
  free(r);
}

static void unlink_conn(gw_admin_req *r) {
  gw_admin *a = r->admin;
  if (!a)
    return;
  if (r->prev)
    r->prev->next = r->next;
  else
    a->conns = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->admin = NULL;
  maybe_free_admin(a);
}

/* The request object outlives its connection while a handler holds it. */
static void on_req_handle_closed(uv_handle_t *h) {
  gw_admin_req *r = h->data;
  if (--r->handles > 0)
    return;
  unlink_conn(r);
  if (!r->pending)
    req_free(r);
}

static void conn_close(gw_admin_req *r) {
  if (uv_is_closing((uv_handle_t *)&r->tcp))
    return;
  uv_close((uv_handle_t *)&r->tcp, on_req_handle_closed);
  uv_close((uv_handle_t *)&r->timer, on_req_handle_closed);
}

/* ---- responses ---- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 200: return "OK";
  case 302: return "Found";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Content Too Large";
  case 415: return "Unsupported Media Type";
  case 431: return "Request Header Fields Too Large";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  default: return status < 500 ? "Error" : "Internal Server Error";
  }
}

static void on_written(uv_write_t *req, int status) { conn_close(req->data); }

void gw_admin_respond(gw_admin_req *r, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len) {
  r->pending = false;
  if (!r->handles) { /* the client left; the connection is already gone */
    req_free(r);
    return;
  }
  if (r->response || uv_is_closing((uv_handle_t *)&r->tcp))
    return;
  bool head = llhttp_get_method(&r->parser) == HTTP_HEAD;
  size_t cap = len + 512 + (extra_headers ? strlen(extra_headers) : 0);
  if (!(r->response = malloc(cap))) {
    conn_close(r);
    return;
  }
  int n = snprintf(r->response, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                   "%sConnection: close\r\n\r\n",
                   status, reason_phrase(status), content_type, len,
                   extra_headers ? extra_headers : "");
  if (!head && len) {
    memcpy(r->response + n, body, len);
    n += (int)len;
  }
  uv_buf_t b = uv_buf_init(r->response, (unsigned)n);
  r->write_req.data = r;
  uv_read_stop((uv_stream_t *)&r->tcp);
  if (uv_write(&r->write_req, (uv_stream_t *)&r->tcp, &b, 1, on_written) != 0)
    conn_close(r);
}

void gw_admin_respond_text(gw_admin_req *r, int status, const char *text) {
  gw_admin_respond(r, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

void gw_admin_respond_json(gw_admin_req *r, int status, json_t *doc) {
  char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (!body) {
    gw_admin_respond_text(r, 500, "internal error\n");
    return;
  }
  size_t len = strlen(body);
  char *grown = realloc(body, len + 2);
  if (grown) {
    body = grown;
    body[len++] = '\n';
    body[len] = '\0';
  }
  gw_admin_respond(r, status ? status : 200, "application/json", NULL, body, len);
  free(body);
}

/* ---- accessors ---- */

const char *gw_admin_req_path(const gw_admin_req *r) { return r->target; }
const char *gw_admin_req_query(const gw_admin_req *r) { return r->query ? r->query : ""; }
const char *gw_admin_req_method(const gw_admin_req *r) {
  return llhttp_method_name((llhttp_method_t)r->parser.method);
}
const struct sockaddr *gw_admin_req_peer(const gw_admin_req *r) {
  return (const struct sockaddr *)&r->peer;
}
bool gw_admin_req_alive(const gw_admin_req *r) {
  return r->handles && !uv_is_closing((const uv_handle_t *)&r->tcp);
}

const char *gw_admin_req_header(const gw_admin_req *r, const char *name) {
  for (int i = 0; i < H_COUNT_; i++)
    if (strcasecmp(name, kept_headers[i]) == 0)
      return r->headers[i];
  return NULL;
}

const char *gw_admin_req_body(const gw_admin_req *r, size_t *len) {
  if (len)
    *len = r->body_len;
  return r->body ? r->body : "";
}

/* ---- routing ---- */

static int add_route(gw_admin *a, const char *method, const char *path, gw_admin_handler h,
                     void *arg, bool is_public) {
  route *grown = realloc(a->routes, (a->n_routes + 1) * sizeof(*grown));
  if (!grown)
    return UV_ENOMEM;
  a->routes = grown;
  route *rt = &a->routes[a->n_routes];
  memset(rt, 0, sizeof(*rt));
  snprintf(rt->method, sizeof(rt->method), "%s", method);
  if (!(rt->path = strdup(path)))
    return UV_ENOMEM;
  rt->handler = h;
  rt->arg = arg;
  rt->is_public = is_public;
  a->n_routes++;
  return 0;
}

int gw_admin_route(gw_admin *a, const char *method, const char *path, gw_admin_handler h,
                   void *arg) {
  return add_route(a, method, path, h, arg, false);
}

int gw_admin_route_public(gw_admin *a, const char *method, const char *path,
                          gw_admin_handler h, void *arg) {
  return add_route(a, method, path, h, arg, true);
}

int gw_admin_set_token(gw_admin *a, const char *token) {
  a->token_set = token != NULL;
  if (token)
    SHA256((const unsigned char *)token, strlen(token), a->token_hash);
  else
    memset(a->token_hash, 0, sizeof(a->token_hash));
  return 0;
}

/* Whether the request carries the admin token. Both sides are hashed first,
 * so the comparison takes the same time whatever the length or content of
 * the presented value. */
static bool authorized(const gw_admin_req *r) {
  const gw_admin *a = r->admin;
  const char *h = r->headers[H_AUTHORIZATION];
  if (!a->token_set)
    return true;
  if (!h || strncasecmp(h, "Bearer ", 7) != 0)
    return false;
  h += 7;
  while (*h == ' ')
    h++;
  size_t n = strlen(h);
  while (n > 0 && h[n - 1] == ' ')
    n--;
  unsigned char got[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)h, n, got);
  return CRYPTO_memcmp(got, a->token_hash, sizeof(got)) == 0;
}

/* 401, logged at most once a second (peer and path only, never the header). */
static void unauthorized(gw_admin_req *r) {
  gw_admin *a = r->admin;
  uint64_t now = uv_now(r->tcp.loop);
  a->unauthorized++;
  if (a->unauthorized == 1 || now - a->last_401_log_ms >= 1000) {
    char peer[TN_ADDRSTR_MAX];
    if (tn_addr_format((const struct sockaddr *)&r->peer, peer, sizeof(peer)) != 0)
      strcpy(peer, "-");
    a->last_401_log_ms = now;
    gw_log(TN_LOG_WARN, "admin_unauthorized", TN_S("peer", peer), TN_S("path", r->target),
           TN_S("auth", r->headers[H_AUTHORIZATION] ? "wrong token" : "no token"),
           TN_U("unauthorized_total", a->unauthorized), TN_LOG_END);
  }
  static const char body[] = "admin token required: Authorization: Bearer <token>\n";
  gw_admin_respond(r, 401, "text/plain; charset=utf-8",
                   "WWW-Authenticate: Bearer realm=\"mcgw admin\"\r\n", body, sizeof(body) - 1);
}

static void dispatch(gw_admin_req *r) {
  gw_admin *a = r->admin;
  const char *method = gw_admin_req_method(r);
  if (strcmp(method, "HEAD") == 0)
    method = "GET";
  bool path_known = false;
  bool is_public = false;
  for (size_t i = 0; i < a->n_routes; i++)
    if (strcmp(a->routes[i].path, r->target) == 0 && a->routes[i].is_public)
      is_public = true;
  if (!is_public && !authorized(r)) {
    unauthorized(r);
    return;
  }
  for (size_t i = 0; i < a->n_routes; i++) {
    route *rt = &a->routes[i];
    if (strcmp(rt->path, r->target) != 0)
      continue;
    path_known = true;
    if (strcmp(rt->method, method) == 0) {
      r->pending = true;
      rt->handler(r, rt->arg);
      return;
    }
  }
  if (path_known)
    gw_admin_respond(r, 405, "text/plain", "Allow: GET, POST\r\n", "method not allowed\n", 19);
  else
    gw_admin_respond_text(r, 404, "not found\n");
}

bool gw_admin_req_is_json(const gw_admin_req *r) {
  const char *ct = r->headers[H_CONTENT_TYPE];
  static const char json[] = "application/json";
  if (!ct)
    return false;
  while (*ct == ' ' || *ct == '\t')
    ct++;
  if (strncasecmp(ct, json, sizeof json - 1) != 0)
    return false;
  ct += sizeof json - 1;
  while (*ct == ' ' || *ct == '\t')
    ct++;
  return *ct == '\0' || *ct == ';';
}

bool gw_admin_req_from_another_site(const gw_admin_req *r) {
  const char *s = r->headers[H_SEC_FETCH_SITE];
  return s && strcasecmp(s, "same-origin") != 0 && strcasecmp(s, "none") != 0;
}

static void healthz(gw_admin_req *r, void *arg) { gw_admin_respond_text(r, 200, "ok\n"); }

/* ---- parsing ---- */

static gw_admin_req *req_of(llhttp_t *p) { return p->data; }

static int on_url(llhttp_t *p, const char *at, size_t len) {
  gw_admin_req *r = req_of(p);
  if (len > sizeof(r->target) - 1 - r->target_len)
    return -1;
  memcpy(r->target + r->target_len, at, len);
  r->target_len += len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  gw_admin_req *r = req_of(p);
  size_t room = sizeof(r->field) - 1 - r->field_len;
  len = len < room ? len : room;
  memcpy(r->field + r->field_len, at, len);
  r->field_len += len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  gw_admin_req *r = req_of(p);
  r->field[r->field_len] = '\0';
  r->field_len = 0;
  r->cur_header = -1;
  for (int i = 0; i < H_COUNT_; i++)
    if (strcasecmp(r->field, kept_headers[i]) == 0 && !r->headers[i])
      r->cur_header = i;
  return 0;
}

/* A parser callback's answer to csc1_append: stop on failure, and remember
 * when it was our memory, not the client's request, that ran out. */
static int appended(gw_admin_req *r, int rc) {
  r->oom |= rc == CSC1_APPEND_NOMEM;
  return rc == CSC1_APPEND_OK ? 0 : -1;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  gw_admin_req *r = req_of(p);
  if (r->cur_header < 0)
    return 0;
  char **v = &r->headers[r->cur_header];
  size_t have = *v ? strlen(*v) : 0;
  return appended(r, csc1_append(v, &have, at, len, ADMIN_HEADER_VALUE_MAX));
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  gw_admin_req *r = req_of(p);
  return appended(r, csc1_append(&r->body, &r->body_len, at, len, ADMIN_BODY_MAX));
}

static int on_message_complete(llhttp_t *p) {
  gw_admin_req *r = req_of(p);
  r->complete = true;
  r->target[r->target_len] = '\0';
  char *q = strchr(r->target, '?');
  if (q) {
    *q = '\0';
    r->query = q + 1;
  }
  return HPE_PAUSED;
}

static const llhttp_settings_t admin_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[4096]; /* one loop thread; consumed before the next read */
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  gw_admin_req *r = s->data;
  if (nread < 0) {
    conn_close(r);
    return;
  }
  if (nread == 0 || r->complete)
    return;
  r->head_bytes += (size_t)nread;
  llhttp_errno_t err = llhttp_execute(&r->parser, buf->base, (size_t)nread);
  if (r->complete) {
    uv_read_stop(s);
    uv_timer_stop(&r->timer);
    dispatch(r);
  } else if (err != HPE_OK && r->oom) {
    gw_admin_respond_text(r, 503, "out of memory, try again\n"); /* ours, not the client's */
  } else if (err != HPE_OK) {
    gw_admin_respond_text(r, 400, "bad request\n");
  } else if (r->head_bytes > ADMIN_HEAD_MAX + ADMIN_BODY_MAX) {
    gw_admin_respond_text(r, 431, "request too large\n");
  }
}

static void on_timeout(uv_timer_t *t) {
  gw_admin_req *r = t->data;
  if (!r->complete)
    gw_admin_respond_text(r, 408, "request timeout\n");
}

static void on_connection(uv_stream_t *server, int status) {
  gw_admin *a = server->data;
  if (status < 0)
    return;
  gw_admin_req *r = calloc(1, sizeof(*r));
  if (!r) {
    tn_spare_drop(&a->spare); /* else libuv would never accept again */
    return;
  }
  r->admin = a;
  r->cur_header = -1;
  r->next = a->conns;
  if (a->conns)
    a->conns->prev = r;
  a->conns = r;
  uv_tcp_init(server->loop, &r->tcp);
  uv_timer_init(server->loop, &r->timer);
  r->tcp.data = r->timer.data = r;
  r->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&r->tcp) != 0) {
    conn_close(r);
    return;
  }
  int len = sizeof(r->peer);
  uv_tcp_getpeername(&r->tcp, (struct sockaddr *)&r->peer, &len);
  llhttp_init(&r->parser, HTTP_REQUEST, &admin_settings);
  r->parser.data = r;
  uv_timer_start(&r->timer, on_timeout, ADMIN_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
}

/* ---- listener ---- */

static void on_spare_idle(tn_spare *s) { maybe_free_admin(s->data); }

static void on_listener_closed(uv_handle_t *h) {
  gw_admin *a = h->data;
  a->listener_closed = true;
  maybe_free_admin(a);
}

int gw_admin_start(uv_loop_t *loop, const struct sockaddr_storage *addr, gw_admin **out) {
  char text[TN_ADDRSTR_MAX];
  gw_admin *a = calloc(1, sizeof(*a));
  if (!a)
    return UV_ENOMEM;
  uv_tcp_init(loop, &a->tcp);
  tn_spare_init(&a->spare, (uv_stream_t *)&a->tcp, on_spare_idle, a);
  a->tcp.data = a;
  int err = gw_admin_route_public(a, "GET", "/healthz", healthz, NULL);
  if (!err)
    err = uv_tcp_bind(&a->tcp, (const struct sockaddr *)addr, 0);
  if (!err)
    err = uv_listen((uv_stream_t *)&a->tcp, 128, on_connection);
  if (err) {
    tn_addr_format((const struct sockaddr *)addr, text, sizeof(text));
    gw_log(TN_LOG_ERROR, "listen_failed", TN_S("kind", "admin"), TN_S("addr", text),
           TN_S("error", uv_strerror(err)), TN_LOG_END);
    uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
    return err;
  }
  int len = sizeof(a->bound);
  uv_tcp_getsockname(&a->tcp, (struct sockaddr *)&a->bound, &len);
  tn_addr_format((const struct sockaddr *)&a->bound, text, sizeof(text));
  gw_log(TN_LOG_INFO, "listening", TN_S("kind", "admin"), TN_S("addr", text), TN_LOG_END);
  *out = a;
  return 0;
}

int gw_admin_addr(const gw_admin *a, struct sockaddr_storage *out) {
  *out = a->bound;
  return 0;
}

void gw_admin_close(gw_admin *a) {
  for (gw_admin_req *r = a->conns; r; r = r->next)
    conn_close(r);
  uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
}
