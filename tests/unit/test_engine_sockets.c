/* Socket options on the engine's own sockets: both sides of a tunnel must
 * have TCP_NODELAY (a relay must not add Nagle delays to what the device or
 * the destination wrote). The device side gets it from its listener (Linux
 * copies TCP_NODELAY to accepted sockets, so no setsockopt per connection),
 * the destination side when the connection is made.
 *
 * The real engine runs in this process on a real loop, so its descriptors
 * are ours to inspect: a socket is found by its addresses. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tunnel/engine.h"
#include "engine_helpers.h"

#define DEADLINE_MS 5000

typedef struct fixture {
  uv_loop_t loop;
  tn_engine *engine;
  bool drained;
  int up_listen, up_conn, client;
  uint16_t proxy_port, up_port;
} fixture;

static struct sockaddr_in loopback(uint16_t port) {
  return (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

/* One step of the loop and of the upstream (which accepts and then only
 * holds its connection). */
static void spin(fixture *f) {
  struct pollfd p[2] = {{.fd = uv_backend_fd(&f->loop), .events = POLLIN},
                        {.fd = f->up_listen, .events = POLLIN}};
  poll(p, 2, 5);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  if (f->up_conn < 0)
    f->up_conn = accept4(f->up_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static bool same_addr(const struct sockaddr_in *a, const struct sockaddr_in *b) {
  return a->sin_family == b->sin_family && a->sin_port == b->sin_port &&
         a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* The descriptor in this process whose local and peer addresses are these,
 * or -1. */
static int find_socket(const struct sockaddr_in *local, const struct sockaddr_in *peer) {
  struct rlimit rl;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  int max = rl.rlim_cur > 65536 ? 65536 : (int)rl.rlim_cur;
  for (int fd = 0; fd < max; fd++) {
    struct sockaddr_in l, p;
    socklen_t ll = sizeof(l), pl = sizeof(p);
    if (getsockname(fd, (struct sockaddr *)&l, &ll) != 0 || ll != sizeof(l) ||
        getpeername(fd, (struct sockaddr *)&p, &pl) != 0 || pl != sizeof(p))
      continue;
    if (same_addr(&l, local) && same_addr(&p, peer))
      return fd;
  }
  return -1;
}

static struct sockaddr_in addr_of(int fd, bool peer) {
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  assert_int_equal(peer ? getpeername(fd, (struct sockaddr *)&sin, &len)
                        : getsockname(fd, (struct sockaddr *)&sin, &len),
                   0);
  return sin;
}

static int nodelay(int fd) {
  int v = -1;
  socklen_t len = sizeof(v);
  assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
  return v;
}

static void connect_client(fixture *f) {
  f->client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = loopback(f->proxy_port);
  int c = connect(f->client, (struct sockaddr *)&sin, sizeof(sin));
  assert_true(c == 0 || errno == EINPROGRESS);
  struct pollfd p = {.fd = f->client, .events = POLLOUT};
  assert_int_equal(poll(&p, 1, 2000), 1);
}

/* The engine's side of the device connection, once it has accepted it. */
static int engine_down_socket(fixture *f, uint64_t deadline) {
  struct sockaddr_in local = addr_of(f->client, true), peer = addr_of(f->client, false);
  tn_engine_stats st;
  do {
    if (test_now_ms() > deadline)
      fail_msg("the engine did not accept the connection");
    spin(f);
    tn_engine_stats_get(f->engine, &st);
  } while (st.connections_active == 0);
  int fd = find_socket(&local, &peer);
  assert_true(fd >= 0);
  return fd;
}

/* Sends CONNECT and waits for the 200 and for the upstream's accept. */
static void establish(fixture *f, uint64_t deadline) {
  char req[128], buf[256];
  size_t have = 0;
  int n = snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: x\r\n\r\n",
                   f->up_port);
  assert_int_equal(send(f->client, req, (size_t)n, MSG_NOSIGNAL), n);
  while (have < 12 || f->up_conn < 0) {
    if (test_now_ms() > deadline)
      fail_msg("no 200 within the deadline");
    spin(f);
    ssize_t got = recv(f->client, buf + have, sizeof(buf) - 1 - have, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      fail_msg("the gateway closed the connection");
    if (got > 0)
      have += (size_t)got;
  }
  buf[have] = '\0';
  assert_memory_equal(buf, "HTTP/1.1 200", 12);
}

static void on_drained(void *arg) { ((fixture *)arg)->drained = true; }

static void stop(fixture *f, uint64_t deadline) {
  close(f->client);
  if (f->up_conn >= 0)
    close(f->up_conn);
  f->up_conn = -2; /* accept no more */
  tn_engine_drain(f->engine, on_drained, f);
  while (!f->drained) {
    if (test_now_ms() > deadline)
      fail_msg("the engine did not drain");
    spin(f);
  }
  close(f->up_listen);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void both_sides_have_nodelay(void **state) {
  (void)state;
  fixture f = {.up_conn = -1, .client = -1};
  uint64_t deadline = test_now_ms() + DEADLINE_MS;
  f.up_listen = test_listen_loopback(&f.up_port);
  test_start_engine(&f.loop, &f.engine, &f.proxy_port);
  connect_client(&f);

  /* Already while the request head is awaited: inherited, not set later. */
  int down = engine_down_socket(&f, deadline);
  assert_int_equal(nodelay(down), 1);

  establish(&f, deadline);
  struct sockaddr_in up_local = addr_of(f.up_conn, true), up_peer = addr_of(f.up_conn, false);
  int up = find_socket(&up_local, &up_peer);
  assert_true(up >= 0);
  assert_int_equal(nodelay(up), 1);
  assert_int_equal(nodelay(down), 1);
  stop(&f, deadline + DEADLINE_MS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(both_sides_have_nodelay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
