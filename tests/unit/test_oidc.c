/* Unit tests for csc1/oidc.c: discovery documents, token and device
 * responses, OAuth errors, forms - and garbage. (URLs: test_url.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/oidc.h"

#define ISS "https://idms.mc.test"

static int disc(const char *doc, csc1_oidc_endpoints *e, char *why) {
  return csc1_oidc_discovery_parse(doc, strlen(doc), ISS, e, why, 256);
}

static void discovery(void **state) {
  csc1_oidc_endpoints e;
  char why[256];
  assert_int_equal(disc("{\"issuer\":\"" ISS
                        "\",\"authorization_endpoint\":\"https://a.mc.test/auth\","
                        "\"token_endpoint\":\"https://t.mc.test:8443/token\","
                        "\"jwks_uri\":\"" ISS "/jwks\"}",
                        &e, why),
                   0);
  assert_string_equal(e.token, "https://t.mc.test:8443/token");
  assert_string_equal(e.authorization, "https://a.mc.test/auth");
  assert_null(e.device_authorization);
  assert_null(e.revocation);
  assert_null(e.end_session);
  csc1_oidc_endpoints_free(&e);
  /* RFC 7009 / RP-initiated logout endpoints, https only */
  assert_int_equal(disc("{\"issuer\":\"" ISS "\",\"revocation_endpoint\":\"" ISS
                        "/token/revocation\",\"end_session_endpoint\":\"" ISS "/session/end\"}",
                        &e, why),
                   0);
  assert_string_equal(e.revocation, ISS "/token/revocation");
  assert_string_equal(e.end_session, ISS "/session/end");
  csc1_oidc_endpoints_free(&e);
  assert_int_equal(
      disc("{\"issuer\":\"" ISS "\",\"end_session_endpoint\":\"javascript:alert(1)\"}", &e, why),
      -1);
  assert_non_null(strstr(why, "end_session_endpoint is not an https URL"));
  assert_int_equal(
      disc("{\"issuer\":\"" ISS "\",\"revocation_endpoint\":\"http://r.mc.test/\"}", &e, why), -1);
  /* issuer exact: a trailing slash is another issuer */
  assert_int_equal(disc("{\"issuer\":\"" ISS "/\"}", &e, why), -1);
  assert_non_null(strstr(why, "is not the configured issuer"));
  assert_int_equal(disc("{\"token_endpoint\":\"https://t\"}", &e, why), -1);
  assert_int_equal(
      disc("{\"issuer\":\"" ISS "\",\"token_endpoint\":\"http://t.mc.test/token\"}", &e, why), -1);
  assert_non_null(strstr(why, "token_endpoint is not an https URL"));
  assert_int_equal(disc("{\"issuer\":\"" ISS "\",\"jwks_uri\":7}", &e, why), -1);
  const char *garbage[] = {"", "[]", "null", "{", "{\"issuer\":\"" ISS "\",\"issuer\":\"x\"}"};
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
    assert_int_equal(disc(garbage[i], &e, why), -1);
}

static int tokens(const char *doc, csc1_oidc_tokens *t, char *why) {
  return csc1_oidc_tokens_parse(doc, strlen(doc), t, why, 256);
}

static void token_responses(void **state) {
  csc1_oidc_tokens t;
  char why[256];
  assert_int_equal(tokens("{\"access_token\":\"AT-secret\",\"token_type\":\"bearer\","
                          "\"expires_in\":300,\"refresh_token\":\"RT\",\"id_token\":\"a.b.c\"}",
                          &t, why),
                   0);
  assert_string_equal(t.access_token, "AT-secret");
  assert_string_equal(t.refresh_token, "RT");
  assert_int_equal(t.expires_in, 300);
  assert_null(t.scope); /* none: as requested (RFC 6749 5.1) */
  csc1_oidc_tokens_free(&t);
  /* the granted scope, also when empty */
  assert_int_equal(tokens("{\"access_token\":\"AT\",\"token_type\":\"Bearer\",\"expires_in\":9,"
                          "\"scope\":\"openid 3gpp:mc:data_service\"}",
                          &t, why),
                   0);
  assert_string_equal(t.scope, "openid 3gpp:mc:data_service");
  csc1_oidc_tokens_free(&t);
  assert_null(t.scope);
  assert_int_equal(tokens("{\"access_token\":\"AT\",\"token_type\":\"Bearer\",\"expires_in\":9,"
                          "\"scope\":\"\"}",
                          &t, why),
                   0);
  assert_string_equal(t.scope, "");
  csc1_oidc_tokens_free(&t);
  assert_int_equal(tokens("{\"access_token\":\"AT\",\"token_type\":\"Bearer\",\"expires_in\":9,"
                          "\"scope\":[\"openid\"]}",
                          &t, why),
                   -1);
  assert_non_null(strstr(why, "scope is not a string"));
  assert_null(t.access_token);
  /* no refresh token: keep the old one (NULL here) */
  assert_int_equal(
      tokens("{\"access_token\":\"AT\",\"token_type\":\"Bearer\",\"expires_in\":\"60\"}", &t, why),
      0);
  assert_null(t.refresh_token);
  csc1_oidc_tokens_free(&t);
  const char *bad[] = {"{\"access_token\":\"AT\",\"token_type\":\"mac\",\"expires_in\":60}",
                       "{\"access_token\":\"AT\",\"token_type\":\"Bearer\"}",
                       "{\"access_token\":\"AT\",\"token_type\":\"Bearer\",\"expires_in\":0}",
                       "{\"access_token\":\"\",\"token_type\":\"Bearer\",\"expires_in\":5}",
                       "{\"access_token\":5,\"token_type\":\"Bearer\",\"expires_in\":5}",
                       "{\"token_type\":\"Bearer\",\"expires_in\":5}",
                       "not json",
                       "[]"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(tokens(bad[i], &t, why), -1);
    assert_null(strstr(why, "AT")); /* a reason never quotes a token */
  }
}

static void error_and_device_responses(void **state) {
  csc1_oidc_error e;
  const char *doc = "{\"error\":\"invalid_grant\",\"error_description\":\"grant\\nrevoked\"}";
  assert_int_equal(csc1_oidc_error_parse(doc, strlen(doc), &e), 0);
  assert_string_equal(e.error, "invalid_grant");
  assert_string_equal(e.description, "grant?revoked"); /* no line breaks into logs */
  assert_int_equal(csc1_oidc_error_parse("{}", 2, &e), -1);
  assert_int_equal(csc1_oidc_error_parse("<html>", 6, &e), -1);

  csc1_oidc_device_auth d;
  char why[256];
  const char *ok = "{\"device_code\":\"DC\",\"user_code\":\"ABCD-EFGH\","
                   "\"verification_uri\":\"https://idms.mc.test/device\",\"expires_in\":600}";
  assert_int_equal(csc1_oidc_device_auth_parse(ok, strlen(ok), &d, why, sizeof why), 0);
  assert_int_equal(d.interval, 5); /* RFC 8628 default */
  assert_null(d.verification_uri_complete);
  csc1_oidc_device_auth_free(&d);
  const char *bad = "{\"device_code\":\"DC\",\"user_code\":\"U\",\"verification_uri\":\"x\","
                    "\"expires_in\":600,\"interval\":0}";
  assert_int_equal(csc1_oidc_device_auth_parse(bad, strlen(bad), &d, why, sizeof why), -1);
  assert_int_equal(csc1_oidc_device_auth_parse("{}", 2, &d, why, sizeof why), -1);
  assert_non_null(strstr(why, "device authorization response: device_code"));
}

static void forms(void **state) {
  csc1_form f = {0};
  csc1_form_add(&f, "grant_type", "authorization_code");
  csc1_form_add(&f, "redirect_uri", "http://127.0.0.1:9090/callback");
  csc1_form_add(&f, "x", "a b&c=d+é");
  assert_false(f.oom);
  assert_string_equal(f.buf, "grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1"
                             "%3A9090%2Fcallback&x=a%20b%26c%3Dd%2B%C3%A9");
  csc1_form_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(discovery),
      cmocka_unit_test(token_responses),
      cmocka_unit_test(error_and_device_responses),
      cmocka_unit_test(forms),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
