/* Private to tunnel/: the engine object, shared by engine.c (the top: the
 * public API, listeners, accept, sweep, drain) and service.c (the services
 * the other files call). No other file includes it: they reach the engine
 * through service.h. See objects.h for the layering.
 */
#ifndef TN_ENGINE_STATE_H
#define TN_ENGINE_STATE_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "tunnel/clients.h"
#include "tunnel/objects.h"
#include "tunnel/ratelimit.h"
#include "tunnel/spare.h"

#define TN_SWEEP_MS 250 /* deadline checks while something is being set up */

typedef struct tn_listener {
  uv_tcp_t tcp;
  tn_engine *engine;
  size_t index;
  bool tls;
  bool open;                          /* listening; false once closed by a reload or drain */
  uint64_t active;                    /* open downstream connections accepted here */
  struct sockaddr_storage configured; /* as in the options: what a reload compares */
  struct sockaddr_storage bound;
  tn_spare spare; /* drops a connection when memory is short */
} tn_listener;

struct tn_engine {
  uv_loop_t *loop;
  tn_engine_opts opts;
  SSL_CTX *tls_ctx;        /* for TLS listeners; NULL when there are none */
  tn_listener **listeners; /* stable slots: a handle never moves */
  size_t n_listeners, cap_listeners;
  uv_timer_t sweep;
  uv_timer_t drain_timer;
  uv_idle_t later;       /* runs later_list, once per loop iteration (service.c) */
  tn_link later_list;    /* tn_later items queued */
  unsigned handles_open; /* listeners, timers and the idle handle */
  tn_link setup_list;    /* tunnels with a deadline: header, connect, linger */
  tn_link relay_list;    /* established tunnels, checked for idleness */
  tn_link conn_setup;    /* connections with a deadline: TLS handshake / protocol
                             detection, or lingering after GOAWAY */
  tn_link conn_other;    /* connections handed over, or closing */
  tn_link sessions;      /* multiplexed sessions (HTTP/2), for GOAWAY on drain */
  uint64_t next_idle_sweep_ms;
  unsigned heads_open;    /* sessions with a request head begun, not complete */
  uint64_t tunnels_alloc; /* tunnels not yet freed */
  uint64_t conns_alloc;   /* connections not yet freed */
  tn_clients *clients;
  tn_ratetab *rate_clients; /* max_new_tunnels_per_client, by client key */
  tn_ratetab *rate_targets; /* max_new_upstream_per_target, by "host:port" */
  uint64_t rate_log_due_ms; /* when the sweep next reports suppressed refusals (429s, target_rate
                             * 503s); 0: none held */
  tn_resolver *resolver;    /* opts.resolver, or the engine's own */
  bool own_resolver;        /* closed by finish() */
  tn_engine_stats stats;
  tn_bufpool pool;       /* relay buffers kept for reuse */
  tn_bufpool dgram_pool; /* capsules towards devices (udp.c), kept for reuse */
  uint64_t next_id;      /* the next tunnel's id, from 1 */
  bool splice_warned;    /* splice_unavailable was logged at warn once */
  uint64_t last_accept_log_ms;
  uint64_t nofile; /* RLIMIT_NOFILE at start: bounds splicing */
  tn_tunnel_cb on_close;
  void *on_close_arg;
  bool authorized;
  bool draining;
  bool finishing;
  void (*done)(void *arg);
  void *done_arg;
  /* Installed by engine.c at start, called by service.c: */
  const tn_proto *const *protos; /* the front ends it runs */
  size_t n_protos;
  uv_timer_cb on_sweep;         /* the sweep timer's callback */
  void (*finish)(tn_engine *e); /* draining and every tunnel and connection gone */
};

#endif
