/* HTTP/1.1 CONNECT front end: parses one request head with llhttp and hands
 * the target to tn__tunnel_request; other methods get 405, malformed heads
 * 400, heads over TN_HEADER_MAX 431. Bytes that follow the head in the same
 * read (a ClientHello sent without waiting for the 200) are held and
 * relayed. Errors are answered with a lingering close.
 * CONNECT-UDP (RFC 9298 3.2): GET with Connection: Upgrade and Upgrade:
 * connect-udp goes to tn__tunnel_request_udp and is answered 101; the
 * capsules follow on the connection's byte stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tunnel/conn.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

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

/* Appends at[0..len) to buf (cap bytes, *n used); past cap, *n becomes
 * cap + 1 for good: too long to be any value looked for. */
static void collect(char *buf, size_t cap, uint8_t *n, const char *at, size_t len) {
  if (*n > cap)
    return;
  if (len > cap - *n) {
    *n = (uint8_t)(cap + 1);
    return;
  }
  memcpy(buf + *n, at, len);
  *n = (uint8_t)(*n + len);
}

static bool collected(const char *buf, uint8_t n, const char *want) {
  return n == strlen(want) && strncasecmp(buf, want, n) == 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  tn_setup *s = ((tn_tunnel *)p->data)->setup;
  collect(s->field, sizeof(s->field), &s->field_len, at, len);
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  tn_setup *s = ((tn_tunnel *)p->data)->setup;
  s->in_upgrade = collected(s->field, s->field_len, "upgrade");
  s->field_len = 0;
  s->value_len = 0;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  tn_setup *s = ((tn_tunnel *)p->data)->setup;
  if (s->in_upgrade)
    collect(s->value, sizeof(s->value), &s->value_len, at, len);
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  tn_setup *s = ((tn_tunnel *)p->data)->setup;
  if (s->in_upgrade)
    s->upgrade_udp = collected(s->value, s->value_len, "connect-udp");
  s->in_upgrade = false;
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
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
};

/* GET with Connection: Upgrade (llhttp's upgrade flag) and Upgrade:
 * connect-udp. */
static bool is_connect_udp(tn_setup *s) {
  return llhttp_get_method(&s->parser) == HTTP_GET && llhttp_get_upgrade(&s->parser) &&
         s->upgrade_udp;
}

/* The request head is complete; rest is what followed it in the same read. */
static void on_request(tn_tunnel *t, const char *rest, size_t rest_len) {
  tn_setup *s = t->setup;
  bool udp = is_connect_udp(s);
  if (llhttp_get_method(&s->parser) != HTTP_CONNECT && !udp) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 405,
                    "only CONNECT is supported: this is a tunnel gateway, not a web proxy");
    return;
  }
  if (s->target_overflow) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, udp ? 404 : 400,
                    udp ? "not a CONNECT-UDP target: the path is too long"
                        : "bad CONNECT target: expected host:port or [v6]:port");
    return;
  }
  if (!tn__tunnel_hold(t, rest, rest_len)) {
    tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
    return;
  }
  if (udp)
    tn__tunnel_request_udp(t, s->target, s->target_len);
  else
    tn__tunnel_request(t, s->target, s->target_len);
}

/* Feeds bytes of the request head; never more than TN_HEADER_MAX in all. */
static void parse(tn_tunnel *t, const char *p, size_t n) {
  tn_setup *s = t->setup;
  size_t room = TN_HEADER_MAX - s->header_bytes;
  size_t feed = n < room ? n : room;
  llhttp_errno_t err = llhttp_execute(&s->parser, p, feed);
  s->header_bytes += feed;
  if (s->request_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&s->parser) - p);
    on_request(t, p + used, n - used);
  } else if (err != HPE_OK) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400, "malformed request");
  } else if (s->header_bytes >= TN_HEADER_MAX) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 431, "request header fields too large");
  }
}

static void h1_data(tn_tunnel *t, char *base, tn_buf_kind kind, size_t n) {
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  parse(t, base, n);
  tn__buf_free(base, kind);
}

/* The connection is one tunnel: feeds the first bytes (already read during
 * protocol detection) and keeps reading the head. */
static void h1_start(tn_conn *c, const char *first, size_t n) {
  tn_tunnel *t = tn__tunnel_new(c, &tn__proto_h1, c->transport);
  if (!t) {
    tn__conn_abort(c, "out_of_memory");
    return;
  }
  llhttp_init(&t->setup->parser, HTTP_REQUEST, &h1_settings);
  t->setup->parser.data = t;
  if (n)
    parse(t, first, n);
  if (t->phase == TN_PHASE_HEADER && tn__ep_read_start(t->down) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
}

static const char response_200[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
static const char response_101[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                   "Upgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n";

static int h1_established(tn_tunnel *t) {
  if (t->udp) {
    t->status = 101;
    return tn__ep_write(t->down, (char *)response_101, TN_BUF_STATIC, sizeof(response_101) - 1);
  }
  return tn__ep_write(t->down, (char *)response_200, TN_BUF_STATIC, sizeof(response_200) - 1);
}

static const char *status_text(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

/* Lingering close: send the response and a FIN, then read and discard what
 * the client still sends until it closes or TN_LINGER_MS passes (the data
 * sink drops bytes in LINGER). Closing with unread bytes would make the
 * kernel send a RST that can destroy the response before the client reads
 * it. */
static void h1_fail(tn_tunnel *t, int status, const char *reason) {
  t->phase = TN_PHASE_LINGER;
  t->deadline_ms = uv_now(tn__loop(t->engine)) + TN_LINGER_MS;
  tn__list_move(t->engine, t, false);
  char *buf = malloc(512);
  if (!buf) {
    tn__tunnel_close(t, t->result, reason, TN_CLOSE_FIN);
    return;
  }
  char retry[32] = "";
  if (t->retry_after_s)
    snprintf(retry, sizeof retry, "Retry-After: %u\r\n", (unsigned)t->retry_after_s);
  int n = snprintf(buf, 512,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "%s%sConnection: close\r\n\r\n%s\n",
                   status, status_text(status), strlen(reason) + 1,
                   status == 405 ? "Allow: CONNECT\r\n" : "", retry, reason);
  if (tn__ep_write(t->down, buf, TN_BUF_HEAP, (size_t)n) != 0 || tn__ep_shutdown(t->down) != 0 ||
      tn__ep_read_start(t->down) != 0)
    tn__tunnel_close(t, t->result, reason, TN_CLOSE_FIN);
}

static void h1_describe(const tn_tunnel *t, tn_tunnel_info *info) {
  (void)t;
  info->proto = tn__proto_h1.name;
}

const tn_proto tn__proto_h1 = {
    .name = "h1",
    .stats_index = 0,
    .tunnel_owns_conn = true,
    .eof_cancels_setup = true,
    .may_splice = true,
    .alpn = NULL,     /* "http/1.1", or none: the default */
    .preface = NULL,
    .start = h1_start,
    .data = h1_data,
    .established = h1_established,
    .fail = h1_fail,
    .drain = NULL, /* tunnels still reading their head are closed by the engine */
    .describe = h1_describe,
};
