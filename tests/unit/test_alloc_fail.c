/* Allocation failure on the tunnel set-up path (issue 7): the real engine on
 * a real loop, a real client and a real upstream on 127.0.0.1, and the i-th
 * allocation made by mcgw's own code after the client connects made to fail,
 * for i = 1, 2, ... until a run makes fewer than i allocations.
 *
 * Each run must end, within a deadline, in either a working tunnel or a
 * clean refusal (an error status or a closed connection) - and then the
 * engine must drain, the loop close with no handle left, and every block
 * mcgw's code allocated be freed (counted here, independently of LSan).
 *
 * Mechanism: the link wraps malloc, calloc, realloc, strdup and free
 * (-Wl,--wrap=..., tests/CMakeLists.txt) for every object in the test
 * executable, which includes the engine's static library; libuv, libc and
 * llhttp internals are not counted. No hook in tunnel/ is needed. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine_helpers.h"
#include "gateway/log.h"
#include "gateway/ops/admin.h"
#include "tunnel/engine.h"

/* ---- the allocator wrapper ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
void __wrap_free(void *p);

#define LIVE_SLOTS 65536 /* open addressing; far more than a run allocates */
static void *live[LIVE_SLOTS];
static size_t n_live;
static bool armed;
static unsigned long n_armed; /* allocations counted since arming */
static unsigned long fail_at; /* 1-based; 0 = never */
static bool fail_after;       /* also fail every allocation after fail_at, */
static uint64_t fail_until_ms; /* until then: memory comes back */
static bool failed_one;

static size_t slot_of(const void *p) { return ((uintptr_t)p >> 4) * 2654435761u % LIVE_SLOTS; }

static void track(void *p) {
  if (!p)
    return;
  size_t i = slot_of(p);
  while (live[i] && live[i] != (void *)1)
    i = (i + 1) % LIVE_SLOTS;
  live[i] = p;
  n_live++;
}

static void untrack(void *p) {
  if (!p)
    return;
  for (size_t i = slot_of(p), k = 0; live[i] && k < LIVE_SLOTS; i = (i + 1) % LIVE_SLOTS, k++)
    if (live[i] == p) {
      live[i] = (void *)1; /* tombstone */
      n_live--;
      return;
    }
}

/* Whether this allocation is the one to fail. */
static bool should_fail(void) {
  if (!armed)
    return false;
  ++n_armed;
  if (fail_at && (n_armed == fail_at || (fail_after && n_armed > fail_at))) {
    failed_one = true;
    return true;
  }
  return false;
}

void *__wrap_malloc(size_t n) {
  if (should_fail())
    return NULL;
  void *p = __real_malloc(n);
  track(p);
  return p;
}

void *__wrap_calloc(size_t n, size_t m) {
  if (should_fail())
    return NULL;
  void *p = __real_calloc(n, m);
  track(p);
  return p;
}

void *__wrap_realloc(void *old, size_t n) {
  if (should_fail())
    return NULL;
  void *p = __real_realloc(old, n);
  if (p) {
    untrack(old);
    track(p);
  }
  return p;
}

char *__wrap_strdup(const char *s) {
  if (should_fail())
    return NULL;
  char *p = __real_strdup(s);
  track(p);
  return p;
}

void __wrap_free(void *p) {
  untrack(p);
  __real_free(p);
}

/* ---- one run: client -> engine -> echo upstream ---- */

typedef enum { OUT_NONE = 0, OUT_TUNNEL, OUT_STATUS, OUT_CLOSED } outcome;

typedef struct run {
  uv_loop_t loop;
  tn_engine *engine;
  bool drained;
  int up_listen, up_conn, client;
  uint16_t proxy_port, up_port;
  outcome out;
  int status;
} run;

/* Moves the echo upstream along: accept, echo what is there, see EOF. */
static void upstream_step(run *r) {
  if (r->up_conn < 0) {
    r->up_conn = accept4(r->up_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return;
  }
  char buf[4096];
  ssize_t n = recv(r->up_conn, buf, sizeof(buf), 0);
  if (n > 0)
    (void)!send(r->up_conn, buf, (size_t)n, MSG_NOSIGNAL);
  else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    close(r->up_conn);
    r->up_conn = -1; /* ready for the next one */
  }
}

static void spin(run *r, int timeout_ms) {
  if (armed && fail_after && test_now_ms() > fail_until_ms)
    armed = false; /* the shortage is over */
  struct pollfd p[3] = {{.fd = uv_backend_fd(&r->loop), .events = POLLIN},
                        {.fd = r->up_conn >= 0 ? r->up_conn : r->up_listen, .events = POLLIN},
                        {.fd = r->client, .events = POLLIN}};
  poll(p, r->client >= 0 ? 3 : 2, timeout_ms);
  uv_run(&r->loop, UV_RUN_NOWAIT);
  upstream_step(r);
}

/* Reads what the gateway sent so far; returns bytes read, 0 on EOF, -1 when
 * nothing is there yet, -2 on a reset. */
static ssize_t client_read(run *r, char *buf, size_t len) {
  ssize_t n = recv(r->client, buf, len, 0);
  if (n >= 0)
    return n;
  return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : -2;
}

/* The device's side: CONNECT, then an echo through the tunnel. Sets r->out. */
static void drive_client(run *r, uint64_t deadline) {
  char req[128], buf[1024];
  size_t have = 0;
  int n = snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: x\r\n\r\n",
                   r->up_port);
  assert_int_equal(send(r->client, req, (size_t)n, MSG_NOSIGNAL), n);
  while (r->out == OUT_NONE) {
    if (test_now_ms() > deadline)
      fail_msg("alloc #%lu: no answer and no close within the deadline (hang)", fail_at);
    spin(r, 5);
    ssize_t got = client_read(r, buf + have, sizeof(buf) - 1 - have);
    if (got == 0 || got == -2) {
      r->out = OUT_CLOSED;
      break;
    }
    if (got < 0)
      continue;
    have += (size_t)got;
    buf[have] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (!end)
      continue;
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &r->status), 1);
    if (r->status != 200) {
      r->out = OUT_STATUS;
      break;
    }
    /* Established: the echo must come back whole (or the tunnel close). */
    size_t extra = have - (size_t)(end + 4 - buf);
    assert_int_equal(extra, 0);
    assert_int_equal(send(r->client, "ping", 4, MSG_NOSIGNAL), 4);
    have = 0;
    while (have < 4) {
      if (test_now_ms() > deadline)
        fail_msg("alloc #%lu: tunnel established but the echo never came back", fail_at);
      spin(r, 5);
      got = client_read(r, buf + have, sizeof(buf) - have);
      if (got == 0 || got == -2)
        break;
      if (got > 0)
        have += (size_t)got;
    }
    r->out = have == 4 && memcmp(buf, "ping", 4) == 0 ? OUT_TUNNEL : OUT_CLOSED;
  }
}

static void on_drained(void *arg) { ((run *)arg)->drained = true; }

static bool engine_idle(run *r) {
  tn_engine_stats st;
  tn_engine_stats_get(r->engine, &st);
  return st.connections_active == 0 && st.tunnels_active == 0;
}

/* One device connection: connect, CONNECT, echo, close; waits until the
 * engine has closed its side. Returns the outcome. */
static outcome attempt(run *r, uint64_t deadline) {
  r->out = OUT_NONE;
  r->status = 0;
  r->client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(r->proxy_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int c = connect(r->client, (struct sockaddr *)&sin, sizeof(sin));
  assert_true(c == 0 || errno == EINPROGRESS);
  struct pollfd p = {.fd = r->client, .events = POLLOUT};
  assert_int_equal(poll(&p, 1, 2000), 1);
  drive_client(r, deadline);
  close(r->client);
  r->client = -1;
  while (!engine_idle(r)) {
    if (test_now_ms() > deadline)
      fail_msg("alloc #%lu: the tunnel was not closed after the client left", fail_at);
    spin(r, 5);
  }
  return r->out;
}

/* One run: a connection with allocation #at failing (and every later one
 * with `after`), then one with no failure, which must work: a failure may
 * cost the request it hit, never the listener or later tunnels. Asserts that
 * everything is closed and freed at the end. Returns the first outcome. */
static outcome one_run(unsigned long at, bool after) {
  size_t live_before = n_live; /* not 0 after a failed test left blocks behind */
  run r = {.up_conn = -1, .client = -1};
  r.up_listen = test_listen_loopback(&r.up_port);
  test_start_engine(&r.loop, &r.engine, &r.proxy_port);
  uint64_t deadline = test_now_ms() + 5000;

  fail_at = at;
  fail_after = after;
  fail_until_ms = test_now_ms() + 300;
  n_armed = 0;
  failed_one = false;
  armed = true;
  outcome out = attempt(&r, deadline);
  armed = false;
  if (at && attempt(&r, deadline + 5000) != OUT_TUNNEL)
    fail_msg("alloc #%lu%s failed once: the next tunnel does not work", at, after ? "+" : "");

  tn_engine_drain(r.engine, on_drained, &r);
  while (!r.drained) {
    if (test_now_ms() > deadline + 10000)
      fail_msg("alloc #%lu: the engine did not drain", at);
    spin(&r, 5);
  }
  if (r.up_conn >= 0)
    close(r.up_conn);
  close(r.up_listen);
  uv_run(&r.loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&r.loop) != 0)
    fail_msg("alloc #%lu: a libuv handle was left open", at);
  if (n_live != live_before)
    fail_msg("alloc #%lu: %zu block(s) allocated by mcgw were never freed", at,
             n_live - live_before);
  return out;
}

static const char *outcome_name(outcome o) {
  return o == OUT_TUNNEL ? "tunnel works" : o == OUT_STATUS ? "error status" : "closed";
}

/* Allocations made for a connection the engine has accepted: the request,
 * the target, the client table, the relay. */
static unsigned long count_allocations(void) {
  assert_int_equal(one_run(0, false), OUT_TUNNEL); /* control: no failure */
  assert_true(n_armed > 3);
  return n_armed;
}

static void run_range(unsigned long first, unsigned long last, bool after) {
  for (unsigned long i = first; i <= last; i++) {
    outcome o = one_run(i, after);
    assert_true(failed_one);
    print_message("alloc #%lu%s failing: %s\n", i, after ? " and after" : "", outcome_name(o));
  }
}

/* The first allocations for a connection are made before it is accepted
 * from the listener (tunnel/conn.c, tn__conn_accept): a failure there must
 * still take the connection off the listener, or libuv stops accepting for
 * good - also when memory stays short for a while (every allocation failing
 * for 300 ms): once memory is back, the gateway must accept again. */
static void accept_survives_allocation_failure(void **state) {
  (void)state;
  count_allocations();
  run_range(1, 2, false);
  run_range(1, 2, true);
}

static void setup_allocations_may_fail_one_at_a_time(void **state) {
  (void)state;
  run_range(3, count_allocations(), false);
}

/* From #i on, every allocation fails for 300 ms, including those of the
 * error path (the error response, the shutdown request). */
static void setup_allocations_may_fail_from_then_on(void **state) {
  (void)state;
  run_range(3, count_allocations(), true);
}

/* ---- the admin listener ---- */

/* GET /healthz on a fresh connection; returns the status, 0 when the
 * connection closed without one. Fails on a hang. */
static int admin_get(uv_loop_t *loop, uint16_t port, uint64_t deadline) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int c = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
  assert_true(c == 0 || errno == EINPROGRESS);
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  assert_int_equal(poll(&p, 1, 2000), 1);
  const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), sizeof(req) - 1);
  char buf[512];
  size_t have = 0;
  for (;;) {
    if (test_now_ms() > deadline)
      fail_msg("admin, alloc #%lu: no answer and no close within the deadline (hang)", fail_at);
    struct pollfd q[2] = {{.fd = uv_backend_fd(loop), .events = POLLIN},
                          {.fd = fd, .events = POLLIN}};
    poll(q, 2, 5);
    uv_run(loop, UV_RUN_NOWAIT);
    ssize_t n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
    if (n > 0) {
      have += (size_t)n;
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      break;
  }
  close(fd);
  buf[have] = '\0';
  int status = 0;
  return sscanf(buf, "HTTP/1.1 %d", &status) == 1 ? status : 0;
}

/* The admin listener's first allocation for a connection is its request
 * object (gateway/ops/admin.c, on_connection). When it fails, that connection
 * may be refused, but the listener must go on serving the next one. */
static void admin_survives_allocation_failure(void **state) {
  (void)state;
  for (unsigned long at = 1; at <= 3; at++) {
    size_t live_before = n_live;
    uv_loop_t loop;
    gw_admin *admin;
    struct sockaddr_storage ss;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tn_addr_parse_listen("127.0.0.1:0", &ss), 0);
    assert_int_equal(gw_admin_start(&loop, &ss, &admin), 0);
    assert_int_equal(gw_admin_addr(admin, &ss), 0);
    uint16_t port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uint64_t deadline = test_now_ms() + 5000;
    fail_at = at;
    fail_after = false;
    n_armed = 0;
    failed_one = false;
    armed = true;
    int first = admin_get(&loop, port, deadline);
    armed = false;
    print_message("admin: alloc #%lu failing: status %d\n", at, first);
    if (failed_one)
      assert_true(first == 0 || first >= 500);
    assert_int_equal(admin_get(&loop, port, deadline + 5000), 200);
    gw_admin_close(admin);
    uv_run(&loop, UV_RUN_DEFAULT); /* until every admin handle is closed */
    if (uv_loop_close(&loop) != 0)
      fail_msg("admin, alloc #%lu: a libuv handle was left open", at);
    if (n_live != live_before)
      fail_msg("admin, alloc #%lu: %zu block(s) never freed", at, n_live - live_before);
  }
}

/* A failed test leaves the wrapper armed (fail_msg jumps out of the run). */
static int disarm(void **state) {
  (void)state;
  armed = false;
  fail_at = 0;
  fail_after = false;
  return 0;
}

int main(void) {
  gw_log_setup(TN_LOG_ERROR, TN_LOG_TEXT);
  test_logger.level = TN_LOG_ERROR;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(setup_allocations_may_fail_one_at_a_time, disarm),
      cmocka_unit_test_setup(setup_allocations_may_fail_from_then_on, disarm),
      cmocka_unit_test_setup(accept_survives_allocation_failure, disarm),
      cmocka_unit_test_setup(admin_survives_allocation_failure, disarm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
