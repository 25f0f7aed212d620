/* Private to tunnel/: the objects of the relay engine and the functions its
 * files call on each other (prefix tn__). Not part of the engine's API.
 *
 * Objects:
 * - tn_conn: one accepted downstream connection (a device). It owns the
 *   socket (and the TLS layer on listen_tls), admits or refuses the client,
 *   completes the TLS handshake, then tells HTTP/2 (ALPN h2, or the h2c
 *   preface) from HTTP/1.1 and hands its transport over:
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
 * once both endpoints reported closed and no getaddrinfo is outstanding.
 * An HTTP/1.1 tunnel also releases its connection then.
 */
#ifndef TN_INTERNAL_H
#define TN_INTERNAL_H

#include <llhttp.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "tunnel/addr.h"
#include "tunnel/engine.h"
#include "tunnel/ep.h"

#define TN_HEADER_MAX (16 * 1024)     /* request head larger than this: 431 */
#define TN_BUF_SIZE (256 * 1024)      /* relay read buffer: one read, one write for bulk */
#define TN_RELAY_HIGH (256 * 1024)    /* stop reading when the other side has this much unsent */
#define TN_RELAY_LOW (64 * 1024)      /* resume once it is below this */
#define TN_LINGER_MS 2000             /* after an error response, drain the client for at most this long */
#define TN_SWEEP_MS 250
/* Device bytes held before the tunnel is up. HTTP/1.1 stops reading past
 * TN_RELAY_HIGH; HTTP/2 is bounded by h2_stream_window (at most 16 MiB). */
#define TN_PENDING_MAX (32 * 1024 * 1024)

typedef struct tn_tunnel tn_tunnel;
typedef struct tn_conn tn_conn;
typedef struct tn_h2 tn_h2;

/* Intrusive doubly-linked list. */
typedef struct tn_link {
  struct tn_link *prev, *next;
} tn_link;

typedef enum {
  TN_PHASE_HEADER = 0,
  TN_PHASE_RESOLVING,
  TN_PHASE_CONNECTING,
  TN_PHASE_RELAY,
  TN_PHASE_LINGER,
  TN_PHASE_CLOSING
} tn_phase;

/* ---- the protocol table ----
 *
 * Each front end (the request protocol a device speaks) is one table of
 * operations. The connection, the tunnel life cycle and the relay call
 * through it and never test which protocol a tunnel uses: a new front end
 * (CONNECT-UDP next) is a new table, chosen by whichever front end parsed
 * the request (tn__tunnel_new) or, for start, by protocol detection in
 * conn.c. Properties describe what the engine may do with a tunnel of the
 * protocol; they are not tested against a protocol's identity. */
typedef struct tn_proto {
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
  /* Fills the protocol's part of info (today its name). */
  void (*describe)(const tn_tunnel *t, tn_tunnel_info *info);
} tn_proto;

extern const tn_proto tn__proto_h1; /* h1.c */
extern const tn_proto tn__proto_h2; /* h2.c */

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
  tn_link link;               /* first member: in the engine's conn lists */
  tn_engine *engine;
  size_t listener;
  struct sockaddr_in6 client; /* also holds sockaddr_in */
  char *subject;              /* verified device certificate subject, or NULL */
  tn_conn_mode mode;
  uint64_t deadline_ms;       /* set-up: TLS handshake and first bytes */
  tn_ep_tcp tcp;
  struct tn_ep_tls *tls;      /* NULL on plain listeners */
  tn_ep *transport;           /* &tcp.ep, or the TLS endpoint */
  char sniff[24];             /* first bytes, to tell the h2c preface from HTTP/1.1 */
  size_t sniff_len;
};

/* Accepts from server into a new connection. Returns 0, or UV_ENOMEM when
 * the connection could not even be allocated: then the pending connection
 * is still on the listener and the caller must drop it (tn_spare). */
int tn__conn_accept(tn_engine *e, size_t listener, uv_stream_t *server, bool tls);
/* The set-up deadline passed. */
void tn__conn_timeout(tn_conn *c);
/* Closes a connection still in set-up (drain, timeout, refusal). */
void tn__conn_abort(tn_conn *c, const char *reason);
/* The connection's transport reported closed and its user is done with it. */
void tn__conn_free(tn_conn *c);

/* ---- tunnels (tunnel.c) ---- */

/* State needed only until the relay starts. */
typedef struct tn_setup {
  llhttp_t parser;
  char target[TN_HOST_MAX + 16]; /* raw request target */
  size_t target_len;
  bool target_overflow;
  size_t header_bytes;
  bool request_done;
  tn_authority auth;
  uv_getaddrinfo_t gai;
  struct addrinfo *ai_list;      /* owned; freed with uv_freeaddrinfo */
  struct addrinfo *ai_next;      /* next address to try */
  struct addrinfo literal_ai;    /* an IP-literal target as a one-entry list */
  struct sockaddr_storage literal_ss;
  unsigned addrs_denied;         /* resolved addresses refused by allow_private */
  uint64_t connect_deadline_ms;  /* connect_timeout for the whole request */
  int last_connect_err;
  struct sockaddr_storage connect_addr;
  uv_connect_t connect_req;
  char *pending;                 /* device bytes that arrived before the tunnel was up */
  size_t pending_len;
} tn_setup;

struct tn_tunnel {
  tn_link link;                  /* first member: in the engine's setup or relay list */
  tn_engine *engine;
  tn_conn *conn;                 /* the device's connection */
  const tn_proto *proto;          /* its front end */
  uint64_t id;
  tn_phase phase;
  tn_result result;
  int status;                    /* HTTP status sent, 0 if none */
  uint32_t retry_after_s;        /* Retry-After of a 429/503 answer; 0 = none */
  const char *close_reason;      /* static string */
  tn_ep *down;                   /* h1: the connection's transport; h2: the stream */
  tn_ep_tcp up;                  /* the destination; initialised per connect attempt */
  void *stream;                  /* h2: the stream (h2.c) */
  tn_setup *setup;
  char *target;                  /* normalised "host:port", for logs; owned */
  struct sockaddr_in6 connected;
  uint64_t started_ms;
  uint64_t request_ms;           /* request complete; 0 before */
  uint64_t connect_ms;           /* request to upstream connected; 0 if never */
  uint64_t deadline_ms;          /* set-up phases: when to time out; 0 = none */
  uint64_t last_activity_ms;
  uint64_t bytes_up, bytes_down;
  uint8_t tls_checked;           /* bytes of the first TLS record header verified */
  uint8_t tls_len_hi;            /* high byte of that record's length */
  uint8_t eps_open;              /* endpoints whose closed callback is still due */
  bool gai_pending;
  bool admitted;                 /* holds a max_tunnels slot */
  bool down_gone;                /* h2: the device reset the stream after its END_STREAM:
                                    nothing more can reach it, its data still goes up */
  bool busy;                     /* inside tn__tunnel_close: not to be freed yet */
  bool splice_ok;                /* plain TCP both sides and splice not off */
  bool splice_want;              /* move to splice as soon as nothing is queued */
  struct tn_splice *splice;      /* relaying with splice(2); NULL when copying */
};

/* Creates a tunnel of front end proto for conn whose device side is down
 * (sink set here), in phase HEADER. NULL on ENOMEM. A front end that has the
 * request head already moves it on and calls tn__tunnel_request. */
tn_tunnel *tn__tunnel_new(tn_conn *c, const tn_proto *proto, tn_ep *down);
/* A complete request for authority: checks it (400, 403, 503, require_tls on
 * bytes already held) and starts connecting. */
void tn__tunnel_request(tn_tunnel *t, const char *authority, size_t len);
/* Device bytes that arrived before the relay started; false on overflow. */
bool tn__tunnel_hold(tn_tunnel *t, const char *p, size_t n);
/* How tn__tunnel_close ends the endpoints: FIN closes them gracefully
 * (queued bytes still go out, HTTP/2 ends the stream cleanly); RESET aborts
 * both (TCP RST, RST_STREAM(CONNECT_ERROR)), for a side that failed. */
typedef enum { TN_CLOSE_FIN = 0, TN_CLOSE_RESET } tn_close_how;
/* The one teardown path: records r and reason (a static string, the access
 * log's `close` field; kept from tn__tunnel_fail in LINGER), writes the
 * access log, closes both endpoints as `how` says; the tunnel is freed once
 * they reported closed. Idempotent. */
void tn__tunnel_close(tn_tunnel *t, tn_result r, const char *reason, tn_close_how how);
/* Answers an error status (h1: lingering close; h2: on the stream). */
void tn__tunnel_fail(tn_tunnel *t, tn_result r, int status, const char *reason);
void tn__tunnel_timeout(tn_tunnel *t);
void tn__tunnel_info(const tn_tunnel *t, uint64_t now, tn_tunnel_info *info);
void tn__setup_free(tn_tunnel *t);
/* The getaddrinfo callback ran: the tunnel may now be freed. */
void tn__gai_done(tn_tunnel *t);
/* An endpoint of t reported closed. */
void tn__tunnel_ep_closed(tn_tunnel *t);


/* connect.c: resolve, check and connect; on success calls tn__relay_start. */
void tn__connect_start(tn_tunnel *t);
/* The upstream endpoint reported closed: the next address, or teardown. */
void tn__connect_up_closed(tn_tunnel *t);
/* The sweep found the deadline passed while connecting: gives up on this
 * address for the next one while time and addresses remain; false when the
 * request as a whole timed out. */
bool tn__connect_attempt_timeout(tn_tunnel *t);

/* relay.c */
extern const tn_ep_sink tn__down_sink;
extern const tn_ep_sink tn__up_sink;
void tn__relay_start(tn_tunnel *t);
/* Checks bytes against the TLS record header (RFC 8446 5.1) incrementally.
 * Returns false when they cannot start a TLS handshake record. */
bool tn__tls_check(tn_tunnel *t, const char *p, size_t n);

/* splice.c: the zero-copy relay for tunnels with a plain TCP socket on both
 * sides. A spliced tunnel stops reading its endpoints; the bytes go socket
 * -> pipe -> socket in the kernel, one pipe per direction. */
#define TN_SPLICE_AUTO_MIN (256 * 1024)  /* auto: splice once a tunnel relayed this much */
#define TN_SPLICE_MAX 256                /* tunnels spliced at once, at most (tn_splice_max) */
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


/* engine.c */
uv_loop_t *tn__loop(tn_engine *e);
const tn_engine_opts *tn__opts(tn_engine *e);
SSL_CTX *tn__tls_ctx(tn_engine *e);
bool tn__authorized(tn_engine *e);
bool tn__draining(tn_engine *e);
/* Where the engine's files log (opts.logger; NULL: nowhere). */
tn_logger *tn__logger(tn_engine *e);
/* The engine's relay buffers (bufpool.c). */
tn_bufpool *tn__bufpool(tn_engine *e);
/* True the first time only: splice_unavailable is said once at warn. */
bool tn__splice_warn_once(tn_engine *e);
void tn__list_move(tn_engine *e, tn_tunnel *t, bool to_relay);
/* A new tunnel: gives it the engine's next id (from 1), lists it in set-up. */
void tn__engine_tunnel_added(tn_engine *e, tn_tunnel *t);
void tn__engine_tunnel_done(tn_engine *e, tn_tunnel *t); /* after the access log */
void tn__engine_tunnel_freed(tn_engine *e);
void tn__engine_conn_added(tn_engine *e, tn_conn *c);
void tn__engine_conn_moved(tn_engine *e, tn_conn *c); /* left set-up */
/* Into TN_CONN_LINGER, with a TN_LINGER_MS deadline (tn__conn_timeout). */
void tn__engine_conn_linger(tn_engine *e, tn_conn *c);
void tn__engine_conn_freed(tn_engine *e, tn_conn *c);
/* Multiplexed sessions (HTTP/2): the engine keeps them in one list that the
 * front end walks on drain (tn__engine_sessions). */
void tn__engine_session_added(tn_engine *e, tn_link *link);
void tn__engine_session_removed(tn_engine *e, tn_link *link);
tn_link *tn__engine_sessions(tn_engine *e);
void tn__count_bytes(tn_engine *e, uint64_t up, uint64_t down);
void tn__count_refused_client(tn_engine *e);
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
void tn__count_goaway(tn_engine *e, tn_goaway_reason r);

/* bufpool.c: TN_BUF_SIZE (256 KiB) read buffers, each engine's kept in a
 * small free list of its own (tn_bufpool, in ep.h). */
/* A buffer of TN_BUF_SIZE bytes from p, or NULL on ENOMEM. */
char *tn__buf_get(tn_bufpool *p);
/* libuv alloc callback for a tn_ep_tcp's handle: a buffer from its pool. */
void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
/* Gives a buffer of tn__buf_get back to its own pool; NULL is ignored. */
void tn__buf_release(char *p);
/* Frees the buffers p keeps (the engine's end: none is in flight then). */
void tn__bufpool_trim(tn_bufpool *p);

/* clients.c: per-client tunnel counts. A client is its device certificate
 * subject when it has one, else its IP address. */
typedef struct tn_clients tn_clients;
#define TN_CLIENT_KEY_MAX 257 /* tag byte + a subject of up to 256 bytes, or 16 address bytes */
typedef struct {
  uint8_t b[TN_CLIENT_KEY_MAX];
  uint16_t len;
} tn_client_key;
/* The bytes that name a client: 'S' + subject, or 4/6 + the address bytes. */
void tn__client_key(const struct sockaddr *sa, const char *subject, tn_client_key *k);
tn_clients *tn__clients_new(void);
void tn__clients_free(tn_clients *c);
/* Increments the count for the client; returns the new count, 0 on ENOMEM. */
uint32_t tn__clients_add(tn_clients *c, const struct sockaddr *sa, const char *subject);
void tn__clients_remove(tn_clients *c, const struct sockaddr *sa, const char *subject);
uint32_t tn__clients_get(const tn_clients *c, const struct sockaddr *sa, const char *subject);
uint64_t tn__clients_active(const tn_clients *c);

#endif
