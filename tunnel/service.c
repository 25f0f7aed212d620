/* The engine as a service to the rest of tunnel/ (service.h): accessors,
 * counters, admission and rate checks, and the registry of connections,
 * tunnels and sessions. It calls nothing above it: the sweep timer's
 * callback and the end of a drain are hooks engine.c installs
 * (engine_state.h). */
#include <string.h>

#include "tunnel/engine_state.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

static void sweep_ensure(tn_engine *e);

uv_loop_t *tn__loop(tn_engine *e) { return e->loop; }
const tn_engine_opts *tn__opts(tn_engine *e) { return &e->opts; }
SSL_CTX *tn__tls_ctx(tn_engine *e) { return e->tls_ctx; }
bool tn__authorized(tn_engine *e) { return e->authorized; }
bool tn__draining(tn_engine *e) { return e->draining; }
tn_logger *tn__logger(tn_engine *e) { return e->opts.logger; }
tn_resolver *tn__resolver(tn_engine *e) { return e->resolver; }
tn_bufpool *tn__bufpool(tn_engine *e) { return &e->pool; }
tn_bufpool *tn__dgram_pool(tn_engine *e) { return &e->dgram_pool; }

bool tn__splice_warn_once(tn_engine *e) {
  bool first = !e->splice_warned;
  e->splice_warned = true;
  return first;
}

void tn__count_bytes(tn_engine *e, uint64_t up, uint64_t down) {
  e->stats.bytes_up += up;
  e->stats.bytes_down += down;
}

void tn__count_refused_client(tn_engine *e) { e->stats.clients_refused++; }

void tn__count_udp_datagram(tn_engine *e, bool up, size_t len) {
  if (up) {
    e->stats.udp_datagrams_up++;
    e->stats.bytes_up += len;
  } else {
    e->stats.udp_datagrams_down++;
    e->stats.bytes_down += len;
  }
}

void tn__count_udp_drop(tn_engine *e, tn_udp_drop why, uint64_t n) {
  if (why >= 0 && why < TN_UDP_DROP_COUNT_)
    e->stats.udp_dropped[why] += n;
}

void tn__count_udp_icmp(tn_engine *e) { e->stats.udp_icmp_unreachable++; }

static const char *const udp_drop_names[TN_UDP_DROP_COUNT_] = {
    [TN_UDP_DROP_TOO_LARGE] = "too_large",
    [TN_UDP_DROP_CONTEXT] = "context",
    [TN_UDP_DROP_DEVICE_BUSY] = "device_busy",
    [TN_UDP_DROP_TARGET_BUSY] = "target_busy",
    [TN_UDP_DROP_SEND_FAILED] = "send_failed",
    [TN_UDP_DROP_NO_MEMORY] = "no_memory",
    [TN_UDP_DROP_RECEIVE_OVERFLOW] = "receive_overflow",
};

const char *tn_udp_drop_name(tn_udp_drop d) {
  return (d >= 0 && d < TN_UDP_DROP_COUNT_) ? udp_drop_names[d] : "unknown";
}

uint64_t tn_splice_max(uint64_t nofile) {
  uint64_t n = nofile / (8 * 6);
  return n < TN_SPLICE_MAX ? n : TN_SPLICE_MAX;
}

void tn__count_splice(tn_engine *e, bool started) {
  if (started) {
    e->stats.tunnels_spliced++;
    e->stats.splice_active++;
  } else {
    e->stats.splice_active--;
  }
}

/* A rough count of descriptors in use: a socket per connection and per
 * upstream, the spliced tunnels' extras, and the engine's and daemon's own. */
bool tn__splice_budget(const tn_engine *e) {
  const tn_engine_stats *s = &e->stats;
  uint64_t in_use = s->connections_active + s->tunnels_active + 6 * s->splice_active + 32;
  return s->splice_active < tn_splice_max(e->nofile) && in_use + 6 <= e->nofile / 2;
}

bool tn__admit(tn_engine *e, tn_tunnel *t) {
  const struct sockaddr *client = (const struct sockaddr *)&t->conn->client;
  const char *subject = t->conn->subject;
  if (e->opts.max_tunnels && e->stats.tunnels_active >= e->opts.max_tunnels)
    return false;
  if (e->opts.max_tunnels_per_client &&
      tn__clients_get(e->clients, client, subject) >= e->opts.max_tunnels_per_client)
    return false;
  if (tn__clients_add(e->clients, client, subject) == 0)
    return false;
  t->admitted = true;
  e->stats.tunnels_active++;
  e->stats.by_proto_active[t->proto->stats_index]++;
  e->stats.by_proto_udp_active[t->proto->stats_index] += t->udp != NULL;
  return true;
}

static bool rate_exempt(const tn_engine *e, const tn_conn *c) {
  for (size_t i = 0; i < e->opts.n_rate_exempt; i++) {
    const tn_exempt *x = &e->opts.rate_exempt[i];
    if (x->all || (x->is_subject ? c->subject && strcmp(c->subject, x->subject) == 0
                                 : tn_cidr_contains(&x->cidr, (const struct sockaddr *)&c->client)))
      return true;
  }
  return false;
}

/* The summary of a client's refusal log window: the refusals its access log
 * line stood for. Its fields are named as on the access log's lines. */
static void log_suppressed(const tn_ratetab_suppressed *s, void *arg) {
  tn_engine *e = arg;
  char text[TN_CLIENT_KEY_TEXT_MAX];
  bool is_subject = tn__client_key_text(s->key, s->key_len, text);
  tn_log(e->opts.logger, TN_LOG_WARN, "rate_limited_suppressed",
         TN_S("client", is_subject ? "-" : text), TN_S("subject", is_subject ? text : "-"),
         TN_S("result", "rate_limited"), TN_I("status", 429), TN_U("suppressed", s->suppressed),
         TN_U("window_ms", s->until_ms - s->since_ms), TN_LOG_END);
}

/* The same for a target's window (max_new_upstream_per_target): the key is
 * the target as the access log names it. */
static void log_target_suppressed(const tn_ratetab_suppressed *s, void *arg) {
  tn_engine *e = arg;
  char target[TN_RATE_KEY_MAX + 1];
  memcpy(target, s->key, s->key_len);
  target[s->key_len] = '\0';
  tn_log(e->opts.logger, TN_LOG_WARN, "target_rate_suppressed", TN_S("target", target),
         TN_S("result", tn_result_name(TN_RESULT_LIMIT)), TN_I("status", 503),
         TN_S("close", "target_rate"), TN_U("suppressed", s->suppressed),
         TN_U("window_ms", s->until_ms - s->since_ms), TN_LOG_END);
}

/* After a refusal by tab at now: whether its access-log line is one the
 * window's summary counts instead (t->log_quiet), and the sweep woken for
 * that summary. */
static void log_window(tn_engine *e, tn_tunnel *t, tn_ratetab *tab, const void *key, size_t len,
                       uint64_t now, tn_ratetab_suppressed_cb summary) {
  uint64_t due = tn_ratetab_log_refusal(tab, key, len, now, summary, e);
  t->log_quiet = due != 0;
  if (due && (!e->rate_log_due_ms || due < e->rate_log_due_ms)) {
    e->rate_log_due_ms = due;
    sweep_ensure(e);
  }
}

uint64_t tn__rate_client(tn_engine *e, tn_tunnel *t) {
  const tn_rate *r = &e->opts.new_tunnels_per_client;
  if (r->per_s == 0 || rate_exempt(e, t->conn))
    return 0;
  tn_client_key k;
  tn__client_key((const struct sockaddr *)&t->conn->client, t->conn->subject, &k);
  uint64_t now = uv_now(e->loop);
  uint64_t wait = tn_ratetab_take(e->rate_clients, k.b, k.len, r, now);
  if (wait)
    log_window(e, t, e->rate_clients, k.b, k.len, now, log_suppressed);
  return wait;
}

void tn__rate_log_flush(tn_engine *e, uint64_t now_ms, bool all) {
  if (!e->rate_log_due_ms || (now_ms < e->rate_log_due_ms && !all))
    return;
  uint64_t next = tn__min_set(
      tn_ratetab_flush_suppressed(e->rate_clients, now_ms, all, log_suppressed, e),
      tn_ratetab_flush_suppressed(e->rate_targets, now_ms, all, log_target_suppressed, e));
  /* At most one walk of the tables a second, however the windows fall. */
  if (next && next < now_ms + 1000)
    next = now_ms + 1000;
  e->rate_log_due_ms = next;
}

uint64_t tn__rate_target(tn_engine *e, tn_tunnel *t) {
  size_t len = strlen(t->target);
  uint64_t now = uv_now(e->loop);
  uint64_t wait =
      tn_ratetab_take(e->rate_targets, t->target, len, &e->opts.new_upstream_per_target, now);
  if (wait)
    log_window(e, t, e->rate_targets, t->target, len, now, log_target_suppressed);
  return wait;
}

void tn__count_goaway(tn_engine *e, tn_goaway_reason r) {
  if ((unsigned)r < TN_GOAWAY_COUNT_)
    e->stats.h2_goaway[r]++;
}

void tn__engine_tunnel_added(tn_engine *e, tn_tunnel *t) {
  t->id = ++e->next_id;
  e->tunnels_alloc++;
  e->stats.tunnels_total++;
  tn__list_append(&e->setup_list, &t->link);
  sweep_ensure(e);
}

void tn__engine_tunnel_done(tn_engine *e, tn_tunnel *t) {
  tn__list_remove(&t->link);
  e->stats.by_result[t->result]++;
  if (t->admitted) {
    t->admitted = false;
    e->stats.tunnels_active--;
    e->stats.by_proto_active[t->proto->stats_index]--;
    e->stats.by_proto_udp_active[t->proto->stats_index] -= t->udp != NULL;
    tn__clients_remove(e->clients, (const struct sockaddr *)&t->conn->client, t->conn->subject);
  }
}

tn_tunnel_cb tn__engine_close_observer(tn_engine *e, void **arg) {
  *arg = e->on_close_arg;
  return e->on_close;
}

/* Draining and nothing left: the engine's top closes its handles. */
static void maybe_finish(tn_engine *e) {
  if (e->draining && e->tunnels_alloc == 0 && e->conns_alloc == 0)
    e->finish(e);
}

void tn__engine_tunnel_freed(tn_engine *e) {
  e->tunnels_alloc--;
  maybe_finish(e);
}

void tn__engine_conn_added(tn_engine *e, tn_conn *c) {
  e->conns_alloc++;
  e->stats.connections_active++;
  e->listeners[c->listener]->active++;
  c->deadline_ms = uv_now(e->loop) + e->opts.header_timeout_ms;
  tn__list_append(&e->conn_setup, &c->link);
  sweep_ensure(e);
}

void tn__engine_conn_moved(tn_engine *e, tn_conn *c) {
  tn__list_remove(&c->link);
  tn__list_append(&e->conn_other, &c->link);
}

void tn__engine_conn_linger(tn_engine *e, tn_conn *c) {
  c->mode = TN_CONN_LINGER;
  c->deadline_ms = uv_now(e->loop) + TN_LINGER_MS;
  tn__list_remove(&c->link);
  tn__list_append(&e->conn_setup, &c->link);
  sweep_ensure(e);
}

void tn__engine_conn_freed(tn_engine *e, tn_conn *c) {
  tn__list_remove(&c->link);
  e->stats.connections_active--;
  e->listeners[c->listener]->active--;
  e->conns_alloc--;
  maybe_finish(e);
}

/* The idle handle's callback: runs what is queued now; what that queues in
 * turn waits for the next turn. */
static void on_later(uv_idle_t *h) {
  tn_engine *e = h->data;
  tn_link now;
  tn__list_init(&now);
  while (!tn__list_empty(&e->later_list)) {
    tn_link *l = e->later_list.next;
    tn__list_remove(l);
    tn__list_append(&now, l);
  }
  while (!tn__list_empty(&now)) {
    tn_later *l = (tn_later *)now.next;
    tn__list_remove(&l->link);
    l->run(l); /* may cancel others in `now`: they leave the list */
  }
  if (tn__list_empty(&e->later_list))
    uv_idle_stop(h);
}

void tn__engine_later(tn_engine *e, tn_later *l) {
  if (l->link.next || e->finishing)
    return;
  tn__list_append(&e->later_list, &l->link);
  uv_idle_start(&e->later, on_later);
}

void tn__engine_session_added(tn_engine *e, tn_link *link) {
  tn__list_append(&e->sessions, link);
  e->stats.h2_connections_active++;
}

void tn__engine_session_removed(tn_engine *e, tn_link *link) {
  tn__list_remove(link);
  e->stats.h2_connections_active--;
}

tn_link *tn__engine_sessions(tn_engine *e) { return &e->sessions; }

void tn__engine_head_open(tn_engine *e, bool open) {
  if (!open) {
    e->heads_open--;
    return;
  }
  e->heads_open++;
  sweep_ensure(e);
}

/* Something entered set-up: make sure a deadline check is at most
 * TN_SWEEP_MS away. */
static void sweep_ensure(tn_engine *e) {
  if (uv_is_closing((uv_handle_t *)&e->sweep))
    return;
  if (!uv_is_active((uv_handle_t *)&e->sweep) || uv_timer_get_due_in(&e->sweep) > TN_SWEEP_MS)
    uv_timer_start(&e->sweep, e->on_sweep, TN_SWEEP_MS, 0);
}

void tn__list_move(tn_engine *e, tn_tunnel *t, bool to_relay) {
  tn__list_remove(&t->link);
  tn__list_append(to_relay ? &e->relay_list : &e->setup_list, &t->link);
}

const tn_proto *const *tn__engine_protos(tn_engine *e, size_t *n) {
  *n = e->n_protos;
  return e->protos;
}
