/* Client authentication at the token endpoint (RFC 6749 2.3, OIDC Core 9):
 * none, client_secret_basic, client_secret_post, private_key_jwt (RFC 7523,
 * signed here with the configured EC P-256 or RSA key). */
#ifndef CSC1_CLIENT_AUTH_H
#define CSC1_CLIENT_AUTH_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "csc1/oidc.h"

/* How the client authenticates at the token endpoint. */
typedef enum {
  CSC1_AUTH_NONE = 0,        /* public client: client_id in the form */
  CSC1_AUTH_SECRET_BASIC,    /* client_secret_file, HTTP Basic */
  CSC1_AUTH_SECRET_POST,     /* client_secret_file, in the form */
  CSC1_AUTH_PRIVATE_KEY_JWT  /* client_key signs a client assertion (RFC 7523) */
} csc1_auth_method;

/* What csc1_client_auth_init needs; the strings are borrowed for the call. */
typedef struct csc1_client_auth_opts {
  csc1_auth_method method;
  const char *client_id;          /* NULL: "" */
  const char *client_secret_file; /* client_secret_*: one line, 1..4096 bytes */
  const char *client_key;         /* private_key_jwt: PEM EC P-256 or RSA >= 2048 */
} csc1_client_auth_opts;

typedef struct csc1_client_auth {
  csc1_auth_method method;
  char *client_id;
  char *secret;  /* client_secret_*: wiped on free */
  EVP_PKEY *key; /* private_key_jwt */
} csc1_client_auth;

/* Fills *a from o, loading the secret file or the key as the method needs;
 * *a owns copies of everything it keeps. Returns 0, or -1 with a reason in err
 * (naming the file, never its contents) and *a freed. */
int csc1_client_auth_init(csc1_client_auth *a, const csc1_client_auth_opts *o, char *err,
                          size_t errlen);
/* Frees what *a owns, wiping the secret; *a may then be initialised again.
 * Safe on a zeroed or already freed *a. */
void csc1_client_auth_free(csc1_client_auth *a);

/* Adds the client's credentials to a token request: form fields, and for
 * client_secret_basic *authorization ("Basic ...", malloc'd, to be wiped by
 * the caller). audience: the token endpoint URL (the assertion's aud).
 * 0, or -1 (no memory, signing failed). */
int csc1_client_auth_apply(const csc1_client_auth *a, const char *audience, int64_t now, csc1_form *f,
                         char **authorization);

/* A client assertion JWT (for tests): malloc'd compact JWS, or NULL. */
char *csc1_client_assertion(const csc1_client_auth *a, const char *audience, int64_t now);

#endif
