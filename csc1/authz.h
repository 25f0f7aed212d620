/* The authorization request of the code flow with PKCE (OIDC Core 3.1.2.1,
 * RFC 7636, TS 33.180 B.4.2.2) and the redirect back (3.1.2.5, RFC 9207):
 * built and parsed here once, for the gateway's own login (gateway/idm.c)
 * and for the device (mcx-login). Never logs: state, nonce and verifier are
 * secrets until used. */
#ifndef CSC1_AUTHZ_H
#define CSC1_AUTHZ_H

#include <stdbool.h>

#include "csc1/pkce.h"

#define CSC1_AUTHZ_TOKEN_LEN 43 /* state and nonce: base64url of 32 random bytes */

/* The single-use values of one authorization request, kept by the caller
 * until the redirect comes back (state), the code is redeemed (verifier) and
 * the ID token checked (nonce). The caller wipes them (OPENSSL_cleanse). */
typedef struct csc1_authz_secrets {
  char state[CSC1_AUTHZ_TOKEN_LEN + 1];
  char nonce[CSC1_AUTHZ_TOKEN_LEN + 1];
  char verifier[CSC1_PKCE_VERIFIER_LEN + 1];
} csc1_authz_secrets;

/* What the request names; borrowed for the call. */
typedef struct csc1_authz_params {
  const char *authorization_endpoint; /* may already carry a ?query */
  const char *client_id;
  const char *redirect_uri;
  const char *scope;
  const char *acr_values; /* NULL: not sent */
} csc1_authz_params;

/* Draws new secrets into *s and returns the authorization URL (malloc'd,
 * the caller frees): the endpoint with response_type=code, client_id,
 * redirect_uri, scope, state, nonce, [acr_values,] code_challenge (S256 of
 * s->verifier) and code_challenge_method=S256, each value percent-encoded.
 * Returns NULL with *why set to a static reason ("no randomness", "out of
 * memory"); *s may then hold partial values, to be wiped. */
char *csc1_authz_url(const csc1_authz_params *p, csc1_authz_secrets *s, const char **why);

/* The query of the redirect to redirect_uri, each parameter decoded
 * (malloc'd, NULL when absent or malformed). */
typedef struct csc1_authz_callback {
  char *code, *state, *iss, *error, *error_description;
  bool dup; /* a parameter occurred twice: the caller must refuse the callback */
} csc1_authz_callback;

/* Parses query ("code=...&state=...", without '?'; NULL: empty) into *c,
 * which the caller frees with csc1_authz_callback_free. Never fails: a
 * missing or malformed parameter is NULL (out of memory looks the same). */
void csc1_authz_callback_parse(const char *query, csc1_authz_callback *c);

/* Wipes and frees every string of *c and zeroes it. */
void csc1_authz_callback_free(csc1_authz_callback *c);

#endif
