/* The tunnel object: creation, the request checks shared by HTTP/1.1 and
 * HTTP/2, the single teardown path, and the access log.
 * See lifecycle.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/conn.h"
#include "tunnel/error.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"
#include "tunnel/udp_target.h"

static const char *const result_names[TN_RESULT_COUNT_] = {
    [TN_RESULT_OK] = "ok",
    [TN_RESULT_BAD_REQUEST] = "bad_request",
    [TN_RESULT_DENIED] = "denied",
    [TN_RESULT_REFUSED_NOT_TLS] = "refused_not_tls",
    [TN_RESULT_CONNECT_FAILED] = "connect_failed",
    [TN_RESULT_TIMEOUT] = "timeout",
    [TN_RESULT_LIMIT] = "limit",
    [TN_RESULT_ERROR] = "error",
    [TN_RESULT_RATE_LIMITED] = "rate_limited",
    [TN_RESULT_CANCELLED] = "cancelled",
};

const char *tn_result_name(tn_result r) {
  return (r >= 0 && r < TN_RESULT_COUNT_) ? result_names[r] : "unknown";
}

void tn__setup_free(tn_tunnel *t) {
  tn_setup *s = t->setup;
  if (!s)
    return;
  tn__connect_stop(t);
  free(s->pending);
  free(s);
  t->setup = NULL;
}

/* Frees the tunnel once nothing refers to it any more: both endpoints
 * reported closed. An HTTP/1.1 tunnel takes its connection with it. */
static void maybe_free(tn_tunnel *t) {
  if (t->phase != TN_PHASE_CLOSING || t->eps_open || t->busy)
    return;
  tn_engine *e = t->engine;
  tn_conn *c = t->proto->tunnel_owns_conn ? t->conn : NULL;
  tn__setup_free(t);
  free(t->target);
  free(t);
  if (c)
    tn__conn_free(c);
  tn__engine_tunnel_freed(e);
}

void tn__tunnel_ep_closed(tn_tunnel *t) {
  t->eps_open--;
  maybe_free(t);
}

tn_tunnel *tn__tunnel_new(tn_conn *c, const tn_proto *proto, tn_ep *down) {
  tn_tunnel *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  if (!(t->setup = calloc(1, sizeof(*t->setup)))) {
    free(t);
    return NULL;
  }
  tn_engine *e = c->engine;
  t->engine = e;
  t->conn = c;
  t->proto = proto;
  t->down = down;
  t->eps_open = 1;
  tn__ep_set_sink(down, &tn__down_sink, t);
  t->started_ms = t->last_activity_ms = uv_now(tn__loop(e));
  t->deadline_ms = t->started_ms + tn__opts(e)->header_timeout_ms;
  tn__engine_tunnel_added(e, t);
  return t;
}

bool tn__tunnel_hold(tn_tunnel *t, const char *p, size_t n) {
  tn_setup *s = t->setup;
  if (n == 0)
    return true;
  if (!s || s->pending_len + n > TN_PENDING_MAX)
    return false;
  char *grown = realloc(s->pending, s->pending_len + n);
  if (!grown)
    return false;
  memcpy(grown + s->pending_len, p, n);
  s->pending = grown;
  s->pending_len += n;
  return true;
}

static void log_refusal(tn_tunnel *t, const char *why) {
  tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id),
         TN_S("reason", why), TN_S("target", t->target ? t->target : "-"), TN_LOG_END);
}

/* Whole seconds for Retry-After (RFC 9110 10.2.3), at least 1. */
static uint32_t retry_after(uint64_t wait_ms) {
  uint64_t s = (wait_ms + 999) / 1000;
  return s < 1 ? 1 : s > 3600 ? 3600 : (uint32_t)s;
}

/* Parses a CONNECT authority into t->setup->auth. */
static bool parse_target(tn_tunnel *t, const char *authority, size_t len) {
  tn_setup *s = t->setup;
  if (tn_authority_parse(authority, len, &s->auth) != 0) {
    /* Logged as received (the logger escapes it) so operators see what a
     * device asked for; it is the request target, never payload. */
    char raw[TN_HOST_MAX + 16];
    snprintf(raw, sizeof(raw), "%.*s", (int)(len < sizeof(raw) - 1 ? len : sizeof(raw) - 1),
             authority);
    tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id),
           TN_S("reason", "bad authority"), TN_S("raw_target", raw), TN_LOG_END);
    return false;
  }
  return true;
}

static bool set_target_text(tn_tunnel *t) {
  char buf[TN_HOST_MAX + 16];
  tn_authority_format(&t->setup->auth, buf, sizeof(buf));
  t->target = strdup(buf);
  if (!t->target)
    tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
  return t->target != NULL;
}

/* The first allow rule of the tunnel's kind that matches, or NULL. */
static const tn_rule *matching_rule(tn_tunnel *t, bool authorized) {
  const tn_policy *p = &tn__opts(t->engine)->policy;
  return t->udp ? tn_policy_match_udp(p, &t->setup->auth, authorized)
                : tn_policy_match(p, &t->setup->auth, authorized);
}

static bool needs_authorization(tn_tunnel *t) {
  const tn_policy *p = &tn__opts(t->engine)->policy;
  return t->udp ? tn_policy_needs_udp_authorization(p, &t->setup->auth)
                : tn_policy_needs_authorization(p, &t->setup->auth);
}

/* The checks every parsed request passes, TCP or UDP, in this order: the
 * client's rate, the allow rules of its kind, admission, the target's rate.
 * True when the request may go on; else it was refused. */
static bool request_checks(tn_tunnel *t) {
  tn_engine *e = t->engine;
  /* Every parsed request counts against the device's rate, whatever
   * becomes of it: a refused one costs no lookup and no connect. */
  uint64_t wait_ms = tn__rate_client(e, t);
  if (wait_ms) {
    t->retry_after_s = retry_after(wait_ms);
    log_refusal(t, "max_new_tunnels_per_client");
    tn__tunnel_fail(t, TN_RESULT_RATE_LIMITED, 429, "client_rate");
    return false;
  }
  const tn_engine_opts *o = tn__opts(e);
  const tn_rule *rule = matching_rule(t, tn__authorized(e));
  if (!rule) {
    /* The reason is the access log's `close` field and the 403 body. */
    if (needs_authorization(t)) {
      tn__tunnel_fail(t, TN_RESULT_DENIED, 403,
                      t->udp ? "target not allowed: limited service, the gateway is not "
                               "authorized (allow_udp_when_authorized)"
                             : "target not allowed: limited service, the gateway is not "
                               "authorized (allow_when_authorized)");
      return false;
    }
    log_refusal(t, "no allow rule matches");
    tn__tunnel_fail(t, TN_RESULT_DENIED, 403, "target not allowed");
    return false;
  }
  /* The rule's egress, else [tunnel] egress: copied, a reload may change them. */
  uint16_t eg = rule->egress ? rule->egress : o->default_egress;
  if (eg && eg <= o->n_egress) {
    t->setup->egress = o->egress[eg - 1];
    memcpy(t->egress, t->setup->egress.name, sizeof(t->egress));
  }
  if (!tn__admit(e, t)) {
    log_refusal(t, "tunnel limit reached");
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "tunnel limit reached");
    return false;
  }
  /* Last: only what would really go upstream counts against the target. */
  if ((wait_ms = tn__rate_target(e, t)) != 0) {
    t->retry_after_s = retry_after(wait_ms);
    log_refusal(t, "max_new_upstream_per_target");
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "target_rate");
    return false;
  }
  return true;
}

void tn__tunnel_request(tn_tunnel *t, const char *authority, size_t len) {
  tn_engine *e = t->engine;
  const tn_engine_opts *o = tn__opts(e);
  if (tn__draining(e)) {
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "gateway is shutting down");
    return;
  }
  if (!parse_target(t, authority, len)) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400,
                    "bad CONNECT target: expected host:port or [v6]:port");
    return;
  }
  if (!set_target_text(t) || !request_checks(t))
    return;
  tn_setup *s = t->setup;
  if (o->require_tls && !tn__tls_check(t, s->pending, s->pending_len)) {
    tn__tunnel_close(t, TN_RESULT_REFUSED_NOT_TLS, "not_tls", TN_CLOSE_FIN);
    return;
  }
  tn__connect_start(t);
}

void tn__tunnel_request_udp(tn_tunnel *t, const char *path, size_t len) {
  if (tn__udp_new(t) != 0) {
    tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
    return;
  }
  if (tn__draining(t->engine)) {
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "gateway is shutting down");
    return;
  }
  int err = tn_udp_target_parse(path, len, &t->setup->auth);
  if (err == TN_ENOENT) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 404,
                    "not a CONNECT-UDP target: expected "
                    "/.well-known/masque/udp/{target_host}/{target_port}/");
    return;
  }
  if (err != 0) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400, "bad CONNECT-UDP target host or port");
    return;
  }
  if (set_target_text(t) && request_checks(t))
    tn__connect_start(t); /* SRTP is not TLS: require_tls does not apply */
}

/* The addresses of a tunnel's log lines, "-" for those it has not got. */
typedef struct addrs_text {
  char client[TN_ADDRSTR_MAX], connected[TN_ADDRSTR_MAX], local[TN_ADDRSTR_MAX];
} addrs_text;

static void format_addr(const struct sockaddr_in6 *sa, char *buf) {
  if (!sa->sin6_family || tn_addr_format((const struct sockaddr *)sa, buf, TN_ADDRSTR_MAX) != 0)
    strcpy(buf, "-");
}

static void format_addrs(const tn_tunnel *t, addrs_text *out) {
  format_addr(&t->conn->client, out->client);
  format_addr(&t->connected, out->connected);
  format_addr(&t->local, out->local);
}

/* An established tunnel (TCP or UDP, after its 200 or 101), at info: every
 * field its access log line (tunnel_closed) already knows then, in the same
 * order, so a long-lived tunnel can be traced while it is open. What only
 * the end knows (result, close, bytes, datagrams, duration) is left out. */
void tn__tunnel_log_opened(tn_tunnel *t) {
  if (!tn_log_enabled(tn__logger(t->engine), TN_LOG_INFO))
    return;
  addrs_text a;
  format_addrs(t, &a);
  tn_log(tn__logger(t->engine), TN_LOG_INFO, "tunnel_opened", TN_U("id", t->id),
         TN_S("proto", t->proto->name), TN_S("type", t->udp ? "udp" : "tcp"),
         TN_S("client", a.client), TN_S("subject", t->conn->subject ? t->conn->subject : "-"),
         TN_S("target", t->target ? t->target : "-"), TN_S("connected", a.connected),
         TN_S("local", a.local), TN_S("egress", t->egress[0] ? t->egress : "-"),
         TN_I("status", t->status), TN_U("connect_ms", t->connect_ms), TN_LOG_END);
}

static void access_log(tn_tunnel *t) {
  tn_engine *e = t->engine;
  tn_log_level level = t->result == TN_RESULT_OK ? TN_LOG_INFO : TN_LOG_WARN;
  if (t->log_quiet || !tn_log_enabled(tn__logger(t->engine), level))
    return; /* a 429 its client's summary counts; or a line nobody will see */
  addrs_text a;
  format_addrs(t, &a);
  uint64_t dg_up, dg_down, dropped, icmp;
  tn__udp_counts(t, &dg_up, &dg_down, &dropped, &icmp);
  /* datagrams_*, dropped and icmp_unreachable are 0 on a TCP tunnel's line:
   * one record shape */
  tn_log(tn__logger(t->engine), level, "tunnel_closed", TN_U("id", t->id),
         TN_S("proto", t->proto->name), TN_S("type", t->udp ? "udp" : "tcp"),
         TN_S("client", a.client), TN_S("subject", t->conn->subject ? t->conn->subject : "-"),
         TN_S("target", t->target ? t->target : "-"), TN_S("connected", a.connected),
         TN_S("local", a.local), TN_S("egress", t->egress[0] ? t->egress : "-"),
         TN_S("result", tn_result_name(t->result)), TN_I("status", t->status),
         TN_S("close", t->close_reason ? t->close_reason : "-"), TN_U("bytes_up", t->bytes_up),
         TN_U("bytes_down", t->bytes_down), TN_U("datagrams_up", dg_up),
         TN_U("datagrams_down", dg_down), TN_U("dropped", dropped), TN_U("icmp_unreachable", icmp),
         TN_U("duration_ms", uv_now(tn__loop(e)) - t->started_ms), TN_LOG_END);
}

/* The engine's observer (tn_engine_on_close), right after the access log. */
static void notify_closed(tn_tunnel *t) {
  void *arg;
  tn_tunnel_cb cb = tn__engine_close_observer(t->engine, &arg);
  if (!cb)
    return;
  tn_tunnel_info info;
  tn__tunnel_info(t, uv_now(tn__loop(t->engine)), &info);
  cb(&info, arg);
}

void tn__tunnel_close(tn_tunnel *t, tn_result r, const char *reason, tn_close_how how) {
  if (t->phase == TN_PHASE_CLOSING)
    return;
  bool reset = how == TN_CLOSE_RESET;
  if (t->phase != TN_PHASE_LINGER) { /* an error status already chose them */
    t->result = r;
    t->close_reason = reason;
  }
  t->phase = TN_PHASE_CLOSING;
  tn__connect_stop(t);
  tn__udp_collect_drops(t);
  access_log(t);
  tn__engine_tunnel_done(t->engine, t);
  notify_closed(t);
  /* An endpoint may report closed from inside close(): hold the tunnel. */
  t->busy = true;
  tn__splice_stop(t); /* its duplicate descriptors first: the close below is the last */
  tn__ep_close(t->down, reset);
  if (t->up.open)
    tn__ep_close(&t->up.ep, reset);
  tn__udp_close(t);
  t->busy = false;
  maybe_free(t);
}

void tn__tunnel_fail(tn_tunnel *t, tn_result r, int status, const char *reason) {
  if (t->phase == TN_PHASE_CLOSING || t->phase == TN_PHASE_LINGER)
    return;
  t->result = r;
  t->status = status;
  t->close_reason = reason;
  tn__connect_stop(t);
  if (t->up.open)
    tn__ep_close(&t->up.ep, false);
  t->proto->fail(t, status, reason);
}

/* Called by the engine's sweep when deadline_ms has passed. */
void tn__tunnel_timeout(tn_tunnel *t) {
  switch (t->phase) {
  case TN_PHASE_HEADER:
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 408, "request header timeout");
    break;
  case TN_PHASE_CONNECTING:
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 504, "connect timeout");
    break;
  case TN_PHASE_RESOLVING: /* connect_timeout shorter than [dns] timeout x tries */
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 504, "dns_timeout");
    break;
  case TN_PHASE_RELAY:
    tn__tunnel_close(t, TN_RESULT_OK, "idle_timeout", TN_CLOSE_FIN);
    break;
  case TN_PHASE_LINGER:
    tn__tunnel_close(t, t->result, t->close_reason, TN_CLOSE_FIN);
    break;
  case TN_PHASE_CLOSING:
    break;
  }
}

void tn__tunnel_info(const tn_tunnel *t, uint64_t now, tn_tunnel_info *info) {
  memset(info, 0, sizeof(*info));
  info->id = t->id;
  info->listener = t->conn->listener;
  info->client = (const struct sockaddr *)&t->conn->client;
  info->client_subject = t->conn->subject;
  info->target = t->target;
  info->connected = t->connected.sin6_family ? (const struct sockaddr *)&t->connected : NULL;
  info->local = t->local.sin6_family ? (const struct sockaddr *)&t->local : NULL;
  info->egress = t->egress[0] ? t->egress : NULL;
  info->established = t->status == 200 || t->status == 101; /* 101: HTTP/1.1 CONNECT-UDP */
  info->result = t->result;
  info->status = t->status;
  info->close_reason = t->close_reason;
  info->age_ms = now - t->started_ms;
  info->connect_ms = t->connect_ms;
  info->bytes_up = t->bytes_up;
  info->bytes_down = t->bytes_down;
  info->udp = t->udp != NULL;
  uint64_t icmp;
  tn__udp_counts(t, &info->datagrams_up, &info->datagrams_down, &info->datagrams_dropped, &icmp);
  t->proto->describe(t, info);
}
