/* The relay engine, top of tunnel/: the public API of engine.h, the
 * listeners and accepting, the one sweep timer that enforces every set-up
 * deadline and the idle timeout, the TLS context, and the drain sequence;
 * the front ends it runs. The services the other files call (counters,
 * admission, the registry of objects) are in service.c; the engine object
 * itself in engine_state.h. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tunnel/conn.h"
#include "tunnel/engine_state.h"
#include "tunnel/error.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"
#include "tunnel/tls.h"

#define LISTEN_BACKLOG 4096
/* Rate-limit buckets kept at most (ratelimit.h: least recently used out). */
#define RATE_CLIENTS_MAX 4096
#define RATE_TARGETS_MAX 4096

/* ---- options ---- */

void tn_engine_opts_init(tn_engine_opts *o) {
  memset(o, 0, sizeof(*o));
  o->require_tls = true;
  o->max_tunnels = 10000;
  o->max_tunnels_per_client = 256;
  o->header_timeout_ms = 10 * 1000;
  o->connect_timeout_ms = 10 * 1000;
  o->idle_timeout_ms = 30 * 60 * 1000;
  o->drain_timeout_ms = 30 * 1000;
  o->udp_idle_timeout_ms = 60 * 1000;
  o->udp_max_payload = 1500;
  o->attempt_delay_ms = 250;
  o->upstream_keepalive_ms = 30 * 1000;
  o->upstream_user_timeout_ms = 30 * 1000;
  o->downstream_keepalive_ms = 60 * 1000;
  o->h2_max_concurrent_streams = 100;
  o->h2_stream_window = 256 * 1024;
  o->splice = TN_SPLICE_AUTO;
  o->new_tunnels_per_client = (tn_rate){.per_s = 20, .burst = 50};
  o->new_upstream_per_target = (tn_rate){.per_s = 200, .burst = 200};
  o->h2_max_refused_per_connection = 100;
}

static int dup_array(void **dst, const void *src, size_t n, size_t size) {
  *dst = NULL;
  if (!n)
    return 0;
  if (!(*dst = malloc(n * size)))
    return TN_ENOMEM;
  memcpy(*dst, src, n * size);
  return 0;
}

static int dup_str(char **dst, const char *src) {
  *dst = NULL;
  return src && !(*dst = strdup(src)) ? TN_ENOMEM : 0;
}

int tn_engine_opts_copy(tn_engine_opts *dst, const tn_engine_opts *src) {
  tn_engine_opts tmp = *src;
  memset(&tmp.policy, 0, sizeof(tmp.policy));
  /* Nothing of src's in tmp: a failure part way frees tmp's copies only. */
  tmp.listen = tmp.listen_tls = NULL;
  tmp.clients = NULL;
  tmp.rate_exempt = NULL;
  tmp.egress = NULL;
  tmp.tls_cert = tmp.tls_key = tmp.client_ca = NULL;
  int err = dup_array((void **)&tmp.listen, src->listen, src->n_listen, sizeof(*src->listen));
  err = err ? err
            : dup_array((void **)&tmp.listen_tls, src->listen_tls, src->n_listen_tls,
                        sizeof(*src->listen_tls));
  err = err ? err
            : dup_array((void **)&tmp.clients, src->clients, src->n_clients, sizeof(*src->clients));
  err = err ? err
            : dup_array((void **)&tmp.rate_exempt, src->rate_exempt, src->n_rate_exempt,
                        sizeof(*src->rate_exempt));
  err =
      err ? err : dup_array((void **)&tmp.egress, src->egress, src->n_egress, sizeof(*src->egress));
  err = err ? err : dup_str(&tmp.tls_cert, src->tls_cert);
  err = err ? err : dup_str(&tmp.tls_key, src->tls_key);
  err = err ? err : dup_str(&tmp.client_ca, src->client_ca);
  err = err ? err : tn_policy_copy(&tmp.policy, &src->policy);
  if (err) {
    tn_engine_opts_free(&tmp);
    return TN_ENOMEM;
  }
  *dst = tmp;
  return 0;
}

void tn_engine_opts_free(tn_engine_opts *o) {
  free(o->listen);
  free(o->listen_tls);
  free(o->clients);
  free(o->rate_exempt);
  free(o->egress);
  o->egress = NULL;
  o->n_egress = 0;
  free(o->tls_cert);
  free(o->tls_key);
  free(o->client_ca);
  tn_policy_free(&o->policy);
  o->listen = o->listen_tls = NULL;
  o->clients = NULL;
  o->rate_exempt = NULL;
  o->n_rate_exempt = 0;
  o->tls_cert = o->tls_key = o->client_ca = NULL;
  o->n_listen = o->n_listen_tls = o->n_clients = 0;
}

static const char *const splice_names[] = {
    [TN_SPLICE_AUTO] = "auto", [TN_SPLICE_OFF] = "off", [TN_SPLICE_ALWAYS] = "always"};

const char *tn_splice_mode_name(tn_splice_mode m) {
  return (unsigned)m < sizeof splice_names / sizeof splice_names[0] ? splice_names[m] : "?";
}

int tn_splice_mode_parse(const char *s) {
  for (size_t i = 0; i < sizeof splice_names / sizeof splice_names[0]; i++)
    if (strcmp(s, splice_names[i]) == 0)
      return (int)i;
  return -1;
}

static const char *const goaway_names[TN_GOAWAY_COUNT_] = {
    [TN_GOAWAY_DRAIN] = "drain",
    [TN_GOAWAY_RATE_LIMITED] = "rate_limited",
    [TN_GOAWAY_FLOOD] = "flood",
    [TN_GOAWAY_PROTOCOL] = "protocol_error",
};

const char *tn_goaway_reason_name(tn_goaway_reason r) {
  return (unsigned)r < TN_GOAWAY_COUNT_ ? goaway_names[r] : "unknown";
}

typedef struct {
  uint64_t now;
  void (*cb)(const tn_limited_client *c, void *arg);
  void *arg;
} limited_walk;

/* A client key (tn__client_key) back in words: the subject, or the address. */
static void limited_one(const tn_ratetab_limited *l, void *arg) {
  limited_walk *w = arg;
  char text[TN_CLIENT_KEY_TEXT_MAX];
  tn_limited_client c = {.client = text,
                         .since_ms = w->now - l->since_ms,
                         .refused = l->refused,
                         .last_ms = w->now - l->last_ms};
  c.is_subject = tn__client_key_text(l->key, l->key_len, text);
  w->cb(&c, w->arg);
}

void tn_engine_foreach_limited(const tn_engine *e,
                               void (*cb)(const tn_limited_client *c, void *arg), void *arg) {
  limited_walk w = {.now = uv_now(e->loop), .cb = cb, .arg = arg};
  tn_ratetab_foreach_limited(e->rate_clients, w.now, limited_one, &w);
}

static void on_sweep(uv_timer_t *timer);
static void finish(tn_engine *e);

/* The front ends this engine runs; each is told of a drain. */
static const tn_proto *const protos[] = {&tn__proto_h1, &tn__proto_h2};

static void drain_protos(tn_engine *e, bool close_now) {
  for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++)
    if (protos[i]->drain)
      protos[i]->drain(e, close_now);
}

/* ---- sweep: every deadline and the idle timeout, with one timer ---- */

/* Set-up tunnels by their deadline; relaying ones (relay) by idle time:
 * idle_timeout for TCP, udp_idle_timeout for CONNECT-UDP (0: none). */
static void sweep_tunnels(tn_link *head, uint64_t now, bool relay, const tn_engine_opts *o) {
  tn_link *l = head->next;
  while (l != head) {
    tn_tunnel *t = (tn_tunnel *)l; /* link is the first member */
    l = l->next;                   /* t may leave the list below */
    uint64_t idle_ms = t->udp ? o->udp_idle_timeout_ms : o->idle_timeout_ms;
    if (relay)
      tn__udp_collect_drops(t); /* the kernel's drops, in the metrics while it lasts */
    bool expired = relay ? idle_ms && now - t->last_activity_ms >= idle_ms
                         : t->deadline_ms && now >= t->deadline_ms;
    if (expired)
      tn__tunnel_timeout(t);
  }
}

/* The shorter of the two idle timeouts that are set; 0 if neither is. */
static uint64_t idle_check_ms(const tn_engine_opts *o) {
  return tn__min_set(o->idle_timeout_ms, o->udp_idle_timeout_ms);
}

static void sweep_conns(tn_link *head, uint64_t now) {
  tn_link *l = head->next;
  while (l != head) {
    tn_conn *c = (tn_conn *)l;
    l = l->next;
    if (now >= c->deadline_ms)
      tn__conn_timeout(c);
  }
}

static void sweep_protos(tn_engine *e, uint64_t now) {
  for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++)
    if (protos[i]->sweep)
      protos[i]->sweep(e, now);
}

/* The timer runs every TN_SWEEP_MS only while something is being set up
 * (a deadline may fall due); with only established tunnels it wakes for the
 * next idle check alone (and for the summary of suppressed refusals when one
 * is due), and with none at all it stops. */
static void sweep_schedule(tn_engine *e, uint64_t now) {
  uint64_t delay = 0;
  if (!tn__list_empty(&e->setup_list) || !tn__list_empty(&e->conn_setup) || e->heads_open)
    delay = TN_SWEEP_MS;
  else if (!tn__list_empty(&e->relay_list) && idle_check_ms(&e->opts))
    delay = e->next_idle_sweep_ms > now ? e->next_idle_sweep_ms - now : 1;
  if (e->rate_log_due_ms) { /* suppressed refusals to report when their window ends */
    delay = tn__min_set(delay, e->rate_log_due_ms > now ? e->rate_log_due_ms - now : 1);
  }
  if (delay)
    uv_timer_start(&e->sweep, on_sweep, delay, 0);
  else
    uv_timer_stop(&e->sweep);
}

static void on_sweep(uv_timer_t *timer) {
  tn_engine *e = timer->data;
  uint64_t now = uv_now(e->loop);
  sweep_conns(&e->conn_setup, now);
  sweep_tunnels(&e->setup_list, now, false, &e->opts);
  sweep_protos(e, now);
  tn__rate_log_flush(e, now, false);
  uint64_t idle = idle_check_ms(&e->opts);
  if (idle && now >= e->next_idle_sweep_ms) {
    sweep_tunnels(&e->relay_list, now, true, &e->opts);
    /* Idle checks need only be as fine as a sixteenth of the timeout. */
    e->next_idle_sweep_ms = now + (idle / 16 > 1000 ? idle / 16 : 1000);
  }
  sweep_schedule(e, now);
}

/* ---- accepting ---- */

static void log_accept_error(tn_engine *e, int status) {
  e->stats.accept_errors++;
  uint64_t now = uv_now(e->loop);
  if (now - e->last_accept_log_ms < 1000)
    return; /* at most one line a second while descriptors are exhausted */
  e->last_accept_log_ms = now;
  tn_log(e->opts.logger, TN_LOG_WARN, "accept_failed", TN_S("error", uv_err_name(status)),
         TN_U("accept_errors", e->stats.accept_errors), TN_LOG_END);
}

static void on_connection(uv_stream_t *server, int status) {
  tn_listener *l = server->data;
  if (status < 0) {
    log_accept_error(l->engine, status);
    return;
  }
  if (tn__conn_accept(l->engine, l->index, server, l->tls) == 0)
    return;
  log_accept_error(l->engine, UV_ENOMEM);
  if (!l->spare.busy)
    l->engine->handles_open++; /* the spare's handle, until it is idle */
  tn_spare_drop(&l->spare);
}

/* Listener handles carry their tn_listener, timers the engine. */
static tn_engine *engine_of(uv_handle_t *h) {
  return h->type == UV_TCP ? ((tn_listener *)h->data)->engine : h->data;
}

static void release_handle(tn_engine *e) {
  if (--e->handles_open > 0 || !e->finishing)
    return;
  void (*done)(void *) = e->done;
  void *arg = e->done_arg;
  tn_engine_opts_free(&e->opts);
  SSL_CTX_free(e->tls_ctx);
  tn__clients_free(e->clients);
  tn_ratetab_free(e->rate_clients);
  tn_ratetab_free(e->rate_targets);
  for (size_t i = 0; i < e->n_listeners; i++)
    free(e->listeners[i]);
  free(e->listeners);
  tn__bufpool_trim(&e->pool);
  tn__bufpool_trim(&e->dgram_pool);
  free(e);
  if (done)
    done(arg);
}

static void on_engine_handle_closed(uv_handle_t *h) { release_handle(engine_of(h)); }

static void on_spare_idle(tn_spare *s) { release_handle(((tn_listener *)s->data)->engine); }

static const char *listener_kind(const tn_listener *l) { return l->tls ? "proxy_tls" : "proxy"; }

/* Binds a new listener in the next slot. On failure the slot's handle is
 * closing (it still counts in handles_open until then). */
static int listener_open(tn_engine *e, const struct sockaddr_storage *addr, bool tls) {
  char text[TN_ADDRSTR_MAX];
  if (e->n_listeners == e->cap_listeners) {
    size_t cap = e->cap_listeners ? 2 * e->cap_listeners : 4;
    tn_listener **grown = realloc(e->listeners, cap * sizeof(*grown));
    if (!grown)
      return TN_ENOMEM;
    e->listeners = grown;
    e->cap_listeners = cap;
  }
  tn_listener *l = calloc(1, sizeof(*l));
  if (!l)
    return TN_ENOMEM;
  *l = (tn_listener){.engine = e, .index = e->n_listeners, .tls = tls, .configured = *addr};
  tn_addr_format((const struct sockaddr *)addr, text, sizeof(text));
  int err = uv_tcp_init(e->loop, &l->tcp);
  if (err) {
    free(l);
    return err;
  }
  l->tcp.data = l;
  /* Set when bind creates the socket; Linux copies TCP_NODELAY to every
   * accepted socket, which saves a setsockopt per connection. */
  uv_tcp_nodelay(&l->tcp, 1);
  tn_spare_init(&l->spare, (uv_stream_t *)&l->tcp, on_spare_idle, l);
  e->listeners[e->n_listeners++] = l;
  e->handles_open++;
  if ((err = uv_tcp_bind(&l->tcp, (const struct sockaddr *)addr, 0)) == 0 &&
      (err = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection)) == 0) {
    int len = sizeof(l->bound);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&l->bound, &len);
    tn_addr_format((const struct sockaddr *)&l->bound, text, sizeof(text));
    l->open = true;
    tn_log(e->opts.logger, TN_LOG_INFO, "listening", TN_S("kind", listener_kind(l)),
           TN_S("addr", text), TN_LOG_END);
    return 0;
  }
  tn_log(e->opts.logger, TN_LOG_ERROR, "listen_failed", TN_S("kind", listener_kind(l)),
         TN_S("addr", text), TN_S("error", uv_strerror(err)), TN_LOG_END);
  uv_close((uv_handle_t *)&l->tcp, on_engine_handle_closed);
  return err;
}

static void listener_close(tn_listener *l, bool log) {
  if (uv_is_closing((uv_handle_t *)&l->tcp))
    return;
  if (log && l->open) {
    char text[TN_ADDRSTR_MAX];
    tn_addr_format((const struct sockaddr *)&l->bound, text, sizeof(text));
    tn_log(l->engine->opts.logger, TN_LOG_INFO, "listener_closed", TN_S("kind", listener_kind(l)),
           TN_S("addr", text), TN_U("connections_remaining", l->active), TN_LOG_END);
  }
  l->open = false;
  uv_close((uv_handle_t *)&l->tcp, on_engine_handle_closed);
}

static void close_listeners(tn_engine *e) {
  for (size_t i = 0; i < e->n_listeners; i++)
    listener_close(e->listeners[i], false);
}

/* A TLS context from the options, or NULL with the reason logged. */
static SSL_CTX *make_tls_ctx(const tn_engine_opts *o) {
  char why[512];
  SSL_CTX *ctx = tn_tls_server_ctx(o->tls_cert, o->tls_key, o->client_ca, why, sizeof(why), NULL);
  if (!ctx)
    tn_log(o->logger, TN_LOG_ERROR, "tls_config_failed", TN_S("error", why), TN_LOG_END);
  return ctx;
}

static int open_listeners(tn_engine *e, const tn_engine_opts *o) {
  int err = 0;
  for (size_t i = 0; i < o->n_listen && !err; i++)
    err = listener_open(e, &o->listen[i], false);
  for (size_t i = 0; i < o->n_listen_tls && !err; i++)
    err = listener_open(e, &o->listen_tls[i], true);
  return err;
}

int tn_engine_start(uv_loop_t *loop, const tn_engine_opts *opts, tn_engine **out) {
  tn_engine *e = calloc(1, sizeof(*e));
  if (!e)
    return TN_ENOMEM;
  e->loop = loop;
  tn__bufpool_init(&e->pool, TN_BUF_SIZE, TN_BUFPOOL_KEEP);
  tn__bufpool_init(&e->dgram_pool, TN_DGRAM_BUF_SIZE, TN_DGRAM_KEEP);
  struct rlimit rl;
  e->nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 1024;
  tn__list_init(&e->setup_list);
  tn__list_init(&e->relay_list);
  tn__list_init(&e->conn_setup);
  tn__list_init(&e->conn_other);
  tn__list_init(&e->sessions);
  e->protos = protos;
  e->n_protos = sizeof protos / sizeof protos[0];
  e->on_sweep = on_sweep;
  e->finish = finish;
  e->clients = tn__clients_new();
  e->rate_clients = tn_ratetab_new(RATE_CLIENTS_MAX);
  e->rate_targets = tn_ratetab_new(RATE_TARGETS_MAX);
  if (!e->clients || !e->rate_clients || !e->rate_targets ||
      tn_engine_opts_copy(&e->opts, opts) != 0) {
    tn__clients_free(e->clients);
    tn_ratetab_free(e->rate_clients);
    tn_ratetab_free(e->rate_targets);
    free(e);
    return TN_ENOMEM;
  }
  e->resolver = opts->resolver;
  if (!e->resolver) {
    tn_resolver_opts ro;
    tn_resolver_opts_init(&ro);
    int rerr = tn_resolver_new(loop, &ro, opts->logger, &e->resolver);
    if (rerr) {
      tn_engine_opts_free(&e->opts);
      tn__clients_free(e->clients);
      tn_ratetab_free(e->rate_clients);
      tn_ratetab_free(e->rate_targets);
      free(e);
      return rerr;
    }
    e->own_resolver = true;
  }
  uv_timer_init(loop, &e->sweep);
  uv_timer_init(loop, &e->drain_timer);
  uv_idle_init(loop, &e->later);
  tn__list_init(&e->later_list);
  e->sweep.data = e->drain_timer.data = e->later.data = e;
  e->handles_open = 3;
  int err = 0;
  if (opts->n_listen_tls && !(e->tls_ctx = make_tls_ctx(opts)))
    err = TN_ETLS;
  if (!err)
    err = open_listeners(e, opts);
  if (err) {
    /* The handles close asynchronously; the engine frees itself after. */
    e->draining = true;
    close_listeners(e);
    finish(e);
    return err;
  }
  *out = e;
  return 0;
}

int tn_engine_listener_info(const tn_engine *e, size_t i, tn_listener_info *out) {
  if (i >= e->n_listeners)
    return TN_EINVAL;
  const tn_listener *l = e->listeners[i];
  *out = (tn_listener_info){
      .addr = l->bound, .tls = l->tls, .open = l->open, .connections_active = l->active};
  return 0;
}

int tn_engine_listener_addr(const tn_engine *e, size_t i, struct sockaddr_storage *out) {
  if (i >= e->n_listeners)
    return TN_EINVAL;
  *out = e->listeners[i]->bound;
  return 0;
}

uint64_t tn_engine_listener_active(const tn_engine *e, size_t i) {
  return i < e->n_listeners ? e->listeners[i]->active : 0;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return false;
  size_t len = a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  return memcmp(a, b, len) == 0;
}

static tn_listener *find_open(tn_engine *e, const struct sockaddr_storage *addr, bool tls) {
  for (size_t i = 0; i < e->n_listeners; i++) {
    tn_listener *l = e->listeners[i];
    if (l->open && l->tls == tls && same_addr(&l->configured, addr))
      return l;
  }
  return NULL;
}

static bool wanted(const tn_engine_opts *o, const tn_listener *l) {
  const struct sockaddr_storage *arr = l->tls ? o->listen_tls : o->listen;
  size_t n = l->tls ? o->n_listen_tls : o->n_listen;
  for (size_t i = 0; i < n; i++)
    if (same_addr(&arr[i], &l->configured))
      return true;
  return false;
}

/* Opens the listeners o adds; on failure closes those it opened. */
static int open_added(tn_engine *e, const tn_engine_opts *o) {
  size_t first_new = e->n_listeners;
  int err = 0;
  for (size_t i = 0; i < o->n_listen && !err; i++)
    if (!find_open(e, &o->listen[i], false))
      err = listener_open(e, &o->listen[i], false);
  for (size_t i = 0; i < o->n_listen_tls && !err; i++)
    if (!find_open(e, &o->listen_tls[i], true))
      err = listener_open(e, &o->listen_tls[i], true);
  if (err)
    for (size_t i = first_new; i < e->n_listeners; i++)
      listener_close(e->listeners[i], false);
  return err;
}

int tn_engine_update(tn_engine *e, const tn_engine_opts *opts) {
  if (e->draining)
    return TN_EINVAL;
  SSL_CTX *ctx = NULL;
  if (opts->n_listen_tls && !(ctx = make_tls_ctx(opts)))
    return TN_ETLS; /* a bad certificate must not replace a good one */
  tn_engine_opts fresh;
  if (tn_engine_opts_copy(&fresh, opts) != 0) {
    SSL_CTX_free(ctx);
    return TN_ENOMEM;
  }
  SSL_CTX *old_ctx = e->tls_ctx;
  e->tls_ctx = ctx ? ctx : old_ctx; /* the context new TLS listeners accept with */
  int err = open_added(e, opts);
  if (err) {
    e->tls_ctx = old_ctx;
    SSL_CTX_free(ctx);
    tn_engine_opts_free(&fresh);
    return err;
  }
  for (size_t i = 0; i < e->n_listeners; i++)
    if (e->listeners[i]->open && !wanted(opts, e->listeners[i]))
      listener_close(e->listeners[i], true);
  tn_engine_opts_free(&e->opts);
  e->opts = fresh;
  if (ctx && old_ctx) /* connections already up hold their own reference */
    SSL_CTX_free(old_ctx);
  return 0;
}

void tn_engine_stats_get(const tn_engine *e, tn_engine_stats *out) {
  *out = e->stats;
  out->clients_active = tn__clients_active(e->clients);
  out->clients_rate_limited =
      tn_ratetab_foreach_limited(e->rate_clients, uv_now(e->loop), NULL, NULL);
  out->rate_clients_tracked = tn_ratetab_size(e->rate_clients);
  out->rate_clients_max = RATE_CLIENTS_MAX;
  out->rate_targets_tracked = tn_ratetab_size(e->rate_targets);
  out->rate_targets_max = RATE_TARGETS_MAX;
}

void tn_engine_on_close(tn_engine *e, tn_tunnel_cb cb, void *arg) {
  e->on_close = cb;
  e->on_close_arg = arg;
}

static void foreach_list(const tn_link *head, uint64_t now, tn_tunnel_cb cb, void *arg) {
  for (const tn_link *l = head->next; l != head; l = l->next) {
    tn_tunnel_info info;
    tn__tunnel_info((const tn_tunnel *)l, now, &info);
    cb(&info, arg);
  }
}

void tn_engine_foreach(const tn_engine *e, tn_tunnel_cb cb, void *arg) {
  uint64_t now = uv_now(e->loop);
  foreach_list(&e->relay_list, now, cb, arg);
  foreach_list(&e->setup_list, now, cb, arg);
}

void tn_engine_set_authorized(tn_engine *e, bool authorized) { e->authorized = authorized; }

/* ---- drain ---- */

/* Every tunnel and connection is gone: close the timers; the last close
 * callback frees the engine and calls done. */
static void finish(tn_engine *e) {
  if (e->finishing)
    return;
  e->finishing = true;
  tn__rate_log_flush(e, uv_now(e->loop), true); /* every count held: none lost at exit */
  if (e->own_resolver) /* no tunnel is left to wait on it; it frees itself */
    tn_resolver_close(e->resolver);
  uv_close((uv_handle_t *)&e->sweep, on_engine_handle_closed);
  uv_close((uv_handle_t *)&e->drain_timer, on_engine_handle_closed);
  uv_close((uv_handle_t *)&e->later, on_engine_handle_closed);
}

static void close_tunnels(tn_link *head) {
  while (!tn__list_empty(head)) {
    tn_tunnel *t = (tn_tunnel *)head->next;
    tn__tunnel_close(t, t->phase == TN_PHASE_RELAY ? TN_RESULT_OK : t->result, "drain_timeout",
                     TN_CLOSE_FIN);
  }
}

/* Connections that have not sent a complete request yet are closed at once
 * on drain: a request now would only get 503. */
static void abort_setup_conns(tn_engine *e) {
  while (!tn__list_empty(&e->conn_setup))
    tn__conn_abort((tn_conn *)e->conn_setup.next, "draining");
  for (tn_link *l = e->setup_list.next, *next; l != &e->setup_list; l = next) {
    next = l->next;
    tn_tunnel *t = (tn_tunnel *)l;
    if (t->phase == TN_PHASE_HEADER)
      tn__tunnel_close(t, TN_RESULT_ERROR, "draining", TN_CLOSE_FIN);
  }
}

static void on_drain_timeout(uv_timer_t *timer) {
  tn_engine *e = timer->data;
  tn_log(e->opts.logger, TN_LOG_WARN, "drain_timeout",
         TN_U("tunnels_closed", e->stats.tunnels_active), TN_LOG_END);
  close_tunnels(&e->setup_list);
  close_tunnels(&e->relay_list);
  drain_protos(e, true);
}

void tn_engine_drain(tn_engine *e, void (*done)(void *arg), void *arg) {
  if (e->draining)
    return;
  e->draining = true;
  e->done = done;
  e->done_arg = arg;
  close_listeners(e);
  tn_log(e->opts.logger, TN_LOG_INFO, "draining", TN_U("tunnels_active", e->stats.tunnels_active),
         TN_U("connections_active", e->stats.connections_active),
         TN_U("drain_timeout_ms", e->opts.drain_timeout_ms), TN_LOG_END);
  abort_setup_conns(e);
  drain_protos(e, false);
  if (e->tunnels_alloc == 0 && e->conns_alloc == 0) {
    finish(e);
    return;
  }
  uv_timer_start(&e->drain_timer, on_drain_timeout, e->opts.drain_timeout_ms, 0);
}
