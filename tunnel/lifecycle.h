/* Private to tunnel/: the tunnel life cycle, one module over four files:
 * tunnel.c (creation, the request checks, deadlines, the single teardown
 * path, the access log), connect.c (resolve and connect), relay.c (the
 * copy relay and the sinks of both endpoints) and splice.c (the zero-copy
 * relay). Layer: above conn.h (see objects.h); called by the front ends and
 * by engine.c (sweep, drain). It reaches the front ends only through the
 * protocol table.
 */
#ifndef TN_LIFECYCLE_H
#define TN_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>

#include "tunnel/objects.h"

/* ---- tunnel.c ---- */

/* A complete request for authority: checks it (400, 403, 429, 503,
 * require_tls on bytes already held) and starts connecting; a refusal goes
 * through tn__tunnel_fail (the front end answers it). */
void tn__tunnel_request(tn_tunnel *t, const char *authority, size_t len);
/* The engine's sweep found t's deadline (or idle time) passed: 408 while
 * reading the head, the next address or 504 while connecting, idle_timeout
 * while relaying, the end of a lingering close. */
void tn__tunnel_timeout(tn_tunnel *t);
/* Creates a tunnel of front end proto for conn whose device side is down
 * (sink set here), in phase HEADER. NULL on ENOMEM. A front end that has the
 * request head already moves it on and calls tn__tunnel_request. */
tn_tunnel *tn__tunnel_new(tn_conn *c, const tn_proto *proto, tn_ep *down);
/* Device bytes that arrived before the relay started; false on overflow. */
bool tn__tunnel_hold(tn_tunnel *t, const char *p, size_t n);
/* An upstream socket error that means the path died, not the peer: the
 * kernel gave up on it (TCP_USER_TIMEOUT, keepalive: ETIMEDOUT, or the soft
 * error it saw meanwhile when the route or link went: EHOSTUNREACH,
 * ENETUNREACH, ENETDOWN). Closed as uplink_dead; anything else is reset_up. */
bool tn__uplink_dead(int err);
/* The one teardown path: records r and reason (a static string, the access
 * log's `close` field; kept from tn__tunnel_fail in LINGER), writes the
 * access log, closes both endpoints as `how` says; the tunnel is freed once
 * they reported closed. Idempotent. */
void tn__tunnel_close(tn_tunnel *t, tn_result r, const char *reason, tn_close_how how);
/* Answers an error status (h1: lingering close; h2: on the stream). */
void tn__tunnel_fail(tn_tunnel *t, tn_result r, int status, const char *reason);
void tn__tunnel_info(const tn_tunnel *t, uint64_t now, tn_tunnel_info *info);
/* The tunnel_opened line (info): t was just established. */
void tn__tunnel_log_opened(tn_tunnel *t);
void tn__setup_free(tn_tunnel *t);
/* An endpoint of t reported closed. */
void tn__tunnel_ep_closed(tn_tunnel *t);

/* A complete CONNECT-UDP request for path (RFC 9298's URI template): as
 * tn__tunnel_request, with 404 for another path, the allow_udp rules, no
 * require_tls; on success the tunnel's UDP socket is opened (udp.c). */
void tn__tunnel_request_udp(tn_tunnel *t, const char *path, size_t len);

/* ---- udp.c: the CONNECT-UDP relay ---- */

/* Makes t a CONNECT-UDP tunnel (t->udp). 0 or TN_ENOMEM. */
int tn__udp_new(tn_tunnel *t);
/* addr (resolved, with the port) passed policy: opens the connected socket
 * with the tunnel's egress, answers 200 and relays; or fails the tunnel
 * (502, 503). */
void tn__udp_open(tn_tunnel *t, const tn_dns_addr *addr);
/* Device bytes while relaying (not taken over). False for a malformed
 * capsule: the caller ends the tunnel with a reset (tn__udp_malformed then
 * tells the front end, which resets with PROTOCOL_ERROR). */
bool tn__udp_from_device(tn_tunnel *t, const char *p, size_t n);
bool tn__udp_malformed(const tn_tunnel *t);
/* The device ended its sending side: the tunnel ends. */
void tn__udp_device_ended(tn_tunnel *t);
/* Part of tn__tunnel_close: closes the socket (the endpoint reports closed
 * from its close callback), or frees t->udp at once if none was opened. */
void tn__udp_close(tn_tunnel *t);
/* Counts the datagrams the kernel dropped at the tunnel's socket since the
 * last call (receive buffer full) as receive_overflow drops. No-op for TCP
 * and before the socket is open. */
void tn__udp_collect_drops(tn_tunnel *t);
/* The tunnel's datagram counts (0 for TCP). */
void tn__udp_counts(const tn_tunnel *t, uint64_t *up, uint64_t *down, uint64_t *dropped,
                    uint64_t *icmp);

/* ---- connect.c ---- */

/* Resolves, checks and connects; on success calls tn__relay_start. */
void tn__connect_start(tn_tunnel *t);
/* The upstream endpoint reported closed. */
void tn__connect_up_closed(tn_tunnel *t);
/* Ends the lookup and the connection attempts of t, if any (teardown). */
void tn__connect_stop(tn_tunnel *t);

/* ---- relay.c ---- */

extern const tn_ep_sink tn__down_sink;
extern const tn_ep_sink tn__up_sink;
void tn__relay_start(tn_tunnel *t);
/* Checks bytes against the TLS record header (RFC 8446 5.1) incrementally.
 * Returns false when they cannot start a TLS handshake record. */
bool tn__tls_check(tn_tunnel *t, const char *p, size_t n);

/* ---- splice.c ----
 * The zero-copy relay for tunnels with a plain TCP socket on both sides. A
 * spliced tunnel stops reading its endpoints; the bytes go socket -> pipe ->
 * socket in the kernel, one pipe per direction. */
/* Sets t->splice_ok and t->splice_want as the relay starts. */
void tn__splice_init(tn_tunnel *t);
/* Moves t to splice if it can now: relaying, both directions open, nothing
 * queued on either side, the require_tls check done. Returns true if it did;
 * false leaves the copy relay running (retried on later reads while
 * splice_want is set; a descriptor shortage is not an error). */
bool tn__splice_try(tn_tunnel *t);
/* Part of tn__tunnel_close, before the endpoints close: stops splicing and
 * closes its descriptors; its poll handles free themselves. */
void tn__splice_stop(tn_tunnel *t);

#endif
