/* Unit tests for the CONNECT side of csc1/https_client.c: the proxy's
 * answer to an HTTP/1.1 CONNECT, and proxy URL checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/https_client.h"

static long parse(const char *s, int *status) {
  return csc1_https_connect_response_parse(s, strlen(s), 8192, status);
}

static void established(void **state) {
  int st = 0;
  const char *a = "HTTP/1.1 200 Connection established\r\n\r\n";
  assert_int_equal(parse(a, &st), (long)strlen(a));
  assert_int_equal(st, 200);
  const char *b = "HTTP/1.0 200\r\nVia: 1.1 gw\r\n\r\n\x16\x03\x03";
  assert_int_equal(parse(b, &st), (long)strlen(b) - 3); /* tunnel bytes follow the head */
  assert_int_equal(st, 200);
}

static void refused(void **state) {
  int st = 0;
  assert_true(parse("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", &st) > 0);
  assert_int_equal(st, 403);
  assert_true(parse("HTTP/1.1 503 Service Unavailable\r\n\r\n", &st) > 0);
  assert_int_equal(st, 503);
}

static void incomplete_needs_more(void **state) {
  int st = -1;
  assert_int_equal(parse("", &st), 0);
  assert_int_equal(parse("HTT", &st), 0);
  assert_int_equal(parse("HTTP/1.1 200 OK\r\n", &st), 0);
  assert_int_equal(parse("HTTP/1.1 200 OK\r\n\r", &st), 0);
  assert_int_equal(st, -1);
}

static void malformed(void **state) {
  int st = 0;
  assert_int_equal(parse("\x16\x03\x01", &st), -1); /* TLS instead of HTTP */
  assert_int_equal(parse("SSH-2.0-x\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/2 200\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/1.1 20 OK\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/1.1 2000 OK\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/1.1 abc OK\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/1.2 200 OK\r\n\r\n", &st), -1);
  assert_int_equal(parse("HTTP/1.1  200 OK\r\n\r\n", &st), -1);
}

static void head_too_long(void **state) {
  static char big[9000];
  memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
  memset(big + 20, 'a', sizeof big - 20);
  int st = 0;
  assert_int_equal(csc1_https_connect_response_parse(big, sizeof big, 8192, &st), -1);
  /* under the cap, still waiting */
  assert_int_equal(csc1_https_connect_response_parse(big, 4000, 8192, &st), 0);
}

static void proxy_urls(void **state) {
  char err[256];
  csc1_https_ctx *c = csc1_https_ctx_new(NULL, NULL, NULL, err, sizeof err);
  assert_non_null(c);
  csc1_https_proxy_opts ok1 = {.url = "http://127.0.0.1:3128"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &ok1, err, sizeof err), 0);
  csc1_https_proxy_opts ok2 = {.url = "https://[::1]:3129", .h2 = true};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &ok2, err, sizeof err), 0);
  csc1_https_proxy_opts path = {.url = "http://gw:3128/x"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &path, err, sizeof err), -1);
  assert_non_null(strstr(err, "without a path"));
  csc1_https_proxy_opts ca_plain = {.url = "http://gw:3128", .ca_file = "/nonexistent"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &ca_plain, err, sizeof err), -1);
  assert_non_null(strstr(err, "needs an https:// proxy URL"));
  csc1_https_proxy_opts half = {.url = "https://gw:3129", .cert = "/x.crt"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &half, err, sizeof err), -1);
  assert_non_null(strstr(err, "both the certificate and key"));
  csc1_https_proxy_opts badca = {.url = "https://gw:3129", .ca_file = "/nonexistent/ca.pem"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &badca, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent/ca.pem"));
  csc1_https_proxy_opts notaurl = {.url = "gw:3128"};
  assert_int_equal(csc1_https_ctx_set_proxy(c, &notaurl, err, sizeof err), -1);
  csc1_https_ctx_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(established),           cmocka_unit_test(refused),
      cmocka_unit_test(incomplete_needs_more), cmocka_unit_test(malformed),
      cmocka_unit_test(head_too_long),         cmocka_unit_test(proxy_urls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
