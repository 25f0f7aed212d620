/* Unit tests for csc1/jwt.c: ID tokens signed here with cjose, checked
 * against every rule of TS 33.180 B.2.1 / OIDC Core 3.1.3.7, and garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>
#include <cmocka.h>
#include <jansson.h>

#include "csc1/jwt.h"
#include "csc1/pkce.h"

#define ISS "https://idms.mc.test"
#define CLIENT "mcgw-vehicle-17"
#define NONCE "n-0S6_WzA2Mj"
#define NOW 1700000000

typedef struct keys {
  cjose_jwk_t *ec, *rsa, *ec_other; /* ec_other: not in the JWKS, same kid as ec */
  csc1_jwks *jwks;
} keys;

static cjose_jwk_t *with_kid(cjose_jwk_t *k, const char *kid) {
  cjose_err err;
  assert_non_null(k);
  assert_true(cjose_jwk_set_kid(k, kid, strlen(kid), &err));
  return k;
}

static char *jwks_json(cjose_jwk_t *const *k, size_t n) {
  cjose_err err;
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    char *pub = cjose_jwk_to_json(k[i], false, &err);
    assert_non_null(pub);
    json_array_append_new(arr, json_loads(pub, 0, NULL));
    cjose_get_dealloc()(pub);
  }
  json_t *doc = json_pack("{s:o}", "keys", arr);
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return s;
}

static int setup(void **state) {
  static const uint8_t e[] = {1, 0, 1};
  cjose_err err;
  keys *k = calloc(1, sizeof *k);
  k->ec = with_kid(cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err), "ec-1");
  k->rsa = with_kid(cjose_jwk_create_RSA_random(2048, e, sizeof e, &err), "rsa-1");
  k->ec_other = with_kid(cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err), "ec-1");
  cjose_jwk_t *pub[] = {k->ec, k->rsa};
  char *doc = jwks_json(pub, 2);
  const char *why = NULL;
  k->jwks = csc1_jwks_parse(doc, strlen(doc), &why);
  free(doc);
  assert_non_null(k->jwks);
  assert_int_equal(csc1_jwks_count(k->jwks), 2);
  *state = k;
  return 0;
}

static int teardown(void **state) {
  keys *k = *state;
  cjose_jwk_release(k->ec);
  cjose_jwk_release(k->rsa);
  cjose_jwk_release(k->ec_other);
  csc1_jwks_free(k->jwks);
  free(k);
  return 0;
}

/* The claims of a good token; tests change them. */
static json_t *good_claims(void) {
  return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "iss", ISS, "sub", "officer-7",
                   "aud", CLIENT, "exp", (json_int_t)NOW + 300, "iat", (json_int_t)NOW - 5, "nonce",
                   NONCE, "mcptt_id", "sip:officer7@mcptt.mc.test", "mcdata_id",
                   "sip:officer7@mcdata.mc.test");
}

/* The good claims as JSON text (malloc'd). */
static char *good_claims_text(void) {
  json_t *c = good_claims();
  char *s = json_dumps(c, JSON_COMPACT);
  json_decref(c);
  return s;
}

/* Signs claims (reference taken) with key under alg; returns the compact JWS. */
static char *sign(cjose_jwk_t *key, const char *alg, json_t *claims) {
  cjose_err err;
  cjose_header_t *h = cjose_header_new(&err);
  assert_true(cjose_header_set(h, CJOSE_HDR_ALG, alg, &err));
  const char *kid = cjose_jwk_get_kid(key, &err);
  if (kid)
    assert_true(cjose_header_set(h, CJOSE_HDR_KID, kid, &err));
  char *payload = json_dumps(claims, JSON_COMPACT);
  json_decref(claims);
  cjose_jws_t *jws = cjose_jws_sign(key, h, (uint8_t *)payload, strlen(payload), &err);
  assert_non_null(jws);
  const char *ser = NULL;
  assert_true(cjose_jws_export(jws, &ser, &err));
  char *out = strdup(ser);
  cjose_jws_release(jws);
  cjose_header_release(h);
  free(payload);
  return out;
}

/* header and claims as JSON texts, any signature bytes: for tokens cjose
 * would refuse to make. */
static char *forge(const char *header, const char *claims, const unsigned char *sig, size_t n) {
  char *out = malloc(4096);
  size_t o = csc1_b64url_encode((const unsigned char *)header, strlen(header), out);
  out[o++] = '.';
  o += csc1_b64url_encode((const unsigned char *)claims, strlen(claims), out + o);
  out[o++] = '.';
  csc1_b64url_encode(sig, n, out + o);
  return out;
}

static csc1_jwt_expect expect(void) {
  csc1_jwt_expect e = {
      .issuer = ISS, .client_id = CLIENT, .nonce = NONCE, .now = NOW, .leeway_s = 30};
  return e;
}

static int check(const keys *k, const char *jwt, const csc1_jwt_expect *e, char *why) {
  csc1_id_token t;
  int r = csc1_jwt_validate(jwt, strlen(jwt), k->jwks, e, &t, why, 128);
  csc1_id_token_free(&t);
  return r;
}

static int check_claims(keys *k, json_t *claims) {
  char why[128];
  csc1_jwt_expect e = expect();
  char *jwt = sign(k->ec, "ES256", claims);
  int r = check(k, jwt, &e, why);
  free(jwt);
  return r;
}

static void valid_es256_rs256_ps256(void **state) {
  keys *k = *state;
  const struct {
    cjose_jwk_t *key;
    const char *alg;
  } cases[] = {{k->ec, "ES256"}, {k->rsa, "RS256"}, {k->rsa, "PS256"}};
  for (size_t i = 0; i < 3; i++) {
    char why[128];
    csc1_id_token t;
    csc1_jwt_expect e = expect();
    char *jwt = sign(cases[i].key, cases[i].alg, good_claims());
    int r = csc1_jwt_validate(jwt, strlen(jwt), k->jwks, &e, &t, why, sizeof why);
    if (r)
      print_message("%s: %s\n", cases[i].alg, why);
    assert_int_equal(r, CSC1_JWT_OK);
    assert_string_equal(t.sub, "officer-7");
    assert_string_equal(t.iss, ISS);
    assert_string_equal(t.mcptt_id, "sip:officer7@mcptt.mc.test");
    assert_string_equal(t.mcdata_id, "sip:officer7@mcdata.mc.test");
    assert_null(t.mcvideo_id);
    assert_string_equal(t.alg, cases[i].alg);
    assert_int_equal(t.exp, NOW + 300);
    csc1_id_token_free(&t);
    free(jwt);
  }
}

static void bad_signature(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  /* Signed by a key that is not in the JWKS but claims its kid. */
  char *jwt = sign(k->ec_other, "ES256", good_claims());
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_ESIGNATURE);
  free(jwt);
  /* A good token with one claim byte changed. */
  jwt = sign(k->rsa, "RS256", good_claims());
  char *dot = strchr(jwt, '.');
  dot[5] = dot[5] == 'A' ? 'B' : 'A';
  assert_int_not_equal(check(k, jwt, &e, why), CSC1_JWT_OK);
  free(jwt);
}

static void wrong_iss_aud_nonce_sub(void **state) {
  keys *k = *state;
  json_t *c = good_claims();
  json_object_set_new(c, "iss", json_string(ISS "/"));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "aud", json_string("another-client"));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "nonce", json_string("other-nonce"));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_del(c, "nonce");
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_del(c, "sub");
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "iss", json_integer(5));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
}

static void several_audiences_need_azp(void **state) {
  keys *k = *state;
  json_t *c = good_claims();
  json_object_set_new(c, "aud", json_pack("[s,s]", "kms", CLIENT));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "aud", json_pack("[s,s]", "kms", CLIENT));
  json_object_set_new(c, "azp", json_string(CLIENT));
  assert_int_equal(check_claims(k, c), CSC1_JWT_OK);
  c = good_claims();
  json_object_set_new(c, "aud", json_pack("[s,s]", "kms", CLIENT));
  json_object_set_new(c, "azp", json_string("kms"));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "aud", json_pack("[i]", 3));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
}

static void expired_and_within_leeway(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  json_t *c = good_claims();
  json_object_set_new(c, "exp", json_integer(NOW - 20)); /* 20 s ago: within 30 s */
  char *jwt = sign(k->ec, "ES256", c);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_OK);
  e.leeway_s = 10;
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_ECLAIMS);
  assert_non_null(strstr(why, "expired"));
  free(jwt);
  c = good_claims();
  json_object_set_new(c, "exp", json_integer(NOW - 40));
  jwt = sign(k->ec, "ES256", c);
  e.leeway_s = 3600; /* capped at 30 s */
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_ECLAIMS);
  free(jwt);
  c = good_claims();
  json_object_set_new(c, "iat", json_integer(NOW + 120));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_del(c, "iat");
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
  c = good_claims();
  json_object_set_new(c, "exp", json_string("tomorrow"));
  assert_int_equal(check_claims(k, c), CSC1_JWT_ECLAIMS);
}

static void alg_none_refused(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  char *claims = good_claims_text();
  char *jwt = forge("{\"alg\":\"none\"}", claims, NULL, 0);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  jwt = forge("{\"alg\":\"none\",\"kid\":\"ec-1\"}", claims, (const unsigned char *)"x", 1);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  jwt = forge("{\"alg\":\"ES256\",\"kid\":\"ec-1\",\"crit\":[\"exp\"]}", claims,
              (const unsigned char *)"x", 1);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  free(claims);
}

/* The classic confusion: HS256 keyed with the server's public key. */
static void hs256_with_public_key_refused(void **state) {
  keys *k = *state;
  cjose_err err;
  char why[128];
  csc1_jwt_expect e = expect();
  char *pub = cjose_jwk_to_json(k->rsa, false, &err);
  cjose_jwk_t *oct =
      with_kid(cjose_jwk_create_oct_spec((uint8_t *)pub, strlen(pub), &err), "rsa-1");
  char *jwt = sign(oct, "HS256", good_claims());
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  cjose_jwk_release(oct);
  cjose_get_dealloc()(pub);
}

static void key_type_must_match_alg(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  char *claims = good_claims_text();
  unsigned char sig[64] = {1};
  char *jwt = forge("{\"alg\":\"RS256\",\"kid\":\"ec-1\"}", claims, sig, sizeof sig);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  jwt = forge("{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", claims, sig, sizeof sig);
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EALG);
  free(jwt);
  free(claims);
}

static void unknown_kid(void **state) {
  keys *k = *state;
  cjose_err err;
  char why[128];
  csc1_jwt_expect e = expect();
  cjose_jwk_t *rotated = with_kid(cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err), "ec-2");
  char *jwt = sign(rotated, "ES256", good_claims());
  assert_int_equal(check(k, jwt, &e, why), CSC1_JWT_EUNKNOWN_KID);
  char *kid = csc1_jwt_peek_kid(jwt, strlen(jwt));
  assert_string_equal(kid, "ec-2");
  free(kid);
  /* After the refetch the new key is there: accepted. */
  cjose_jwk_t *pub[] = {k->ec, rotated};
  char *doc = jwks_json(pub, 2);
  csc1_jwks *fresh = csc1_jwks_parse(doc, strlen(doc), NULL);
  csc1_id_token t;
  assert_int_equal(csc1_jwt_validate(jwt, strlen(jwt), fresh, &e, &t, why, sizeof why), CSC1_JWT_OK);
  assert_string_equal(t.kid, "ec-2");
  csc1_id_token_free(&t);
  assert_int_equal(csc1_jwt_validate(jwt, strlen(jwt), NULL, &e, &t, why, sizeof why),
                   CSC1_JWT_EUNKNOWN_KID);
  csc1_jwks_free(fresh);
  free(doc);
  free(jwt);
  cjose_jwk_release(rotated);
}

static void garbage_never_crashes(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  const char *bad[] = {"",
                       ".",
                       "..",
                       "...",
                       "a.b",
                       "a.b.c.d",
                       "a.b.c",
                       "e30.e30.",
                       "W10.e30.AA", /* header is an array */
                       "e30.W10.AA", /* claims are an array */
                       "eyJhbGciOiJFUzI1NiJ9.!!!.AA",
                       "eyJhbGciOiJFUzI1NiJ9..AA",
                       "eyJhbGciOjF9.e30.AA", /* alg is a number */
                       "bm90IGpzb24.e30.AA"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int r = check(k, bad[i], &e, why);
    assert_true(r == CSC1_JWT_EMALFORMED || r == CSC1_JWT_EALG);
  }
  /* Every single-byte mutation of a valid token is refused, and nothing
   * crashes (ASan watches). */
  char *jwt = sign(k->ec, "ES256", good_claims());
  size_t n = strlen(jwt);
  static const char subst[] = {'.', 'A', '_', '-', '=', '\0', '\xff', 'z'};
  for (size_t i = 0; i < n; i++) {
    for (size_t s = 0; s < sizeof subst; s++) {
      if (jwt[i] == subst[s])
        continue;
      char *m = malloc(n + 1);
      memcpy(m, jwt, n + 1);
      m[i] = subst[s];
      csc1_id_token t;
      int r = csc1_jwt_validate(m, n, k->jwks, &e, &t, why, sizeof why);
      csc1_id_token_free(&t);
      free(m);
      /* A byte outside base64url always breaks the token; a base64url one
       * may land in the unused tail bits of the last character. */
      if (strchr(".=", subst[s]) || subst[s] == '\0' || subst[s] == '\xff')
        assert_int_not_equal(r, CSC1_JWT_OK);
    }
  }
  /* Oversized input. */
  char *huge = malloc(CSC1_JWT_MAX_LEN + 2);
  memset(huge, 'A', CSC1_JWT_MAX_LEN + 1);
  huge[CSC1_JWT_MAX_LEN + 1] = '\0';
  assert_int_equal(check(k, huge, &e, why), CSC1_JWT_EMALFORMED);
  free(huge);
  free(jwt);
}

static void jwks_parsing(void **state) {
  const char *why = NULL;
  assert_null(csc1_jwks_parse("not json", 8, &why));
  assert_non_null(why);
  assert_null(csc1_jwks_parse("{\"keys\":{}}", 11, &why));
  assert_null(csc1_jwks_parse("[]", 2, &why));
  const char *skip =
      "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"h\"},"
      "{\"kty\":\"EC\",\"use\":\"enc\"},{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
      "7, null, {\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"!\",\"y\":\"?\"}]}";
  csc1_jwks *s = csc1_jwks_parse(skip, strlen(skip), &why);
  assert_non_null(s);
  assert_int_equal(csc1_jwks_count(s), 0);
  csc1_jwks_free(s);
}

/* Found by fuzz_jwks_idtoken: cjose 0.6.2 aborts on some malformed base64
 * ("A=AAAA"); such keys must be refused before cjose decodes them. */
static void jwks_refuses_non_base64url_members(void **state) {
  const char *docs[] = {
      "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"A=AAAA\",\"e\":\"AQAB\"}]}",
      "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"A=AA\"}]}",
      "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA+A\",\"y\":\"AAAA\"}]}",
      "{\"keys\":[{\"kty\":\"RSA\",\"n\":7,\"e\":\"AQAB\"}]}",
  };
  for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
    csc1_jwks *s = csc1_jwks_parse(docs[i], strlen(docs[i]), NULL);
    assert_non_null(s);
    assert_int_equal(csc1_jwks_count(s), 0);
    csc1_jwks_free(s);
  }
}

static void refreshed_token_same_principal(void **state) {
  keys *k = *state;
  char why[128];
  csc1_jwt_expect e = expect();
  csc1_id_token a, b;
  char *jwt = sign(k->ec, "ES256", good_claims());
  assert_int_equal(csc1_jwt_validate(jwt, strlen(jwt), k->jwks, &e, &a, why, sizeof why), 0);
  free(jwt);
  json_t *c = good_claims();
  json_object_set_new(c, "sub", json_string("someone-else"));
  jwt = sign(k->ec, "ES256", c);
  assert_int_equal(csc1_jwt_validate(jwt, strlen(jwt), k->jwks, &e, &b, why, sizeof why), 0);
  free(jwt);
  assert_true(csc1_id_token_same_principal(&a, &a));
  assert_false(csc1_id_token_same_principal(&a, &b));
  csc1_id_token_free(&b);
  c = good_claims();
  json_object_set_new(c, "aud", json_pack("[s,s]", CLIENT, "kms"));
  json_object_set_new(c, "azp", json_string(CLIENT));
  jwt = sign(k->ec, "ES256", c);
  assert_int_equal(csc1_jwt_validate(jwt, strlen(jwt), k->jwks, &e, &b, why, sizeof why), 0);
  free(jwt);
  assert_false(csc1_id_token_same_principal(&a, &b)); /* aud set changed */
  csc1_id_token_free(&a);
  csc1_id_token_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_es256_rs256_ps256),
      cmocka_unit_test(bad_signature),
      cmocka_unit_test(wrong_iss_aud_nonce_sub),
      cmocka_unit_test(several_audiences_need_azp),
      cmocka_unit_test(expired_and_within_leeway),
      cmocka_unit_test(alg_none_refused),
      cmocka_unit_test(hs256_with_public_key_refused),
      cmocka_unit_test(key_type_must_match_alg),
      cmocka_unit_test(unknown_kid),
      cmocka_unit_test(garbage_never_crashes),
      cmocka_unit_test(jwks_parsing),
      cmocka_unit_test(jwks_refuses_non_base64url_members),
      cmocka_unit_test(refreshed_token_same_principal),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
