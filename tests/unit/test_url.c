/* Unit tests for csc1/url.c: absolute http(s) URLs (their host:port through
 * base/hostport.c) and form-encoded query parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/url.h"

static void urls(void **state) {
  csc1_url u;
  const char *why;
  assert_int_equal(csc1_url_parse("https://IdMS.mc.test:8443/a/b?c=d", &u, &why), 0);
  assert_true(u.https);
  assert_string_equal(u.host, "idms.mc.test");
  assert_int_equal(u.port, 8443);
  assert_string_equal(u.target, "/a/b?c=d");
  assert_false(u.host_is_ip);
  assert_int_equal(csc1_url_parse("https://127.0.0.3", &u, &why), 0);
  assert_true(u.host_is_ip);
  assert_int_equal(u.port, 443);
  assert_string_equal(u.target, "/");
  assert_int_equal(csc1_url_parse("https://[::1]:9/x", &u, &why), 0);
  assert_true(u.host_is_v6);
  assert_string_equal(u.host, "::1");
  /* A URL host is not a CONNECT target: it is kept as written, not refused
   * for its numeric or empty labels (the resolver and TLS judge it). */
  assert_int_equal(csc1_url_parse("http://127.1:8080", &u, &why), 0);
  assert_false(u.host_is_ip);
  assert_string_equal(u.host, "127.1");
  assert_int_equal(u.port, 8080);
  assert_int_equal(csc1_url_parse("https://[0:0::1]/", &u, &why), 0);
  assert_string_equal(u.host, "0:0::1");
  const char *bad[] = {"ftp://x",          "https://",      "https://:443/", "https://a:0/",
                       "https://a:65536/", "https://a:1x/", "https://u@a/",  "https://a/#f",
                       "https://a b/",     "https://[::1/", "https://[zz]/", "https://a?x",
                       "https://a_b!/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(csc1_url_parse(bad[i], &u, &why), -1);
}

static void query_params(void **state) {
  bool dup;
  char *v = csc1_url_query_param("code=a%2Bb&state=s+1&iss=https%3A%2F%2Fx", "state", &dup);
  assert_string_equal(v, "s 1");
  free(v);
  v = csc1_url_query_param("code=a%2Bb&state=s", "code", &dup);
  assert_string_equal(v, "a+b");
  free(v);
  assert_null(csc1_url_query_param("state=a&state=b", "state", &dup));
  assert_true(dup);
  assert_null(csc1_url_query_param("state=%zz", "state", &dup));
  assert_null(csc1_url_query_param("state=%00", "state", &dup)); /* no embedded NUL */
  assert_null(csc1_url_query_param("state=%4", "state", &dup));
  assert_null(csc1_url_query_param("xstate=a", "state", &dup));
  v = csc1_url_query_param("state", "state", &dup);
  assert_string_equal(v, "");
  free(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(urls),
      cmocka_unit_test(query_params),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
