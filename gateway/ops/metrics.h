/* Prometheus metrics for the ops surface.
 *
 * Two halves: the state only mcgw's ops code keeps (per-protocol counters of
 * closed tunnels by result, the duration and connect-time histograms), fed
 * once per closed tunnel from the engine's close observer; and the rendering
 * of a whole scrape in the Prometheus text exposition format 0.0.4, from that
 * state plus a snapshot of everything else (engine counters, listeners, the
 * login state, reloads). Rendering is pure: no engine or loop access, so unit
 * tests can check the exact text.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/idm_view.h"
#include "tunnel/engine.h"

#define GW_METRICS_PROTO_MAX 8 /* distinct proto labels kept; more fold into the last */
#define GW_HIST_BUCKETS_MAX 20

typedef struct gw_histogram {
  const double *bounds; /* upper bounds in seconds, ascending; +Inf is implicit */
  size_t n_bounds;
  uint64_t buckets[GW_HIST_BUCKETS_MAX]; /* per bucket, not cumulative */
  uint64_t count;                        /* also the +Inf bucket */
  double sum;
} gw_histogram;

/* The type label of a tunnel: TCP (CONNECT) or UDP (CONNECT-UDP). */
typedef enum { GW_TYPE_TCP = 0, GW_TYPE_UDP, GW_TYPE_COUNT_ } gw_tunnel_type;

typedef struct gw_proto_stats {
  char name[16];
  uint64_t closed[GW_TYPE_COUNT_][TN_RESULT_COUNT_]; /* closed tunnels by type and result */
  uint64_t active[GW_TYPE_COUNT_]; /* open right now, by type; set by the caller per scrape */
} gw_proto_stats;

/* "tcp" or "udp". */
const char *gw_tunnel_type_name(gw_tunnel_type t);

typedef struct gw_metrics {
  gw_proto_stats protos[GW_METRICS_PROTO_MAX];
  size_t n_protos;
  gw_histogram duration; /* established tunnels: 200 sent to close */
  gw_histogram connect;  /* request complete to upstream connected */
} gw_metrics;

/* Empty counters; "h1" and "h2" exist from the start so that their series
 * are exported (as 0) before the first tunnel of each kind. */
void gw_metrics_init(gw_metrics *m);

/* The slot of a protocol label, created on first use. Once every slot is
 * taken, unknown names share the last one. Never NULL. */
gw_proto_stats *gw_metrics_proto(gw_metrics *m, const char *proto);

/* Counts one closed tunnel: its result under its proto, its duration when it
 * was established, its connect time when it reached the upstream. */
void gw_metrics_observe_close(gw_metrics *m, const tn_tunnel_info *info);

/* Counts one observation of seconds into h's buckets, count and sum. */
void gw_histogram_observe(gw_histogram *h, double seconds);

typedef struct gw_metrics_listener {
  const char *addr; /* "127.0.0.1:3128" */
  uint64_t connections_active;
} gw_metrics_listener;

/* Everything a scrape shows besides gw_metrics itself. */
typedef struct gw_metrics_snapshot {
  const char *version;
  tn_engine_stats stats;
  const gw_metrics_listener *listeners;
  size_t n_listeners;
  const gw_idm_view *idm;
  uint64_t clients_max_tunnels;                 /* open tunnels of the busiest client */
  uint32_t max_tunnels, max_tunnels_per_client; /* 0 = no limit */
  uint64_t reloads_ok, reloads_failed;
  bool last_reload_ok;             /* true until a reload fails */
  double last_reload_success_time; /* unix seconds: start or last good reload */
  double start_time;               /* unix seconds */
  const tn_resolver_stats *dns;    /* the shared resolver's counters; NULL: not shown */
} gw_metrics_snapshot;

/* Renders a full exposition: every metric with HELP and TYPE. Returns a
 * malloc'd NUL-terminated text (length in *len), or NULL when out of memory. */
char *gw_metrics_render(const gw_metrics *m, const gw_metrics_snapshot *s, size_t *len);

/* Whether the login state counts as authorized (a valid access token). */
bool gw_idm_view_authorized(const gw_idm_view *v);

#endif
