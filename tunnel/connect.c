/* The connector: resolves the target with the engine's resolver (on the
 * loop; a cached name answers at once), then races connection attempts
 * (Happy Eyeballs v2, RFC 8305): addresses in the resolver's order with
 * the families alternating, a new attempt every attempt_delay_ms (at once
 * when the last one failed), each address checked against allow_private
 * before it is tried. The first to connect wins; the others are closed.
 * connect_timeout bounds the whole race (the engine's sweep).
 *
 * Attempts are non-blocking sockets watched with uv_poll, so that each gets
 * its socket options (keepalive, TCP_USER_TIMEOUT) before connect; the
 * winner's socket becomes the tunnel's upstream endpoint (uv_tcp_open). The
 * attempts and the delay timer live in a tn_race that the tunnel lets go of
 * when it is done with it; the race frees itself once its handles closed.
 *
 * A CONNECT-UDP tunnel does not race: the first address policy allows
 * (never a broadcast one) gets its connected UDP socket (udp.c).
 *
 * Outcomes: relay (success), 403 (every address refused by policy), 502
 * (every attempt failed; dns_nxdomain, dns_error), 503 (out of
 * descriptors), 504 (dns_timeout; connect_timeout, from the sweep). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/he_order.h"
#include "tunnel/error.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/service.h"

#define RACE_MAX TN_DNS_ADDRS_MAX /* attempts in flight at once, at most */

typedef struct tn_attempt {
  uv_poll_t poll; /* first member: found from the handle */
  struct tn_race *race;
  int fd;           /* -1 once closed or handed to the tunnel */
  tn_dns_addr addr; /* with the port */
} tn_attempt;

typedef struct tn_race {
  tn_tunnel *t;     /* NULL once the tunnel let go */
  uv_timer_t delay; /* the next attempt's start */
  tn_attempt att[RACE_MAX];
  uint8_t order[TN_DNS_ADDRS_MAX]; /* answer indices, families alternating */
  uint8_t n_order, next;           /* addresses, next to try */
  unsigned live;                   /* attempts connecting */
  unsigned handles;                /* open handles (the timer, attempt polls) */
} tn_race;

static bool is_resource_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOMEM || err == UV_ENOBUFS;
}

/* The upstream endpoint reported closed (it exists only once relaying). */
void tn__connect_up_closed(tn_tunnel *t) { tn__tunnel_ep_closed(t); }

/* ---- the race's handles ---- */

static void race_handle_closed(uv_handle_t *h) {
  tn_race *r = h->data;
  if (--r->handles == 0)
    free(r);
}

static void attempt_close(tn_attempt *a) {
  tn_race *r = a->race;
  uv_close((uv_handle_t *)&a->poll, race_handle_closed);
  if (a->fd >= 0)
    close(a->fd);
  a->fd = -1;
  r->live--;
}

/* The tunnel lets go: every attempt and the timer close. */
static void race_release(tn_race *r) {
  r->t = NULL;
  for (size_t i = 0; i < RACE_MAX; i++)
    if (r->att[i].fd >= 0)
      attempt_close(&r->att[i]);
  uv_close((uv_handle_t *)&r->delay, race_handle_closed);
}

void tn__connect_stop(tn_tunnel *t) {
  if (!t->setup)
    return;
  tn_resolver_cancel(&t->setup->dns);
  if (t->setup->race) {
    race_release(t->setup->race);
    t->setup->race = NULL;
  }
}

/* ---- the order of attempts ---- */

/* The answer's order, families alternating (base/he_order.h). */
static void interleave(tn_race *r, const tn_dns_answer *a) {
  sa_family_t families[TN_DNS_ADDRS_MAX];
  size_t order[TN_DNS_ADDRS_MAX];
  for (uint8_t i = 0; i < a->n; i++)
    families[i] = a->addrs[i].sa.sa_family;
  base_he_order(families, a->n, order);
  for (uint8_t i = 0; i < a->n; i++)
    r->order[i] = (uint8_t)order[i];
  r->n_order = a->n;
}

/* ---- attempts ---- */

/* Keepalive and TCP_USER_TIMEOUT on an upstream socket: a dead uplink is
 * noticed in upstream_user_timeout, not the kernel's 15 minutes. */
static void set_upstream_options(int fd, const tn_engine_opts *o) {
  if (o->upstream_keepalive_ms) {
    int on = 1, idle = (int)((o->upstream_keepalive_ms + 999) / 1000),
        intvl = idle < 10 ? idle : 10;
    int cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  if (o->upstream_user_timeout_ms) {
    unsigned ms = o->upstream_user_timeout_ms > UINT32_MAX ? UINT32_MAX
                                                           : (unsigned)o->upstream_user_timeout_ms;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }
}

static void attempt_failed(tn_attempt *a, int err);
static void on_attempt(uv_poll_t *p, int status, int events);
static void try_next(tn_race *r);

/* The winner: its socket becomes the tunnel's upstream endpoint; the race
 * ends. */
static void won(tn_attempt *a) {
  tn_race *r = a->race;
  tn_tunnel *t = r->t;
  int fd = a->fd;
  a->fd = -1; /* the tunnel's now */
  uv_close((uv_handle_t *)&a->poll, race_handle_closed);
  r->live--;
  memcpy(&t->connected, &a->addr, sizeof(t->connected));
  socklen_t len = sizeof(t->local);
  if (getsockname(fd, (struct sockaddr *)&t->local, &len) != 0)
    memset(&t->local, 0, sizeof(t->local));
  tn__connect_stop(t);
  int err = tn__ep_tcp_init(&t->up, tn__loop(t->engine), tn__bufpool(t->engine), &tn__up_sink, t);
  if (err == 0) {
    t->eps_open++;
    err = uv_tcp_open(&t->up.tcp, fd);
    if (err == 0) {
      t->connect_ms = uv_now(tn__loop(t->engine)) - t->request_ms;
      tn__relay_start(t);
      return;
    }
    close(fd);
    tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "cannot connect to target");
    return;
  }
  close(fd);
  tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "out of resources, try again later");
}

static void log_failed(tn_tunnel *t, const tn_dns_addr *addr, int err) {
  char text[TN_ADDRSTR_MAX];
  tn_addr_format(&addr->sa, text, sizeof(text));
  tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "connect_attempt_failed", TN_U("id", t->id),
         TN_S("addr", text), TN_S("error", uv_err_name(err)), TN_LOG_END);
}

/* Opens a socket to addr and starts connecting: 0, or a negative error
 * (nothing left open). */
static int attempt_start(tn_race *r, tn_attempt *a, const tn_dns_addr *addr) {
  tn_tunnel *t = r->t;
  a->race = r;
  a->addr = *addr;
  a->addr.in.sin_port = htons(t->setup->auth.port);
  int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  set_upstream_options(fd, tn__opts(t->engine));
  int eerr = tn_egress_apply(fd, &t->setup->egress, addr->sa.sa_family);
  if (eerr) {
    close(fd);
    return eerr;
  }
  socklen_t len = addr->sa.sa_family == AF_INET ? sizeof(a->addr.in) : sizeof(a->addr.in6);
  if (connect(fd, &a->addr.sa, len) != 0 && errno != EINPROGRESS) {
    int err = -errno;
    close(fd);
    return err;
  }
  int err = uv_poll_init_socket(tn__loop(t->engine), &a->poll, fd);
  if (err) {
    close(fd);
    return err;
  }
  a->poll.data = r;
  a->fd = fd;
  r->handles++;
  r->live++;
  uv_poll_start(&a->poll, UV_WRITABLE, on_attempt);
  return 0;
}

static void on_attempt(uv_poll_t *p, int status, int events) {
  tn_attempt *a = (tn_attempt *)p;
  int err = 0;
  socklen_t len = sizeof(err);
  if (status < 0)
    err = status;
  else if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = -errno;
  else
    err = -err;
  if (err == 0)
    won(a);
  else
    attempt_failed(a, err);
}

static tn_attempt *free_slot(tn_race *r) {
  for (size_t i = 0; i < RACE_MAX; i++)
    if (r->att[i].race == NULL) /* never used: a slot per address */
      return &r->att[i];
  return NULL;
}

/* Every address tried (or refused) and none connecting: the outcome. */
static void no_address_left(tn_tunnel *t) {
  tn_setup *s = t->setup;
  if (s->last_connect_err == 0 && s->addrs_denied) {
    tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "tunnel_refused", TN_U("id", t->id),
           TN_S("reason", "destination address not allowed (allow_private = no)"),
           TN_S("target", t->target), TN_LOG_END);
    tn__tunnel_fail(t, TN_RESULT_DENIED, 403, "target not allowed");
    return;
  }
  tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "cannot connect to target");
}

static void on_delay(uv_timer_t *timer) { try_next((tn_race *)timer->data); }

/* Starts the next allowed address; then the delay timer for the one after.
 * Ends the race when nothing is left to try and nothing is connecting. */
static void try_next(tn_race *r) {
  tn_tunnel *t = r->t;
  tn_setup *s = t->setup;
  const tn_engine_opts *o = tn__opts(t->engine);
  while (r->next < r->n_order) {
    const tn_dns_addr *addr = &s->dns.answer.addrs[r->order[r->next++]];
    if (!tn_policy_allows_addr(&o->policy, &addr->sa)) {
      s->addrs_denied++;
      continue;
    }
    tn_attempt *a = free_slot(r);
    if (!a)
      break;
    int err = attempt_start(r, a, addr);
    if (err == 0) {
      if (r->next < r->n_order)
        uv_timer_start(&r->delay, on_delay, o->attempt_delay_ms, 0);
      return;
    }
    if (is_resource_error(err)) {
      tn_log(tn__logger(t->engine), TN_LOG_WARN, "connect_resource_error", TN_U("id", t->id),
             TN_S("error", uv_err_name(err)), TN_LOG_END);
      tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "out of resources, try again later");
      return;
    }
    log_failed(t, addr, err);
    s->last_connect_err = err;
  }
  if (r->live == 0)
    no_address_left(t);
}

/* A failed attempt closes; with none left connecting, the next starts now
 * rather than at its delay (RFC 8305 5). */
static void attempt_failed(tn_attempt *a, int err) {
  tn_race *r = a->race;
  tn_tunnel *t = r->t;
  log_failed(t, &a->addr, err);
  t->setup->last_connect_err = err;
  attempt_close(a);
  if (r->live == 0) {
    uv_timer_stop(&r->delay);
    try_next(r);
  }
}

static void race_start(tn_tunnel *t) {
  tn_setup *s = t->setup;
  tn_race *r = calloc(1, sizeof(*r));
  if (!r) {
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "out of resources, try again later");
    return;
  }
  for (size_t i = 0; i < RACE_MAX; i++)
    r->att[i].fd = -1;
  r->t = t;
  uv_timer_init(tn__loop(t->engine), &r->delay);
  r->delay.data = r;
  r->handles = 1;
  interleave(r, &s->dns.answer);
  s->race = r;
  try_next(r);
}

/* ---- CONNECT-UDP ---- */

/* No race: a UDP "connect" only sets the peer, there is no attempt to wait
 * for. The first address policy allows (allow_private; never a broadcast
 * one) is the tunnel's; 403 when every address is refused. */
static void udp_start(tn_tunnel *t) {
  tn_setup *s = t->setup;
  const tn_policy *pol = &tn__opts(t->engine)->policy;
  for (uint8_t i = 0; i < s->dns.answer.n; i++) {
    tn_dns_addr addr = s->dns.answer.addrs[i];
    if (!tn_policy_allows_addr(pol, &addr.sa) || tn_addr_is_broadcast(&addr.sa)) {
      s->addrs_denied++;
      continue;
    }
    addr.in.sin_port = htons(s->auth.port); /* sin6_port is at the same offset */
    tn__udp_open(t, &addr);
    return;
  }
  no_address_left(t);
}

/* The addresses are known: a UDP tunnel opens its socket, a TCP one races. */
static void addresses_known(tn_tunnel *t) {
  tn_setup *s = t->setup;
  t->phase = TN_PHASE_CONNECTING;
  if (!tn_egress_up(&s->egress)) { /* fail fast; other egresses are not concerned */
    tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "egress_down", TN_U("id", t->id),
           TN_S("egress", s->egress.name), TN_S("interface", s->egress.interface), TN_LOG_END);
    tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "egress_down");
    return;
  }
  if (t->udp)
    udp_start(t);
  else
    race_start(t);
}

/* ---- resolving ---- */

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
  addresses_known(t);
}

static void on_resolved(tn_dns_req *req) { resolved(req->data); }

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
