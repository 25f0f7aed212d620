/* The CSC-1 wire formats, as pure functions over byte buffers (no I/O, no
 * state, no logging), so that each can be unit-tested and fuzzed:
 * the discovery document, token and device authorization responses, OAuth
 * error responses, and application/x-www-form-urlencoded request bodies. */
#ifndef CSC1_OIDC_H
#define CSC1_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct csc1_oidc_endpoints {
  char *authorization, *token, *jwks_uri, *device_authorization; /* NULL when absent */
  char *revocation;   /* RFC 7009 revocation_endpoint (RFC 8414), or NULL */
  char *end_session;  /* OpenID RP-Initiated Logout end_session_endpoint, or NULL */
} csc1_oidc_endpoints;

/* Parses {issuer}/.well-known/openid-configuration. Its issuer must equal
 * the configured one exactly; every endpoint given must be an https URL.
 * 0, or -1 with why. */
int csc1_oidc_discovery_parse(const char *buf, size_t len, const char *issuer, csc1_oidc_endpoints *out,
                            char *why, size_t whylen);
/* Frees the endpoint strings and zeroes *e; safe on a zeroed *e. */
void csc1_oidc_endpoints_free(csc1_oidc_endpoints *e);

/* A successful token response (RFC 6749 5.1). */
typedef struct csc1_oidc_tokens {
  char *access_token;  /* required */
  char *refresh_token; /* NULL: keep the old one */
  char *id_token;      /* NULL: none (allowed on refresh) */
  char *scope;         /* the granted scope; NULL: as requested (RFC 6749 5.1) */
  int64_t expires_in;  /* seconds, > 0 */
} csc1_oidc_tokens;

/* access_token, token_type Bearer and a positive expires_in are required.
 * 0, or -1 with why (never quoting a token). */
int csc1_oidc_tokens_parse(const char *buf, size_t len, csc1_oidc_tokens *out, char *why,
                         size_t whylen);
/* Frees and wipes the token strings. */
void csc1_oidc_tokens_free(csc1_oidc_tokens *t);

/* An OAuth error response: error code and description, reduced to printable
 * ASCII and truncated. 0 when buf is a JSON object with a string "error". */
typedef struct csc1_oidc_error {
  char error[64];
  char description[200];
} csc1_oidc_error;
/* Fills *out (owning nothing) and returns 0, or returns -1 with *out
 * zeroed when buf is not such an object. */
int csc1_oidc_error_parse(const char *buf, size_t len, csc1_oidc_error *out);

/* A device authorization response (RFC 8628 3.2). */
typedef struct csc1_oidc_device_auth {
  char *device_code, *user_code, *verification_uri, *verification_uri_complete;
  int64_t expires_in, interval; /* interval defaults to 5 s */
} csc1_oidc_device_auth;
/* device_code, user_code, verification_uri and a positive
 * expires_in are required. 0 with *out filled (free with
 * csc1_oidc_device_auth_free), or -1 with why and *out zeroed. */
int csc1_oidc_device_auth_parse(const char *buf, size_t len, csc1_oidc_device_auth *out, char *why,
                                size_t whylen);
/* Frees and wipes the strings of *d and zeroes it; safe on a zeroed *d. */
void csc1_oidc_device_auth_free(csc1_oidc_device_auth *d);

/* A form body under construction; wiped on free (it carries secrets). */
typedef struct csc1_form {
  char *buf;
  size_t len, cap;
  bool oom;
} csc1_form;
/* Appends "name=value" (with '&' between pairs), both percent-encoded. On no
 * memory sets f->oom and leaves the body as it was; the caller checks oom
 * before sending. Start from a zeroed csc1_form. */
void csc1_form_add(csc1_form *f, const char *name, const char *value);
/* Wipes and frees the body and zeroes *f. */
void csc1_form_free(csc1_form *f);

/* Copies s into out (cap bytes) keeping printable ASCII, replacing others
 * with '?', truncating. For texts from the IdMS shown in logs and pages. */
void csc1_oidc_sanitize(const char *s, char *out, size_t cap);

#endif
