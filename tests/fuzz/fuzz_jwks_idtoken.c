/* Fuzzes ID token validation and JWKS parsing (csc1/jwt.h): the first
 * byte of an input says what the rest is.
 *   'T' (and anything else): a compact JWS ID token, validated against a
 *       fixed key set (tests/fuzz/keys/, throwaway) and fixed expectations
 *       (issuer, client_id, nonce, a fixed clock).
 *   'J': a JWK Set document; when it parses, two fixed valid tokens (ES256,
 *       RS256) are validated against it.
 * Oracles, beyond ASan/UBSan/LSan:
 *   - no forgery: a token that validates must have exactly the signing input
 *     (header.payload) of one the generator signed with the trusted keys
 *     (fz_signed in fuzz_jwks_idtoken_data.h); the fuzzer cannot sign, so
 *     anything else validating is a signature, alg or kid bypass;
 *   - a valid token's claims meet the expectations (iss, aud contains the
 *     client_id, sub non-empty, exp not past the leeway, alg allowlisted),
 *     and it is the same principal as itself;
 *   - reasons never quote the nonce or the token's signature.
 * Seeds and data: tests/fuzz/gen_jwt_seeds.py. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "fuzz_jwks_idtoken_data.h"
#include "csc1/jwt.h"

static csc1_jwks *trusted;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  const char *why = NULL;
  trusted = csc1_jwks_parse(fz_jwks, strlen(fz_jwks), &why);
  if (!trusted || csc1_jwks_count(trusted) != 2)
    fz_fail("fuzz_jwks_idtoken: the trusted JWKS does not load: %s", why ? why : "count");
  return 0;
}

static const csc1_jwt_expect expect = {
    .issuer = FZ_ISSUER, .client_id = FZ_CLIENT_ID, .nonce = FZ_NONCE, .now = FZ_NOW,
    .leeway_s = 30};

static bool genuine(const char *jwt, size_t len) {
  const char *dot = memchr(jwt, '.', len);
  const char *dot2 = dot ? memchr(dot + 1, '.', len - (size_t)(dot + 1 - jwt)) : NULL;
  if (!dot2)
    return false;
  size_t si = (size_t)(dot2 - jwt);
  for (size_t i = 0; i < sizeof(fz_signed) / sizeof(fz_signed[0]); i++)
    if (strlen(fz_signed[i]) == si && memcmp(fz_signed[i], jwt, si) == 0)
      return true;
  return false;
}

static void check_why(const char *why, const char *jwt, size_t len) {
  if (strstr(why, FZ_NONCE))
    fz_fail("fuzz_jwks_idtoken: the reason quotes the nonce: %s", why);
  const char *sig = NULL;
  for (size_t i = len; i > 0; i--)
    if (jwt[i - 1] == '.') {
      sig = jwt + i;
      break;
    }
  size_t siglen = sig ? len - (size_t)(sig - jwt) : 0;
  /* Only a real-looking signature: 16 base64url characters (an input with
   * a NUL or a space there would match any reason). */
  bool b64 = siglen >= 16;
  for (size_t i = 0; b64 && i < 16; i++)
    b64 = isalnum((unsigned char)sig[i]) || sig[i] == '-' || sig[i] == '_';
  if (b64) {
    char head[17];
    memcpy(head, sig, 16);
    head[16] = '\0';
    if (strstr(why, head))
      fz_fail("fuzz_jwks_idtoken: the reason quotes the signature: %s", why);
  }
}

static void check_valid(const csc1_id_token *t) {
  bool aud = false;
  for (size_t i = 0; i < t->n_aud; i++)
    aud = aud || strcmp(t->aud[i], FZ_CLIENT_ID) == 0;
  if (!t->iss || strcmp(t->iss, FZ_ISSUER) != 0 || !aud || !t->sub || !t->sub[0] ||
      FZ_NOW > t->exp + 30 || t->iat > FZ_NOW + 30 ||
      (strcmp(t->alg, "RS256") != 0 && strcmp(t->alg, "PS256") != 0 &&
       strcmp(t->alg, "ES256") != 0))
    fz_fail("fuzz_jwks_idtoken: a token validated with claims outside the expectations");
  if (!csc1_id_token_same_principal(t, t))
    fz_fail("fuzz_jwks_idtoken: a token is not the same principal as itself");
}

static void validate(const char *jwt, size_t len, const csc1_jwks *keys, bool must_be_genuine) {
  csc1_id_token t;
  char why[256];
  why[0] = '\0';
  int r = csc1_jwt_validate(jwt, len, keys, &expect, &t, why, sizeof why);
  if (r == CSC1_JWT_OK) {
    if (must_be_genuine && !genuine(jwt, len))
      fz_fail("fuzz_jwks_idtoken: a token not signed with the trusted keys validated (%s)",
              t.alg);
    check_valid(&t);
    csc1_id_token_free(&t);
  } else {
    if (memchr(why, '\0', sizeof why) == NULL)
      fz_fail("fuzz_jwks_idtoken: reason not terminated");
    check_why(why, jwt, len);
    (void)csc1_jwt_strerror(r);
  }
  free(csc1_jwt_peek_kid(jwt, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  /* Copies without a terminator, so that ASan sees any read past the end. */
  size_t len = size - 1;
  char *buf = malloc(len ? len : 1);
  if (!buf)
    return 0;
  memcpy(buf, data + 1, len);
  if (data[0] == 'J') {
    const char *why = NULL;
    csc1_jwks *k = csc1_jwks_parse(buf, len, &why);
    if (k) {
      (void)csc1_jwks_count(k);
      /* A fuzzed key set may hold the trusted keys (then these validate) or
       * others; either way no forged token is involved here. */
      validate(fz_token, strlen(fz_token), k, false);
      validate(fz_token_rsa, strlen(fz_token_rsa), k, false);
      csc1_jwks_free(k);
    } else if (!why) {
      fz_fail("fuzz_jwks_idtoken: csc1_jwks_parse failed without a reason");
    }
  } else {
    validate(buf, len, trusted, true);
  }
  free(buf);
  return 0;
}
