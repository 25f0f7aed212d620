/* The relay engine: owns the listeners, the tunnel lists, the one sweep
 * timer that enforces every set-up deadline and the idle timeout, the
 * counters, and the drain sequence. See engine.h for the API. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/error.h"
#include "tunnel/internal.h"
#include "tunnel/log.h"

#define LISTEN_BACKLOG 4096

typedef struct tn_listener {
  uv_tcp_t tcp;
  tn_engine *engine;
  size_t index;
  uint64_t active; /* open downstream connections accepted here */
  struct sockaddr_storage bound;
} tn_listener;

struct tn_engine {
  uv_loop_t *loop;
  tn_engine_opts opts;
  tn_listener *listeners;
  size_t n_listeners;
  uv_timer_t sweep;
  uv_timer_t drain_timer;
  unsigned handles_open; /* listeners and timers */
  tn_link setup_list;    /* tunnels with a deadline: header, connect, linger */
  tn_link relay_list;    /* established tunnels, checked for idleness */
  uint64_t next_idle_sweep_ms;
  uint64_t tunnels_alloc; /* tunnels not yet freed */
  tn_clients *clients;
  tn_engine_stats stats;
  uint64_t last_accept_log_ms;
  tn_tunnel_cb on_close;
  void *on_close_arg;
  bool authorized;
  bool draining;
  bool finishing;
  void (*done)(void *arg);
  void *done_arg;
};

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
}

int tn_engine_opts_copy(tn_engine_opts *dst, const tn_engine_opts *src) {
  tn_engine_opts tmp = *src;
  tmp.listen = NULL;
  memset(&tmp.policy, 0, sizeof(tmp.policy));
  if (src->n_listen) {
    tmp.listen = malloc(src->n_listen * sizeof(*tmp.listen));
    if (!tmp.listen)
      return TN_ENOMEM;
    memcpy(tmp.listen, src->listen, src->n_listen * sizeof(*tmp.listen));
  }
  if (tn_policy_copy(&tmp.policy, &src->policy) != 0) {
    free(tmp.listen);
    return TN_ENOMEM;
  }
  *dst = tmp;
  return 0;
}

void tn_engine_opts_free(tn_engine_opts *o) {
  free(o->listen);
  o->listen = NULL;
  o->n_listen = 0;
  tn_policy_free(&o->policy);
}

/* ---- lists ---- */

static void list_init(tn_link *head) { head->prev = head->next = head; }

static void list_remove(tn_link *l) {
  if (!l->next)
    return;
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->prev = l->next = NULL;
}

static void list_append(tn_link *head, tn_link *l) {
  l->prev = head->prev;
  l->next = head;
  head->prev->next = l;
  head->prev = l;
}

static bool list_empty(const tn_link *head) { return head->next == head; }

void tn__list_move(tn_engine *e, tn_tunnel *t, bool to_relay) {
  list_remove(&t->link);
  list_append(to_relay ? &e->relay_list : &e->setup_list, &t->link);
}

/* ---- accessors used by the other engine files ---- */

uv_loop_t *tn__loop(tn_engine *e) { return e->loop; }
const tn_engine_opts *tn__opts(tn_engine *e) { return &e->opts; }

void tn__count_bytes(tn_engine *e, uint64_t up, uint64_t down) {
  e->stats.bytes_up += up;
  e->stats.bytes_down += down;
}

bool tn__admit(tn_engine *e, tn_tunnel *t) {
  const struct sockaddr *client = (const struct sockaddr *)&t->client;
  if (e->opts.max_tunnels && e->stats.tunnels_active >= e->opts.max_tunnels)
    return false;
  if (e->opts.max_tunnels_per_client &&
      tn__clients_get(e->clients, client) >= e->opts.max_tunnels_per_client)
    return false;
  if (tn__clients_add(e->clients, client) == 0)
    return false;
  t->admitted = true;
  e->stats.tunnels_active++;
  return true;
}

void tn__engine_tunnel_done(tn_engine *e, tn_tunnel *t) {
  list_remove(&t->link);
  e->stats.connections_active--;
  e->listeners[t->listener].active--;
  if (e->on_close) {
    tn_tunnel_info info;
    tn__tunnel_info(t, uv_now(e->loop), &info);
    e->on_close(&info, e->on_close_arg);
  }
  e->stats.by_result[t->result]++;
  if (t->admitted) {
    t->admitted = false;
    e->stats.tunnels_active--;
    tn__clients_remove(e->clients, (const struct sockaddr *)&t->client);
  }
}

static void finish(tn_engine *e);

void tn__engine_tunnel_freed(tn_engine *e) {
  e->tunnels_alloc--;
  if (e->draining && e->tunnels_alloc == 0)
    finish(e);
}

/* ---- sweep: every deadline and the idle timeout, with one timer ---- */

static void sweep_list(tn_link *head, uint64_t now, uint64_t idle_ms) {
  tn_link *l = head->next;
  while (l != head) {
    tn_tunnel *t = (tn_tunnel *)l; /* link is the first member */
    l = l->next; /* t may leave the list below */
    bool expired = idle_ms ? now - t->last_activity_ms >= idle_ms
                           : t->deadline_ms && now >= t->deadline_ms;
    if (expired)
      tn__tunnel_timeout(t);
  }
}

static void on_sweep(uv_timer_t *timer) {
  tn_engine *e = timer->data;
  uint64_t now = uv_now(e->loop);
  sweep_list(&e->setup_list, now, 0);
  uint64_t idle = e->opts.idle_timeout_ms;
  if (idle && now >= e->next_idle_sweep_ms) {
    sweep_list(&e->relay_list, now, idle);
    /* Idle checks need only be as fine as a sixteenth of the timeout. */
    e->next_idle_sweep_ms = now + (idle / 16 > 1000 ? idle / 16 : 1000);
  }
  if (list_empty(&e->setup_list) && list_empty(&e->relay_list))
    uv_timer_stop(timer);
}

static void sweep_ensure(tn_engine *e) {
  if (!uv_is_active((uv_handle_t *)&e->sweep))
    uv_timer_start(&e->sweep, on_sweep, TN_SWEEP_MS, TN_SWEEP_MS);
}

/* ---- accepting ---- */

static void log_accept_error(tn_engine *e, int status) {
  e->stats.accept_errors++;
  uint64_t now = uv_now(e->loop);
  if (now - e->last_accept_log_ms < 1000)
    return; /* at most one line a second while descriptors are exhausted */
  e->last_accept_log_ms = now;
  tn_log(TN_LOG_WARN, "accept_failed", TN_S("error", uv_err_name(status)),
         TN_U("accept_errors", e->stats.accept_errors), TN_LOG_END);
}

static void on_connection(uv_stream_t *server, int status) {
  tn_listener *l = server->data;
  tn_engine *e = l->engine;
  if (status < 0)
    return log_accept_error(e, status);
  e->tunnels_alloc++;
  tn_tunnel *t = tn__tunnel_new(e, server);
  if (!t)
    return log_accept_error(e, UV_ENOMEM);
  t->listener = l->index;
  l->active++;
  e->stats.connections_active++;
  e->stats.tunnels_total++;
  t->deadline_ms = uv_now(e->loop) + e->opts.header_timeout_ms;
  list_append(&e->setup_list, &t->link);
  sweep_ensure(e);
  tn__h1_start(t);
}

/* Listener handles carry their tn_listener, timers the engine. */
static tn_engine *engine_of(uv_handle_t *h) {
  return h->type == UV_TCP ? ((tn_listener *)h->data)->engine : h->data;
}

static void on_engine_handle_closed(uv_handle_t *h) {
  tn_engine *e = engine_of(h);
  if (--e->handles_open > 0)
    return;
  void (*done)(void *) = e->done;
  void *arg = e->done_arg;
  tn_engine_opts_free(&e->opts);
  tn__clients_free(e->clients);
  free(e->listeners);
  free(e);
  tn__bufpool_trim();
  if (done)
    done(arg);
}

static int listener_open(tn_engine *e, tn_listener *l, const struct sockaddr_storage *addr) {
  char text[TN_ADDRSTR_MAX];
  tn_addr_format((const struct sockaddr *)addr, text, sizeof(text));
  int err = uv_tcp_init(e->loop, &l->tcp);
  if (err)
    return err;
  l->tcp.data = l;
  e->handles_open++;
  if ((err = uv_tcp_bind(&l->tcp, (const struct sockaddr *)addr, 0)) == 0 &&
      (err = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection)) == 0) {
    int len = sizeof(l->bound);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&l->bound, &len);
    tn_addr_format((const struct sockaddr *)&l->bound, text, sizeof(text));
    tn_log(TN_LOG_INFO, "listening", TN_S("kind", "proxy"), TN_S("addr", text), TN_LOG_END);
    return 0;
  }
  tn_log(TN_LOG_ERROR, "listen_failed", TN_S("kind", "proxy"), TN_S("addr", text),
         TN_S("error", uv_strerror(err)), TN_LOG_END);
  return err;
}

static void close_engine_handles(tn_engine *e) {
  for (size_t i = 0; i < e->n_listeners; i++)
    if (!uv_is_closing((uv_handle_t *)&e->listeners[i].tcp))
      uv_close((uv_handle_t *)&e->listeners[i].tcp, on_engine_handle_closed);
}

int tn_engine_start(uv_loop_t *loop, const tn_engine_opts *opts, tn_engine **out) {
  tn_engine *e = calloc(1, sizeof(*e));
  if (!e)
    return TN_ENOMEM;
  e->loop = loop;
  list_init(&e->setup_list);
  list_init(&e->relay_list);
  e->clients = tn__clients_new();
  e->listeners = calloc(opts->n_listen ? opts->n_listen : 1, sizeof(*e->listeners));
  if (!e->clients || !e->listeners || tn_engine_opts_copy(&e->opts, opts) != 0) {
    tn__clients_free(e->clients);
    free(e->listeners);
    free(e);
    return TN_ENOMEM;
  }
  uv_timer_init(loop, &e->sweep);
  uv_timer_init(loop, &e->drain_timer);
  e->sweep.data = e->drain_timer.data = e;
  e->handles_open = 2;
  int err = 0;
  for (size_t i = 0; i < opts->n_listen && !err; i++, e->n_listeners++) {
    e->listeners[i].engine = e;
    e->listeners[i].index = i;
    err = listener_open(e, &e->listeners[i], &opts->listen[i]);
  }
  if (err) {
    /* The handles close asynchronously; the engine frees itself after. */
    e->draining = true;
    close_engine_handles(e);
    finish(e);
    return err;
  }
  *out = e;
  return 0;
}

int tn_engine_listener_addr(const tn_engine *e, size_t i, struct sockaddr_storage *out) {
  if (i >= e->n_listeners)
    return TN_EINVAL;
  *out = e->listeners[i].bound;
  return 0;
}

int tn_engine_update(tn_engine *e, const tn_engine_opts *opts) {
  tn_engine_opts fresh;
  if (tn_engine_opts_copy(&fresh, opts) != 0)
    return TN_ENOMEM;
  /* Listeners are not re-bound: keep the ones in force. */
  free(fresh.listen);
  fresh.listen = e->opts.listen;
  fresh.n_listen = e->opts.n_listen;
  e->opts.listen = NULL;
  tn_engine_opts_free(&e->opts);
  e->opts = fresh;
  return 0;
}

void tn_engine_stats_get(const tn_engine *e, tn_engine_stats *out) {
  *out = e->stats;
  out->clients_active = tn__clients_active(e->clients);
}

uint64_t tn_engine_listener_active(const tn_engine *e, size_t i) {
  return i < e->n_listeners ? e->listeners[i].active : 0;
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
bool tn__authorized(tn_engine *e) { return e->authorized; }

/* ---- drain ---- */

/* Every tunnel is gone: close the timers; the last close callback frees the
 * engine and calls done. */
static void finish(tn_engine *e) {
  if (e->finishing)
    return;
  e->finishing = true;
  uv_close((uv_handle_t *)&e->sweep, on_engine_handle_closed);
  uv_close((uv_handle_t *)&e->drain_timer, on_engine_handle_closed);
}

static void close_all(tn_link *head) {
  while (!list_empty(head)) {
    tn_tunnel *t = (tn_tunnel *)head->next;
    tn__tunnel_close(t, t->phase == TN_PHASE_RELAY ? TN_RESULT_OK : t->result,
                     "drain_timeout");
  }
}

static void on_drain_timeout(uv_timer_t *timer) {
  tn_engine *e = timer->data;
  tn_log(TN_LOG_WARN, "drain_timeout", TN_U("tunnels_closed", e->stats.connections_active),
         TN_LOG_END);
  close_all(&e->setup_list);
  close_all(&e->relay_list);
}

void tn_engine_drain(tn_engine *e, void (*done)(void *arg), void *arg) {
  if (e->draining)
    return;
  e->draining = true;
  e->done = done;
  e->done_arg = arg;
  close_engine_handles(e);
  tn_log(TN_LOG_INFO, "draining", TN_U("tunnels_active", e->stats.tunnels_active),
         TN_U("connections_active", e->stats.connections_active),
         TN_U("drain_timeout_ms", e->opts.drain_timeout_ms), TN_LOG_END);
  if (e->tunnels_alloc == 0)
    return finish(e);
  uv_timer_start(&e->drain_timer, on_drain_timeout, e->opts.drain_timeout_ms, 0);
}
