/* The relay engine: listeners (plain and TLS), the HTTP/1.1 and HTTP/2
 * CONNECT front ends, destination policy, resolver, upstream connect and the
 * byte relay, on one libuv loop.
 *
 * Usable on its own (it does not depend on gateway/): fill a tn_engine_opts,
 * tn_engine_start() it on a loop, read tn_engine_stats_get() whenever, and
 * tn_engine_drain() to stop. All its state is in the engine object: several
 * engines may run in one process, each on its own loop (and thread). The
 * engine logs through the tn_logger of its options (tunnel/log.h). Every
 * function runs on the engine's loop thread and no callback is called from
 * inside the call that registers it.
 *
 * Errors (the one convention of tunnel/): a function that can fail returns
 * 0 or a negative code, a TN_E* of tunnel/error.h or a libuv UV_E* passed
 * through (TN_EINVAL and TN_ENOMEM equal UV_EINVAL and UV_ENOMEM);
 * tn_strerror() names any of them. On failure out-parameters are untouched
 * and nothing is left allocated or open, and a callback given to the failed
 * call is never called. Functions that only look things up return a bool,
 * a count or NULL; parsers of configuration strings return -1 (enums) or
 * TN_EINVAL with a static reason (tn_rule_parse). What a device did wrong
 * is never an error of the API: it is a tunnel's result (tn_result) and
 * HTTP status, in the access log and tn_engine_stats.
 */
#ifndef TN_ENGINE_H
#define TN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "tunnel/log.h"
#include "tunnel/policy.h"
#include "tunnel/ratelimit.h"
#include "tunnel/resolver.h"

/* How tunnels with a plain TCP socket on both sides (HTTP/1.1 on a plain
 * listener) move bytes. OFF copies through user space; AUTO (the default)
 * copies, and moves a tunnel to splice(2) once it has relayed 256 KiB, so
 * short exchanges cost no extra descriptors; ALWAYS moves it as soon as the
 * relay starts (for tests and measurements). Other tunnels always copy. */
typedef enum { TN_SPLICE_AUTO = 0, TN_SPLICE_OFF, TN_SPLICE_ALWAYS } tn_splice_mode;

/* Spliced tunnels hold 6 more descriptors each (two dups, two pipes), so
 * splicing is bounded by the descriptor limit: at most
 * tn_splice_max(RLIMIT_NOFILE) tunnels at once, i.e. min(256, limit / 48),
 * an eighth of the descriptors; and a tunnel is moved only while at most half
 * the descriptors are in use. Past either bound tunnels copy. */
uint64_t tn_splice_max(uint64_t nofile);

/* "auto", "off", "always" (a static string; "?" when m is out of range). */
const char *tn_splice_mode_name(tn_splice_mode m);
/* The mode named s, or -1. */
int tn_splice_mode_parse(const char *s);

/* rate_exempt: a client the per-client new-tunnel rate does not apply to,
 * by certificate subject (exact) or source address prefix; all = every
 * client ("*"). */
#define TN_SUBJECT_MAX 256
typedef struct tn_exempt {
  bool all;
  bool is_subject;
  tn_cidr cidr;
  char subject[TN_SUBJECT_MAX + 1];
} tn_exempt;

/* An egress: how upstream connections of the rules naming it leave the
 * gateway ([egress NAME]). An egress only says how, never whether: the allow
 * rules decide what is reached. */
#define TN_EGRESS_NAME_MAX 32
typedef struct tn_egress {
  char name[TN_EGRESS_NAME_MAX + 1];
  char interface[16];             /* SO_BINDTODEVICE; "" = none */
  struct sockaddr_storage source; /* bind address (port 0); ss_family 0 = none */
  int dscp;                       /* 0..63 as IP_TOS / IPV6_TCLASS; -1 = not set */
  uint32_t mark;                  /* SO_MARK, when has_mark */
  bool has_mark;
} tn_egress;

/* Applies eg to a socket of family (AF_INET, AF_INET6) before its connect:
 * SO_BINDTODEVICE, SO_MARK, IP_TOS/IPV6_TCLASS, bind to the source. 0 (also
 * for NULL or an unnamed egress), a negative errno, or UV_EAFNOSUPPORT when
 * the source is of the other family (that address cannot be used). */
int tn_egress_apply(int fd, const tn_egress *eg, int family);
/* Whether source (an egress's source address; true when unset) is an address
 * of this host now: a socket can bind to it. */
bool tn_egress_source_here(const struct sockaddr_storage *source);
/* Whether eg can be used now: its source address (if any) is one of this
 * host's, and its interface (if any) exists and is up and running. */
bool tn_egress_up(const tn_egress *eg);

typedef struct tn_engine_opts {
  struct sockaddr_storage *listen; /* plain listeners: HTTP/1.1, and h2c with prior knowledge */
  size_t n_listen;
  struct sockaddr_storage *listen_tls; /* TLS listeners: ALPN h2 or http/1.1 */
  size_t n_listen_tls;
  char *tls_cert; /* PEM chain for listen_tls */
  char *tls_key;
  char *client_ca;  /* when set, devices must present a certificate chaining to it */
  tn_cidr *clients; /* source addresses admitted on every listener; none = all */
  size_t n_clients;
  uint32_t h2_max_concurrent_streams;
  uint32_t h2_stream_window; /* bytes: per-stream flow-control window */
  tn_policy policy;
  bool require_tls;                /* first client bytes must be a TLS handshake record */
  uint32_t max_tunnels;            /* 0 = no limit */
  uint32_t max_tunnels_per_client; /* 0 = no limit */
  tn_rate new_tunnels_per_client;  /* max_new_tunnels_per_client, new_tunnels_burst */
  tn_rate new_upstream_per_target; /* max_new_upstream_per_target (burst = one second) */
  tn_exempt *rate_exempt;          /* clients new_tunnels_per_client does not apply to */
  size_t n_rate_exempt;
  uint32_t h2_max_refused_per_connection; /* 429s before GOAWAY(ENHANCE_YOUR_CALM); 0 = never */
  uint64_t header_timeout_ms;
  uint64_t connect_timeout_ms;
  uint64_t idle_timeout_ms; /* 0 = none */
  uint64_t drain_timeout_ms;
  uint64_t udp_idle_timeout_ms;      /* CONNECT-UDP: no datagram either way this long ends it */
  uint32_t udp_max_payload;          /* CONNECT-UDP: larger datagrams are dropped (<= 65527) */
  uint64_t attempt_delay_ms;         /* Happy Eyeballs: between connection attempts (250 ms) */
  uint64_t upstream_keepalive_ms;    /* TCP keepalive idle time upstream (30 s); 0 = off */
  uint64_t upstream_user_timeout_ms; /* TCP_USER_TIMEOUT upstream (30 s); 0 = the kernel's */
  uint64_t downstream_keepalive_ms;  /* TCP keepalive idle time on device sockets (60 s); 0 = off */
  tn_splice_mode splice;
  tn_egress *egress; /* [egress NAME] sections; rules refer to them by index + 1 */
  size_t n_egress;
  uint16_t default_egress; /* [tunnel] egress: index + 1; 0 = none */
  tn_logger *logger;       /* where the engine logs: not owned (copied as a pointer),
                        must outlive the engine; NULL: nothing is logged */
  tn_resolver *resolver;   /* name lookups: not owned (copied as a pointer), must
                            outlive the engine, shared with other users of the
                            loop; NULL: the engine makes its own with the
                            defaults of tn_resolver_opts_init. Only the one
                            given to tn_engine_start counts (update keeps it). */
} tn_engine_opts;

/* Defaults: no listeners, nothing allowed, require_tls, 10000/256 tunnels,
 * 10 s header and connect timeouts, 30 min idle, 30 s drain, 100 HTTP/2
 * streams per connection with 256 KiB windows, splice auto; 20 new tunnels
 * per second per client (burst 50), 200 new upstream connections per second
 * per target, GOAWAY after 100 refusals on an HTTP/2 connection. */
void tn_engine_opts_init(tn_engine_opts *o);
/* Deep copy (listeners, files, clients, rules); dst is overwritten (not
 * freed first); the logger is copied as a pointer. 0, or TN_ENOMEM with dst
 * untouched. */
int tn_engine_opts_copy(tn_engine_opts *dst, const tn_engine_opts *src);
/* Frees what tn_engine_opts_copy allocated in o (arrays, strings, rules)
 * and leaves those members empty; o itself and the logger are not freed. */
void tn_engine_opts_free(tn_engine_opts *o);

/* How a tunnel's set-up ended. Also the `result` field of the access log. */
typedef enum {
  TN_RESULT_OK = 0,          /* 200 sent, relayed */
  TN_RESULT_BAD_REQUEST,     /* 400, 405, 431 */
  TN_RESULT_DENIED,          /* 403 */
  TN_RESULT_REFUSED_NOT_TLS, /* require_tls and the first bytes were not TLS */
  TN_RESULT_CONNECT_FAILED,  /* 502: resolution or connect failed */
  TN_RESULT_TIMEOUT,         /* 504 connect timeout, or 408 header timeout */
  TN_RESULT_LIMIT,        /* 503 (max_tunnels*, max_new_upstream_per_target: close=target_rate) */
  TN_RESULT_ERROR,        /* client went away before its request was complete, internal errors */
  TN_RESULT_RATE_LIMITED, /* 429: max_new_tunnels_per_client */
  TN_RESULT_CANCELLED,    /* the device reset or closed while its tunnel was being set up
                                (close=reset_down): the device gave up, not a gateway error */
  TN_RESULT_COUNT_
} tn_result;

/* The access log's name of r ("ok", "denied", ...): a static string;
 * "unknown" out of range. */
const char *tn_result_name(tn_result r);

/* Why the gateway sent GOAWAY on an HTTP/2 connection. */
typedef enum {
  TN_GOAWAY_DRAIN = 0,    /* shutting down (NO_ERROR) */
  TN_GOAWAY_RATE_LIMITED, /* h2_max_refused_per_connection 429s (ENHANCE_YOUR_CALM) */
  TN_GOAWAY_FLOOD,        /* nghttp2's own flood limits, e.g. rapid reset (ENHANCE_YOUR_CALM) */
  TN_GOAWAY_PROTOCOL,     /* the device broke the protocol */
  TN_GOAWAY_COUNT_
} tn_goaway_reason;

/* "drain", "rate_limited", "flood", "protocol_error" (static strings;
 * "unknown" out of range). */
const char *tn_goaway_reason_name(tn_goaway_reason r);

/* Why a CONNECT-UDP datagram was dropped (mcgw_udp_datagrams_dropped_total
 * {reason}); tn_udp_drop_name gives the label. */
typedef enum {
  TN_UDP_DROP_TOO_LARGE = 0, /* payload over udp_max_payload */
  TN_UDP_DROP_CONTEXT,       /* a DATAGRAM capsule with a Context ID other than 0 */
  TN_UDP_DROP_DEVICE_BUSY,   /* towards the device: 64 KiB already waiting for it */
  TN_UDP_DROP_TARGET_BUSY,   /* towards the target: the socket would block */
  TN_UDP_DROP_SEND_FAILED,   /* towards the target: another send error */
  TN_UDP_DROP_NO_MEMORY,
  TN_UDP_DROP_RECEIVE_OVERFLOW, /* towards the device: the kernel dropped it, the tunnel's socket
                                 * buffer full before mcgw read it (SO_MEMINFO drops) */
  TN_UDP_DROP_COUNT_
} tn_udp_drop;

/* "too_large", "context", ...: a static string; "unknown" out of range. */
const char *tn_udp_drop_name(tn_udp_drop d);

typedef struct tn_engine_stats {
  uint64_t connections_active; /* downstream connections accepted, not yet closed */
  uint64_t tunnels_active;     /* requests admitted (connecting or relaying), not yet closed */
  uint64_t tunnels_total;      /* connections accepted since start: each ends with one result */
  uint64_t by_result[TN_RESULT_COUNT_]; /* closed tunnels, by result */
  uint64_t bytes_up;                    /* device -> upstream, closed and open tunnels */
  uint64_t bytes_down;                  /* upstream -> device */
  uint64_t clients_active;              /* distinct client addresses with an open tunnel */
  uint64_t accept_errors;
  uint64_t clients_refused; /* connections closed unread: source not in `clients` */
  uint64_t h2_connections_active;
  uint64_t
      by_proto_active[2];   /* tunnels_active by protocol (tn_proto.stats_index): [0] h1, [1] h2 */
  uint64_t tunnels_spliced; /* tunnels moved to splice(2) since start */
  uint64_t splice_active;   /* open tunnels relaying with splice(2) */
  uint64_t h2_goaway[TN_GOAWAY_COUNT_]; /* GOAWAY frames sent, by reason */
  uint64_t clients_rate_limited;   /* clients refused by their new-tunnel rate in the last 10 s */
  uint64_t by_proto_udp_active[2]; /* CONNECT-UDP tunnels among by_proto_active */
  uint64_t udp_datagrams_up, udp_datagrams_down; /* relayed, since start */
  uint64_t udp_dropped[TN_UDP_DROP_COUNT_];      /* dropped, by reason */
  uint64_t udp_icmp_unreachable; /* ICMP unreachable from targets (the tunnel stays) */
  /* The new-tunnel rate tables: keys with a bucket now, and the most they
   * hold (past it the least recently seen key is forgotten; see ratelimit.h).
   * clients: max_new_tunnels_per_client; targets: max_new_upstream_per_target. */
  uint64_t rate_clients_tracked, rate_clients_max;
  uint64_t rate_targets_tracked, rate_targets_max;
} tn_engine_stats;

typedef struct tn_engine tn_engine;

/* What the engine can say about one tunnel: metadata only, never payload. */
typedef struct tn_tunnel_info {
  uint64_t id;
  const char *proto; /* the front end: "h1" or "h2" (static) */
  size_t listener;   /* index into opts.listen */
  const struct sockaddr *client;
  const char *client_subject;       /* device certificate subject, or NULL */
  const char *target;               /* normalised "host:port", or NULL before parsing */
  const struct sockaddr *connected; /* NULL until connected */
  const struct sockaddr *local;     /* the gateway's upstream address:port; NULL until connected */
  const char *egress;               /* the egress's name, or NULL for none */
  bool established;                 /* 200 sent, relaying */
  tn_result result;                 /* meaningful once closed */
  int status;                       /* HTTP status sent, 0 if none */
  const char *close_reason;
  uint64_t age_ms;
  uint64_t connect_ms;           /* request to upstream connected; 0 if never */
  uint64_t bytes_up, bytes_down; /* UDP: payload bytes */
  bool udp;                      /* a CONNECT-UDP tunnel (type=udp), else TCP */
  uint64_t datagrams_up, datagrams_down, datagrams_dropped; /* UDP only */
} tn_tunnel_info;

/* A callback about one tunnel: info and what it points to are valid only
 * during the call. */
typedef void (*tn_tunnel_cb)(const tn_tunnel_info *info, void *arg);

/* Binds every listener and starts accepting on loop, which must outlive the
 * engine. The options are copied (the logger only as a pointer). On success
 * *out is the engine, owned by the caller until tn_engine_drain's done
 * callback. On failure returns a negative error (TN_ENOMEM, TN_ETLS for a
 * certificate that does not load, a libuv error for a listener that cannot
 * bind), logs which listener or file failed, and *out is untouched; nothing
 * is left open (handles already made close on the loop and free
 * themselves). */
int tn_engine_start(uv_loop_t *loop, const tn_engine_opts *opts, tn_engine **out);

/* Listeners have stable indices for the engine's life: those of the
 * starting options (plain first, then TLS), then any a reload opened. A
 * listener a reload closed keeps its index (open = false) while connections
 * it accepted remain. */
typedef struct tn_listener_info {
  struct sockaddr_storage addr; /* bound address (port 0 resolved) */
  bool tls;
  bool open;
  uint64_t connections_active;
} tn_listener_info;

/* Fills *out for listener i. Returns 0, or TN_EINVAL past the last
 * listener (out untouched). */
int tn_engine_listener_info(const tn_engine *e, size_t i, tn_listener_info *out);
/* The bound address of listener i (as tn_engine_listener_info): 0, or
 * TN_EINVAL with out untouched. */
int tn_engine_listener_addr(const tn_engine *e, size_t i, struct sockaddr_storage *out);

/* Applies new options to tunnels opened from now on (policy, limits,
 * timeouts, clients, TLS certificate and client CA), opens listeners the new
 * options add and closes those they drop (connections already accepted stay
 * up). Returns 0, or a negative error with nothing changed: old options and
 * listeners stay in force (a new listener that cannot bind, or a TLS
 * certificate that does not load, rejects the whole update). */
int tn_engine_update(tn_engine *e, const tn_engine_opts *opts);

/* A snapshot of the engine's counters into *out. */
void tn_engine_stats_get(const tn_engine *e, tn_engine_stats *out);

/* Downstream connections open on listener i right now; 0 past the last. */
uint64_t tn_engine_listener_active(const tn_engine *e, size_t i);

/* cb runs once per tunnel as it closes, right after its access-log line
 * (for metrics such as duration histograms), from inside the engine: it
 * must not call back into the engine. One observer; NULL removes it. */
void tn_engine_on_close(tn_engine *e, tn_tunnel_cb cb, void *arg);

/* Calls cb, synchronously, for every tunnel not yet closed: established
 * tunnels first, then those still being set up. cb must not call back into
 * the engine. */
void tn_engine_foreach(const tn_engine *e, tn_tunnel_cb cb, void *arg);

/* A client being held to max_new_tunnels_per_client now (refused within
 * the last 10 s): its subject or address, since when, and the refusals. */
typedef struct tn_limited_client {
  const char *client; /* certificate subject, or IP address */
  bool is_subject;
  uint64_t since_ms; /* how long it has been refused, without a 10 s pause */
  uint64_t refused;
  uint64_t last_ms; /* since the last refusal */
} tn_limited_client;

/* Calls cb for every client being rate limited now, synchronously; c and
 * its strings are valid only during the call, which must not call back into
 * the engine. */
void tn_engine_foreach_limited(const tn_engine *e,
                               void (*cb)(const tn_limited_client *c, void *arg), void *arg);

/* Whether the gateway itself currently holds a valid access token. Rules
 * marked when_authorized (allow_when_authorized) match only while it does,
 * for requests checked from now on. Starts false. */
void tn_engine_set_authorized(tn_engine *e, bool authorized);

/* Stops accepting, closes connections whose request is still being read,
 * sends HTTP/2 sessions GOAWAY (requests arriving now get 503), lets open
 * tunnels finish for drain_timeout_ms, then closes what is left. done(arg)
 * (may be NULL) runs once, from the loop, after every handle of the engine
 * is closed. The engine stays readable (stats, foreach) until then and is
 * freed right before done is called: e must not be used from done on. A
 * second call while draining is ignored. */
void tn_engine_drain(tn_engine *e, void (*done)(void *arg), void *arg);

#endif
