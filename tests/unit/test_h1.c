/* The HTTP/1.1 front end (tunnel/h1.c) through its protocol table entry,
 * the device's bytes fed without sockets (front_helpers.h): request parsing
 * outcomes and the status of each refusal, with its access-log result; and
 * an established tunnel, whose destination is a real loopback socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "front_helpers.h"

#define assert_starts(s, prefix) assert_memory_equal((s), (prefix), strlen(prefix))

/* The device read the answer (our FIN arrived) and closed its side: the
 * lingering close ends. */
static void linger_done(front *f) {
  f->dev.ep.shut = true;
  f->dev.ep.sink->shut(&f->dev.ep);
  front_eof(f);
  front_settle(f);
}

/* Feeds request (in one piece, or byte by byte with split), then lets the
 * lingering close finish (the device closes): returns what was answered. */
static const char *refused(front *f, const char *request, bool split) {
  size_t n = strlen(request);
  if (split) {
    front_connect(f, &tn__proto_h1, request, 1);
    for (size_t i = 1; i < n && !f->dev.shutdown_called; i++)
      front_feed(f, request + i, 1);
  } else {
    front_connect(f, &tn__proto_h1, request, n);
  }
  assert_true(f->dev.shutdown_called); /* answered, then FIN: lingering close */
  assert_false(f->dev.closed);
  linger_done(f);
  assert_true(f->dev.closed);
  assert_false(f->dev.reset);
  assert_int_equal(f->closed.n, 1);
  assert_string_equal(f->closed.proto, "h1");
  f->dev.out[f->dev.out_len] = '\0';
  return f->dev.out;
}

static void only_connect(void **state) {
  (void)state;
  front f;
  front_start(&f);
  const char *r =
      refused(&f, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", false);
  assert_starts(r, "HTTP/1.1 405 Method Not Allowed\r\n");
  assert_non_null(strstr(r, "\r\nAllow: CONNECT\r\n"));
  assert_non_null(strstr(r, "\r\nConnection: close\r\n"));
  assert_int_equal(f.closed.status, 405);
  assert_int_equal(f.closed.result, TN_RESULT_BAD_REQUEST);
  front_stop(&f);
}

static void bad_target(void **state) {
  (void)state;
  const char *const targets[] = {"example.com", "example.com:0", "example.com:99999", ":443",
                                 "[::1:443", "a b:443"};
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    front f;
    char req[128];
    front_start(&f);
    snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\n\r\n", targets[i]);
    const char *r = refused(&f, req, false);
    if (strncmp(r, "HTTP/1.1 400 Bad Request\r\n", strlen("HTTP/1.1 400 Bad Request\r\n")) != 0)
      fail_msg("%s: %s", targets[i], r);
    assert_int_equal(f.closed.result, TN_RESULT_BAD_REQUEST);
    front_stop(&f);
  }
}

static void malformed_and_too_large(void **state) {
  (void)state;
  front f;
  front_start(&f);
  const char *r = refused(&f, "CONNECT example.com:443 HTTP/1.1\r\nBad Header\r\n\r\n", false);
  assert_starts(r, "HTTP/1.1 400 Bad Request\r\n");
  assert_string_equal(f.closed.close_reason, "malformed request");
  front_stop(&f);

  front_start(&f);
  static char big[TN_HEADER_MAX + 256];
  int n = snprintf(big, sizeof big, "CONNECT example.com:443 HTTP/1.1\r\nX: ");
  memset(big + n, 'a', sizeof big - (size_t)n - 1);
  big[sizeof big - 1] = '\0';
  r = refused(&f, big, false);
  assert_starts(r, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
  assert_int_equal(f.closed.result, TN_RESULT_BAD_REQUEST);
  front_stop(&f);
}

/* A head split over many reads parses as one; the target is checked by
 * policy (no rule allows port 443 of 203.0.113.7: 403). */
static void split_head_then_policy(void **state) {
  (void)state;
  front f;
  front_start(&f);
  const char *r = refused(&f, "CONNECT 203.0.113.7:443 HTTP/1.1\r\nHost: 203.0.113.7:443\r\n\r\n",
                          true);
  assert_starts(r, "HTTP/1.1 403 Forbidden\r\n");
  assert_non_null(strstr(r, "\r\n\r\ntarget not allowed\n"));
  assert_int_equal(f.closed.result, TN_RESULT_DENIED);
  front_stop(&f);
}

/* CONNECT-UDP by Upgrade (RFC 9298 3.2), whole and a byte at a time (the
 * Upgrade header's name and value split across reads): the template and the
 * allow_udp rules decide (no rule: 403; another path: 404); an Upgrade to
 * something else, or one without Connection: Upgrade, stays a 405. */
static void connect_udp_upgrade(void **state) {
  (void)state;
  static const struct {
    const char *req;
    const char *status;
  } cases[] = {
      {"GET /.well-known/masque/udp/192.0.2.7/5004/ HTTP/1.1\r\nHost: gw\r\n"
       "Connection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n",
       "HTTP/1.1 403 Forbidden\r\n"},
      {"GET /.well-known/masque/udp/192.0.2.7/5004/ HTTP/1.1\r\nHost: gw\r\n"
       "connection: upgrade\r\nUPGRADE: Connect-UDP\r\n\r\n",
       "HTTP/1.1 403 Forbidden\r\n"},
      {"GET /elsewhere HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n"
       "Upgrade: connect-udp\r\n\r\n",
       "HTTP/1.1 404 Not Found\r\n"},
      {"GET /.well-known/masque/udp/192.0.2.7/5004/ HTTP/1.1\r\nHost: gw\r\n"
       "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
       "HTTP/1.1 405 Method Not Allowed\r\n"},
      {"GET /.well-known/masque/udp/192.0.2.7/5004/ HTTP/1.1\r\nHost: gw\r\n"
       "Upgrade: connect-udp\r\n\r\n",
       "HTTP/1.1 405 Method Not Allowed\r\n"},
      {"GET /.well-known/masque/udp/192.0.2.7/5004/ HTTP/1.1\r\nHost: gw\r\n"
       "Connection: Upgrade\r\nUpgrade: connect-udp-but-longer\r\n\r\n",
       "HTTP/1.1 405 Method Not Allowed\r\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int split = 0; split < 2; split++) {
      front f;
      front_start(&f);
      const char *r = refused(&f, cases[i].req, split);
      if (strncmp(r, cases[i].status, strlen(cases[i].status)) != 0)
        fail_msg("case %zu (split %d): %s", i, split, r);
      front_stop(&f);
    }
  }
}

/* The rate of new tunnels per client: past the burst, 429 with Retry-After. */
static void rate_limited(void **state) {
  (void)state;
  front f;
  /* the helpers' engine has the default rate: burst 50 */
  front_start(&f);
  const char *r = NULL;
  for (int i = 0; i < 51; i++) {
    f.closed.n = 0;
    r = refused(&f, "CONNECT 203.0.113.7:443 HTTP/1.1\r\n\r\n", false);
  }
  assert_starts(r, "HTTP/1.1 429 Too Many Requests\r\n");
  assert_non_null(strstr(r, "\r\nRetry-After: "));
  assert_int_equal(f.closed.result, TN_RESULT_RATE_LIMITED);
  front_stop(&f);
}

/* The device closes before its head is complete: no answer, result error. */
static void closed_during_request(void **state) {
  (void)state;
  front f;
  front_start(&f);
  front_connect(&f, &tn__proto_h1, "CONNECT exa", 11);
  front_eof(&f);
  front_settle(&f);
  assert_true(f.dev.closed);
  assert_int_equal(f.dev.out_len, 0);
  assert_int_equal(f.closed.result, TN_RESULT_ERROR);
  assert_string_equal(f.closed.close_reason, "client_closed_during_request");
  front_stop(&f);
}

/* The table's own answers: established writes the 200; fail answers any
 * status with the reason as the body, and Retry-After when set. */
static void table_answers(void **state) {
  (void)state;
  front f;
  front_start(&f);
  front_connect(&f, &tn__proto_h1, "CONNECT exa", 11);
  tn_tunnel *t = (tn_tunnel *)f.dev.ep.owner;
  assert_ptr_equal(t->proto, &tn__proto_h1);
  assert_int_equal(tn__proto_h1.established(t), 0);
  f.dev.out[f.dev.out_len] = '\0';
  assert_string_equal(f.dev.out, "HTTP/1.1 200 Connection Established\r\n\r\n");
  f.dev.out_len = 0;
  t->retry_after_s = 7;
  tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "tunnel limit reached");
  f.dev.out[f.dev.out_len] = '\0';
  assert_starts(f.dev.out, "HTTP/1.1 503 Service Unavailable\r\n");
  assert_non_null(strstr(f.dev.out, "\r\nRetry-After: 7\r\n"));
  assert_non_null(strstr(f.dev.out, "\r\n\r\ntunnel limit reached\n"));
  linger_done(&f);
  assert_true(f.dev.closed);
  assert_int_equal(f.closed.status, 503);
  assert_int_equal(f.closed.result, TN_RESULT_LIMIT);
  front_stop(&f);
}

static bool answered_200(front *f, void *arg) {
  (void)arg;
  return f->dev.out_len >= strlen("HTTP/1.1 200 Connection Established\r\n\r\n");
}

static bool dev_has(front *f, void *arg) {
  f->dev.out[f->dev.out_len] = '\0';
  return strstr(f->dev.out, arg) != NULL;
}

static bool shut_asked(front *f, void *arg) {
  (void)arg;
  return f->dev.shutdown_called;
}

static bool tunnel_closed(front *f, void *arg) {
  (void)arg;
  return f->closed.n == 1 && f->dev.closed;
}

/* An allowed CONNECT: the 200 through the table's established, the bytes
 * sent with the head and after it reach the destination (a real socket),
 * its bytes reach the device, and EOF both ways ends the tunnel ok. */
static void established_and_relayed(void **state) {
  (void)state;
  front f;
  front_start(&f);
  uint16_t port;
  int lfd = test_listen_loopback(&port);
  char req[96];
  snprintf(req, sizeof req, "CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\nhello", port);
  front_connect(&f, &tn__proto_h1, req, strlen(req));
  front_wait(&f, answered_200, NULL, "the 200");
  assert_string_equal(f.dev.out, "HTTP/1.1 200 Connection Established\r\n\r\n");
  int up = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  assert_true(up >= 0);
  front_feed(&f, " world", 6);
  sock_read r = {.fd = up, .want = 11};
  front_wait(&f, sock_read_done, &r, "the bytes upstream");
  assert_string_equal(r.buf, "hello world");
  assert_int_equal(send(up, "bye", 3, MSG_NOSIGNAL), 3);
  front_wait(&f, dev_has, "\r\n\r\nbye", "the bytes downstream");
  front_eof(&f); /* the device is done: FIN upstream */
  r = (sock_read){.fd = up, .want = 1};
  uint64_t deadline = test_now_ms() + 5000;
  while (recv(up, r.buf, 1, 0) != 0) { /* until the FIN arrives */
    assert_true(test_now_ms() < deadline);
    front_settle(&f);
  }
  close(up); /* the destination is done: the device side is shut */
  front_wait(&f, shut_asked, NULL, "the shutdown towards the device");
  f.dev.ep.shut = true;
  f.dev.ep.sink->shut(&f.dev.ep);
  front_wait(&f, tunnel_closed, NULL, "the end of the tunnel");
  assert_int_equal(f.closed.result, TN_RESULT_OK);
  assert_int_equal(f.closed.status, 200);
  assert_string_equal(f.closed.close_reason, "eof");
  assert_false(f.dev.reset);
  close(lfd);
  front_stop(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(only_connect),
      cmocka_unit_test(bad_target),
      cmocka_unit_test(malformed_and_too_large),
      cmocka_unit_test(split_head_then_policy),
      cmocka_unit_test(connect_udp_upgrade),
      cmocka_unit_test(rate_limited),
      cmocka_unit_test(closed_during_request),
      cmocka_unit_test(table_answers),
      cmocka_unit_test(established_and_relayed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
