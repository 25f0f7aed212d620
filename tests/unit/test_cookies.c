/* Unit tests for device/cookies.c: mcx-login's minimal cookie jar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "device/cookies.h"

#define NOW 1800000000 /* 2027-01-15 */

static char *hdr(mcx_cookie_jar *j, const char *host, const char *path) {
  return mcx_cookies_header(j, host, path, true, NOW);
}

static void assert_header(mcx_cookie_jar *j, const char *host, const char *path, const char *want) {
  char *h = hdr(j, host, path);
  if (!want)
    assert_null(h);
  else {
    assert_non_null(h);
    assert_string_equal(h, want);
  }
  free(h);
}

static void stores_and_sends_per_host(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  assert_int_equal(
      mcx_cookies_store(j, "127.0.0.2", "/auth", "_session=abc; path=/; httponly", NOW), 1);
  assert_header(j, "127.0.0.2", "/interaction/x", "_session=abc");
  /* host-only: never sent to the token host */
  assert_header(j, "127.0.0.3", "/token", NULL);
  mcx_cookies_free(j);
}

static void several_values_one_per_line(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  const char *lines = "_interaction=i1; path=/interaction/UID; samesite=lax; httponly\n"
                      "_interaction.sig=s1; path=/interaction/UID; httponly\n"
                      "_interaction_resume=r1; path=/auth/UID; httponly";
  assert_int_equal(mcx_cookies_store(j, "idms", "/auth", lines, NOW), 3);
  assert_int_equal(mcx_cookies_count(j), 3);
  assert_header(j, "idms", "/interaction/UID", "_interaction=i1; _interaction.sig=s1");
  assert_header(j, "idms", "/interaction/UID/login", "_interaction=i1; _interaction.sig=s1");
  assert_header(j, "idms", "/auth/UID", "_interaction_resume=r1");
  /* path-match is on segment boundaries (RFC 6265 5.1.4) */
  assert_header(j, "idms", "/interaction/UIDX", NULL);
  assert_header(j, "idms", "/auth", NULL);
  mcx_cookies_free(j);
}

static void default_path_is_the_request_directory(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  assert_int_equal(mcx_cookies_store(j, "h", "/a/b/c", "x=1", NOW), 1);
  assert_header(j, "h", "/a/b/zzz", "x=1");
  assert_header(j, "h", "/a", NULL);
  mcx_cookies_store(j, "h", "/top", "y=2; path=relative", NOW); /* bad Path: default */
  assert_header(j, "h", "/anything", "y=2");
  mcx_cookies_free(j);
}

static void replaced_and_removed(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  mcx_cookies_store(j, "h", "/", "a=1; path=/", NOW);
  mcx_cookies_store(j, "h", "/", "a=2; path=/", NOW);
  assert_header(j, "h", "/", "a=2");
  assert_int_equal(mcx_cookies_count(j), 1);
  /* oidc-provider clears its interaction cookies with a past Expires */
  mcx_cookies_store(j, "h", "/", "a=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT", NOW);
  assert_int_equal(mcx_cookies_count(j), 0);
  mcx_cookies_store(j, "h", "/", "b=1; path=/", NOW);
  mcx_cookies_store(j, "h", "/", "b=1; path=/; Max-Age=0", NOW);
  assert_int_equal(mcx_cookies_count(j), 0);
  mcx_cookies_free(j);
}

static void expiry_is_honoured(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  mcx_cookies_store(j, "h", "/", "short=1; path=/; max-age=10", NOW);
  mcx_cookies_store(j, "h", "/", "long=1; path=/; expires=Wed, 01 Jan 2031 00:00:00 GMT", NOW);
  assert_header(j, "h", "/", "short=1; long=1");
  char *h = mcx_cookies_header(j, "h", "/", true, NOW + 11);
  assert_string_equal(h, "long=1");
  free(h);
  assert_int_equal(mcx_cookies_count(j), 1);
  mcx_cookies_free(j);
}

/* Found by fuzz_cookies: now + Max-Age overflowed (UB) for huge values. */
static void huge_max_age_never_expires(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  assert_int_equal(mcx_cookies_store(j, "h", "/", "a=1; Max-Age=9223372036854775807", NOW), 1);
  assert_int_equal(mcx_cookies_store(j, "h", "/", "b=2; Max-Age=99999999999999999999999", NOW), 1);
  char *h = mcx_cookies_header(j, "h", "/", true, INT64_MAX - 1);
  assert_non_null(h);
  assert_string_equal(h, "a=1; b=2");
  free(h);
  mcx_cookies_free(j);
}

static void secure_cookies_only_over_https(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  mcx_cookies_store(j, "h", "/", "s=1; path=/; Secure", NOW);
  char *h = mcx_cookies_header(j, "h", "/", false, NOW);
  assert_null(h);
  assert_header(j, "h", "/", "s=1");
  mcx_cookies_free(j);
}

static void refuses_malformed_and_foreign_domains(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  assert_int_equal(mcx_cookies_store(j, "h", "/", "novalue", NOW), 0);
  assert_int_equal(mcx_cookies_store(j, "h", "/", "=v", NOW), 0);
  assert_int_equal(mcx_cookies_store(j, "h", "/", "", NOW), 0);
  assert_int_equal(mcx_cookies_store(j, "h", "/", "d=1; domain=evil.example", NOW), 0);
  assert_int_equal(mcx_cookies_store(j, "h", "/", "d=1; domain=.h", NOW), 1);
  assert_int_equal(mcx_cookies_store(j, "h", "/", NULL, NOW), 0);
  assert_int_equal(mcx_cookies_count(j), 1);
  /* an oversized value is ignored, not truncated */
  char *big = malloc(5000);
  memset(big, 'a', 4999);
  big[0] = 'k', big[1] = '=', big[4999] = '\0';
  assert_int_equal(mcx_cookies_store(j, "h", "/", big, NOW), 0);
  free(big);
  mcx_cookies_free(j);
}

static void longer_paths_first(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  mcx_cookies_store(j, "h", "/", "root=1; path=/\ndeep=2; path=/a/b\nmid=3; path=/a", NOW);
  assert_header(j, "h", "/a/b/c", "deep=2; mid=3; root=1");
  mcx_cookies_free(j);
}

static void values_keep_blanks_trimmed_only(void **state) {
  mcx_cookie_jar *j = mcx_cookies_new();
  mcx_cookies_store(j, "h", "/", "  n  =  v=w  ; Path=/ ", NOW);
  assert_header(j, "h", "/", "n=v=w");
  mcx_cookies_free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(stores_and_sends_per_host),
      cmocka_unit_test(several_values_one_per_line),
      cmocka_unit_test(default_path_is_the_request_directory),
      cmocka_unit_test(replaced_and_removed),
      cmocka_unit_test(expiry_is_honoured),
      cmocka_unit_test(huge_max_age_never_expires),
      cmocka_unit_test(secure_cookies_only_over_https),
      cmocka_unit_test(refuses_malformed_and_foreign_domains),
      cmocka_unit_test(longer_paths_first),
      cmocka_unit_test(values_keep_blanks_trimmed_only),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
