/* Unit tests for csc1/authz.c: the authorization request (OIDC Core 3.1.2.1
 * with PKCE S256) and the parsing of the redirect back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/csc1.h"

static char *param(const char *url, const char *name) {
  bool dup = false;
  char *v = csc1_url_query_param(strchr(url, '?') + 1, name, &dup);
  assert_false(dup);
  return v;
}

static void expect_param(const char *url, const char *name, const char *want) {
  char *v = param(url, name);
  assert_non_null(v);
  assert_string_equal(v, want);
  free(v);
}

static void request_carries_every_parameter(void **state) {
  csc1_authz_secrets s;
  const char *why = NULL;
  const csc1_authz_params p = {.authorization_endpoint = "https://idms.test/auth?tenant=a",
                               .client_id = "mcgw gw",
                               .redirect_uri = "http://127.0.0.1:9090/callback",
                               .scope = "openid 3gpp:mc:ptt_service",
                               .acr_values = "urn:mc:2fa"};
  char *url = csc1_authz_url(&p, &s, &why);
  assert_non_null(url);
  assert_true(strncmp(url, "https://idms.test/auth?tenant=a&response_type=code&", 51) == 0);
  expect_param(url, "client_id", "mcgw gw");
  expect_param(url, "redirect_uri", "http://127.0.0.1:9090/callback");
  expect_param(url, "scope", "openid 3gpp:mc:ptt_service");
  expect_param(url, "acr_values", "urn:mc:2fa");
  expect_param(url, "state", s.state);
  expect_param(url, "nonce", s.nonce);
  expect_param(url, "code_challenge_method", "S256");
  char challenge[CSC1_PKCE_CHALLENGE_LEN + 1];
  assert_int_equal(csc1_pkce_challenge(s.verifier, challenge), 0);
  expect_param(url, "code_challenge", challenge);
  assert_int_equal(strlen(s.state), CSC1_AUTHZ_TOKEN_LEN);
  assert_int_equal(strlen(s.nonce), CSC1_AUTHZ_TOKEN_LEN);
  assert_null(strstr(url, s.verifier)); /* the verifier never leaves */
  free(url);
}

static void no_acr_values_when_null(void **state) {
  csc1_authz_secrets s, t;
  const char *why = NULL;
  const csc1_authz_params p = {.authorization_endpoint = "https://idms.test/auth",
                               .client_id = "c",
                               .redirect_uri = "http://127.0.0.1/cb",
                               .scope = "openid"};
  char *url = csc1_authz_url(&p, &s, &why);
  char *again = csc1_authz_url(&p, &t, &why);
  assert_non_null(url);
  assert_non_null(again);
  assert_null(strstr(url, "acr_values"));
  assert_true(strncmp(url, "https://idms.test/auth?response_type=code&", 42) == 0);
  assert_string_not_equal(s.state, t.state); /* fresh secrets each time */
  assert_string_not_equal(s.verifier, t.verifier);
  free(url);
  free(again);
}

static void callback_parse(void **state) {
  csc1_authz_callback c = {0};
  csc1_authz_callback_parse("code=a%2Bb&state=s+1&iss=https%3A%2F%2Fidms", &c);
  assert_string_equal(c.code, "a+b");
  assert_string_equal(c.state, "s 1");
  assert_string_equal(c.iss, "https://idms");
  assert_null(c.error);
  assert_false(c.dup);
  csc1_authz_callback_free(&c);
  assert_null(c.code);
  csc1_authz_callback_parse("error=access_denied&error_description=no&state=x&state=y", &c);
  assert_string_equal(c.error, "access_denied");
  assert_string_equal(c.error_description, "no");
  assert_null(c.state);
  assert_true(c.dup);
  csc1_authz_callback_free(&c);
  csc1_authz_callback_parse(NULL, &c);
  assert_null(c.code);
  assert_false(c.dup);
  csc1_authz_callback_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(request_carries_every_parameter),
      cmocka_unit_test(no_acr_values_when_null),
      cmocka_unit_test(callback_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
