/* The tunnel object: creation on accept, the single teardown path, error
 * responses and the access log. See internal.h for the life cycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/error.h"
#include "tunnel/internal.h"
#include "tunnel/log.h"

static uint64_t next_id = 1;

static const char *const result_names[TN_RESULT_COUNT_] = {
    [TN_RESULT_OK] = "ok",
    [TN_RESULT_BAD_REQUEST] = "bad_request",
    [TN_RESULT_DENIED] = "denied",
    [TN_RESULT_REFUSED_NOT_TLS] = "refused_not_tls",
    [TN_RESULT_CONNECT_FAILED] = "connect_failed",
    [TN_RESULT_TIMEOUT] = "timeout",
    [TN_RESULT_LIMIT] = "limit",
    [TN_RESULT_ERROR] = "error",
};

const char *tn_result_name(tn_result r) {
  return (r >= 0 && r < TN_RESULT_COUNT_) ? result_names[r] : "unknown";
}

static void free_setup(tn_tunnel *t) {
  tn_setup *s = t->setup;
  if (!s)
    return;
  if (s->ai_list)
    uv_freeaddrinfo(s->ai_list);
  free(s->pending);
  free(s);
  t->setup = NULL;
}

void tn__setup_free(tn_tunnel *t) { free_setup(t); }

/* Frees the tunnel once nothing refers to it any more: every handle closed
 * and no getaddrinfo outstanding (its callback still holds the pointer). */
static void maybe_free(tn_tunnel *t) {
  if (t->handles_open || t->gai_pending)
    return;
  tn_engine *e = t->engine;
  free_setup(t);
  free(t->target);
  free(t);
  tn__engine_tunnel_freed(e);
}

void tn__handle_closed(uv_handle_t *h) {
  tn_tunnel *t = h->data;
  t->handles_open--;
  maybe_free(t);
}

void tn__gai_done(tn_tunnel *t) {
  t->gai_pending = false;
  maybe_free(t);
}

tn_tunnel *tn__tunnel_new(tn_engine *e, uv_stream_t *server) {
  tn_tunnel *t = calloc(1, sizeof(*t));
  if (t)
    t->setup = calloc(1, sizeof(*t->setup));
  if (!t || !t->setup || uv_tcp_init(tn__loop(e), &t->down.tcp) != 0) {
    if (t)
      free(t->setup);
    free(t);
    tn__engine_tunnel_freed(e);
    return NULL;
  }
  t->engine = e;
  t->id = next_id++;
  t->down.tcp.data = t;
  t->down.open = true;
  t->handles_open = 1;
  t->started_ms = uv_now(tn__loop(e));
  t->last_activity_ms = t->started_ms;
  if (uv_accept(server, (uv_stream_t *)&t->down.tcp) != 0) {
    /* Nothing was logged or counted yet: close quietly. */
    t->phase = TN_PHASE_CLOSING;
    uv_close((uv_handle_t *)&t->down.tcp, tn__handle_closed);
    return NULL;
  }
  int len = sizeof(t->client);
  uv_tcp_getpeername(&t->down.tcp, (struct sockaddr *)&t->client, &len);
  return t;
}

void tn__side_close(tn_tunnel *t, tn_side *s, bool reset) {
  if (!s->open)
    return;
  s->open = false;
  /* An abortive close (RST) tells the peer the other side reset, instead of
   * a FIN that would look like a clean end of stream. */
  if (reset && !s->shut && uv_tcp_close_reset(&s->tcp, tn__handle_closed) == 0)
    return;
  uv_close((uv_handle_t *)&s->tcp, tn__handle_closed);
}

static void access_log(tn_tunnel *t) {
  char client[TN_ADDRSTR_MAX], connected[TN_ADDRSTR_MAX] = "";
  tn_engine *e = t->engine;
  if (tn_addr_format((const struct sockaddr *)&t->client, client, sizeof(client)) != 0)
    strcpy(client, "-");
  if (t->connected.sin6_family)
    tn_addr_format((const struct sockaddr *)&t->connected, connected, sizeof(connected));
  tn_log(t->result == TN_RESULT_OK ? TN_LOG_INFO : TN_LOG_WARN, "tunnel_closed",
         TN_U("id", t->id), TN_S("client", client), TN_S("target", t->target ? t->target : "-"),
         TN_S("connected", connected[0] ? connected : "-"),
         TN_S("result", tn_result_name(t->result)), TN_I("status", t->status),
         TN_S("close", t->close_reason ? t->close_reason : "-"), TN_U("bytes_up", t->bytes_up),
         TN_U("bytes_down", t->bytes_down),
         TN_U("duration_ms", uv_now(tn__loop(e)) - t->started_ms), TN_LOG_END);
}

void tn__tunnel_close(tn_tunnel *t, tn_result r, const char *reason) {
  if (t->phase == TN_PHASE_CLOSING)
    return;
  bool reset = reason && strncmp(reason, "reset", 5) == 0;
  /* An error status already chose the result; keep it. */
  if (t->phase != TN_PHASE_LINGER)
    t->result = r;
  if (!t->close_reason || t->phase != TN_PHASE_LINGER)
    t->close_reason = reason;
  t->phase = TN_PHASE_CLOSING;
  if (t->gai_pending)
    uv_cancel((uv_req_t *)&t->setup->gai);
  access_log(t);
  tn__engine_tunnel_done(t->engine, t);
  tn__side_close(t, &t->down, reset);
  tn__side_close(t, &t->up, reset);
  maybe_free(t);
}

static const char *status_text(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 431: return "Request Header Fields Too Large";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

typedef struct {
  uv_write_t req;
  char buf[512];
} fail_write;

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tn_tunnel *t = s->data;
  tn__buf_release(buf->base);
  if (nread < 0)
    tn__tunnel_close(t, t->result, t->close_reason);
}

static void on_fail_written(uv_write_t *req, int status) {
  fail_write *w = (fail_write *)req;
  tn_tunnel *t = req->data;
  free(w);
  if (status < 0 || t->phase != TN_PHASE_LINGER)
    return tn__tunnel_close(t, t->result, t->close_reason);
}

static void on_fail_shutdown(uv_shutdown_t *req, int status) {
  free(req);
}

/* Lingering close: send the response and a FIN, then read and discard what
 * the client still sends until it closes or TN_LINGER_MS passes. Closing with
 * unread bytes would make the kernel send a RST that can destroy the response
 * before the client reads it. */
void tn__tunnel_fail(tn_tunnel *t, tn_result r, int status, const char *reason) {
  if (t->phase == TN_PHASE_CLOSING || t->phase == TN_PHASE_LINGER)
    return;
  t->result = r;
  t->status = status;
  t->close_reason = reason;
  t->phase = TN_PHASE_LINGER;
  t->deadline_ms = uv_now(tn__loop(t->engine)) + TN_LINGER_MS;
  tn__list_move(t->engine, t, false);
  if (t->gai_pending)
    uv_cancel((uv_req_t *)&t->setup->gai);
  tn__side_close(t, &t->up, false);
  fail_write *w = malloc(sizeof(*w));
  uv_shutdown_t *sd = malloc(sizeof(*sd));
  if (!w || !sd) {
    free(w);
    free(sd);
    return tn__tunnel_close(t, r, reason);
  }
  int n = snprintf(w->buf, sizeof(w->buf),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "%sConnection: close\r\n\r\n%s\n",
                   status, status_text(status), strlen(reason) + 1,
                   status == 405 ? "Allow: CONNECT\r\n" : "", reason);
  uv_buf_t b = uv_buf_init(w->buf, (unsigned)n);
  w->req.data = t;
  uv_read_stop((uv_stream_t *)&t->down.tcp);
  if (uv_write(&w->req, (uv_stream_t *)&t->down.tcp, &b, 1, on_fail_written) != 0) {
    free(w);
    free(sd);
    return tn__tunnel_close(t, r, reason);
  }
  if (uv_shutdown(sd, (uv_stream_t *)&t->down.tcp, on_fail_shutdown) != 0)
    free(sd);
  uv_read_start((uv_stream_t *)&t->down.tcp, tn__alloc_cb, on_linger_read);
}

/* Called by the engine's sweep when deadline_ms has passed. */
void tn__tunnel_timeout(tn_tunnel *t) {
  switch (t->phase) {
  case TN_PHASE_HEADER:
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 408, "request header timeout");
    break;
  case TN_PHASE_RESOLVING:
  case TN_PHASE_CONNECTING:
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 504, "connect timeout");
    break;
  case TN_PHASE_RELAY:
    tn__tunnel_close(t, TN_RESULT_OK, "idle_timeout");
    break;
  case TN_PHASE_LINGER:
    tn__tunnel_close(t, t->result, t->close_reason);
    break;
  case TN_PHASE_CLOSING:
    break;
  }
}

bool tn__tunnel_admitted(const tn_tunnel *t) { return t->admitted; }

void tn__tunnel_info(const tn_tunnel *t, uint64_t now, tn_tunnel_info *info) {
  memset(info, 0, sizeof(*info));
  info->id = t->id;
  info->proto = "h1";
  info->listener = t->listener;
  info->client = (const struct sockaddr *)&t->client;
  info->target = t->target;
  info->connected = t->connected.sin6_family ? (const struct sockaddr *)&t->connected : NULL;
  info->established = t->phase == TN_PHASE_RELAY || (t->phase == TN_PHASE_CLOSING && t->status == 200);
  info->result = t->result;
  info->status = t->status;
  info->close_reason = t->close_reason;
  info->age_ms = now - t->started_ms;
  info->connect_ms = t->connect_ms;
  info->bytes_up = t->bytes_up;
  info->bytes_down = t->bytes_down;
}
