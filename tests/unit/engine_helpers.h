/* A relay engine on a real loop for unit tests, with a loopback upstream
 * listener: include after <cmocka.h>. */
#ifndef MCGW_TEST_ENGINE_HELPERS_H
#define MCGW_TEST_ENGINE_HELPERS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "tunnel/addr.h"
#include "tunnel/engine.h"
#include "tunnel/policy.h"

static inline uint64_t test_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A non-blocking listener on 127.0.0.1, port 0; *port is the one it got. */
static inline int test_listen_loopback(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sin);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  *port = ntohs(sin.sin_port);
  return fd;
}

/* The engines' logger in unit tests: info, text, on stderr. */
static tn_logger test_logger = TN_LOGGER_INIT;

/* Starts an engine on a fresh loop: one plain listener on 127.0.0.1:0,
 * CONNECT allowed to any 127.0.0.1 port, require_tls off, logging through
 * logger. */
static inline void test_start_engine_logged(uv_loop_t *loop, tn_engine **engine,
                                            uint16_t *proxy_port, tn_logger *logger) {
  tn_engine_opts o;
  tn_engine_opts_init(&o);
  o.logger = logger;
  struct sockaddr_storage ss;
  assert_int_equal(tn_addr_parse_listen("127.0.0.1:0", &ss), 0);
  o.listen = &ss;
  o.n_listen = 1;
  o.require_tls = false;
  o.policy.allow_private = true;
  tn_rule rule;
  const char *why;
  assert_int_equal(tn_rule_parse("127.0.0.1:*", &rule, &why), 0);
  assert_int_equal(tn_policy_add(&o.policy, &rule), 0);
  assert_int_equal(uv_loop_init(loop), 0);
  assert_int_equal(tn_engine_start(loop, &o, engine), 0);
  tn_policy_free(&o.policy);
  struct sockaddr_storage bound;
  assert_int_equal(tn_engine_listener_addr(*engine, 0, &bound), 0);
  *proxy_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

/* test_start_engine_logged with test_logger. */
static inline void test_start_engine(uv_loop_t *loop, tn_engine **engine, uint16_t *proxy_port) {
  test_start_engine_logged(loop, engine, proxy_port, &test_logger);
}

#endif
