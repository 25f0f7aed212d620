/* Fuzzes the CSC-1 wire-format parsers of csc1/oidc.h with every input:
 * as a token endpoint response, a device authorization response, a discovery
 * document (for a fixed issuer) and an OAuth error body. They are pure
 * functions over a byte buffer, so the input goes in directly, copied into
 * an exact-size allocation (no terminator: ASan catches any read past len).
 * Oracles, beyond ASan/UBSan/LSan, the contracts in oidc.h:
 *   - a parsed token response has an access_token, a positive expires_in;
 *   - a parsed device authorization has device_code, user_code,
 *     verification_uri, expires_in > 0 and an interval of 1..600 s;
 *   - parsed discovery endpoints are all https URLs;
 *   - an error body's error and description are NUL-terminated printable
 *     ASCII (they reach logs and pages);
 *   - a failure reason never quotes a secret the input carried
 *     (access_token, refresh_token, id_token, device_code values of 12+
 *     bytes with a digit, not inside an issuer, which reasons may show),
 *     and is NUL-terminated. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "driver.h"
#include "csc1/oidc.h"

#define ISSUER "https://idms.test"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) { return fz_initialize(argc, argv); }

static const char *const secret_names[] = {"access_token", "refresh_token", "id_token",
                                           "device_code"};

/* Fails when why quotes any secret-named string value of the input. */
static void check_why(const char *why, size_t cap, json_t *doc) {
  if (!memchr(why, '\0', cap))
    fz_fail("fuzz_oidc: reason not terminated");
  if (!json_is_object(doc))
    return;
  for (size_t i = 0; i < sizeof(secret_names) / sizeof(secret_names[0]); i++) {
    const char *v = json_string_value(json_object_get(doc, secret_names[i]));
    if (!v || strlen(v) < 12 || !strpbrk(v, "0123456789"))
      continue; /* short or digit-free values can occur in a reason's own words */
    /* The discovery reason quotes the input's issuer (sanitized) next to
     * the configured one: a secret inside either is not a leak. */
    const char *iss = json_string_value(json_object_get(doc, "issuer"));
    if (strstr(ISSUER, v) || (iss && strstr(iss, v)))
      continue;
    if (strstr(why, v))
      fz_fail("fuzz_oidc: a reason quotes the %s: %s", secret_names[i], why);
  }
}

/* RFC 3986 3.1: schemes are case-insensitive ("HTTPS://" is https). */
static bool https(const char *u) { return !u || strncasecmp(u, "https://", 8) == 0; }

static void printable(const char *s, size_t cap, const char *what) {
  const char *end = memchr(s, '\0', cap);
  if (!end)
    fz_fail("fuzz_oidc: %s not terminated", what);
  for (; s < end; s++)
    if (*s < 0x20 || *s > 0x7e)
      fz_fail("fuzz_oidc: %s has a non-printable byte 0x%02x", what, (unsigned char)*s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  json_t *doc = json_loadb(buf, size, JSON_DECODE_ANY, NULL); /* for the oracles only */
  char why[256];

  csc1_oidc_tokens t;
  why[0] = '\0';
  if (csc1_oidc_tokens_parse(buf, size, &t, why, sizeof why) == 0) {
    if (!t.access_token || t.expires_in <= 0)
      fz_fail("fuzz_oidc: token response parsed without access_token or expires_in");
    csc1_oidc_tokens_free(&t);
  } else {
    check_why(why, sizeof why, doc);
  }

  csc1_oidc_device_auth d;
  why[0] = '\0';
  if (csc1_oidc_device_auth_parse(buf, size, &d, why, sizeof why) == 0) {
    if (!d.device_code || !d.user_code || !d.verification_uri || d.expires_in <= 0 ||
        d.interval < 1 || d.interval > 600)
      fz_fail("fuzz_oidc: device authorization parsed outside its contract");
    csc1_oidc_device_auth_free(&d);
  } else {
    check_why(why, sizeof why, doc);
  }

  csc1_oidc_endpoints e;
  why[0] = '\0';
  if (csc1_oidc_discovery_parse(buf, size, ISSUER, &e, why, sizeof why) == 0) {
    if (!https(e.authorization) || !https(e.token) || !https(e.jwks_uri) ||
        !https(e.device_authorization))
      fz_fail("fuzz_oidc: discovery accepted an endpoint that is not https");
    csc1_oidc_endpoints_free(&e);
  } else {
    check_why(why, sizeof why, doc);
  }

  csc1_oidc_error err;
  if (csc1_oidc_error_parse(buf, size, &err) == 0) {
    printable(err.error, sizeof err.error, "error");
    printable(err.description, sizeof err.description, "error_description");
  }

  /* The sanitizer shown texts go through, on the input as a string. */
  char *s = malloc(size + 1);
  if (s) {
    memcpy(s, data, size);
    s[size] = '\0';
    char out[64];
    csc1_oidc_sanitize(s, out, sizeof out);
    printable(out, sizeof out, "sanitized text");
    free(s);
  }
  json_decref(doc);
  free(buf);
  return 0;
}
