/* Prometheus metrics: counters, histograms and the text exposition. See
 * metrics.h. Format reference: Prometheus "Exposition formats", text 0.0.4:
 * one HELP and one TYPE line per metric family, label values escaped (\\, \",
 * \n), histogram buckets cumulative with le="+Inf" equal to _count. */
#include "gateway/ops/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tunnel durations: a login exchange takes well under a second, a call
 * minutes, a shift-long session hours. */
static const double duration_bounds[] = {0.1,  0.5,  1,    5,     15,    60,    300,  900,
                                         1800, 3600, 7200, 14400, 28800, 43200, 86400};
/* Upstream connect time, from a LAN server to a congested cellular uplink. */
static const double connect_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

void gw_metrics_init(gw_metrics *m) {
  memset(m, 0, sizeof(*m));
  m->duration.bounds = duration_bounds;
  m->duration.n_bounds = COUNT_OF(duration_bounds);
  m->connect.bounds = connect_bounds;
  m->connect.n_bounds = COUNT_OF(connect_bounds);
  gw_metrics_proto(m, "h1");
  gw_metrics_proto(m, "h2");
}

gw_proto_stats *gw_metrics_proto(gw_metrics *m, const char *proto) {
  if (!proto || !*proto)
    proto = "unknown";
  for (size_t i = 0; i < m->n_protos; i++)
    if (strcmp(m->protos[i].name, proto) == 0)
      return &m->protos[i];
  if (m->n_protos == GW_METRICS_PROTO_MAX)
    return &m->protos[GW_METRICS_PROTO_MAX - 1];
  gw_proto_stats *p = &m->protos[m->n_protos++];
  snprintf(p->name, sizeof(p->name), "%s", proto);
  return p;
}

void gw_histogram_observe(gw_histogram *h, double seconds) {
  size_t i = 0;
  while (i < h->n_bounds && seconds > h->bounds[i])
    i++;
  if (i < h->n_bounds)
    h->buckets[i]++;
  h->count++;
  h->sum += seconds;
}

const char *gw_tunnel_type_name(gw_tunnel_type t) { return t == GW_TYPE_UDP ? "udp" : "tcp"; }

void gw_metrics_observe_close(gw_metrics *m, const tn_tunnel_info *info) {
  gw_proto_stats *p = gw_metrics_proto(m, info->proto);
  if ((unsigned)info->result < TN_RESULT_COUNT_)
    p->closed[info->udp ? GW_TYPE_UDP : GW_TYPE_TCP][info->result]++;
  if (info->established)
    gw_histogram_observe(&m->duration, (double)info->age_ms / 1000.0);
  if (info->connected)
    gw_histogram_observe(&m->connect, (double)info->connect_ms / 1000.0);
}

bool gw_idm_view_authorized(const gw_idm_view *v) {
  return v && (v->state == GW_IDM_AUTHORIZED || v->state == GW_IDM_REFRESHING);
}

/* ---- text buffer ---- */

typedef struct out {
  char *s;
  size_t len, cap;
  bool oom;
} out;

__attribute__((format(printf, 2, 3))) static void put(out *o, const char *fmt, ...) {
  if (o->oom)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->s + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = true;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = (o->cap + (size_t)n + 1) * 2;
    char *grown = realloc(o->s, cap);
    if (!grown) {
      o->oom = true;
      return;
    }
    o->s = grown;
    o->cap = cap;
  }
}

/* A label value with \, " and newline escaped, as the format requires. */
static const char *esc(const char *v, char *buf, size_t len) {
  size_t o = 0;
  for (; v && *v && o + 3 < len; v++) {
    if (*v == '\\' || *v == '"') {
      buf[o++] = '\\';
      buf[o++] = *v;
    } else if (*v == '\n') {
      buf[o++] = '\\';
      buf[o++] = 'n';
    } else {
      buf[o++] = *v;
    }
  }
  buf[o] = '\0';
  return buf;
}

static void family(out *o, const char *name, const char *type, const char *help) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u(out *o, const char *name, uint64_t v) { put(o, "%s %" PRIu64 "\n", name, v); }

static void sample_d(out *o, const char *name, double v) { put(o, "%s %.17g\n", name, v); }

static void histogram(out *o, const char *name, const char *help, const gw_histogram *h) {
  family(o, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < h->n_bounds; i++) {
    cum += h->buckets[i];
    put(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, h->bounds[i], cum);
  }
  put(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
  put(o, "%s_sum %.17g\n", name, h->sum);
  put(o, "%s_count %" PRIu64 "\n", name, h->count);
}

/* ---- families ---- */

static void render_tunnels(out *o, const gw_metrics *m, const gw_metrics_snapshot *s) {
  char b[64];
  family(o, "mcgw_tunnels_active", "gauge",
         "Tunnels open right now (admitted: connecting or relaying), by protocol and type "
         "(tcp: CONNECT, udp: CONNECT-UDP).");
  for (size_t i = 0; i < m->n_protos; i++)
    for (int ty = 0; ty < GW_TYPE_COUNT_; ty++)
      put(o, "mcgw_tunnels_active{proto=\"%s\",type=\"%s\"} %" PRIu64 "\n",
          esc(m->protos[i].name, b, sizeof b), gw_tunnel_type_name((gw_tunnel_type)ty),
          m->protos[i].active[ty]);
  family(o, "mcgw_tunnels_total", "counter",
         "Tunnels closed, by protocol, type and result (ok, bad_request, denied, "
         "refused_not_tls, connect_failed, timeout, limit, error, rate_limited, cancelled).");
  for (size_t i = 0; i < m->n_protos; i++)
    for (int ty = 0; ty < GW_TYPE_COUNT_; ty++)
      for (int r = 0; r < TN_RESULT_COUNT_; r++)
        put(o, "mcgw_tunnels_total{proto=\"%s\",type=\"%s\",result=\"%s\"} %" PRIu64 "\n",
            esc(m->protos[i].name, b, sizeof b), gw_tunnel_type_name((gw_tunnel_type)ty),
            tn_result_name((tn_result)r), m->protos[i].closed[ty][r]);
  family(o, "mcgw_udp_datagrams_total", "counter",
         "CONNECT-UDP datagrams relayed: upstream = device to target, downstream = target to "
         "device.");
  put(o, "mcgw_udp_datagrams_total{direction=\"upstream\"} %" PRIu64 "\n",
      s->stats.udp_datagrams_up);
  put(o, "mcgw_udp_datagrams_total{direction=\"downstream\"} %" PRIu64 "\n",
      s->stats.udp_datagrams_down);
  family(o, "mcgw_udp_datagrams_dropped_total", "counter",
         "CONNECT-UDP datagrams dropped, by reason (too_large, context, device_busy, "
         "target_busy, send_failed, no_memory, receive_overflow).");
  for (int d = 0; d < TN_UDP_DROP_COUNT_; d++)
    put(o, "mcgw_udp_datagrams_dropped_total{reason=\"%s\"} %" PRIu64 "\n",
        tn_udp_drop_name((tn_udp_drop)d), s->stats.udp_dropped[d]);
  family(o, "mcgw_udp_icmp_unreachable_total", "counter",
         "ICMP port unreachable from CONNECT-UDP targets (a send or receive refused on the "
         "tunnel's socket); the tunnels stay up.");
  put(o, "mcgw_udp_icmp_unreachable_total %" PRIu64 "\n", s->stats.udp_icmp_unreachable);
  family(o, "mcgw_tunnel_bytes_total", "counter",
         "Bytes relayed: upstream = device to destination, downstream = destination to device.");
  put(o, "mcgw_tunnel_bytes_total{direction=\"upstream\"} %" PRIu64 "\n", s->stats.bytes_up);
  put(o, "mcgw_tunnel_bytes_total{direction=\"downstream\"} %" PRIu64 "\n", s->stats.bytes_down);
  family(o, "mcgw_tunnels_spliced_total", "counter",
         "Tunnels moved to the zero-copy splice(2) relay (plain TCP on both sides).");
  sample_u(o, "mcgw_tunnels_spliced_total", s->stats.tunnels_spliced);
  family(o, "mcgw_tunnels_spliced_active", "gauge",
         "Open tunnels relaying with splice(2) (at most 256; others copy).");
  sample_u(o, "mcgw_tunnels_spliced_active", s->stats.splice_active);
  histogram(o, "mcgw_tunnel_duration_seconds",
            "Lifetime of established tunnels, from the 200 response to the close.", &m->duration);
  histogram(o, "mcgw_tunnel_connect_seconds",
            "Time from a complete CONNECT request to the upstream TCP connection.", &m->connect);
}

static void render_limits(out *o, const gw_metrics_snapshot *s) {
  char b[128];
  family(o, "mcgw_downstream_connections_active", "gauge",
         "Device connections open on each proxy listener.");
  for (size_t i = 0; i < s->n_listeners; i++)
    put(o, "mcgw_downstream_connections_active{listener=\"%s\"} %" PRIu64 "\n",
        esc(s->listeners[i].addr, b, sizeof b), s->listeners[i].connections_active);
  family(o, "mcgw_downstream_connections_total", "counter",
         "Device connections accepted since start.");
  sample_u(o, "mcgw_downstream_connections_total", s->stats.tunnels_total);
  family(o, "mcgw_accept_errors_total", "counter",
         "Failed accepts (usually out of file descriptors).");
  sample_u(o, "mcgw_accept_errors_total", s->stats.accept_errors);
  family(o, "mcgw_clients_active", "gauge", "Distinct device addresses with an open tunnel.");
  sample_u(o, "mcgw_clients_active", s->stats.clients_active);
  family(
      o, "mcgw_client_tunnels_max", "gauge",
      "Open tunnels of the busiest device address (compare with mcgw_tunnels_per_client_limit).");
  sample_u(o, "mcgw_client_tunnels_max", s->clients_max_tunnels);
  family(o, "mcgw_tunnels_limit", "gauge", "max_tunnels in force (0: no limit).");
  sample_u(o, "mcgw_tunnels_limit", s->max_tunnels);
  family(o, "mcgw_tunnels_per_client_limit", "gauge",
         "max_tunnels_per_client in force (0: no limit).");
  sample_u(o, "mcgw_tunnels_per_client_limit", s->max_tunnels_per_client);
  family(o, "mcgw_clients_rate_limited", "gauge",
         "Devices refused by max_new_tunnels_per_client (429) in the last 10 s.");
  sample_u(o, "mcgw_clients_rate_limited", s->stats.clients_rate_limited);
  family(o, "mcgw_rate_limit_entries", "gauge",
         "Keys with a new-tunnel rate bucket now: clients (max_new_tunnels_per_client) and "
         "targets (max_new_upstream_per_target).");
  put(o, "mcgw_rate_limit_entries{table=\"clients\"} %" PRIu64 "\n", s->stats.rate_clients_tracked);
  put(o, "mcgw_rate_limit_entries{table=\"targets\"} %" PRIu64 "\n", s->stats.rate_targets_tracked);
  family(o, "mcgw_rate_limit_entries_max", "gauge",
         "The most keys each rate table holds; at it, the least recently seen key is forgotten "
         "(a flood from that many addresses).");
  put(o, "mcgw_rate_limit_entries_max{table=\"clients\"} %" PRIu64 "\n", s->stats.rate_clients_max);
  put(o, "mcgw_rate_limit_entries_max{table=\"targets\"} %" PRIu64 "\n", s->stats.rate_targets_max);
  family(o, "mcgw_h2_goaway_total", "counter",
         "GOAWAY frames sent on device HTTP/2 connections, by reason: drain (shutting down), "
         "rate_limited (h2_max_refused_per_connection 429s), flood (nghttp2's own limits, e.g. "
         "rapid reset), protocol_error.");
  for (int r = 0; r < TN_GOAWAY_COUNT_; r++)
    put(o, "mcgw_h2_goaway_total{reason=\"%s\"} %" PRIu64 "\n",
        tn_goaway_reason_name((tn_goaway_reason)r), s->stats.h2_goaway[r]);
}

/* A counter family with one sample per result label. */
static void counter_by_result(out *o, const char *name, const char *help,
                              const char *const results[], const uint64_t values[], size_t n) {
  family(o, name, "counter", help);
  for (size_t i = 0; i < n; i++)
    put(o, "%s{result=\"%s\"} %" PRIu64 "\n", name, results[i], values[i]);
}

static void render_idm(out *o, const gw_idm_view *v) {
  static const gw_idm_view none = {.state = GW_IDM_UNCONFIGURED};
  if (!v)
    v = &none;
  family(o, "mcgw_idm_authorized", "gauge",
         "1 while the gateway itself holds a valid access token (CSC-1 login), else 0.");
  sample_u(o, "mcgw_idm_authorized", gw_idm_view_authorized(v));
  family(o, "mcgw_idm_state", "gauge",
         "The gateway's login state: 1 for the current state, 0 for the others.");
  for (int st = GW_IDM_UNCONFIGURED; st <= GW_IDM_ERROR; st++)
    put(o, "mcgw_idm_state{state=\"%s\"} %d\n", gw_idm_state_name((gw_idm_state)st),
        v->state == (gw_idm_state)st);
  family(o, "mcgw_idm_access_token_expiry_timestamp_seconds", "gauge",
         "When the gateway's access token expires (unix seconds); 0 when it holds none.");
  put(o, "mcgw_idm_access_token_expiry_timestamp_seconds %" PRId64 "\n",
      v->access_token_expiry > 0 ? v->access_token_expiry : 0);
  static const char *const refresh_results[] = {"ok", "failed", "invalid_grant", "id_token_invalid",
                                                "not_for_mc_service"};
  const uint64_t refreshes[] = {v->refresh_ok, v->refresh_failed, v->refresh_invalid_grant,
                                v->refresh_id_token_invalid, v->refresh_not_for_mc_service};
  counter_by_result(o, "mcgw_idm_refresh_total",
                    "Access token refreshes by result: ok, failed (network, 5xx: retried), "
                    "invalid_grant (the IdMS refused the refresh token: the login is gone), "
                    "id_token_invalid (the refreshed ID token failed validation, e.g. the "
                    "gateway's clock: the login is ended), not_for_mc_service (valid tokens "
                    "without the MC service scope or ID required: the login is ended).",
                    refresh_results, refreshes, 5);
  static const char *const logout_results[] = {"revoked", "not_revoked", "nothing_held"};
  const uint64_t logouts[] = {v->logout_revoked, v->logout_not_revoked, v->logout_nothing_held};
  counter_by_result(o, "mcgw_idm_logout_total",
                    "Logouts by result: revoked (the refresh token revoked at the IdMS), "
                    "not_revoked (the revocation failed; logged out locally all the same), "
                    "nothing_held.",
                    logout_results, logouts, 3);
  /* No sample before the first measurement: 0 would claim "in step". */
  family(o, "mcgw_idm_clock_skew_seconds", "gauge",
         "The gateway's clock minus the IdMS's (> 0: ahead), from the latest IdMS response's "
         "Date header, to about 1 s; absent until measured.");
  if (v->clock_skew_known)
    put(o, "mcgw_idm_clock_skew_seconds %.3f\n", (double)v->clock_skew_ms / 1000);
}

static void render_process(out *o, const gw_metrics_snapshot *s) {
  char b[64];
  family(o, "mcgw_config_reloads_total", "counter",
         "Configuration reloads (SIGHUP) by result; a failed one leaves the old config in force.");
  put(o, "mcgw_config_reloads_total{result=\"ok\"} %" PRIu64 "\n", s->reloads_ok);
  put(o, "mcgw_config_reloads_total{result=\"failed\"} %" PRIu64 "\n", s->reloads_failed);
  family(o, "mcgw_config_last_reload_successful", "gauge",
         "0 if the last reload was rejected (the file on disk is not what runs), else 1.");
  sample_u(o, "mcgw_config_last_reload_successful", s->last_reload_ok);
  family(o, "mcgw_config_last_reload_success_timestamp_seconds", "gauge",
         "When the configuration in force was loaded (unix seconds).");
  sample_d(o, "mcgw_config_last_reload_success_timestamp_seconds", s->last_reload_success_time);
  family(o, "mcgw_start_time_seconds", "gauge", "When mcgw started (unix seconds).");
  sample_d(o, "mcgw_start_time_seconds", s->start_time);
  family(o, "mcgw_build_info", "gauge", "Always 1; the version is in the label.");
  put(o, "mcgw_build_info{version=\"%s\"} 1\n", esc(s->version, b, sizeof b));
}

static void render_dns(out *o, const tn_resolver_stats *d) {
  static const char *const kinds[] = {"fresh", "stale", "negative"};
  const uint64_t hits[] = {d->hits_fresh, d->hits_stale, d->hits_negative};
  const char *results[TN_DNS_RESULT_COUNT_];
  for (int r = 0; r < TN_DNS_RESULT_COUNT_; r++)
    results[r] = tn_dns_result_name((tn_dns_result)r);
  counter_by_result(o, "mcgw_dns_queries_total",
                    "DNS queries sent by the resolver, by result: ok, nxdomain (the name does not "
                    "exist), timeout ([dns] timeout x tries), error (server failure, refused).",
                    results, d->queries, TN_DNS_RESULT_COUNT_);
  family(o, "mcgw_dns_cache_hits_total", "counter",
         "Lookups answered from the resolver cache: fresh (within TTL), stale (past TTL, served "
         "while the servers did not answer, up to [dns] stale_ttl), negative (a cached failure).");
  for (size_t i = 0; i < 3; i++)
    put(o, "mcgw_dns_cache_hits_total{kind=\"%s\"} %" PRIu64 "\n", kinds[i], hits[i]);
  gw_histogram h = {.bounds = tn_dns_hist_bounds,
                    .n_bounds = TN_DNS_HIST_BOUNDS,
                    .count = d->duration_count,
                    .sum = d->duration_sum};
  memcpy(h.buckets, d->duration_buckets, sizeof(d->duration_buckets));
  histogram(o, "mcgw_dns_query_duration_seconds",
            "Time from a DNS query sent to its answer or its timeout.", &h);
}

char *gw_metrics_render(const gw_metrics *m, const gw_metrics_snapshot *s, size_t *len) {
  out o = {.cap = 16384};
  if (!(o.s = malloc(o.cap)))
    return NULL;
  render_tunnels(&o, m, s);
  render_limits(&o, s);
  render_idm(&o, s->idm);
  if (s->dns)
    render_dns(&o, s->dns);
  render_process(&o, s);
  if (o.oom) {
    free(o.s);
    return NULL;
  }
  if (len)
    *len = o.len;
  return o.s;
}
