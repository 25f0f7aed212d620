/* Unit tests for base/hostport.c: the one host:port parser, in its strict
 * (CONNECT target) and URL-host modes. The strict cases CONNECT relies on are
 * in test_addr.c (through tn_authority_parse); here each flag's effect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/hostport.h"

static int parse(const char *s, unsigned flags, base_hostport *hp) {
  const char *why = NULL;
  int rc = base_hostport_parse(s, strlen(s), flags, hp, &why);
  if (rc != 0)
    assert_non_null(why);
  return rc;
}

static void strict_mode(void **state) {
  base_hostport hp;
  assert_int_equal(parse("Example.ORG.:443", 0, &hp), 0);
  assert_int_equal(hp.kind, BASE_HOST_NAME);
  assert_string_equal(hp.host, "example.org");
  assert_int_equal(hp.port, 443);
  assert_int_equal(parse("[0:0::1]:8", 0, &hp), 0);
  assert_int_equal(hp.kind, BASE_HOST_IPV6);
  assert_string_equal(hp.host, "::1");
  static const char *const bad[] = {"example.org", "127.1:80", "a..b:80", "[::1]", "a:0",
                                    "a:65536",     "a:1x",     "u@a:80",  "a%2e:80"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(parse(bad[i], 0, &hp), -1);
}

static void url_mode(void **state) {
  const unsigned url = BASE_HP_URL_HOST | BASE_HP_PORT_OPTIONAL;
  base_hostport hp;
  assert_int_equal(parse("IdMS.mc.test", url, &hp), 0);
  assert_string_equal(hp.host, "idms.mc.test");
  assert_int_equal(hp.port, 0);
  /* URL hosts are not label-checked and keep their spelling. */
  assert_int_equal(parse("127.1:8", url, &hp), 0);
  assert_int_equal(hp.kind, BASE_HOST_NAME);
  assert_int_equal(parse("a..b.", url, &hp), 0);
  assert_string_equal(hp.host, "a..b.");
  assert_int_equal(parse("[0:0::1]", url, &hp), 0);
  assert_int_equal(hp.kind, BASE_HOST_IPV6);
  assert_string_equal(hp.host, "0:0::1");
  assert_int_equal(parse("10.0.0.1:65535", url, &hp), 0);
  assert_int_equal(hp.kind, BASE_HOST_IPV4);
  assert_int_equal(hp.port, 65535);
  static const char *const bad[] = {"", ":80", "a:", "a:0", "a:000000", "[::1", "[::1]x", "[zz]",
                                    "a!b", "a:1:2"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(parse(bad[i], url, &hp), -1);
  /* Without BASE_HP_PORT_OPTIONAL the port is required in URL mode too. */
  assert_int_equal(parse("a", BASE_HP_URL_HOST, &hp), -1);
}

static void out_untouched_on_failure(void **state) {
  base_hostport hp;
  memset(&hp, 0x5a, sizeof(hp));
  assert_int_equal(base_hostport_parse("a:0", 3, 0, &hp, NULL), -1);
  for (size_t i = 0; i < sizeof(hp); i++)
    assert_int_equal(((unsigned char *)&hp)[i], 0x5a);
  assert_int_equal(base_hostport_parse(NULL, 3, 0, &hp, NULL), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(strict_mode),
      cmocka_unit_test(url_mode),
      cmocka_unit_test(out_untouched_on_failure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
