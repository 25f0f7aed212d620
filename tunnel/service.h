/* Private to tunnel/: the engine as a service to the files above it
 * (service.c): its loop, options, logger and buffers, the counters, the
 * admission and rate checks, and the registry of connections, tunnels and
 * HTTP/2 sessions (the lists the sweep and drain walk). Layer: above
 * objects.h and proto.h (see objects.h); service.c calls nothing above it:
 * what the registry must tell the top (a deadline to check, nothing left
 * after a drain) goes through hooks engine.c installs (engine_state.h).
 */
#ifndef TN_SERVICE_H
#define TN_SERVICE_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "tunnel/log.h"
#include "tunnel/objects.h"

uv_loop_t *tn__loop(tn_engine *e);
const tn_engine_opts *tn__opts(tn_engine *e);
SSL_CTX *tn__tls_ctx(tn_engine *e);
bool tn__authorized(tn_engine *e);
bool tn__draining(tn_engine *e);
/* The resolver the engine's tunnels look names up with. */
tn_resolver *tn__resolver(tn_engine *e);
/* Where the engine's files log (opts.logger; NULL: nowhere). */
tn_logger *tn__logger(tn_engine *e);
/* The engine's relay buffers (bufpool.c). */
tn_bufpool *tn__bufpool(tn_engine *e);
/* Its datagram buffers (TN_DGRAM_BUF_SIZE): DATAGRAM capsules towards devices. */
tn_bufpool *tn__dgram_pool(tn_engine *e);
/* True the first time only: splice_unavailable is said once at warn. */
bool tn__splice_warn_once(tn_engine *e);
void tn__list_move(tn_engine *e, tn_tunnel *t, bool to_relay);
/* A new tunnel: gives it the engine's next id (from 1), lists it in set-up. */
void tn__engine_tunnel_added(tn_engine *e, tn_tunnel *t);
void tn__engine_tunnel_done(tn_engine *e, tn_tunnel *t); /* after the access log */
/* The observer of closing tunnels (tn_engine_on_close), or NULL; *arg its
 * argument. The tunnel life cycle calls it right after tn__engine_tunnel_done. */
tn_tunnel_cb tn__engine_close_observer(tn_engine *e, void **arg);
/* The front ends the engine runs, for protocol detection (conn.c). */
const tn_proto *const *tn__engine_protos(tn_engine *e, size_t *n);
void tn__engine_tunnel_freed(tn_engine *e);
void tn__engine_conn_added(tn_engine *e, tn_conn *c);
void tn__engine_conn_moved(tn_engine *e, tn_conn *c); /* left set-up */
/* Into TN_CONN_LINGER, with a TN_LINGER_MS deadline (tn__conn_timeout). */
void tn__engine_conn_linger(tn_engine *e, tn_conn *c);
void tn__engine_conn_freed(tn_engine *e, tn_conn *c);
/* Work for later in this turn of the loop: run once, after the I/O callbacks
 * now under way, before the loop waits again (an idle handle, which keeps
 * the loop from blocking while anything is queued). An HTTP/2 session's
 * output goes this way, so that what many of its streams got from one poll
 * (e.g. datagrams of 100 tunnels) leaves in one write. */
typedef struct tn_later {
  tn_link link; /* first member; not in a list (NULL) when not queued */
  void (*run)(struct tn_later *l);
} tn_later;
/* Queues l (once: no-op if it is queued already). */
void tn__engine_later(tn_engine *e, tn_later *l);
/* Takes l off the queue if it is on it (before its owner is freed). */
static inline void tn__engine_later_cancel(tn_later *l) { tn__list_remove(&l->link); }
/* Multiplexed sessions (HTTP/2): the engine keeps them in one list that the
 * front end walks on drain (tn__engine_sessions). */
void tn__engine_session_added(tn_engine *e, tn_link *link);
void tn__engine_session_removed(tn_engine *e, tn_link *link);
tn_link *tn__engine_sessions(tn_engine *e);
/* A session began (open) or finished (!open) reading a request head that
 * header_timeout bounds: while any is open the sweep runs every
 * TN_SWEEP_MS and calls each protocol's sweep op. Calls must pair. */
void tn__engine_head_open(tn_engine *e, bool open);
void tn__count_bytes(tn_engine *e, uint64_t up, uint64_t down);
void tn__count_refused_client(tn_engine *e);
/* CONNECT-UDP: a datagram relayed (up: towards the target) of len payload
 * bytes, one dropped, an ICMP unreachable from a target. */
void tn__count_udp_datagram(tn_engine *e, bool up, size_t len);
void tn__count_udp_drop(tn_engine *e, tn_udp_drop why, uint64_t n);
void tn__count_udp_icmp(tn_engine *e);
/* A tunnel moved to splice (started) or a spliced tunnel closed. */
void tn__count_splice(tn_engine *e, bool started);
/* Whether one more tunnel may splice now (see tn_splice_max). */
bool tn__splice_budget(const tn_engine *e);
/* Admission of a request: checks max_tunnels and max_tunnels_per_client.
 * Returns true and takes a slot, or false. */
bool tn__admit(tn_engine *e, tn_tunnel *t);
/* max_new_tunnels_per_client (unless rate_exempt) and
 * max_new_upstream_per_target: 0 when a token was taken, else the
 * milliseconds until the next one. */
uint64_t tn__rate_client(tn_engine *e, tn_tunnel *t);
uint64_t tn__rate_target(tn_engine *e, tn_tunnel *t);
/* The client rate's refusals are logged one a window per client (see
 * tn_ratetab_log_refusal): tn__rate_client marks the others log_quiet, and
 * this writes the rate_limited_suppressed summaries due by now_ms (all:
 * every count held, at shutdown). The sweep calls it. */
void tn__rate_log_flush(tn_engine *e, uint64_t now_ms, bool all);
void tn__count_goaway(tn_engine *e, tn_goaway_reason r);

#endif
