/* ID token validation (TS 33.180 B.2.1, OpenID Connect Core 3.1.3.7) with
 * cjose and jansson, after mod_auth_openidc's pattern: the JOSE header is
 * checked by us first (alg allowlist, kid, no crit), the signature by cjose
 * with the JWKS key chosen by kid, then every claim.
 *
 * Both parsers take a byte buffer and keep no state between calls, so they
 * can be fuzzed directly. Nothing here logs; reasons never quote a token,
 * a nonce or a signature. */
#ifndef CSC1_JWT_H
#define CSC1_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSC1_JWT_MAX_LEN 16384   /* longer compact JWTs are refused */
#define CSC1_JWT_MAX_LEEWAY_S 30 /* Annex B: clock-skew leeway at most 30 s */

/* Results of csc1_jwt_validate. */
enum {
  CSC1_JWT_OK = 0,
  CSC1_JWT_EMALFORMED = -1,   /* not a compact JWS with JSON header and claims */
  CSC1_JWT_EALG = -2,         /* alg not RS256/PS256/ES256, or crit present */
  CSC1_JWT_EUNKNOWN_KID = -3, /* no key for this kid/alg: refetch the JWKS once */
  CSC1_JWT_ESIGNATURE = -4,   /* the signature does not verify */
  CSC1_JWT_ECLAIMS = -5,      /* iss, aud, azp, exp, iat, nonce or sub wrong */
  CSC1_JWT_ENOMEM = -6
};

/* A parsed JWKS: the signature keys usable with the allowlisted algs. */
typedef struct csc1_jwks csc1_jwks;

/* Parses a JWK Set document. Keys for encryption (use=enc), symmetric keys,
 * RSA keys under 2048 bits, EC keys on other curves than P-256 and malformed
 * entries are skipped. Returns NULL and sets *why when the document is not a
 * JWKS at all. */
csc1_jwks *csc1_jwks_parse(const char *buf, size_t len, const char **why);
/* How many usable keys k holds (0 for NULL). */
size_t csc1_jwks_count(const csc1_jwks *k);
/* Frees k and its keys. NULL is a no-op. */
void csc1_jwks_free(csc1_jwks *k);

typedef struct csc1_jwt_expect {
  const char *issuer;    /* exact match */
  const char *client_id; /* must be in aud; azp must equal it */
  const char *nonce;     /* sent in the request, or NULL (not checked) */
  int64_t now;           /* unix seconds */
  unsigned leeway_s;     /* clock skew allowed; capped at CSC1_JWT_MAX_LEEWAY_S */
} csc1_jwt_expect;

/* What the gateway keeps of a valid ID token. */
typedef struct csc1_id_token {
  char *iss, *sub;
  char **aud; /* sorted, so that two tokens compare as sets */
  size_t n_aud;
  int64_t exp, iat;
  char *mcptt_id, *mcdata_id, *mcvideo_id; /* NULL when absent */
  char alg[8];
  char *kid; /* NULL when the header had none */
} csc1_id_token;

/* Validates a compact JWS ID token. On CSC1_JWT_OK fills *out (free with
 * csc1_id_token_free). Otherwise out is zeroed and why (if given) says what is
 * wrong, without quoting token contents. keys may be NULL (then any token
 * gives CSC1_JWT_EUNKNOWN_KID). */
int csc1_jwt_validate(const char *jwt, size_t len, const csc1_jwks *keys, const csc1_jwt_expect *e,
                    csc1_id_token *out, char *why, size_t whylen);

/* The kid of a compact JWS's header, malloc'd, or NULL. */
char *csc1_jwt_peek_kid(const char *jwt, size_t len);

/* Frees what *t owns and zeroes it; safe on a zeroed *t. */
void csc1_id_token_free(csc1_id_token *t);

/* True when b names the same principal as a: same iss, sub and aud set
 * (a refreshed ID token must, OpenID Connect Core 12.2). */
bool csc1_id_token_same_principal(const csc1_id_token *a, const csc1_id_token *b);

/* A static English name for a CSC1_JWT_* code; "unknown error" for any
 * other value. Never NULL, never to be freed. */
const char *csc1_jwt_strerror(int err);

#endif
