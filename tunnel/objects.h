/* Private to tunnel/: the relay engine's objects, their fields and the
 * constants they are sized by. Types only: no functions are declared here,
 * so every private header can include it without forming a circle.
 *
 * The private headers of tunnel/, from the bottom up; a file includes only
 * headers of its own layer or below, and calls upwards only through tables
 * of function pointers (tn_ep_sink, tn_proto) or the hooks the engine
 * installs in itself (engine_state.h):
 *   ep.h          endpoints (ep_tcp.c, ep_tls.c) and relay buffers (bufpool.c)
 *   clients.h     per-client tunnel counts (clients.c)
 *   objects.h     this file: tn_conn, tn_tunnel, tn_setup, lists, phases
 *   proto.h       the protocol table type, tn_proto, and its entries
 *   service.h     the engine as a service to the files above it (service.c):
 *                 loop, options, logger, buffers, counters, admission, rates,
 *                 and the registry of connections, tunnels and sessions
 *   conn.h        downstream connections (conn.c): accept, admit, TLS,
 *                 protocol detection through the table
 *   lifecycle.h   the tunnel life cycle (tunnel.c, connect.c, relay.c,
 *                 splice.c): request checks, connect, relay, teardown
 *   front ends    h1.c, h2.c: each defines its tn_proto entry
 *   engine.c      the top: the public API of engine.h, listeners, accept,
 *                 the sweep, drain; the one file that names the front ends
 * engine_state.h (struct tn_engine) is shared by engine.c and service.c only.
 *
 * Objects:
 * - tn_conn: one accepted downstream connection (a device). It owns the
 *   socket (and the TLS layer on listen_tls), admits or refuses the client,
 *   completes the TLS handshake, then picks the front end (ALPN, or the
 *   bytes a protocol starts with, else the default: tn_proto) and hands its
 *   transport over:
 *     HTTP/1.1 -> exactly one tn_tunnel, whose down endpoint is the
 *                 connection's transport;
 *     HTTP/2   -> a tn_h2 session, whose streams are tunnels.
 * - tn_tunnel: one CONNECT request and its relay. Life cycle:
 *
 *   HEADER --request--> RESOLVING --> CONNECTING --200--> RELAY
 *      |                    |              |                |
 *      +--error status--> LINGER (h1)      |                |
 *      +-----------------------------------+----------------+--> CLOSING --> freed
 *
 * Ownership: a tunnel owns its upstream endpoint (embedded) and its set-up
 * state. tn__tunnel_close() is the one teardown path; the tunnel is freed
 * once both endpoints reported closed (a pending lookup is cancelled).
 * A tunnel whose protocol has tunnel_owns_conn (HTTP/1.1) also releases its
 * connection then.
 */
#ifndef TN_OBJECTS_H
#define TN_OBJECTS_H

#include <llhttp.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "tunnel/addr.h"
#include "tunnel/engine.h"
#include "tunnel/ep.h"
#include "tunnel/resolver.h"

#define TN_HEADER_MAX (16 * 1024) /* request head larger than this: 431 */
#define TN_LINGER_MS 2000 /* after an error response, drain the client for at most this long */
/* Device bytes held before the tunnel is up. HTTP/1.1 stops reading past
 * TN_RELAY_HIGH; HTTP/2 is bounded by h2_stream_window (at most 16 MiB). */
#define TN_PENDING_MAX (32 * 1024 * 1024)
#define TN_SPLICE_AUTO_MIN (256 * 1024) /* auto: splice once a tunnel relayed this much */
#define TN_SPLICE_MAX 256               /* tunnels spliced at once, at most (tn_splice_max) */
#define TN_SNIFF_MAX 24 /* bytes of a connection held to pick its protocol (tn_proto.preface) */

typedef struct tn_tunnel tn_tunnel;
typedef struct tn_conn tn_conn;
typedef struct tn_h2 tn_h2;
typedef struct tn_proto tn_proto;
typedef struct tn_udp tn_udp;

/* Intrusive doubly-linked list. A link not in a list has NULL pointers. */
typedef struct tn_link {
  struct tn_link *prev, *next;
} tn_link;

static inline void tn__list_init(tn_link *head) { head->prev = head->next = head; }

static inline void tn__list_remove(tn_link *l) {
  if (!l->next)
    return;
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->prev = l->next = NULL;
}

static inline void tn__list_append(tn_link *head, tn_link *l) {
  l->prev = head->prev;
  l->next = head;
  head->prev->next = l;
  head->prev = l;
}

static inline bool tn__list_empty(const tn_link *head) { return head->next == head; }

/* The smaller of two optional times or durations, where 0 means "none". */
static inline uint64_t tn__min_set(uint64_t a, uint64_t b) {
  return !a ? b : !b ? a : a < b ? a : b;
}

typedef enum {
  TN_PHASE_HEADER = 0,
  TN_PHASE_RESOLVING,
  TN_PHASE_CONNECTING,
  TN_PHASE_RELAY,
  TN_PHASE_LINGER,
  TN_PHASE_CLOSING
} tn_phase;

/* ---- downstream connections (conn.c) ---- */

/* LINGER: an HTTP/2 connection told GOAWAY(ENHANCE_YOUR_CALM): FIN sent,
 * what the device still sends is read and dropped until it closes or
 * TN_LINGER_MS passes, so that closing with unread bytes (a RST) cannot
 * destroy the GOAWAY before the device reads it. */
typedef enum {
  TN_CONN_SETUP = 0,
  TN_CONN_ACTIVE, /* handed over to its front end (tn_proto.start) */
  TN_CONN_LINGER,
  TN_CONN_CLOSING
} tn_conn_mode;

struct tn_conn {
  tn_link link; /* first member: in the engine's conn lists */
  tn_engine *engine;
  size_t listener;
  struct sockaddr_in6 client; /* also holds sockaddr_in */
  char *subject;              /* verified device certificate subject, or NULL */
  tn_conn_mode mode;
  uint64_t deadline_ms; /* set-up: TLS handshake and first bytes */
  tn_ep_tcp tcp;
  struct tn_ep_tls *tls;    /* NULL on plain listeners */
  tn_ep *transport;         /* &tcp.ep, or the TLS endpoint */
  char sniff[TN_SNIFF_MAX]; /* first bytes, to pick the protocol by its preface */
  size_t sniff_len;
};

/* ---- tunnels (lifecycle.h) ---- */

/* State needed only until the relay starts. */
typedef struct tn_setup {
  llhttp_t parser;
  /* raw request target: a CONNECT authority, or a CONNECT-UDP path (a
   * name's longest with RFC 9298's prefix and a port fits) */
  char target[TN_HOST_MAX + 48];
  size_t target_len;
  bool target_overflow;
  /* HTTP/1.1 Upgrade (CONNECT-UDP): the header being read and its value */
  char field[8];     /* a header name, while it is short enough to matter */
  uint8_t field_len; /* bytes of it; sizeof(field) + 1: longer than that */
  char value[16];    /* the Upgrade header's value, likewise */
  uint8_t value_len;
  bool in_upgrade;  /* the header being read is Upgrade */
  bool upgrade_udp; /* Upgrade: connect-udp was sent */
  size_t header_bytes;
  bool request_done;
  tn_authority auth;
  tn_dns_req dns;        /* the lookup; dns.answer: the addresses to try */
  uint8_t next_addr;     /* index of the next address of dns.answer to try */
  unsigned addrs_denied; /* resolved addresses refused by allow_private */
  int last_connect_err;
  struct tn_race *race; /* connection attempts (connect.c); NULL when none */
  tn_egress egress;     /* how to leave (name "" = no egress) */
  char *pending;        /* device bytes that arrived before the tunnel was up */
  size_t pending_len;
} tn_setup;

struct tn_tunnel {
  tn_link link; /* first member: in the engine's setup or relay list */
  tn_engine *engine;
  tn_conn *conn;         /* the device's connection */
  const tn_proto *proto; /* its front end */
  uint64_t id;
  tn_phase phase;
  tn_result result;
  int status;               /* HTTP status sent, 0 if none */
  uint32_t retry_after_s;   /* Retry-After of a 429/503 answer; 0 = none */
  bool log_quiet;           /* a 429 inside its client's refusal log window: counted and
                             summarised (rate_limited_suppressed), no access log line */
  const char *close_reason; /* static string */
  tn_ep *down;              /* h1: the connection's transport; h2: the stream */
  tn_ep_tcp up;             /* the destination; initialised per connect attempt */
  void *stream;             /* h2: the stream (h2.c) */
  tn_setup *setup;
  char *target; /* normalised "host:port", for logs; owned */
  struct sockaddr_in6 connected;
  struct sockaddr_in6 local;           /* the gateway's own upstream address:port, what the
                                    destination sees (for tracing a tunnel back) */
  char egress[TN_EGRESS_NAME_MAX + 1]; /* its egress's name; "" = none */
  uint64_t started_ms;
  uint64_t request_ms;  /* request complete; 0 before */
  uint64_t connect_ms;  /* request to upstream connected; 0 if never */
  uint64_t deadline_ms; /* set-up phases: when to time out; 0 = none */
  uint64_t last_activity_ms;
  uint64_t bytes_up, bytes_down;
  uint8_t tls_checked;      /* bytes of the first TLS record header verified */
  uint8_t tls_len_hi;       /* high byte of that record's length */
  uint8_t eps_open;         /* endpoints whose closed callback is still due */
  bool admitted;            /* holds a max_tunnels slot */
  bool down_gone;           /* h2: the device reset the stream after its END_STREAM:
                                    nothing more can reach it, its data still goes up */
  bool busy;                /* inside tn__tunnel_close: not to be freed yet */
  bool splice_ok;           /* plain TCP both sides and splice not off */
  bool splice_want;         /* move to splice as soon as nothing is queued */
  struct tn_splice *splice; /* relaying with splice(2); NULL when copying */
  tn_udp *udp;              /* CONNECT-UDP: its datagram relay (udp.c); NULL for TCP */
};

/* How tn__tunnel_close ends the endpoints: FIN closes them gracefully
 * (queued bytes still go out, HTTP/2 ends the stream cleanly); RESET aborts
 * both (TCP RST, RST_STREAM(CONNECT_ERROR)), for a side that failed. */
typedef enum { TN_CLOSE_FIN = 0, TN_CLOSE_RESET } tn_close_how;
#endif
