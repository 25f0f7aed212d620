/* Downstream connections: accept, admit, TLS handshake, protocol detection,
 * then hand-over to HTTP/1.1 (one tunnel) or HTTP/2 (a session). See
 * conn.h. Nothing is read from a client that `clients` does not admit. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/conn.h"
#include "tunnel/error.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

static void client_text(const tn_conn *c, char *buf, size_t len) {
  if (tn_addr_format((const struct sockaddr *)&c->client, buf, len) != 0)
    snprintf(buf, len, "-");
}

void tn__conn_abort(tn_conn *c, const char *reason) {
  if (c->mode == TN_CONN_CLOSING)
    return;
  c->mode = TN_CONN_CLOSING;
  tn__engine_conn_moved(c->engine, c);
  tn_log(tn__logger(c->engine), TN_LOG_DEBUG, "connection_closed", TN_S("reason", reason),
         TN_LOG_END);
  tn__ep_close(c->transport, false);
}

void tn__conn_timeout(tn_conn *c) {
  tn__conn_abort(c, c->mode == TN_CONN_LINGER ? "linger_timeout" : "setup_timeout");
}

void tn__conn_free(tn_conn *c) {
  tn__engine_conn_freed(c->engine, c);
  tn__ep_tls_free(c->tls);
  free(c->subject);
  free(c);
}

/* Detection chose the front end: it takes the connection over. */
static void hand_over(tn_conn *c, const tn_proto *p, const char *bytes, size_t n) {
  c->mode = TN_CONN_ACTIVE;
  tn__engine_conn_moved(c->engine, c);
  p->start(c, bytes, n);
}

/* The front end that bytes[0..len) select: the one whose preface they start
 * with (HTTP/2's h2c preface, RFC 9113 3.4), else the default (HTTP/1.1).
 * NULL with *wait set while they are still a proper prefix of a preface. */
static const tn_proto *pick_by_bytes(tn_conn *c, const char *bytes, size_t len, bool *wait) {
  size_t n;
  const tn_proto *const *p = tn__engine_protos(c->engine, &n);
  const tn_proto *fallback = NULL;
  *wait = false;
  for (size_t i = 0; i < n; i++) {
    const char *pre = p[i]->preface;
    if (!pre) {
      if (!p[i]->alpn)
        fallback = p[i];
      continue;
    }
    size_t plen = strlen(pre);
    if (memcmp(bytes, pre, len < plen ? len : plen) != 0)
      continue;
    *wait = len < plen;
    return *wait ? NULL : p[i];
  }
  return fallback;
}

/* The front end the negotiated ALPN protocol selects, or NULL. */
static const tn_proto *pick_by_alpn(tn_conn *c, const char *alpn) {
  size_t n;
  const tn_proto *const *p = tn__engine_protos(c->engine, &n);
  for (size_t i = 0; alpn && i < n; i++)
    if (p[i]->alpn && strcmp(alpn, p[i]->alpn) == 0)
      return p[i];
  return NULL;
}

/* First bytes: pick the front end. A short read that is still a prefix of a
 * preface waits for more. */
static void on_data(tn_ep *ep, char *base, tn_buf_kind kind, size_t n) {
  tn_conn *c = ep->owner;
  char *bytes = base;
  size_t len = n;
  char *merged = NULL;
  if (c->sniff_len) {
    if (!(merged = malloc(c->sniff_len + n))) {
      tn__buf_free(base, kind);
      tn__conn_abort(c, "out_of_memory");
      return;
    }
    memcpy(merged, c->sniff, c->sniff_len);
    memcpy(merged + c->sniff_len, base, n);
    bytes = merged;
    len = c->sniff_len + n;
  }
  bool wait;
  const tn_proto *p = pick_by_bytes(c, bytes, len, &wait);
  if (wait) {
    memcpy(c->sniff, bytes, len); /* len < a preface's length <= TN_SNIFF_MAX */
    c->sniff_len = len;
  } else {
    c->sniff_len = 0;
    if (p)
      hand_over(c, p, bytes, len);
    else
      tn__conn_abort(c, "no_protocol");
  }
  free(merged);
  tn__buf_free(base, kind);
}

static void on_ready(tn_ep *ep) {
  tn_conn *c = ep->owner;
  const char *alpn = tn__ep_tls_alpn(c->tls);
  c->subject = tn__ep_tls_subject(c->tls);
  if (tn_log_enabled(tn__logger(c->engine), TN_LOG_DEBUG)) {
    char client[TN_ADDRSTR_MAX];
    client_text(c, client, sizeof(client));
    tn_log(tn__logger(c->engine), TN_LOG_DEBUG, "tls_established", TN_S("client", client),
           TN_S("alpn", alpn ? alpn : "-"), TN_S("subject", c->subject ? c->subject : "-"),
           TN_LOG_END);
  }
  const tn_proto *p = pick_by_alpn(c, alpn);
  if (p) {
    hand_over(c, p, NULL, 0);
    return;
  }
  if (tn__ep_read_start(c->transport) != 0)
    tn__conn_abort(c, "read_failed");
}

static void on_eof(tn_ep *ep) { tn__conn_abort(ep->owner, "client_closed"); }

static void on_error(tn_ep *ep, int err) {
  tn_conn *c = ep->owner;
  if (err == TN_ETLS) {
    char client[TN_ADDRSTR_MAX];
    client_text(c, client, sizeof(client));
    const char *why = tn__ep_tls_error(c->tls);
    tn_log(tn__logger(c->engine), TN_LOG_WARN, "tls_handshake_failed", TN_S("client", client),
           TN_U("listener", c->listener), TN_S("reason", why ? why : "-"), TN_LOG_END);
  }
  tn__conn_abort(c, err == TN_ETLS ? "tls_failed" : uv_err_name(err));
}

static void on_closed(tn_ep *ep) { tn__conn_free(ep->owner); }
static void ignore(tn_ep *ep) {}

static const tn_ep_sink conn_sink = {
    .data = on_data,
    .eof = on_eof,
    .error = on_error,
    .drained = ignore,
    .shut = ignore,
    .closed = on_closed,
    .ready = on_ready,
};

static bool client_admitted(tn_engine *e, const tn_conn *c) {
  const tn_engine_opts *o = tn__opts(e);
  if (o->n_clients == 0)
    return true;
  for (size_t i = 0; i < o->n_clients; i++)
    if (tn_cidr_contains(&o->clients[i], (const struct sockaddr *)&c->client))
      return true;
  return false;
}

static void refuse_client(tn_conn *c) {
  char client[TN_ADDRSTR_MAX];
  client_text(c, client, sizeof(client));
  tn__count_refused_client(c->engine);
  tn_log(tn__logger(c->engine), TN_LOG_DEBUG, "client_refused", TN_S("client", client),
         TN_S("reason", "source address not in clients"), TN_LOG_END);
  c->mode = TN_CONN_CLOSING;
  tn__engine_conn_moved(c->engine, c);
  tn__ep_close(c->transport, true);
}

int tn__conn_accept(tn_engine *e, size_t listener, uv_stream_t *server, bool tls) {
  tn_conn *c = calloc(1, sizeof(*c));
  if (!c || tn__ep_tcp_init(&c->tcp, tn__loop(e), tn__bufpool(e), &conn_sink, c) != 0) {
    free(c);
    return UV_ENOMEM; /* the caller drops the pending connection */
  }
  c->engine = e;
  c->listener = listener;
  c->transport = &c->tcp.ep;
  tn__engine_conn_added(e, c);
  if (uv_accept(server, (uv_stream_t *)&c->tcp.tcp) != 0) {
    tn__conn_abort(c, "accept_failed");
    return 0;
  }
  int len = sizeof(c->client);
  uv_tcp_getpeername(&c->tcp.tcp, (struct sockaddr *)&c->client, &len);
  if (!client_admitted(e, c)) {
    refuse_client(c);
    return 0;
  }
  uint64_t ka = tn__opts(e)->downstream_keepalive_ms;
  if (ka) /* a device that drove away is noticed */
    uv_tcp_keepalive(&c->tcp.tcp, 1, (unsigned)((ka + 999) / 1000));
  if (tls) {
    c->tls = tn__ep_tls_new(&c->tcp, tn__tls_ctx(e), &conn_sink, c);
    if (!c->tls) {
      tn__conn_abort(c, "out_of_memory");
      return 0;
    }
    c->transport = tn__ep_tls_ep(c->tls);
  }
  int err = c->tls ? tn__ep_tls_start(c->tls) : tn__ep_read_start(c->transport);
  if (err != 0)
    tn__conn_abort(c, "read_failed");
  return 0;
}
