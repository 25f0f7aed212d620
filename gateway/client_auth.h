/* Client authentication at the token endpoint (RFC 6749 2.3, OIDC Core 9):
 * none, client_secret_basic, client_secret_post, private_key_jwt (RFC 7523,
 * signed here with the configured EC P-256 or RSA key). */
#ifndef GW_CLIENT_AUTH_H
#define GW_CLIENT_AUTH_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config.h"
#include "gateway/oidc.h"

typedef struct gw_client_auth {
  gw_idm_client_auth method;
  char *client_id;
  char *secret;  /* client_secret_*: wiped on free */
  EVP_PKEY *key; /* private_key_jwt */
} gw_client_auth;

/* Loads the secret file or the key as the method needs. 0, or -1 with err
 * (naming the file, never its contents). */
int gw_client_auth_init(gw_client_auth *a, const gw_idm_config *cfg, char *err, size_t errlen);
void gw_client_auth_free(gw_client_auth *a);

/* Adds the client's credentials to a token request: form fields, and for
 * client_secret_basic *authorization ("Basic ...", malloc'd, to be wiped by
 * the caller). audience: the token endpoint URL (the assertion's aud).
 * 0, or -1 (no memory, signing failed). */
int gw_client_auth_apply(const gw_client_auth *a, const char *audience, int64_t now, gw_form *f,
                         char **authorization);

/* A client assertion JWT (for tests): malloc'd compact JWS, or NULL. */
char *gw_client_assertion(const gw_client_auth *a, const char *audience, int64_t now);

#endif
