/* The asynchronous resolver: c-ares on the caller's libuv loop (its sockets
 * watched with uv_poll, its timeouts with one uv_timer, as Node.js does), so
 * no thread ever blocks on DNS. One resolver may serve several users on its
 * loop: the tunnel engine (tn_engine_opts.resolver) and the gateway's own
 * HTTPS client share one.
 *
 * A lookup reads /etc/hosts first, then asks the servers (/etc/resolv.conf,
 * or opts.servers) for AAAA and A at once. Each query is bounded by
 * timeout_ms x tries. Answers are cached for their TTL (at most
 * cache_max_ttl_ms), failures for negative_ttl_ms, and concurrent lookups of
 * one name share one query. When the servers do not answer (timeout, server
 * failure), an answer cached up to stale_ttl_ms ago is served instead
 * (RFC 8767), counted in stats.hits_stale.
 *
 * Answers from /etc/hosts (and IP literals, which c-ares answers itself)
 * are cached too, for TN_DNS_HOSTS_TTL_MS (at most cache_max_ttl_ms) and
 * never served stale: a lookup of a name in /etc/hosts reads the file once
 * per that period, and a cache hit, whatever its source, makes no query, no
 * allocation and no thread hop.
 *
 * Errors: as engine.h says; a lookup's own outcome is 0 or TN_EDNS_NXDOMAIN,
 * TN_EDNS_TIMEOUT, TN_EDNS_ERROR (error.h).
 */
#ifndef TN_RESOLVER_H
#define TN_RESOLVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "tunnel/dns_cache.h"
#include "tunnel/log.h"

#define TN_DNS_HOSTS_TTL_MS 5000 /* how long an /etc/hosts answer is cached */

typedef struct tn_resolver_opts {
  char *servers;             /* "ADDR[:PORT],..." ([v6]:port for IPv6 with a port);
                                NULL or "": those of /etc/resolv.conf */
  uint64_t timeout_ms;       /* per try (2 s) */
  uint32_t tries;            /* 2 */
  uint64_t cache_max_ttl_ms; /* 5 min */
  uint32_t cache_size;       /* names, 1024; 0 = no cache */
  uint64_t negative_ttl_ms;  /* 10 s */
  uint64_t stale_ttl_ms;     /* 1 h; 0 = never serve stale */
} tn_resolver_opts;

/* The defaults above; servers NULL. */
void tn_resolver_opts_init(tn_resolver_opts *o);

/* Outcomes of queries sent to the servers (cache hits are not queries). */
typedef enum {
  TN_DNS_RESULT_OK = 0,
  TN_DNS_RESULT_NXDOMAIN,
  TN_DNS_RESULT_TIMEOUT,
  TN_DNS_RESULT_ERROR,
  TN_DNS_RESULT_COUNT_
} tn_dns_result;

/* "ok", "nxdomain", "timeout", "error" (static; "unknown" out of range). */
const char *tn_dns_result_name(tn_dns_result r);

#define TN_DNS_HIST_BOUNDS 10
/* Upper bounds (seconds) of the query duration histogram's buckets. */
extern const double tn_dns_hist_bounds[TN_DNS_HIST_BOUNDS];

typedef struct tn_resolver_stats {
  uint64_t queries[TN_DNS_RESULT_COUNT_]; /* queries ended, by result */
  uint64_t hits_fresh, hits_stale, hits_negative;
  uint64_t duration_buckets[TN_DNS_HIST_BOUNDS]; /* per bucket, not cumulative */
  uint64_t duration_count;                       /* also the +Inf bucket */
  double duration_sum;                           /* seconds */
  uint64_t pending;                              /* queries in flight */
  uint64_t cache_entries;
} tn_resolver_stats;

typedef struct tn_resolver tn_resolver;
typedef struct tn_dns_req tn_dns_req;

/* The outcome of a pending lookup: req->status and req->answer are set. */
typedef void (*tn_dns_cb)(tn_dns_req *req);

/* A lookup, embedded in its user's object (no allocation per lookup). The
 * user may read data, status and answer; the rest is private. */
struct tn_dns_req {
  void *data;           /* the user's */
  int status;           /* 0, TN_EDNS_NXDOMAIN, TN_EDNS_TIMEOUT, TN_EDNS_ERROR */
  bool stale;           /* answer served past its TTL */
  tn_dns_answer answer; /* when status is 0: addresses, port 0 */
  /* private */
  tn_dns_cb cb;
  struct tn_dns_query *query;
  tn_dns_req *prev, *next;
};

/* A resolver on loop (which must outlive it), logging to logger (not owned,
 * may be NULL). 0, or TN_ENOMEM, or TN_EINVAL for servers c-ares does not
 * accept; *out untouched on failure. */
int tn_resolver_new(uv_loop_t *loop, const tn_resolver_opts *opts, tn_logger *logger,
                    tn_resolver **out);

/* Looks name up for req. Returns:
 *  1: answered now (a cache hit, /etc/hosts, an IP literal): req->status and
 *     req->answer are set, cb is never called;
 *  0: pending: cb(req) is called once, from the loop, unless cancelled;
 *  TN_ENOMEM: nothing started, cb never called. */
int tn_resolver_lookup(tn_resolver *r, tn_dns_req *req, const char *name, tn_dns_cb cb);

/* Whether req is waiting for its callback. */
bool tn_resolver_pending(const tn_dns_req *req);

/* Forgets a pending lookup: its callback is never called (the query itself
 * runs on for the others waiting on it, and fills the cache). Nothing when
 * req is not pending. */
void tn_resolver_cancel(tn_dns_req *req);

/* A reload's new settings, without cutting a lookup short: queries started
 * from now on go to a new c-ares channel made with opts (servers, timeout,
 * tries); those in flight finish on the old one, which is then freed, and
 * their waiters are answered as before. New cache TTLs apply to answers
 * stored from now on. The cache is kept when servers and cache_size are
 * unchanged; else it is emptied (*flushed): other servers may answer
 * otherwise (split horizon), so neither their fresh nor their stale answers
 * are ours to serve, and the old queries' answers no longer fill it. 0, or
 * TN_ENOMEM / TN_EINVAL (servers c-ares does not accept) with nothing
 * changed. */
int tn_resolver_reconfigure(tn_resolver *r, const tn_resolver_opts *opts, bool *flushed);

void tn_resolver_stats_get(const tn_resolver *r, tn_resolver_stats *out);
/* The servers in force (opts.servers), or NULL for /etc/resolv.conf. */
const char *tn_resolver_servers(const tn_resolver *r);

/* Ends every query (pending lookups must have been cancelled first), closes
 * the handles; the resolver frees itself once they are closed. */
void tn_resolver_close(tn_resolver *r);

#endif
