/* Two relay engines in one process, each on its own loop, with no state
 * shared between them (issue 12): tunnel ids, counters, the buffer pool and
 * the logger are each engine's own.
 *
 * - one thread, two loops stepped in turn: tunnels on both, each engine's
 *   first tunnel is id 1, each engine's access log goes to its own logger
 *   and counts only its own tunnel;
 * - two threads, one engine each, relaying bulk bytes both ways at the same
 *   time: every byte arrives intact (a shared buffer pool would hand the same
 *   buffer to both threads).
 * The real engine runs on real loopback sockets, as in test_engine_sockets.c;
 * every wait has a deadline. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine_helpers.h"
#include "tunnel/engine.h"

#define DEADLINE_MS 20000
#define BULK (4 * 1024 * 1024) /* bytes each way in the threaded test */

/* One engine, its loop, its logger, a device and a destination. */
typedef struct side {
  uv_loop_t loop;
  tn_engine *engine;
  tn_logger logger;
  FILE *log;
  bool drained;
  int up_listen, up_conn, client;
  uint16_t proxy_port, up_port;
  size_t up_got, up_sent, down_got, down_sent; /* bulk progress */
  const char *error;                           /* the first failure, NULL while fine */
} side;

static bool failed(side *s, const char *why) {
  if (!s->error)
    s->error = why;
  return false;
}

static uint8_t pattern(size_t i, unsigned salt) { return (uint8_t)((i * 31 + salt) ^ (i >> 9)); }

/* One step of s's loop and of its destination (which accepts one connection). */
static void spin(side *s) {
  struct pollfd p[2] = {{.fd = uv_backend_fd(&s->loop), .events = POLLIN},
                        {.fd = s->up_listen, .events = POLLIN}};
  poll(p, 2, 2);
  uv_run(&s->loop, UV_RUN_NOWAIT);
  if (s->up_conn == -1)
    s->up_conn = accept4(s->up_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

/* Starts s's engine, logging to a temporary file, and its destination. No
 * cmocka asserts from here on may run off the main thread, so the set-up is
 * done on the main thread for both sides. */
static void side_start(side *s) {
  *s = (side){.up_conn = -1, .client = -1};
  assert_non_null(s->log = tmpfile());
  tn_logger_init(&s->logger, TN_LOG_INFO, TN_LOG_TEXT);
  s->logger.out = s->log;
  s->up_listen = test_listen_loopback(&s->up_port);
  test_start_engine_logged(&s->loop, &s->engine, &s->proxy_port, &s->logger);
}

/* Connects the device and sends CONNECT; true once the 200 is in and the
 * destination accepted. */
static bool side_establish(side *s, uint64_t deadline) {
  s->client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons(s->proxy_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (s->client < 0 ||
      (connect(s->client, (struct sockaddr *)&sin, sizeof(sin)) != 0 && errno != EINPROGRESS))
    return failed(s, "connect to the engine failed");
  char req[128], buf[64];
  int n =
      snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: x\r\n\r\n", s->up_port);
  size_t sent = 0, have = 0;
  const char *want = "HTTP/1.1 200 Connection Established\r\n\r\n";
  while (have < strlen(want) || s->up_conn < 0) {
    if (test_now_ms() > deadline)
      return failed(s, "no 200 within the deadline");
    spin(s);
    if (sent < (size_t)n) {
      ssize_t w = send(s->client, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
      if (w > 0)
        sent += (size_t)w;
    }
    ssize_t got = recv(s->client, buf + have, strlen(want) - have, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR && errno != ENOTCONN))
      return failed(s, "the engine closed the device connection");
    if (got > 0)
      have += (size_t)got;
  }
  return memcmp(buf, want, have) == 0 || failed(s, "not a 200");
}

/* Sends the rest of total pattern bytes (salt) on fd; *done counts them. */
static void pump_out(int fd, size_t *done, size_t total, unsigned salt) {
  uint8_t chunk[16384];
  while (*done < total) {
    size_t n = total - *done < sizeof(chunk) ? total - *done : sizeof(chunk);
    for (size_t i = 0; i < n; i++)
      chunk[i] = pattern(*done + i, salt);
    ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
    if (w <= 0)
      return;
    *done += (size_t)w;
  }
}

/* Reads what fd has and checks it against the pattern; false on a wrong byte. */
static bool pump_in(int fd, size_t *done, unsigned salt) {
  uint8_t chunk[16384];
  ssize_t r;
  while ((r = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
    for (ssize_t i = 0; i < r; i++)
      if (chunk[i] != pattern(*done + (size_t)i, salt))
        return false;
    *done += (size_t)r;
  }
  return true;
}

/* BULK bytes device -> destination and BULK back at the same time. */
static bool side_bulk(side *s, uint64_t deadline) {
  while (s->up_got < BULK || s->down_got < BULK) {
    if (test_now_ms() > deadline)
      return failed(s, "bulk transfer did not finish within the deadline");
    spin(s);
    pump_out(s->client, &s->down_sent, BULK, 1);
    pump_out(s->up_conn, &s->up_sent, BULK, 2);
    if (!pump_in(s->up_conn, &s->up_got, 1) || !pump_in(s->client, &s->down_got, 2))
      return failed(s, "relayed bytes differ from those sent");
  }
  return true;
}

/* Both ends close; waits until the engine closed the tunnel as ok. */
static bool side_close_tunnel(side *s, uint64_t deadline) {
  close(s->client);
  close(s->up_conn);
  s->client = -1;
  s->up_conn = -2; /* accept no more */
  tn_engine_stats st;
  do {
    if (test_now_ms() > deadline)
      return failed(s, "the tunnel did not close");
    spin(s);
    tn_engine_stats_get(s->engine, &st);
  } while (st.tunnels_active || st.connections_active);
  return st.by_result[TN_RESULT_OK] == 1 || failed(s, "the tunnel did not end ok");
}

static void on_drained(void *arg) { ((side *)arg)->drained = true; }

static bool side_stop(side *s, uint64_t deadline) {
  tn_engine_drain(s->engine, on_drained, s);
  while (!s->drained) {
    if (test_now_ms() > deadline)
      return failed(s, "the engine did not drain");
    spin(s);
  }
  uv_run(&s->loop, UV_RUN_NOWAIT);
  close(s->up_listen);
  return uv_loop_close(&s->loop) == 0 || failed(s, "the loop did not close clean");
}

/* What s's logger wrote. */
static char *side_log(side *s) {
  static char text[8192];
  fflush(s->log);
  rewind(s->log);
  size_t n = fread(text, 1, sizeof(text) - 1, s->log);
  text[n] = '\0';
  fclose(s->log);
  return text;
}

static void assert_own_log(side *s) {
  const char *text = side_log(s);
  const char *closed = strstr(text, "msg=tunnel_closed id=1 proto=h1 ");
  assert_non_null(closed);
  assert_null(strstr(closed + 1, "msg=tunnel_closed")); /* only its own tunnel */
  assert_non_null(strstr(closed, " result=ok "));
}

static void two_engines_two_loops(void **state) {
  (void)state;
  side a, b;
  uint64_t deadline = test_now_ms() + DEADLINE_MS;
  side_start(&a);
  side_start(&b);
  assert_true(side_establish(&a, deadline));
  assert_true(side_establish(&b, deadline));
  tn_engine_stats st;
  tn_engine_stats_get(a.engine, &st);
  assert_int_equal(st.tunnels_active, 1);
  assert_int_equal(st.tunnels_total, 1);
  tn_engine_stats_get(b.engine, &st);
  assert_int_equal(st.tunnels_active, 1);
  assert_int_equal(st.tunnels_total, 1);
  /* a's tunnel ends while b's is still up: b does not notice. */
  assert_true(side_close_tunnel(&a, deadline));
  tn_engine_stats_get(b.engine, &st);
  assert_int_equal(st.tunnels_active, 1);
  assert_true(side_close_tunnel(&b, deadline));
  assert_true(side_stop(&a, deadline));
  assert_true(side_stop(&b, deadline));
  assert_own_log(&a);
  assert_own_log(&b);
}

static void *run_side(void *arg) {
  side *s = arg;
  uint64_t deadline = test_now_ms() + DEADLINE_MS;
  if (side_establish(s, deadline) && side_bulk(s, deadline) && side_close_tunnel(s, deadline))
    side_stop(s, deadline);
  else if (s->engine)
    side_stop(s, deadline + 5000);
  return NULL;
}

static void two_engines_two_threads(void **state) {
  (void)state;
  side a, b;
  side_start(&a);
  side_start(&b);
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, run_side, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, run_side, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  if (a.error)
    fail_msg("engine a: %s", a.error);
  if (b.error)
    fail_msg("engine b: %s", b.error);
  assert_int_equal(a.up_got, BULK);
  assert_int_equal(b.down_got, BULK);
  assert_own_log(&a);
  assert_own_log(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(two_engines_two_loops),
      cmocka_unit_test(two_engines_two_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
