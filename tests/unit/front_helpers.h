/* Driving a front end (tn_proto: tunnel/proto.h) without sockets, for
 * test_h1.c and test_h2.c: a real engine on a loop (one listener that is
 * never connected to, so that connections have a listener to count on), a
 * connection made by hand whose transport is a fake endpoint, bytes handed
 * to the protocol's start and then to the transport's sink, and what the
 * front end writes collected from the fake. Include after <cmocka.h>. */
#ifndef MCGW_TEST_FRONT_HELPERS_H
#define MCGW_TEST_FRONT_HELPERS_H

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel/conn.h"
#include "tunnel/lifecycle.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"
#include "engine_helpers.h"

/* A device transport that records what is written to it. Close is
 * asynchronous, as for a real endpoint: front_settle() reports it. */
typedef struct fake_ep {
  tn_ep ep;
  char out[65536];
  size_t out_len;
  bool shutdown_called, close_pending, closed, reset;
} fake_ep;

static int fake_read_start(tn_ep *ep) {
  ep->reading = true;
  return 0;
}
static void fake_read_stop(tn_ep *ep) { ep->reading = false; }
static int fake_write(tn_ep *ep, char *base, tn_buf_kind kind, size_t len) {
  fake_ep *f = (fake_ep *)ep;
  size_t room = sizeof(f->out) - f->out_len;
  size_t n = len < room ? len : room;
  memcpy(f->out + f->out_len, base, n);
  f->out_len += n;
  tn__buf_free(base, kind);
  return 0;
}
static size_t fake_queued(const tn_ep *ep) {
  (void)ep;
  return 0;
}
static int fake_shutdown(tn_ep *ep) {
  ((fake_ep *)ep)->shutdown_called = true;
  return 0;
}
static void fake_close(tn_ep *ep, bool reset) {
  fake_ep *f = (fake_ep *)ep;
  if (ep->closing)
    return;
  ep->closing = true;
  f->reset = reset;
  f->close_pending = true;
}
static const tn_ep_ops fake_ops = {
    .read_start = fake_read_start,
    .read_stop = fake_read_stop,
    .write = fake_write,
    .queued = fake_queued,
    .shutdown = fake_shutdown,
    .close = fake_close,
};

/* What the engine said about the last tunnel that closed. */
typedef struct closed_info {
  int n;
  tn_result result;
  int status;
  char proto[8];
  char close_reason[128];
} closed_info;

typedef struct front {
  uv_loop_t loop;
  tn_engine *engine;
  fake_ep dev;
  tn_conn *conn;
  closed_info closed;
  bool drained;
} front;

static void front_on_close(const tn_tunnel_info *i, void *arg) {
  closed_info *c = arg;
  c->n++;
  c->result = i->result;
  c->status = i->status;
  snprintf(c->proto, sizeof c->proto, "%s", i->proto);
  snprintf(c->close_reason, sizeof c->close_reason, "%s", i->close_reason ? i->close_reason : "-");
}

/* Starts the engine; tune may change the options first (rules are added by
 * test_start_engine_logged: any 127.0.0.1 port, allow_private on). */
static inline void front_start(front *f) {
  memset(f, 0, sizeof(*f));
  test_logger.level = TN_LOG_ERROR;
  uint16_t port;
  test_start_engine_logged(&f->loop, &f->engine, &port, &test_logger);
  tn_engine_on_close(f->engine, front_on_close, &f->closed);
}

/* A connection from 192.0.2.1 whose transport is f->dev, handed to proto
 * as conn.c does once detection chose it, with first[0..n). */
static inline void front_connect(front *f, const tn_proto *proto, const char *first, size_t n) {
  f->dev = (fake_ep){.ep = {.ops = &fake_ops}};
  tn_conn *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->engine = f->engine;
  c->listener = 0;
  struct sockaddr_in *sin = (struct sockaddr_in *)&c->client;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(5555);
  inet_pton(AF_INET, "192.0.2.1", &sin->sin_addr);
  c->transport = &f->dev.ep;
  tn__engine_conn_added(f->engine, c);
  c->mode = TN_CONN_ACTIVE;
  tn__engine_conn_moved(f->engine, c);
  f->conn = c;
  proto->start(c, first, n);
}

/* More device bytes, through the transport's sink. */
static inline void front_feed(front *f, const char *p, size_t n) {
  char *copy = malloc(n ? n : 1);
  assert_non_null(copy);
  memcpy(copy, p, n);
  f->dev.ep.sink->data(&f->dev.ep, copy, TN_BUF_HEAP, n);
}

/* The device closes its side. */
static inline void front_eof(front *f) {
  f->dev.ep.eof = true;
  f->dev.ep.sink->eof(&f->dev.ep);
}

/* Runs the loop once and reports a pending close of the transport. */
static inline void front_settle(front *f) {
  uv_run(&f->loop, UV_RUN_NOWAIT);
  if (f->dev.close_pending) {
    f->dev.close_pending = false;
    f->dev.closed = true;
    f->dev.ep.sink->closed(&f->dev.ep);
  }
}

/* Runs the loop until done(f, arg) or a 5 s deadline (a failure). For
 * waits on the upstream side, which is a real socket. */
static inline void front_wait(front *f, bool (*done)(front *f, void *arg), void *arg,
                              const char *what) {
  uint64_t deadline = test_now_ms() + 5000;
  while (!done(f, arg)) {
    if (test_now_ms() > deadline)
      fail_msg("timed out waiting for %s", what);
    front_settle(f);
  }
}

/* Reads from a non-blocking socket into buf (NUL-terminated) until it holds
 * want bytes, running the loop meanwhile. */
typedef struct sock_read {
  int fd;
  char buf[256];
  size_t len, want;
} sock_read;

static inline bool sock_read_done(front *f, void *arg) {
  (void)f;
  sock_read *r = arg;
  ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, 0);
  if (n > 0)
    r->len += (size_t)n;
  r->buf[r->len] = '\0';
  return r->len >= r->want;
}

static void front_on_drained(void *arg) { ((front *)arg)->drained = true; }

/* Drains the engine (closing what is left) and closes the loop. */
static inline void front_stop(front *f) {
  tn_engine_drain(f->engine, front_on_drained, f);
  uint64_t deadline = test_now_ms() + 5000;
  while (!f->drained) {
    if (test_now_ms() > deadline)
      fail_msg("the engine did not drain");
    front_settle(f);
  }
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

#endif
