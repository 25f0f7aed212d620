/* The operations surface: /metrics, /status, /tunnels, systemd STATUS= and
 * the refusal-spike log. See ops.h. The status page's files are served by
 * page.c. */
#include "gateway/ops/ops.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/ops/idm_admin.h"
#include "gateway/ops/metrics.h"
#include "gateway/log.h"
#include "gateway/notify.h"
#include "gateway/ops/page.h"
#include "tunnel/addr.h"

#define TICK_MS 1000
#define TOP_N 10                 /* destinations and clients listed in /status */
#define SPIKE_WINDOW_S 10        /* refusal-spike log: window ... */
#define SPIKE_THRESHOLD 50       /* ... refusals in it that make a spike ... */
#define SPIKE_LOG_EVERY_S 60     /* ... and at most one line this often */
#define TUNNELS_LIMIT_MAX 100000 /* ?limit= on /tunnels */

struct gw_ops {
  gw_ops_deps d;
  uv_timer_t tick;
  gw_metrics metrics;
  double start_time; /* unix seconds */
  uint64_t start_ms; /* loop time */
  uint64_t reloads_ok, reloads_failed;
  bool last_reload_ok;
  double last_reload_success_time;
  bool draining;
  bool watchdog;         /* WatchdogSec= is set: ping on every tick */
  char last_status[128]; /* last STATUS= sent to systemd */
  uint64_t tick_n;
  /* Refusal spikes: refusals per result in the current window. */
  uint64_t window_refusals[TN_RESULT_COUNT_];
  uint64_t window_start_s;
  uint64_t last_spike_log_s;
  char window_target[64]; /* the last refused target in the window, for the log */
};

static void get_view(const gw_ops *o, gw_idm_view *v) {
  memset(v, 0, sizeof(*v));
  v->state = GW_IDM_UNCONFIGURED;
  if (o->d.idm_view)
    o->d.idm_view(o->d.idm_arg, v);
}

static double unix_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- collecting the open tunnels ---- */

/* Open and admitted (connecting or relaying), as tn_engine_stats counts
 * tunnels_active: a parsed target and no error status sent yet, or 200 sent.
 * For the top lists; the per-protocol gauges come from the engine. */
static bool info_active(const tn_tunnel_info *i) {
  return i->established || (i->target && i->status == 0);
}

static const char *info_state(const tn_tunnel_info *i) {
  if (i->established)
    return "established";
  if (i->target && i->status == 0)
    return "connecting";
  return i->status ? "refused" : "request";
}

/* Strings with their number of occurrences, for the top lists. */
typedef struct tally {
  char **items;
  size_t n, cap;
  bool oom;
} tally;

static void tally_add(tally *t, const char *s) {
  if (t->oom)
    return;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    char **grown = realloc(t->items, cap * sizeof(*grown));
    if (!grown) {
      t->oom = true;
      return;
    }
    t->items = grown;
    t->cap = cap;
  }
  if (!(t->items[t->n] = strdup(s)))
    t->oom = true;
  else
    t->n++;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct tally_entry {
  const char *name;
  uint64_t count;
} tally_entry;

static int cmp_entry(const void *a, const void *b) {
  const tally_entry *x = a, *y = b;
  if (x->count != y->count)
    return x->count < y->count ? 1 : -1;
  return strcmp(x->name, y->name);
}

/* Sorts, groups and orders by count (most first). Returns the entries (names
 * point into t) and their number in *n, or NULL. */
static tally_entry *tally_group(tally *t, size_t *n) {
  *n = 0;
  if (t->n == 0)
    return NULL;
  qsort(t->items, t->n, sizeof(*t->items), cmp_str);
  tally_entry *e = malloc(t->n * sizeof(*e));
  if (!e)
    return NULL;
  for (size_t i = 0; i < t->n; i++) {
    if (*n && strcmp(e[*n - 1].name, t->items[i]) == 0)
      e[*n - 1].count++;
    else
      e[(*n)++] = (tally_entry){t->items[i], 1};
  }
  qsort(e, *n, sizeof(*e), cmp_entry);
  return e;
}

static void tally_free(tally *t) {
  for (size_t i = 0; i < t->n; i++)
    free(t->items[i]);
  free(t->items);
}

static void client_ip(const struct sockaddr *sa, char *buf, size_t len) {
  const void *a = sa->sa_family == AF_INET6
                      ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                      : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
  if (!inet_ntop(sa->sa_family, a, buf, (socklen_t)len))
    snprintf(buf, len, "-");
}

typedef struct collect {
  gw_metrics *m;
  tally targets, clients;
} collect;

static void on_collect(const tn_tunnel_info *i, void *arg) {
  collect *c = arg;
  if (!info_active(i))
    return;
  gw_metrics_proto(c->m, i->proto)->active[i->udp ? GW_TYPE_UDP : GW_TYPE_TCP]++;
  char ip[INET6_ADDRSTRLEN];
  client_ip(i->client, ip, sizeof(ip));
  /* Devices are told apart by certificate subject when they present one
   * (as the engine's per-client limit does), else by address. */
  tally_add(&c->clients, i->client_subject ? i->client_subject : ip);
  tally_add(&c->targets, i->target ? i->target : "-");
}

/* Walks the open tunnels: per-protocol active counts into o->metrics, and the
 * targets and clients of active tunnels into c. */
static void collect_open(gw_ops *o, collect *c) {
  memset(c, 0, sizeof(*c));
  c->m = &o->metrics;
  for (size_t i = 0; i < o->metrics.n_protos; i++)
    memset(o->metrics.protos[i].active, 0, sizeof(o->metrics.protos[i].active));
  tn_engine_foreach(o->d.engine, on_collect, c);
  /* The engine's own per-protocol counts are authoritative. */
  static const char *const engine_protos[] = {"h1", "h2"}; /* by_proto_active's order */
  tn_engine_stats st;
  tn_engine_stats_get(o->d.engine, &st);
  for (size_t i = 0; i < sizeof(engine_protos) / sizeof(engine_protos[0]); i++) {
    gw_proto_stats *p = gw_metrics_proto(&o->metrics, engine_protos[i]);
    p->active[GW_TYPE_UDP] = st.by_proto_udp_active[i];
    p->active[GW_TYPE_TCP] = st.by_proto_active[i] - st.by_proto_udp_active[i];
  }
}

static void collect_free(collect *c) {
  tally_free(&c->targets);
  tally_free(&c->clients);
}

/* ---- /metrics ---- */

/* A listener a reload closed is shown while connections it accepted remain. */
static bool listener_shown(gw_ops *o, size_t i, tn_listener_info *li) {
  return tn_engine_listener_info(o->d.engine, i, li) == 0 && (li->open || li->connections_active);
}

static size_t listeners_snapshot(gw_ops *o, gw_metrics_listener **out,
                                 char (**names)[TN_ADDRSTR_MAX]) {
  size_t total = 0, n = 0;
  tn_listener_info li;
  while (tn_engine_listener_info(o->d.engine, total, &li) == 0)
    total++;
  *out = calloc(total ? total : 1, sizeof(**out));
  *names = calloc(total ? total : 1, sizeof(**names));
  if (!*out || !*names)
    return 0;
  for (size_t i = 0; i < total; i++) {
    if (!listener_shown(o, i, &li))
      continue;
    tn_addr_format((const struct sockaddr *)&li.addr, (*names)[n], TN_ADDRSTR_MAX);
    (*out)[n].addr = (*names)[n];
    (*out)[n].connections_active = li.connections_active;
    n++;
  }
  return n;
}

static void handle_metrics(gw_admin_req *req, void *arg) {
  gw_ops *o = arg;
  collect c;
  collect_open(o, &c);
  gw_idm_view view;
  get_view(o, &view);
  size_t n_clients;
  tally_entry *clients = tally_group(&c.clients, &n_clients);
  gw_metrics_snapshot s = {
      .version = MCGW_VERSION,
      .idm = &view,
      .clients_max_tunnels = n_clients ? clients[0].count : 0,
      .max_tunnels = o->d.cfg->tunnel.max_tunnels,
      .max_tunnels_per_client = o->d.cfg->tunnel.max_tunnels_per_client,
      .reloads_ok = o->reloads_ok,
      .reloads_failed = o->reloads_failed,
      .last_reload_ok = o->last_reload_ok,
      .last_reload_success_time = o->last_reload_success_time,
      .start_time = o->start_time,
  };
  tn_engine_stats_get(o->d.engine, &s.stats);
  tn_resolver_stats dns;
  if (o->d.resolver) {
    tn_resolver_stats_get(o->d.resolver, &dns);
    s.dns = &dns;
  }
  gw_metrics_listener *ls;
  char(*names)[TN_ADDRSTR_MAX];
  s.n_listeners = listeners_snapshot(o, &ls, &names);
  s.listeners = ls;
  size_t len = 0;
  char *text = gw_metrics_render(&o->metrics, &s, &len);
  if (text)
    gw_admin_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
  else
    gw_admin_respond_text(req, 500, "out of memory\n");
  free(text);
  free(ls);
  free(names);
  free(clients);
  collect_free(&c);
}

/* ---- /status ---- */

static json_t *results_json(const uint64_t *by_result) {
  json_t *o = json_object();
  for (int r = 0; r < TN_RESULT_COUNT_; r++)
    json_object_set_new(o, tn_result_name((tn_result)r), json_integer((json_int_t)by_result[r]));
  return o;
}

/* A protocol's (or a type's) figures: active, closed and closed by result. */
static json_t *counts_json(uint64_t active, const uint64_t *by_result) {
  uint64_t closed = 0;
  for (int r = 0; r < TN_RESULT_COUNT_; r++)
    closed += by_result[r];
  return json_pack("{s:I, s:I, s:o}", "active", (json_int_t)active, "closed", (json_int_t)closed,
                   "by_result", results_json(by_result));
}

static json_t *by_proto_json(const gw_metrics *m) {
  json_t *o = json_object();
  for (size_t i = 0; i < m->n_protos; i++) {
    const gw_proto_stats *p = &m->protos[i];
    uint64_t by_result[TN_RESULT_COUNT_];
    for (int r = 0; r < TN_RESULT_COUNT_; r++)
      by_result[r] = p->closed[GW_TYPE_TCP][r] + p->closed[GW_TYPE_UDP][r];
    json_object_set_new(o, p->name,
                        counts_json(p->active[GW_TYPE_TCP] + p->active[GW_TYPE_UDP], by_result));
  }
  return o;
}

/* tunnels.by_type: tcp and udp over every protocol. */
static json_t *by_type_json(const gw_metrics *m) {
  json_t *o = json_object();
  for (int ty = 0; ty < GW_TYPE_COUNT_; ty++) {
    uint64_t active = 0, by_result[TN_RESULT_COUNT_] = {0};
    for (size_t i = 0; i < m->n_protos; i++) {
      active += m->protos[i].active[ty];
      for (int r = 0; r < TN_RESULT_COUNT_; r++)
        by_result[r] += m->protos[i].closed[ty][r];
    }
    json_object_set_new(o, gw_tunnel_type_name((gw_tunnel_type)ty), counts_json(active, by_result));
  }
  return o;
}

static json_t *top_json(tally *t, const char *key, uint64_t *max) {
  size_t n;
  tally_entry *e = tally_group(t, &n);
  json_t *a = json_array();
  if (max)
    *max = n ? e[0].count : 0;
  for (size_t i = 0; i < n && i < TOP_N; i++)
    json_array_append_new(
        a, json_pack("{s:s, s:I}", key, e[i].name, "tunnels", (json_int_t)e[i].count));
  free(e);
  return a;
}

static json_t *listeners_json(gw_ops *o) {
  json_t *a = json_array();
  tn_listener_info li;
  for (size_t i = 0; tn_engine_listener_info(o->d.engine, i, &li) == 0; i++) {
    if (!listener_shown(o, i, &li))
      continue;
    char text[TN_ADDRSTR_MAX];
    tn_addr_format((const struct sockaddr *)&li.addr, text, sizeof(text));
    json_array_append_new(a, json_pack("{s:s, s:b, s:b, s:I}", "addr", text, "tls", li.tls, "open",
                                       li.open, "connections_active",
                                       (json_int_t)li.connections_active));
  }
  return a;
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

/* The identity management module's own format, plus "authorized". */
static json_t *idm_json(const gw_idm_view *v) {
  json_t *o = gw_idm_status_json(v);
  if (o)
    json_object_set_new(o, "authorized", json_boolean(gw_idm_view_authorized(v)));
  return o;
}

/* Clients held to max_new_tunnels_per_client now (refused in the last
 * 10 s), most refusals first, TOP_N of them. */
static void on_limited(const tn_limited_client *l, void *arg) {
  json_array_append_new(
      arg, json_pack("{s:s, s:b, s:I, s:I, s:I}", "client", l->client, "is_subject", l->is_subject,
                     "refused", (json_int_t)l->refused, "since_s", (json_int_t)(l->since_ms / 1000),
                     "last_s", (json_int_t)(l->last_ms / 1000)));
}

static int by_refused(const void *a, const void *b) {
  json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "refused"));
  json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "refused"));
  return x < y ? 1 : x > y ? -1 : 0;
}

static json_t *rate_limited_json(gw_ops *o) {
  json_t *all = json_array(), *top = json_array();
  tn_engine_foreach_limited(o->d.engine, on_limited, all);
  size_t n = json_array_size(all);
  json_t **v = calloc(n ? n : 1, sizeof(*v));
  for (size_t i = 0; v && i < n; i++)
    v[i] = json_array_get(all, i);
  if (v)
    qsort(v, n, sizeof(*v), by_refused);
  for (size_t i = 0; v && i < n && i < TOP_N; i++)
    json_array_append(top, v[i]);
  free(v);
  json_decref(all);
  return top;
}

/* The resolver: its servers, queries by result, cache hits by kind. */
static json_t *dns_json(gw_ops *o) {
  tn_resolver_stats d;
  tn_resolver_stats_get(o->d.resolver, &d);
  json_t *q = json_object();
  for (int r = 0; r < TN_DNS_RESULT_COUNT_; r++)
    json_object_set_new(q, tn_dns_result_name((tn_dns_result)r),
                        json_integer((json_int_t)d.queries[r]));
  const char *servers = tn_resolver_servers(o->d.resolver);
  return json_pack("{s:s, s:o, s:{s:I, s:I, s:I}, s:I, s:I}", "servers",
                   servers ? servers : "/etc/resolv.conf", "queries", q, "cache_hits", "fresh",
                   (json_int_t)d.hits_fresh, "stale", (json_int_t)d.hits_stale, "negative",
                   (json_int_t)d.hits_negative, "pending", (json_int_t)d.pending, "cache_entries",
                   (json_int_t)d.cache_entries);
}

json_t *gw_ops_status_json(gw_ops *o) {
  tn_engine_stats st;
  tn_engine_stats_get(o->d.engine, &st);
  collect c;
  collect_open(o, &c);
  uint64_t clients_max = 0;
  double now = unix_now();
  const tn_engine_opts *opts = &o->d.cfg->tunnel;
  json_t *doc = json_pack(
      "{s:s, s:I, s:I, s:s, s:{s:I, s:I, s:I, s:o, s:o, s:o, s:I, s:I}, s:{s:I, s:I}, s:o, s:o}",
      "version", MCGW_VERSION, "uptime_s", (json_int_t)((uv_now(o->d.loop) - o->start_ms) / 1000),
      "time", (json_int_t)now, "state", o->draining ? "draining" : "running", "tunnels", "active",
      (json_int_t)st.tunnels_active, "total", (json_int_t)st.tunnels_total, "connections_active",
      (json_int_t)st.connections_active, "by_result", results_json(st.by_result), "by_proto",
      by_proto_json(&o->metrics), "by_type", by_type_json(&o->metrics), "limit",
      (json_int_t)opts->max_tunnels, "limit_per_client", (json_int_t)opts->max_tunnels_per_client,
      "bytes", "upstream", (json_int_t)st.bytes_up, "downstream", (json_int_t)st.bytes_down,
      "destinations", top_json(&c.targets, "target", NULL), "listeners", listeners_json(o));
  json_t *clients = json_pack("{s:I, s:o}", "active", (json_int_t)st.clients_active, "top",
                              top_json(&c.clients, "address", &clients_max));
  json_object_set_new(clients, "max_tunnels", json_integer((json_int_t)clients_max));
  json_object_set_new(clients, "rate_limited_count",
                      json_integer((json_int_t)st.clients_rate_limited));
  json_object_set_new(clients, "rate_limited", rate_limited_json(o));
  json_object_set_new(clients, "rate_tracked", json_integer((json_int_t)st.rate_clients_tracked));
  json_object_set_new(clients, "rate_tracked_max", json_integer((json_int_t)st.rate_clients_max));
  json_object_set_new(doc, "clients", clients);
  json_object_set_new(doc, "targets",
                      json_pack("{s:I, s:I}", "rate_tracked", (json_int_t)st.rate_targets_tracked,
                                "rate_tracked_max", (json_int_t)st.rate_targets_max));
  gw_idm_view view;
  get_view(o, &view);
  json_object_set_new(doc, "idm", idm_json(&view));
  if (o->d.resolver)
    json_object_set_new(doc, "dns", dns_json(o));
  json_object_set_new(doc, "reloads",
                      json_pack("{s:I, s:I, s:b, s:I}", "ok", (json_int_t)o->reloads_ok, "failed",
                                (json_int_t)o->reloads_failed, "last_ok", o->last_reload_ok,
                                "last_success_time", (json_int_t)o->last_reload_success_time));
  collect_free(&c);
  return doc;
}

static void handle_status(gw_admin_req *req, void *arg) {
  gw_admin_respond_json(req, 200, gw_ops_status_json(arg));
}

/* ---- /tunnels ---- */

typedef struct list_ctx {
  json_t *a;
  size_t limit;
  bool all;
} list_ctx;

static void on_list(const tn_tunnel_info *i, void *arg) {
  list_ctx *l = arg;
  if (json_array_size(l->a) >= l->limit || (!l->all && !info_active(i)))
    return;
  char client[TN_ADDRSTR_MAX], connected[TN_ADDRSTR_MAX], local[TN_ADDRSTR_MAX];
  if (tn_addr_format(i->client, client, sizeof(client)) != 0)
    strcpy(client, "-");
  if (i->connected)
    tn_addr_format(i->connected, connected, sizeof(connected));
  if (i->local)
    tn_addr_format(i->local, local, sizeof(local));
  json_array_append_new(
      l->a, json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:I, s:I, s:I}", "id",
                      (json_int_t)i->id, "proto", i->proto ? i->proto : "unknown", "type",
                      gw_tunnel_type_name(i->udp ? GW_TYPE_UDP : GW_TYPE_TCP), "client", client,
                      "subject", str_or_null(i->client_subject), "target", str_or_null(i->target),
                      "connected", i->connected ? json_string(connected) : json_null(), "state",
                      info_state(i), "age_ms", (json_int_t)i->age_ms, "bytes_up",
                      (json_int_t)i->bytes_up, "bytes_down", (json_int_t)i->bytes_down));
  json_t *row = json_array_get(l->a, json_array_size(l->a) - 1);
  json_object_set_new(row, "local", i->local ? json_string(local) : json_null());
  json_object_set_new(row, "egress", str_or_null(i->egress));
}

/* The value of name=... in a query string, or NULL. */
static const char *query_param(const char *q, const char *name) {
  size_t n = strlen(name);
  for (const char *p = q; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
    if (strncmp(p, name, n) == 0 && p[n] == '=')
      return p + n + 1;
  return NULL;
}

/* ?limit=N caps the list (established tunnels come first). */
static size_t query_limit(const char *q) {
  const char *p = query_param(q, "limit");
  if (!p)
    return TUNNELS_LIMIT_MAX;
  char *end;
  unsigned long n = strtoul(p, &end, 10);
  return end == p || n > TUNNELS_LIMIT_MAX ? TUNNELS_LIMIT_MAX : (size_t)n;
}

static void handle_tunnels(gw_admin_req *req, void *arg) {
  gw_ops *o = arg;
  const char *q = gw_admin_req_query(req);
  const char *all = query_param(q, "all");
  list_ctx l = {json_array(), query_limit(q), all && *all == '1'};
  tn_engine_foreach(o->d.engine, on_list, &l);
  gw_admin_respond_json(req, 200, l.a);
}

/* ---- closed tunnels: metrics, refusal spikes ---- */

static void on_tunnel_closed(const tn_tunnel_info *i, void *arg) {
  gw_ops *o = arg;
  gw_metrics_observe_close(&o->metrics, i);
  /* A device that gave up during set-up (cancelled) was not refused. */
  if (i->result == TN_RESULT_OK || i->result == TN_RESULT_CANCELLED ||
      (unsigned)i->result >= TN_RESULT_COUNT_)
    return;
  o->window_refusals[i->result]++;
  snprintf(o->window_target, sizeof(o->window_target), "%s", i->target ? i->target : "-");
}

/* One warn line when refusals pile up (a device retrying a forbidden target, a
 * limit reached), at most every SPIKE_LOG_EVERY_S: the per-tunnel access-log
 * lines say what happened to each tunnel; this says that it is a storm. */
static void check_refusal_spike(gw_ops *o, uint64_t now_s) {
  if (now_s - o->window_start_s < SPIKE_WINDOW_S)
    return;
  uint64_t total = 0;
  int top = 0;
  for (int r = 0; r < TN_RESULT_COUNT_; r++) {
    total += o->window_refusals[r];
    if (o->window_refusals[r] > o->window_refusals[top])
      top = r;
  }
  if (total >= SPIKE_THRESHOLD &&
      (o->last_spike_log_s == 0 || now_s - o->last_spike_log_s >= SPIKE_LOG_EVERY_S)) {
    o->last_spike_log_s = now_s;
    gw_log(TN_LOG_WARN, "refusal_spike", TN_U("refusals", total),
           TN_U("window_s", now_s - o->window_start_s),
           TN_S("top_result", tn_result_name((tn_result)top)),
           TN_U("top_result_count", o->window_refusals[top]), TN_S("last_target", o->window_target),
           TN_LOG_END);
  }
  memset(o->window_refusals, 0, sizeof(o->window_refusals));
  o->window_start_s = now_s;
}

/* ---- systemd status, ticking ---- */

void gw_ops_status_line(gw_ops *o, char *buf, size_t len) {
  tn_engine_stats st;
  tn_engine_stats_get(o->d.engine, &st);
  gw_idm_view v;
  get_view(o, &v);
  snprintf(buf, len, "%s%llu tunnel%s, %s", o->draining ? "draining: " : "",
           (unsigned long long)st.tunnels_active, st.tunnels_active == 1 ? "" : "s",
           v.state == GW_IDM_UNCONFIGURED ? "no gateway login configured"
                                          : gw_idm_state_name(v.state));
}

static void on_tick(uv_timer_t *t) {
  gw_ops *o = t->data;
  char line[sizeof(o->last_status)];
  gw_ops_status_line(o, line, sizeof(line));
  if (strcmp(line, o->last_status) != 0) {
    memcpy(o->last_status, line, sizeof(line));
    gw_notify_status(line);
  }
  if (o->watchdog)
    gw_notify_watchdog();
  check_refusal_spike(o, uv_now(o->d.loop) / 1000);
}

/* ---- life cycle ---- */

static int register_routes(gw_ops *o) {
  gw_admin *a = o->d.admin;
  if (!a)
    return 0;
  int err = gw_admin_route(a, "GET", "/metrics", handle_metrics, o);
  if (!err)
    err = gw_admin_route(a, "GET", "/status", handle_status, o);
  if (!err)
    err = gw_admin_route(a, "GET", "/tunnels", handle_tunnels, o);
  if (!err)
    err = gw_page_register(a);
  if (!err)
    err = gw_admin_set_token(a, o->d.cfg->admin_token);
  return err;
}

int gw_ops_start(const gw_ops_deps *deps, gw_ops **out) {
  gw_ops *o = calloc(1, sizeof(*o));
  if (!o)
    return UV_ENOMEM;
  o->d = *deps;
  gw_metrics_init(&o->metrics);
  o->start_time = unix_now();
  o->start_ms = uv_now(deps->loop);
  o->last_reload_ok = true;
  o->last_reload_success_time = o->start_time;
  o->window_start_s = o->start_ms / 1000;
  int err = register_routes(o);
  if (err) {
    free(o);
    return err;
  }
  uint64_t wd_ms, tick = TICK_MS;
  o->watchdog = gw_notify_watchdog_interval_ms(&wd_ms);
  if (o->watchdog && wd_ms < tick)
    tick = wd_ms;
  uv_timer_init(deps->loop, &o->tick);
  o->tick.data = o;
  uv_timer_start(&o->tick, on_tick, tick, tick);
  gw_ops_status_line(o, o->last_status, sizeof(o->last_status));
  tn_engine_on_close(deps->engine, on_tunnel_closed, o);
  *out = o;
  return 0;
}

void gw_ops_reloaded(gw_ops *o, bool ok) {
  o->last_reload_ok = ok;
  if (!ok) {
    o->reloads_failed++;
    return;
  }
  o->reloads_ok++;
  o->last_reload_success_time = unix_now();
  if (o->d.admin)
    gw_admin_set_token(o->d.admin, o->d.cfg->admin_token);
}

void gw_ops_set_draining(gw_ops *o) { o->draining = true; }

static void on_tick_closed(uv_handle_t *h) { free(h->data); }

void gw_ops_close(gw_ops *o) {
  o->d.engine = NULL;
  uv_close((uv_handle_t *)&o->tick, on_tick_closed);
}
