/* Private to tunnel/: the protocol table. Layer: above objects.h (see
 * there); included by the files that call through the table (conn.c,
 * tunnel.c, relay.c, splice.c, service.c for the counters) and by the front
 * ends that define an entry (h1.c, h2.c). Only engine.c names the entries.
 */
#ifndef TN_PROTO_H
#define TN_PROTO_H

#include "tunnel/objects.h"

/* ---- the protocol table ----
 *
 * Each front end (the request protocol a device speaks) is one table of
 * operations. The connection, the tunnel life cycle and the relay call
 * through it and never test which protocol a tunnel uses: a new front end
 * is a new table, chosen by whichever front end parsed the request
 * (tn__tunnel_new) or, for start, by protocol detection in conn.c among the
 * entries the engine runs (tn__engine_protos). Properties describe what the
 * engine may do with a tunnel of the protocol; they are not tested against
 * a protocol's identity. CONNECT-UDP is no entry of its own: a device asks
 * for it in the request protocol it speaks, so the h1 and h2 entries parse
 * it and answer it (101, or 200 with capsule-protocol) from established;
 * below them the tunnel carries a tn_udp (udp.c) instead of a TCP upstream,
 * and such a tunnel never splices (splice_ok stays false). */
struct tn_proto {
  const char *name;     /* "h1", "h2": the access log's proto, tn_tunnel_info.proto */
  unsigned stats_index; /* slot in tn_engine_stats.by_proto_active */
  /* A tunnel is its whole connection: freeing the tunnel frees the
   * connection (HTTP/1.1). Otherwise the front end frees it (HTTP/2). */
  bool tunnel_owns_conn;
  /* The device's EOF before the 200, with no bytes held, means it gave up
   * (result cancelled): HTTP/1.1 cannot tell a close from a half-close. */
  bool eof_cancels_setup;
  /* The device side may be the connection's own TCP socket, so a tunnel may
   * move to splice(2) (checked again against the endpoint, splice.c). */
  bool may_splice;
  /* Detection (conn.c): the ALPN protocol that selects it on a TLS
   * listener, and the bytes a connection starting with selects it (at most
   * TN_SNIFF_MAX); NULL for none. The one entry with neither is the default,
   * for whatever starts otherwise. */
  const char *alpn;
  const char *preface;
  /* Takes over connection c once detection chose this protocol; first[0..n)
   * are the bytes read during detection (n may be 0). On failure the front
   * end closes c itself (tn__conn_abort). NULL: not chosen by detection. */
  void (*start)(tn_conn *c, const char *first, size_t n);
  /* Device bytes for a tunnel whose request head is still being read (phase
   * HEADER); takes ownership of base. NULL when the front end reads request
   * heads elsewhere (HTTP/2: the session; its tunnels start past HEADER). */
  void (*data)(tn_tunnel *t, char *base, tn_buf_kind kind, size_t n);
  /* The upstream connected: sends the protocol's success answer (200) on
   * the device side. 0, or a negative error (the caller closes with a reset). */
  int (*established)(tn_tunnel *t);
  /* Answers the error status with reason as the body, then ends the tunnel
   * the protocol's way (HTTP/1.1: lingering close; HTTP/2: on the stream,
   * then tn__tunnel_close). t->result and t->close_reason are already set. */
  void (*fail)(tn_tunnel *t, int status, const char *reason);
  /* Drain of engine e: tell the protocol's sessions to stop taking requests
   * (HTTP/2: GOAWAY), or, with close_now, close them. NULL: nothing to do
   * beyond what the engine does for every tunnel. */
  void (*drain)(tn_engine *e, bool close_now);
  /* Deadlines the front end keeps itself, checked by the engine's sweep at
   * loop time now (HTTP/2: a request head begun on a session and not
   * complete within header_timeout, tn__engine_head_open). NULL: none. */
  void (*sweep)(tn_engine *e, uint64_t now);
  /* Fills the protocol's part of info (today its name). */
  void (*describe)(const tn_tunnel *t, tn_tunnel_info *info);
};

extern const tn_proto tn__proto_h1; /* h1.c */
extern const tn_proto tn__proto_h2; /* h2.c */

#endif
