/* HTTP/1.1 CONNECT front end: parses one request head with llhttp, then
 * decides: 405 for other methods, 400 for a bad authority, 403 when no allow
 * rule matches, 503 when a limit is reached, otherwise hands the tunnel to
 * the connector. Bytes that follow the request head in the same read (a
 * ClientHello sent without waiting for the 200) are kept and relayed. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"
#include "tunnel/log.h"

static int on_url(llhttp_t *p, const char *at, size_t len) {
  tn_setup *s = ((tn_tunnel *)p->data)->setup;
  if (len > sizeof(s->target) - 1 - s->target_len) {
    s->target_overflow = true;
    return 0;
  }
  memcpy(s->target + s->target_len, at, len);
  s->target_len += len;
  return 0;
}

/* Stop at the end of the head: whatever follows belongs to the tunnel (or,
 * for other methods, is never read). */
static int on_headers_complete(llhttp_t *p) {
  ((tn_tunnel *)p->data)->setup->request_done = true;
  return HPE_PAUSED;
}

static const llhttp_settings_t h1_settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

static bool keep_pending(tn_tunnel *t, const char *p, size_t n) {
  if (n == 0)
    return true;
  t->setup->pending = malloc(n);
  if (!t->setup->pending)
    return false;
  memcpy(t->setup->pending, p, n);
  t->setup->pending_len = n;
  return true;
}

static void log_refusal(tn_tunnel *t, const char *why) {
  tn_log(TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id), TN_S("reason", why),
         TN_S("target", t->target ? t->target : "-"), TN_LOG_END);
}

static char *format_target(const tn_authority *a) {
  char buf[TN_HOST_MAX + 16];
  tn_authority_format(a, buf, sizeof(buf));
  return strdup(buf);
}

/* The request head is complete: check it and start connecting. */
static void on_request(tn_tunnel *t, const char *rest, size_t rest_len) {
  tn_setup *s = t->setup;
  tn_engine *e = t->engine;
  const tn_engine_opts *o = tn__opts(e);
  if (llhttp_get_method(&s->parser) != HTTP_CONNECT)
    return tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 405,
                           "only CONNECT is supported: this is a tunnel gateway, not a web proxy");
  if (s->target_overflow || tn_authority_parse(s->target, s->target_len, &s->auth) != 0) {
    /* Logged as received (the logger escapes it) so operators see what a
     * device asked for; it is the request target, never payload. */
    s->target[s->target_len] = '\0';
    tn_log(TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id), TN_S("reason", "bad authority"),
           TN_S("raw_target", s->target), TN_LOG_END);
    return tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400,
                           "bad CONNECT target: expected host:port or [v6]:port");
  }
  t->target = format_target(&s->auth);
  if (!t->target)
    return tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
  if (!tn_policy_allows_target(&o->policy, &s->auth, tn__authorized(e))) {
    bool limited = tn_policy_needs_authorization(&o->policy, &s->auth);
    log_refusal(t, limited ? "limited service: target needs the gateway to be authorized"
                           : "no allow rule matches");
    return tn__tunnel_fail(t, TN_RESULT_DENIED, 403, "target not allowed");
  }
  if (!tn__admit(e, t))
    return tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "tunnel limit reached");
  if (!keep_pending(t, rest, rest_len))
    return tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
  if (o->require_tls && !tn__tls_check(t, rest, rest_len))
    return tn__tunnel_close(t, TN_RESULT_REFUSED_NOT_TLS, "not_tls");
  tn__connect_start(t);
}

static void on_header_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  tn_tunnel *t = stream->data;
  tn_setup *s = t->setup;
  if (nread <= 0) {
    tn__buf_release(buf->base);
    if (nread < 0)
      tn__tunnel_close(t, TN_RESULT_ERROR, "client_closed_during_request");
    return;
  }
  t->last_activity_ms = uv_now(stream->loop);
  size_t n = (size_t)nread, room = TN_HEADER_MAX - s->header_bytes;
  size_t feed = n < room ? n : room;
  llhttp_errno_t err = llhttp_execute(&s->parser, buf->base, feed);
  s->header_bytes += feed;
  if (s->request_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&s->parser) - buf->base);
    uv_read_stop(stream);
    on_request(t, buf->base + used, n - used);
  } else if (err != HPE_OK) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400, "malformed request");
  } else if (s->header_bytes >= TN_HEADER_MAX) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 431, "request header fields too large");
  }
  tn__buf_release(buf->base);
}

void tn__h1_start(tn_tunnel *t) {
  llhttp_init(&t->setup->parser, HTTP_REQUEST, &h1_settings);
  t->setup->parser.data = t;
  if (uv_read_start((uv_stream_t *)&t->down.tcp, tn__alloc_cb, on_header_read) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed");
  else
    t->down.reading = true;
}
