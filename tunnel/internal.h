/* Private to tunnel/: the tunnel object and the functions the engine's files
 * call on each other (prefix tn__). Not part of the engine's API.
 *
 * Life of a tunnel (one per accepted downstream connection):
 *
 *   HEADER --request--> RESOLVING --> CONNECTING --200--> RELAY
 *      |                    |              |                |
 *      +--error status--> LINGER           |                |
 *      +-----------------------------------+----------------+--> CLOSING --> freed
 *
 * Ownership: the tunnel owns its two uv_tcp_t handles (embedded), the set-up
 * state (freed when the relay starts) and every request it issues. It is freed
 * only by tn__tunnel_maybe_free(), once every handle close callback has run
 * and no request (getaddrinfo) is outstanding. tn__tunnel_close() is the one
 * teardown path.
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

#define TN_HEADER_MAX (16 * 1024)     /* request head larger than this: 431 */
#define TN_BUF_SIZE (64 * 1024)       /* relay read buffer */
#define TN_RELAY_HIGH (256 * 1024)    /* stop reading when the other side has this much unsent */
#define TN_RELAY_LOW (64 * 1024)      /* resume once it is below this */
#define TN_LINGER_MS 2000             /* after an error response, drain the client for at most this long */
#define TN_SWEEP_MS 250

typedef enum {
  TN_PHASE_HEADER = 0,
  TN_PHASE_RESOLVING,
  TN_PHASE_CONNECTING,
  TN_PHASE_RELAY,
  TN_PHASE_LINGER,
  TN_PHASE_CLOSING
} tn_phase;

typedef struct tn_tunnel tn_tunnel;

/* Intrusive doubly-linked list. */
typedef struct tn_link {
  struct tn_link *prev, *next;
} tn_link;

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
  int last_connect_err;
  struct sockaddr_storage connect_addr;
  uv_connect_t connect_req;
  char *pending;                 /* bytes the client sent after the request head */
  size_t pending_len;
} tn_setup;

/* One direction's endpoint. */
typedef struct tn_side {
  uv_tcp_t tcp;
  bool open;      /* handle initialised, not yet closed */
  bool reading;
  bool eof;       /* EOF read from this side */
  bool shut;      /* shutdown(SHUT_WR) sent to this side and completed */
} tn_side;

struct tn_tunnel {
  tn_link link;                  /* in the engine's setup or relay list */
  tn_engine *engine;
  uint64_t id;
  tn_phase phase;
  tn_result result;
  int status;                    /* HTTP status sent, 0 if none */
  const char *close_reason;      /* static string */
  tn_side down;                  /* the device */
  tn_side up;                    /* the destination */
  tn_setup *setup;
  char *target;                  /* normalised "host:port", for logs; owned */
  struct sockaddr_in6 client;    /* also holds sockaddr_in */
  struct sockaddr_in6 connected;
  size_t listener;               /* index of the listener that accepted it */
  uint64_t started_ms;
  uint64_t request_ms;           /* request head complete; 0 before */
  uint64_t connect_ms;           /* request to upstream connected; 0 if never */
  uint64_t deadline_ms;          /* set-up phases: when to time out; 0 = none */
  uint64_t last_activity_ms;
  uint64_t bytes_up, bytes_down;
  uint8_t tls_checked;           /* bytes of the first TLS record header verified */
  uint8_t tls_len_hi;            /* high byte of that record's length */
  bool gai_pending;
  bool admitted;                 /* holds a max_tunnels slot */
  uint8_t handles_open;
};

/* engine.c */
uv_loop_t *tn__loop(tn_engine *e);
const tn_engine_opts *tn__opts(tn_engine *e);
bool tn__authorized(tn_engine *e);
void tn__list_move(tn_engine *e, tn_tunnel *t, bool to_relay);
void tn__engine_tunnel_done(tn_engine *e, tn_tunnel *t); /* after the access log */
void tn__engine_tunnel_freed(tn_engine *e);
/* Fills info from t (pointers into t: valid while t lives). */
void tn__tunnel_info(const tn_tunnel *t, uint64_t now, tn_tunnel_info *info);
void tn__count_bytes(tn_engine *e, uint64_t up, uint64_t down);
/* Admission of a request: checks max_tunnels and max_tunnels_per_client.
 * Returns true and takes a slot, or false. */
bool tn__admit(tn_engine *e, tn_tunnel *t);

/* tunnel.c */
/* Accepts a connection into a new tunnel. The caller has counted the tunnel
 * as allocated; every path, NULL included, ends in exactly one
 * tn__engine_tunnel_freed(). */
tn_tunnel *tn__tunnel_new(tn_engine *e, uv_stream_t *server);
void tn__setup_free(tn_tunnel *t);
void tn__tunnel_close(tn_tunnel *t, tn_result r, const char *reason);
/* Sends an error status with a short body and Connection: close, then lingers
 * for the client to finish before closing. */
void tn__tunnel_fail(tn_tunnel *t, tn_result r, int status, const char *reason);
void tn__tunnel_timeout(tn_tunnel *t);
bool tn__tunnel_admitted(const tn_tunnel *t);
/* The getaddrinfo callback ran: the tunnel may now be freed. */
void tn__gai_done(tn_tunnel *t);
/* The close callback of every tunnel handle: frees the tunnel after the last. */
void tn__handle_closed(uv_handle_t *h);
/* Closes one side's handle (RST instead of FIN when reset is set). */
void tn__side_close(tn_tunnel *t, tn_side *s, bool reset);

/* h1.c */
void tn__h1_start(tn_tunnel *t);

/* connect.c: resolve, check and connect; on success calls tn__relay_start. */
void tn__connect_start(tn_tunnel *t);

/* relay.c */
void tn__relay_start(tn_tunnel *t);
/* Checks bytes against the TLS record header (RFC 8446 5.1) incrementally.
 * Returns false when they cannot start a TLS handshake record. */
bool tn__tls_check(tn_tunnel *t, const char *p, size_t n);

/* bufpool.c: 64 KiB read buffers, kept in a small free list. */
void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void tn__buf_release(char *p);
void tn__bufpool_trim(void);

/* clients.c: per-client-address tunnel counts. */
typedef struct tn_clients tn_clients;
tn_clients *tn__clients_new(void);
void tn__clients_free(tn_clients *c);
/* Increments the count for the address; returns the new count, 0 on ENOMEM. */
uint32_t tn__clients_add(tn_clients *c, const struct sockaddr *sa);
void tn__clients_remove(tn_clients *c, const struct sockaddr *sa);
uint32_t tn__clients_get(const tn_clients *c, const struct sockaddr *sa);
uint64_t tn__clients_active(const tn_clients *c);

#endif
