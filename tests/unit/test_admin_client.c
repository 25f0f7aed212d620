/* Unit tests for gateway/ops/admin_client.c: the admin API target parsing
 * and the one client, against a loopback stand-in server on port 0. */
#include <arpa/inet.h>
#include <netinet/in.h>
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

#include "gateway/ops/admin_client.h"

static void parse_target(void **state) {
  gw_admin_target t;
  char err[256];
  assert_int_equal(gw_admin_target_parse("http://127.0.0.1:9090", &t, err, sizeof(err)), 0);
  assert_string_equal(t.host, "127.0.0.1");
  assert_string_equal(t.port, "9090");
  assert_string_equal(t.url, "http://127.0.0.1:9090");
  assert_int_equal(gw_admin_target_parse("[::1]:9090/", &t, err, sizeof(err)), 0);
  assert_string_equal(t.host, "::1");
  assert_string_equal(t.url, "http://[::1]:9090");
  assert_int_equal(gw_admin_target_parse("http://gw.local", &t, err, sizeof(err)), 0);
  assert_string_equal(t.port, "80");
  static const char *const bad[] = {"https://127.0.0.1:9090", "http://:9090", "http://[::1:9090",
                                    "http://h:0", "http://h:65536", "http://h:9090/metrics",
                                    "http://h:90x", "http://h!:90"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    assert_int_equal(gw_admin_target_parse(bad[i], &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, bad[i]));
  }
}

static void target_from_wildcard_listen(void **state) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  gw_admin_target t;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(9090);
  gw_admin_target_from_listen(&ss, &t);
  assert_string_equal(t.url, "http://127.0.0.1:9090");
}

/* ---- a stand-in admin listener: answers one connection with `answer` ---- */

typedef struct server {
  int lfd;
  const char *answer;   /* the head (and body) to send */
  size_t filler;        /* then this many body bytes */
  char request[2048];   /* what the client sent */
} server;

static void *serve(void *arg) {
  server *s = arg;
  int fd = accept(s->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  size_t got = 0;
  while (got < sizeof(s->request) - 1 && !strstr(s->request, "\r\n\r\n")) {
    ssize_t n = recv(fd, s->request + got, sizeof(s->request) - 1 - got, 0);
    if (n <= 0)
      break;
    got += (size_t)n;
    s->request[got] = '\0';
  }
  send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL);
  static char chunk[65536];
  memset(chunk, 'x', sizeof(chunk));
  for (size_t left = s->filler; left > 0;) {
    size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
    ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
    if (w <= 0)
      break; /* the client hung up: past its limit */
    left -= (size_t)w;
  }
  close(fd);
  return NULL;
}

static int ask(server *s, const char *method, gw_admin_response *r, char *err, size_t errlen) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(s->lfd >= 0);
  assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(s->lfd, 1), 0);
  assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &len), 0);
  char url[64];
  snprintf(url, sizeof(url), "127.0.0.1:%u", ntohs(a.sin_port));
  gw_admin_target t;
  assert_int_equal(gw_admin_target_parse(url, &t, err, errlen), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, serve, s), 0);
  int rc = gw_admin_request(&t, "tok", method, "/status", 5000, r, err, errlen);
  pthread_join(th, NULL);
  close(s->lfd);
  return rc;
}

static void get_and_post(void **state) {
  server s = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"a\":true}\n"};
  gw_admin_response r;
  char err[256] = "";
  assert_int_equal(ask(&s, "GET", &r, err, sizeof(err)), 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.len, 11);
  assert_string_equal(r.body, "{\"a\":true}\n");
  assert_non_null(strstr(s.request, "GET /status HTTP/1.1\r\n"));
  assert_non_null(strstr(s.request, "Authorization: Bearer tok\r\n"));
  gw_admin_response_free(&r);
  server p = {.answer = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"};
  assert_int_equal(ask(&p, "POST", &r, err, sizeof(err)), 0);
  assert_int_equal(r.status, 502);
  assert_null(r.body);
  assert_non_null(strstr(p.request, "POST /status HTTP/1.1\r\n"));
  assert_non_null(strstr(p.request, "Content-Type: application/json\r\n"));
  gw_admin_response_free(&r);
}

/* Past the limit the answer is an error saying so, never a truncated body. */
static void body_over_the_limit(void **state) {
  static char head[128];
  snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
           (size_t)GW_ADMIN_BODY_MAX + 1);
  server s = {.answer = head, .filler = (size_t)GW_ADMIN_BODY_MAX + 1};
  gw_admin_response r = {.status = -7};
  char err[256] = "";
  assert_int_equal(ask(&s, "GET", &r, err, sizeof(err)), -1);
  assert_string_equal(err, "response larger than 64 MiB");
  assert_int_equal(r.status, -7); /* untouched */
}

static void malformed_and_short(void **state) {
  gw_admin_response r;
  char err[256] = "";
  server s = {.answer = "SSH-2.0-OpenSSH\r\n\r\n"};
  assert_int_equal(ask(&s, "GET", &r, err, sizeof(err)), -1);
  assert_string_equal(err, "malformed HTTP response");
  server c = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"};
  assert_int_equal(ask(&c, "GET", &r, err, sizeof(err)), -1);
  assert_string_equal(err, "connection closed before a full response");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_target),
      cmocka_unit_test(target_from_wildcard_listen),
      cmocka_unit_test(get_and_post),
      cmocka_unit_test(body_over_the_limit),
      cmocka_unit_test(malformed_and_short),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
