/* Unit tests for csc1/pkce.c: RFC 7636 Appendix B, base64url, randomness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/pkce.h"

/* RFC 7636 Appendix B: the verifier's 32 octets, the verifier, the challenge. */
static void rfc7636_appendix_b(void **state) {
  static const unsigned char octets[32] = {116, 24,  223, 180, 151, 153, 224, 37,  79,  250, 96,
                                           125, 216, 173, 187, 186, 22,  212, 37,  77,  105, 214,
                                           191, 240, 91,  88,  5,   88,  83,  132, 141, 121};
  char verifier[CSC1_PKCE_VERIFIER_LEN + 1];
  char challenge[CSC1_PKCE_CHALLENGE_LEN + 1];
  assert_int_equal(csc1_b64url_encode(octets, sizeof octets, verifier), 43);
  assert_string_equal(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
  assert_int_equal(csc1_pkce_challenge(verifier, challenge), 0);
  assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void b64url_padding_cases(void **state) {
  char out[16];
  assert_int_equal(csc1_b64url_encode((const unsigned char *)"f", 1, out), 2);
  assert_string_equal(out, "Zg");
  assert_int_equal(csc1_b64url_encode((const unsigned char *)"fo", 2, out), 3);
  assert_string_equal(out, "Zm8");
  assert_int_equal(csc1_b64url_encode((const unsigned char *)"foo", 3, out), 4);
  assert_string_equal(out, "Zm9v");
  assert_int_equal(csc1_b64url_encode((const unsigned char *)"\xfb\xff", 2, out), 3);
  assert_string_equal(out, "-_8"); /* the url-safe alphabet, not + and / */
}

static void verifier_is_fresh_and_valid(void **state) {
  char a[CSC1_PKCE_VERIFIER_LEN + 1], b[CSC1_PKCE_VERIFIER_LEN + 1];
  char ch[CSC1_PKCE_CHALLENGE_LEN + 1];
  assert_int_equal(csc1_pkce_verifier_new(a), 0);
  assert_int_equal(csc1_pkce_verifier_new(b), 0);
  assert_int_equal(strlen(a), 43);
  assert_string_not_equal(a, b);
  assert_int_equal(csc1_pkce_challenge(a, ch), 0);
  assert_int_equal(strlen(ch), 43);
}

static void challenge_refuses_bad_verifiers(void **state) {
  char ch[CSC1_PKCE_CHALLENGE_LEN + 1];
  assert_int_equal(csc1_pkce_challenge("short", ch), -1);
  assert_int_equal(csc1_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX+", ch), -1);
  char longv[130];
  memset(longv, 'a', 129);
  longv[129] = '\0';
  assert_int_equal(csc1_pkce_challenge(longv, ch), -1);
  longv[128] = '\0';
  assert_int_equal(csc1_pkce_challenge(longv, ch), 0);
}

static void random_tokens_differ(void **state) {
  char a[23], b[23];
  assert_int_equal(csc1_random_token(16, a), 0);
  assert_int_equal(csc1_random_token(16, b), 0);
  assert_int_equal(strlen(a), 22);
  assert_string_not_equal(a, b);
  assert_int_equal(csc1_random_token(0, a), -1);
  assert_int_equal(csc1_random_token(65, a), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rfc7636_appendix_b),
      cmocka_unit_test(b64url_padding_cases),
      cmocka_unit_test(verifier_is_fresh_and_valid),
      cmocka_unit_test(challenge_refuses_bad_verifiers),
      cmocka_unit_test(random_tokens_differ),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
