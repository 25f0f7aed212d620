/* The connector: resolves the target with the engine's resolver (on the
 * loop; a cached name answers at once), checks every address against
 * allow_private, and tries the addresses in order until one connects.
 * Outcomes: relay (success), 403 (every address refused by policy), 502
 * (every connect failed; dns_nxdomain, dns_error), 503 (out of
 * descriptors), 504 (dns_timeout; the engine's sweep, at connect_timeout). */
#include <stdlib.h>
#include <string.h>

#include "tunnel/error.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/service.h"

static void try_next(tn_tunnel *t);

static bool is_resource_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOMEM || err == UV_ENOBUFS;
}

/* The failed attempt's endpoint is closed: the next address may reuse it. */
void tn__connect_up_closed(tn_tunnel *t) {
  if (t->phase != TN_PHASE_CONNECTING) {
    tn__tunnel_ep_closed(t);
    return;
  }
  t->eps_open--;
  try_next(t);
}

static void connect_failed(tn_tunnel *t, int err) {
  char addr[TN_ADDRSTR_MAX];
  tn_addr_format((struct sockaddr *)&t->setup->connect_addr, addr, sizeof(addr));
  tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "connect_attempt_failed", TN_U("id", t->id),
         TN_S("addr", addr), TN_S("error", uv_err_name(err)), TN_LOG_END);
  t->setup->last_connect_err = err;
  tn__ep_close(&t->up.ep, false);
}

static void on_connected(uv_connect_t *req, int status) {
  tn_tunnel *t = tn__ep_tcp_of((uv_handle_t *)req->handle)->ep.owner;
  if (status == UV_ECANCELED || t->phase != TN_PHASE_CONNECTING)
    return;
  if (status < 0) {
    connect_failed(t, status);
    return;
  }
  memcpy(&t->connected, &t->setup->connect_addr, sizeof(t->connected));
  t->connect_ms = uv_now(tn__loop(t->engine)) - t->request_ms;
  tn__relay_start(t);
}

static unsigned addresses_left(const tn_setup *s) { return s->dns.answer.n - s->next_addr; }

/* With more addresses to try, an attempt gets its share of the time left
 * (at least 1 s), so a blackholed first address cannot use up
 * connect_timeout: the next one is still tried (RFC 8305's fallback, done
 * sequentially). The last attempt gets all that remains. */
static void set_attempt_deadline(tn_tunnel *t) {
  tn_setup *s = t->setup;
  uint64_t now = uv_now(tn__loop(t->engine));
  uint64_t left = s->connect_deadline_ms > now ? s->connect_deadline_ms - now : 0;
  unsigned more = addresses_left(s);
  uint64_t share = more ? left / (more + 1) : left;
  if (more && share < 1000)
    share = left < 1000 ? left : 1000;
  t->deadline_ms = now + share;
}

bool tn__connect_attempt_timeout(tn_tunnel *t) {
  tn_setup *s = t->setup;
  uint64_t now = uv_now(tn__loop(t->engine));
  if (t->phase != TN_PHASE_CONNECTING || !t->up.open || now >= s->connect_deadline_ms ||
      !addresses_left(s))
    return false;
  connect_failed(t, UV_ETIMEDOUT); /* closes the attempt; the next follows */
  return true;
}

static void connect_to(tn_tunnel *t) {
  tn_setup *s = t->setup;
  t->phase = TN_PHASE_CONNECTING;
  set_attempt_deadline(t);
  int err = tn__ep_tcp_init(&t->up, tn__loop(t->engine), tn__bufpool(t->engine), &tn__up_sink, t);
  if (err == 0) {
    t->eps_open++;
    err = uv_tcp_connect(&s->connect_req, &t->up.tcp, (struct sockaddr *)&s->connect_addr,
                         on_connected);
    if (err == 0) {
      /* Reading is started now, not in tn__relay_start: the socket is then
       * registered for EPOLLIN|EPOLLOUT in one epoll_ctl, and turned to
       * EPOLLIN by one more, where starting after the connect takes an ADD
       * that fails with EEXIST and a MOD. Nothing is read before
       * on_connected: while a connect is pending libuv reports only its
       * completion. A failure here shows again in tn__relay_start. */
      (void)tn__ep_read_start(&t->up.ep);
      return;
    }
  }
  if (is_resource_error(err)) {
    tn_log(tn__logger(t->engine), TN_LOG_WARN, "connect_resource_error", TN_U("id", t->id),
           TN_S("error", uv_err_name(err)), TN_LOG_END);
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "out of resources, try again later");
    return;
  }
  if (t->up.open) {
    connect_failed(t, err);
    return;
  }
  s->last_connect_err = err;
  try_next(t);
}

/* Next resolved address that policy allows; false when none is left. */
static bool pick_next(tn_tunnel *t) {
  tn_setup *s = t->setup;
  const tn_policy *pol = &tn__opts(t->engine)->policy;
  while (s->next_addr < s->dns.answer.n) {
    const tn_dns_addr *a = &s->dns.answer.addrs[s->next_addr++];
    if (!tn_policy_allows_addr(pol, &a->sa)) {
      s->addrs_denied++;
      continue;
    }
    memset(&s->connect_addr, 0, sizeof(s->connect_addr));
    memcpy(&s->connect_addr, a, a->sa.sa_family == AF_INET ? sizeof(a->in) : sizeof(a->in6));
    ((struct sockaddr_in *)&s->connect_addr)->sin_port = htons(s->auth.port);
    return true;
  }
  return false;
}

static void try_next(tn_tunnel *t) {
  tn_setup *s = t->setup;
  if (pick_next(t)) {
    connect_to(t);
    return;
  }
  if (s->last_connect_err == 0 && s->addrs_denied) {
    tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id),
           TN_S("reason", "destination address not allowed (allow_private = no)"),
           TN_S("target", t->target), TN_LOG_END);
    tn__tunnel_fail(t, TN_RESULT_DENIED, 403, "target not allowed");
    return;
  }
  tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "cannot connect to target");
}

/* A failed lookup's status and access-log close reason. */
static void resolve_failed(tn_tunnel *t, int err) {
  tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "resolve_failed", TN_U("id", t->id),
         TN_S("target", t->target), TN_S("error", tn_strerror(err)), TN_LOG_END);
  if (err == TN_EDNS_TIMEOUT)
    tn__tunnel_fail(t, TN_RESULT_TIMEOUT, 504, "dns_timeout");
  else if (err == TN_EDNS_NXDOMAIN)
    tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "dns_nxdomain");
  else
    tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "dns_error");
}

static void resolved(tn_tunnel *t) {
  if (t->setup->dns.status < 0) {
    resolve_failed(t, t->setup->dns.status);
    return;
  }
  t->setup->next_addr = 0;
  try_next(t);
}

static void on_resolved(tn_dns_req *req) {
  tn_tunnel *t = req->data;
  resolved(t);
}

/* An IP literal needs no resolver: a one-entry answer. */
static void literal_addr(tn_tunnel *t) {
  const tn_authority *a = &t->setup->auth;
  tn_dns_answer *ans = &t->setup->dns.answer;
  tn_dns_addr *d = &ans->addrs[0];
  memset(d, 0, sizeof(*d));
  ans->n = 1;
  t->setup->dns.status = 0;
  if (a->kind == TN_HOST_IPV4) {
    d->in.sin_family = AF_INET;
    d->in.sin_addr = a->ip.v4;
  } else {
    d->in6.sin6_family = AF_INET6;
    d->in6.sin6_addr = a->ip.v6;
  }
}

void tn__connect_start(tn_tunnel *t) {
  tn_setup *s = t->setup;
  tn_engine *e = t->engine;
  t->phase = TN_PHASE_RESOLVING;
  t->request_ms = uv_now(tn__loop(e));
  t->deadline_ms = t->request_ms + tn__opts(e)->connect_timeout_ms;
  s->connect_deadline_ms = t->deadline_ms;
  if (s->auth.kind != TN_HOST_NAME) {
    literal_addr(t);
    resolved(t);
    return;
  }
  s->dns.data = t;
  int rc = tn_resolver_lookup(tn__resolver(e), &s->dns, s->auth.host, on_resolved);
  if (rc < 0) {
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "resolver unavailable, try again later");
    return;
  }
  if (rc == 1) /* cached, /etc/hosts: no hop through the loop */
    resolved(t);
}
