/* Unit tests for gateway/ops/cli.c: the table formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/ops/cli.h"

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
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fmt)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
