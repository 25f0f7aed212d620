/* Unit tests for gateway/ops/cli.c: admin URL parsing and the table formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/ops/cli.h"

static void test_parse_url(void **state) {
  gw_cli_target t;
  char err[256];
  assert_int_equal(gw_cli_parse_url("http://127.0.0.1:9090", &t, err, sizeof(err)), 0);
  assert_string_equal(t.host, "127.0.0.1");
  assert_string_equal(t.port, "9090");
  assert_string_equal(t.url, "http://127.0.0.1:9090");
  assert_int_equal(gw_cli_parse_url("[::1]:9090/", &t, err, sizeof(err)), 0);
  assert_string_equal(t.host, "::1");
  assert_string_equal(t.url, "http://[::1]:9090");
  assert_int_equal(gw_cli_parse_url("http://gw.local", &t, err, sizeof(err)), 0);
  assert_string_equal(t.port, "80");
  static const char *const bad[] = {"https://127.0.0.1:9090", "http://:9090", "http://[::1:9090",
                                    "http://h:0", "http://h:65536", "http://h:9090/metrics",
                                    "http://h:90x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    assert_int_equal(gw_cli_parse_url(bad[i], &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, bad[i]));
  }
}

static void test_fmt(void **state) {
  char b[32];
  gw_cli_fmt_bytes(0, b, sizeof(b));
  assert_string_equal(b, "0");
  gw_cli_fmt_bytes(1023, b, sizeof(b));
  assert_string_equal(b, "1023");
  gw_cli_fmt_bytes(1536, b, sizeof(b));
  assert_string_equal(b, "1.5K");
  gw_cli_fmt_bytes(200u << 20, b, sizeof(b));
  assert_string_equal(b, "200M");
  gw_cli_fmt_duration(5, b, sizeof(b));
  assert_string_equal(b, "5s");
  gw_cli_fmt_duration(62, b, sizeof(b));
  assert_string_equal(b, "1m 2s");
  gw_cli_fmt_duration(3725, b, sizeof(b));
  assert_string_equal(b, "1h 2m");
  gw_cli_fmt_duration(90061, b, sizeof(b));
  assert_string_equal(b, "1d 1h");
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse_url), cmocka_unit_test(test_fmt)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
