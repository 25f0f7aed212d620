/* c-ares on the libuv loop: see resolver.h.
 *
 * c-ares tells which sockets to watch through ares_sock_state_cb (one
 * uv_poll per socket); one uv_timer wakes it for its retransmissions and
 * ends queries at their own deadline (timeout x tries: c-ares backs off
 * exponentially between tries, which would make the bound longer). A query
 * that reached its deadline answers its waiters (from the stale cache when
 * it can) and is no longer joined; c-ares's own callback still frees it
 * later and a late answer still fills the cache.
 *
 * A reload's new [dns] settings (tn_resolver_reconfigure) get a new c-ares
 * channel, for queries started from then on; the channel before retires: it
 * keeps its sockets and timer duties until its last query has ended (its
 * callback freed it), then it is destroyed. So lookups in flight are never
 * cut short, and every channel, socket and poll is still owned by the
 * resolver. A channel is destroyed only outside c-ares's own calls
 * (reap_channels after ares_process_fd, or from reconfigure).
 */
#include "tunnel/resolver.h"

#include <ares.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tunnel/error.h"

/* One c-ares channel: the servers, timeout and tries of one configuration. */
typedef struct tn_dns_channel {
  ares_channel ares;
  tn_resolver *r;
  struct tn_dns_channel *next; /* in r->retired */
  unsigned queries;            /* started on it, not yet freed */
  bool fills_cache;            /* false once retired by a change of servers */
} tn_dns_channel;

typedef struct tn_dns_poll {
  uv_poll_t poll;
  ares_socket_t fd;
  struct tn_dns_poll *next;
  tn_dns_channel *ch;
} tn_dns_poll;

typedef struct tn_dns_query {
  struct tn_dns_query *next; /* in r->queries, oldest first */
  tn_resolver *r;
  tn_dns_channel *ch; /* the channel it was started on */
  tn_dns_req *waiters;
  uint64_t started_ms, deadline_ms;
  bool expired;  /* deadline passed: waiters answered, not joinable */
  bool starting; /* inside ares_getaddrinfo: an answer now is synchronous */
  bool done;     /* the synchronous answer is in status/answer */
  int status;
  tn_dns_answer answer;
  char name[];
} tn_dns_query;

struct tn_resolver {
  uv_loop_t *loop;
  tn_resolver_opts opts;
  tn_logger *logger;
  tn_dns_channel *chan;    /* new queries */
  tn_dns_channel *retired; /* replaced by a reconfigure, finishing their queries */
  uv_timer_t timer;
  tn_dns_poll *polls;
  tn_dns_query *queries;
  tn_dns_cache *cache;
  tn_resolver_stats stats;
  unsigned handles_open;
  bool closing;
};

const double tn_dns_hist_bounds[TN_DNS_HIST_BOUNDS] = {0.001, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,  0.5,  1,     2.5};

void tn_resolver_opts_init(tn_resolver_opts *o) {
  memset(o, 0, sizeof(*o));
  o->timeout_ms = 2000;
  o->tries = 2;
  o->cache_max_ttl_ms = 5 * 60 * 1000;
  o->cache_size = 1024;
  o->negative_ttl_ms = 10 * 1000;
  o->stale_ttl_ms = 60 * 60 * 1000;
}

const char *tn_dns_result_name(tn_dns_result r) {
  static const char *const names[] = {"ok", "nxdomain", "timeout", "error"};
  return (unsigned)r < TN_DNS_RESULT_COUNT_ ? names[r] : "unknown";
}

/* ---- handles ---- */

static void maybe_free(tn_resolver *r) {
  if (!r->closing || r->handles_open)
    return;
  tn_dns_cache_free(r->cache);
  free(r->opts.servers);
  free(r);
  ares_library_cleanup();
}

static void on_handle_closed(uv_handle_t *h) {
  tn_resolver *r = h->data;
  if (h->type == UV_POLL)
    free(h); /* the poll is the first member of its tn_dns_poll */
  r->handles_open--;
  maybe_free(r);
}

static void arm_timer(tn_resolver *r);

static void reap_channels(tn_resolver *r);

static void on_poll(uv_poll_t *p, int status, int events) {
  tn_dns_poll *dp = (tn_dns_poll *)p;
  tn_resolver *r = dp->ch->r;
  /* An error (the socket failed) is left to c-ares to notice on read. */
  bool rd = status < 0 || (events & UV_READABLE);
  bool wr = status >= 0 && (events & UV_WRITABLE);
  ares_process_fd(dp->ch->ares, rd ? dp->fd : ARES_SOCKET_BAD, wr ? dp->fd : ARES_SOCKET_BAD);
  reap_channels(r);
  arm_timer(r);
}

static void close_poll(tn_dns_poll *dp) {
  uv_poll_stop(&dp->poll);
  uv_close((uv_handle_t *)&dp->poll, on_handle_closed);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable) {
  tn_dns_channel *ch = data;
  tn_resolver *r = ch->r;
  tn_dns_poll **pp = &r->polls;
  while (*pp && ((*pp)->fd != fd || (*pp)->ch != ch))
    pp = &(*pp)->next;
  tn_dns_poll *dp = *pp;
  if (!readable && !writable) {
    if (dp) {
      *pp = dp->next;
      close_poll(dp);
    }
    return;
  }
  if (!dp) {
    if (!(dp = calloc(1, sizeof(*dp))))
      return; /* the query times out */
    if (uv_poll_init_socket(r->loop, &dp->poll, fd) != 0) {
      free(dp);
      return;
    }
    dp->fd = fd;
    dp->ch = ch;
    dp->poll.data = r;
    dp->next = r->polls;
    r->polls = dp;
    r->handles_open++;
  }
  uv_poll_start(&dp->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* ---- outcomes ---- */

static tn_dns_result result_of(int status) {
  switch (status) {
  case 0:
    return TN_DNS_RESULT_OK;
  case TN_EDNS_NXDOMAIN:
    return TN_DNS_RESULT_NXDOMAIN;
  case TN_EDNS_TIMEOUT:
    return TN_DNS_RESULT_TIMEOUT;
  default:
    return TN_DNS_RESULT_ERROR;
  }
}

static void count_query(tn_resolver *r, tn_dns_query *q, int status) {
  r->stats.queries[result_of(status)]++;
  double s = (double)(uv_now(r->loop) - q->started_ms) / 1000.0;
  size_t i = 0;
  while (i < TN_DNS_HIST_BOUNDS && s > tn_dns_hist_bounds[i])
    i++;
  if (i < TN_DNS_HIST_BOUNDS)
    r->stats.duration_buckets[i]++;
  r->stats.duration_count++;
  r->stats.duration_sum += s;
}

/* The servers did not answer: a stale answer replaces the failure. */
static int try_stale(tn_resolver *r, const char *name, int status, tn_dns_answer *a, bool *stale) {
  int err;
  if (status != TN_EDNS_TIMEOUT && status != TN_EDNS_ERROR)
    return status;
  if (tn_dns_cache_get(r->cache, name, uv_now(r->loop), true, a, &err) != TN_DNS_STALE)
    return status;
  r->stats.hits_stale++;
  *stale = true;
  tn_log(r->logger, TN_LOG_DEBUG, "dns_stale", TN_S("name", name),
         TN_S("error", tn_strerror(status)), TN_LOG_END);
  return 0;
}

/* Calls back every waiter, one at a time: a callback may cancel others. */
static void answer_waiters(tn_dns_query *q, int status, const tn_dns_answer *a) {
  bool stale = false;
  tn_dns_answer st;
  if (q->waiters) {
    status = try_stale(q->r, q->name, status, &st, &stale);
    if (stale)
      a = &st;
  }
  while (q->waiters) {
    tn_dns_req *req = q->waiters;
    q->waiters = req->next;
    if (q->waiters)
      q->waiters->prev = NULL;
    req->next = req->prev = NULL;
    req->query = NULL;
    req->status = status;
    req->stale = stale;
    if (status == 0) {
      req->answer.n = a->n;
      memcpy(req->answer.addrs, a->addrs, a->n * sizeof(a->addrs[0]));
    }
    req->cb(req);
  }
}

static void unlink_query(tn_resolver *r, tn_dns_query *q) {
  tn_dns_query **pp = &r->queries;
  while (*pp && *pp != q)
    pp = &(*pp)->next;
  if (*pp)
    *pp = q->next;
  r->stats.pending--;
}

/* A query its c-ares callback is done with. */
static void query_free(tn_dns_query *q) {
  q->ch->queries--;
  free(q);
}

static int status_of(int ares_status) {
  switch (ares_status) {
  case ARES_SUCCESS:
    return 0;
  case ARES_ENOTFOUND:
  case ARES_ENODATA:
  case ARES_ENONAME:
    return TN_EDNS_NXDOMAIN;
  case ARES_ETIMEOUT:
    return TN_EDNS_TIMEOUT;
  default:
    return TN_EDNS_ERROR;
  }
}

/* The answer's addresses (at most TN_DNS_ADDRS_MAX) and lowest TTL. */
static int take_answer(const struct ares_addrinfo *res, tn_dns_answer *a, uint64_t *ttl_ms) {
  int ttl = -1;
  a->n = 0;
  for (const struct ares_addrinfo_node *n = res ? res->nodes : NULL; n; n = n->ai_next) {
    if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) || a->n == TN_DNS_ADDRS_MAX)
      continue;
    tn_dns_addr *d = &a->addrs[a->n++];
    memset(d, 0, sizeof(*d));
    memcpy(d, n->ai_addr, n->ai_family == AF_INET ? sizeof(d->in) : sizeof(d->in6));
    d->in.sin_port = 0;
    if (ttl < 0 || n->ai_ttl < ttl)
      ttl = n->ai_ttl;
  }
  *ttl_ms = ttl > 0 ? (uint64_t)ttl * 1000 : 0;
  return a->n ? 0 : TN_EDNS_NXDOMAIN;
}

/* What a query's outcome leaves in the cache. */
static void cache_outcome(tn_resolver *r, const tn_dns_query *q, int status, const tn_dns_answer *a,
                          uint64_t ttl_ms) {
  uint64_t now = uv_now(r->loop);
  if (!q->ch->fills_cache) /* the servers it asked are no longer ours */
    return;
  if (status == 0 && q->starting) {
    /* /etc/hosts (or a literal), answered inside ares_getaddrinfo: c-ares
     * 1.18 reads and parses the file, allocating, for every lookup. Cached
     * a short while, a name in it costs a hash lookup like any cached name;
     * an edit of the file shows within TN_DNS_HOSTS_TTL_MS. Never served
     * stale: the file has no outage. */
    uint64_t ttl = TN_DNS_HOSTS_TTL_MS < r->opts.cache_max_ttl_ms ? TN_DNS_HOSTS_TTL_MS
                                                                  : r->opts.cache_max_ttl_ms;
    (void)tn_dns_cache_put(r->cache, q->name, a, ttl, 0, now);
  } else if (status == 0 && ttl_ms) {
    if (ttl_ms > r->opts.cache_max_ttl_ms)
      ttl_ms = r->opts.cache_max_ttl_ms;
    (void)tn_dns_cache_put(r->cache, q->name, a, ttl_ms, r->opts.stale_ttl_ms, now);
  } else if (status == TN_EDNS_NXDOMAIN && !q->starting) {
    (void)tn_dns_cache_put_negative(r->cache, q->name, status, r->opts.negative_ttl_ms, now);
  }
}

static void on_ares(void *arg, int ares_status, int timeouts, struct ares_addrinfo *res) {
  tn_dns_query *q = arg;
  tn_resolver *r = q->r;
  uint64_t ttl_ms = 0;
  tn_dns_answer a;
  int status = status_of(ares_status);
  if (status == 0)
    status = take_answer(res, &a, &ttl_ms);
  if (res)
    ares_freeaddrinfo(res);
  if (ares_status == ARES_EDESTRUCTION || ares_status == ARES_ECANCELLED) {
    if (!q->starting) {
      unlink_query(r, q);
      query_free(q);
    }
    return;
  }
  cache_outcome(r, q, status, &a, ttl_ms);
  if (q->starting) { /* /etc/hosts or a literal, inside ares_getaddrinfo */
    q->done = true;
    q->status = status;
    if (status == 0)
      q->answer = a;
    return;
  }
  if (!q->expired) {
    count_query(r, q, status);
    tn_log(r->logger, TN_LOG_DEBUG, "dns_answer", TN_S("name", q->name),
           TN_S("result", tn_dns_result_name(result_of(status))),
           TN_I("addresses", status ? 0 : a.n), TN_U("ttl_ms", ttl_ms), TN_LOG_END);
    answer_waiters(q, status, &a);
  }
  unlink_query(r, q);
  query_free(q);
}

/* ---- the timer ---- */

/* Queries past their deadline answer TN_EDNS_TIMEOUT (or stale). */
static void expire_queries(tn_resolver *r) {
  uint64_t now = uv_now(r->loop);
  for (tn_dns_query *q = r->queries; q; q = q->next) {
    if (q->expired || now < q->deadline_ms)
      continue;
    q->expired = true;
    count_query(r, q, TN_EDNS_TIMEOUT);
    tn_log(r->logger, TN_LOG_DEBUG, "dns_timeout", TN_S("name", q->name), TN_LOG_END);
    answer_waiters(q, TN_EDNS_TIMEOUT, NULL);
  }
}

static void on_timer(uv_timer_t *t) {
  tn_resolver *r = t->data;
  ares_process_fd(r->chan->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  for (tn_dns_channel *ch = r->retired; ch; ch = ch->next)
    ares_process_fd(ch->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  reap_channels(r);
  expire_queries(r);
  arm_timer(r);
}

/* The earlier of next and ch's next c-ares timeout. */
static uint64_t ares_next(tn_dns_channel *ch, uint64_t now, uint64_t next) {
  struct timeval tv, *tvp = ares_timeout(ch->ares, NULL, &tv);
  if (!tvp)
    return next;
  uint64_t at = now + (uint64_t)tvp->tv_sec * 1000 + (uint64_t)(tvp->tv_usec + 999) / 1000;
  return at < next ? at : next;
}

/* Next wake-up: a channel's next timeout or the first query deadline. */
static void arm_timer(tn_resolver *r) {
  if (r->closing)
    return;
  uint64_t now = uv_now(r->loop), next = UINT64_MAX;
  for (tn_dns_query *q = r->queries; q; q = q->next)
    if (!q->expired && q->deadline_ms < next)
      next = q->deadline_ms;
  next = ares_next(r->chan, now, next);
  for (tn_dns_channel *ch = r->retired; ch; ch = ch->next)
    next = ares_next(ch, now, next);
  if (next == UINT64_MAX) {
    uv_timer_stop(&r->timer);
    return;
  }
  uv_timer_start(&r->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- the API ---- */

/* ---- channels ---- */

/* A channel for opts (tries already at least 1): 0, TN_ENOMEM or TN_EINVAL. */
static int channel_new(tn_resolver *r, const tn_resolver_opts *opts, tn_dns_channel **out) {
  tn_dns_channel *ch = calloc(1, sizeof(*ch));
  if (!ch)
    return TN_ENOMEM;
  ch->r = r;
  ch->fills_cache = true;
  struct ares_options o;
  memset(&o, 0, sizeof(o));
  o.timeout = (int)opts->timeout_ms;
  o.tries = (int)opts->tries;
  o.lookups = (char *)"fb";
  o.sock_state_cb = on_sock_state;
  o.sock_state_cb_data = ch;
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB;
  int st = ares_init_options(&ch->ares, &o, mask);
  if (st != ARES_SUCCESS) {
    free(ch);
    return st == ARES_ENOMEM ? TN_ENOMEM : TN_EINVAL;
  }
  if (opts->servers && *opts->servers &&
      ares_set_servers_ports_csv(ch->ares, opts->servers) != ARES_SUCCESS) {
    ares_destroy(ch->ares);
    free(ch);
    return TN_EINVAL;
  }
  *out = ch;
  return 0;
}

/* Ends ch's queries (ARES_EDESTRUCTION) and sockets, and closes the polls
 * c-ares left (it may not report every socket it closes). Never from inside
 * a c-ares call on ch. */
static void channel_destroy(tn_dns_channel *ch) {
  tn_resolver *r = ch->r;
  ares_destroy(ch->ares);
  for (tn_dns_poll **pp = &r->polls; *pp;) {
    tn_dns_poll *dp = *pp;
    if (dp->ch != ch) {
      pp = &dp->next;
      continue;
    }
    *pp = dp->next;
    close_poll(dp);
  }
  free(ch);
}

/* Destroys the retired channels whose last query has ended. */
static void reap_channels(tn_resolver *r) {
  for (tn_dns_channel **pp = &r->retired; *pp;) {
    tn_dns_channel *ch = *pp;
    if (ch->queries) {
      pp = &ch->next;
      continue;
    }
    *pp = ch->next;
    channel_destroy(ch);
    tn_log(r->logger, TN_LOG_DEBUG, "dns_channel_retired", TN_LOG_END);
  }
}

int tn_resolver_new(uv_loop_t *loop, const tn_resolver_opts *opts, tn_logger *logger,
                    tn_resolver **out) {
  if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
    return TN_ENOMEM;
  tn_resolver *r = calloc(1, sizeof(*r));
  if (!r)
    goto fail_lib;
  r->loop = loop;
  r->logger = logger;
  r->opts = *opts;
  if (r->opts.tries == 0)
    r->opts.tries = 1;
  r->opts.servers = NULL;
  if (opts->servers && !(r->opts.servers = strdup(opts->servers)))
    goto fail_r;
  if (!(r->cache = tn_dns_cache_new(opts->cache_size)))
    goto fail_servers;
  int err = channel_new(r, &r->opts, &r->chan);
  if (err)
    goto fail_cache;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->handles_open = 1;
  *out = r;
  return 0;
fail_cache:
  tn_dns_cache_free(r->cache);
  free(r->opts.servers);
  free(r);
  ares_library_cleanup();
  return err;
fail_servers:
  free(r->opts.servers);
fail_r:
  free(r);
fail_lib:
  ares_library_cleanup();
  return TN_ENOMEM;
}

/* A cache hit answers at once: no query, no allocation. */
static bool from_cache(tn_resolver *r, tn_dns_req *req, const char *name) {
  int err = 0;
  switch (tn_dns_cache_get(r->cache, name, uv_now(r->loop), false, &req->answer, &err)) {
  case TN_DNS_FRESH:
    r->stats.hits_fresh++;
    req->status = 0;
    return true;
  case TN_DNS_NEGATIVE:
    r->stats.hits_negative++;
    req->status = err;
    return true;
  default:
    return false;
  }
}

static void add_waiter(tn_dns_query *q, tn_dns_req *req, tn_dns_cb cb) {
  req->cb = cb;
  req->query = q;
  req->prev = NULL;
  req->next = q->waiters;
  if (q->waiters)
    q->waiters->prev = req;
  q->waiters = req;
}

/* Starts a query for name; answered now (hosts file, literal) when it
 * returns with q->done. */
static tn_dns_query *start_query(tn_resolver *r, const char *name) {
  size_t len = strlen(name);
  tn_dns_query *q = calloc(1, sizeof(*q) + len + 1);
  if (!q)
    return NULL;
  memcpy(q->name, name, len + 1);
  q->r = r;
  q->ch = r->chan;
  q->ch->queries++;
  q->started_ms = uv_now(r->loop);
  q->deadline_ms = q->started_ms + r->opts.timeout_ms * r->opts.tries;
  q->starting = true;
  struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  ares_getaddrinfo(r->chan->ares, name, NULL, &hints, on_ares, q);
  q->starting = false;
  return q;
}

int tn_resolver_lookup(tn_resolver *r, tn_dns_req *req, const char *name, tn_dns_cb cb) {
  req->stale = false;
  req->query = NULL;
  if (from_cache(r, req, name))
    return 1;
  for (tn_dns_query *q = r->queries; q; q = q->next)
    if (!q->expired && q->ch == r->chan && strcasecmp(q->name, name) == 0) {
      add_waiter(q, req, cb);
      return 0;
    }
  tn_dns_query *q = start_query(r, name);
  if (!q)
    return TN_ENOMEM;
  if (q->done) {
    req->status = q->status;
    if (q->status == 0)
      req->answer = q->answer;
    query_free(q);
    return 1;
  }
  q->next = NULL;
  tn_dns_query **pp = &r->queries;
  while (*pp)
    pp = &(*pp)->next;
  *pp = q;
  r->stats.pending++;
  add_waiter(q, req, cb);
  arm_timer(r);
  return 0;
}

bool tn_resolver_pending(const tn_dns_req *req) { return req->query != NULL; }

void tn_resolver_cancel(tn_dns_req *req) {
  tn_dns_query *q = req->query;
  if (!q)
    return;
  if (req->prev)
    req->prev->next = req->next;
  else
    q->waiters = req->next;
  if (req->next)
    req->next->prev = req->prev;
  req->prev = req->next = NULL;
  req->query = NULL;
}

void tn_resolver_stats_get(const tn_resolver *r, tn_resolver_stats *out) {
  *out = r->stats;
  out->cache_entries = tn_dns_cache_count(r->cache);
}

const char *tn_resolver_servers(const tn_resolver *r) { return r->opts.servers; }

void tn_resolver_close(tn_resolver *r) {
  if (r->closing)
    return;
  r->closing = true;
  /* ends every query (ARES_EDESTRUCTION), its sockets and polls */
  while (r->retired) {
    tn_dns_channel *ch = r->retired;
    r->retired = ch->next;
    channel_destroy(ch);
  }
  channel_destroy(r->chan);
  r->chan = NULL;
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

/* Whether answers from a resolver made with a may be kept by one made with
 * b: the same servers (others may answer otherwise: split horizon) and the
 * same cache size (the table is made for it). */
static bool cache_compatible(const tn_resolver_opts *a, const tn_resolver_opts *b) {
  const char *sa = a->servers ? a->servers : "", *sb = b->servers ? b->servers : "";
  return strcmp(sa, sb) == 0 && a->cache_size == b->cache_size;
}

int tn_resolver_reconfigure(tn_resolver *r, const tn_resolver_opts *opts, bool *flushed) {
  tn_resolver_opts o = *opts;
  if (o.tries == 0)
    o.tries = 1;
  o.servers = NULL;
  if (opts->servers && *opts->servers && !(o.servers = strdup(opts->servers)))
    return TN_ENOMEM;
  bool keep = cache_compatible(&r->opts, &o);
  tn_dns_cache *cache = NULL;
  tn_dns_channel *ch = NULL;
  int err = keep || (cache = tn_dns_cache_new(o.cache_size)) ? 0 : TN_ENOMEM;
  if (err == 0)
    err = channel_new(r, &o, &ch);
  if (err) {
    tn_dns_cache_free(cache);
    free(o.servers);
    return err;
  }
  /* Everything is allocated: from here on nothing fails. */
  r->chan->fills_cache = keep;
  r->chan->next = r->retired;
  r->retired = r->chan;
  r->chan = ch;
  if (!keep) {
    tn_dns_cache_free(r->cache);
    r->cache = cache;
  }
  free(r->opts.servers);
  r->opts = o;
  *flushed = !keep;
  reap_channels(r); /* a channel with no query left goes now */
  arm_timer(r);
  return 0;
}
