/* Client authentication. See client_auth.h. */
#include "csc1/client_auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csc1/pkce.h"
#include "csc1/url.h"

#define SECRET_MAX 4096

static int read_secret(const char *path, char **out, char *err, size_t errlen) {
  FILE *fp = fopen(path, "re");
  if (!fp) {
    snprintf(err, errlen, "cannot read client_secret_file %s: %s", path, strerror(errno));
    return -1;
  }
  char *buf = calloc(1, SECRET_MAX + 1);
  size_t n = buf ? fread(buf, 1, SECRET_MAX + 1, fp) : 0;
  fclose(fp);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    buf[--n] = '\0';
  if (!buf || n == 0 || n > SECRET_MAX || memchr(buf, '\0', n)) {
    snprintf(err, errlen, "client_secret_file %s must hold one secret of 1 to %d bytes", path,
             SECRET_MAX);
    if (buf)
      OPENSSL_cleanse(buf, SECRET_MAX + 1);
    free(buf);
    return -1;
  }
  *out = buf;
  return 0;
}

static int read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen) {
  FILE *fp = fopen(path, "re");
  if (!fp) {
    snprintf(err, errlen, "cannot read client_key %s: %s", path, strerror(errno));
    return -1;
  }
  EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
  fclose(fp);
  bool ok = k && ((EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 256) ||
                  (EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) >= 2048));
  if (!ok) {
    snprintf(err, errlen,
             "client_key %s must be a PEM EC P-256 or RSA (2048 bits or more) "
             "private key",
             path);
    EVP_PKEY_free(k);
    return -1;
  }
  *out = k;
  return 0;
}

int csc1_client_auth_init(csc1_client_auth *a, const csc1_client_auth_opts *o, char *err,
                          size_t errlen) {
  memset(a, 0, sizeof *a);
  a->method = o->method;
  if (!(a->client_id = strdup(o->client_id ? o->client_id : ""))) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int r = 0;
  if (a->method == CSC1_AUTH_SECRET_BASIC || a->method == CSC1_AUTH_SECRET_POST)
    r = read_secret(o->client_secret_file, &a->secret, err, errlen);
  else if (a->method == CSC1_AUTH_PRIVATE_KEY_JWT)
    r = read_key(o->client_key, &a->key, err, errlen);
  if (r != 0)
    csc1_client_auth_free(a);
  return r;
}

void csc1_client_auth_free(csc1_client_auth *a) {
  if (a->secret) {
    OPENSSL_cleanse(a->secret, strlen(a->secret));
    free(a->secret);
  }
  free(a->client_id);
  EVP_PKEY_free(a->key);
  memset(a, 0, sizeof *a);
}

/* "Basic " base64(urlencode(id) ":" urlencode(secret)) (RFC 6749 2.3.1). */
static char *basic_header(const csc1_client_auth *a) {
  size_t cap = 3 * (strlen(a->client_id) + strlen(a->secret)) + 2;
  char *pair = malloc(cap);
  if (!pair)
    return NULL;
  size_t n = csc1_url_encode(pair, 0, cap, a->client_id);
  pair[n++] = ':';
  n = csc1_url_encode(pair, n, cap, a->secret);
  char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);
  if (out) {
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)pair, (int)n);
  }
  OPENSSL_cleanse(pair, cap);
  free(pair);
  return out;
}

/* Signs data with the key: ES256 (raw r||s) or RS256. */
static int sign(EVP_PKEY *key, const char *data, unsigned char *sig, size_t *siglen) {
  unsigned char der[1024];
  size_t derlen = sizeof der;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
           EVP_DigestSign(md, der, &derlen, (const unsigned char *)data, strlen(data)) == 1;
  EVP_MD_CTX_free(md);
  if (!ok)
    return -1;
  if (!EVP_PKEY_is_a(key, "EC")) {
    memcpy(sig, der, derlen);
    *siglen = derlen;
    return 0;
  }
  const unsigned char *p = der;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
  if (!es)
    return -1;
  ok = BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 &&
       BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32;
  ECDSA_SIG_free(es);
  *siglen = 64;
  return ok ? 0 : -1;
}

static size_t b64url_str(const char *s, char *out) {
  return csc1_b64url_encode((const unsigned char *)s, strlen(s), out);
}

char *csc1_client_assertion(const csc1_client_auth *a, const char *audience, int64_t now) {
  char jti[32], claims[2048], header[64];
  if (!a->key || csc1_random_token(16, jti) != 0)
    return NULL;
  snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
           EVP_PKEY_is_a(a->key, "EC") ? "ES256" : "RS256");
  char id[512], aud[1024];
  csc1_oidc_sanitize(a->client_id, id, sizeof id); /* printable ASCII; quotes escaped below */
  csc1_oidc_sanitize(audience, aud, sizeof aud);
  if (strpbrk(id, "\"\\") || strpbrk(aud, "\"\\"))
    return NULL;
  int n = snprintf(claims, sizeof claims,
                   "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"%s\",\"jti\":\"%s\",\"iat\":%lld,"
                   "\"exp\":%lld}",
                   id, id, aud, jti, (long long)now, (long long)now + 60);
  if (n < 0 || (size_t)n >= sizeof claims)
    return NULL;
  size_t cap = 4 * (strlen(header) + (size_t)n) / 3 + 8 + 1024;
  char *jwt = malloc(cap);
  if (!jwt)
    return NULL;
  size_t o = b64url_str(header, jwt);
  jwt[o++] = '.';
  o += b64url_str(claims, jwt + o);
  unsigned char sig[1024];
  size_t siglen = 0;
  if (sign(a->key, jwt, sig, &siglen) != 0) {
    free(jwt);
    return NULL;
  }
  jwt[o++] = '.';
  csc1_b64url_encode(sig, siglen, jwt + o);
  return jwt;
}

int csc1_client_auth_apply(const csc1_client_auth *a, const char *audience, int64_t now, csc1_form *f,
                         char **authorization) {
  *authorization = NULL;
  switch (a->method) {
  case CSC1_AUTH_NONE: csc1_form_add(f, "client_id", a->client_id); break;
  case CSC1_AUTH_SECRET_BASIC:
    if (!(*authorization = basic_header(a)))
      return -1;
    break;
  case CSC1_AUTH_SECRET_POST:
    csc1_form_add(f, "client_id", a->client_id);
    csc1_form_add(f, "client_secret", a->secret);
    break;
  case CSC1_AUTH_PRIVATE_KEY_JWT: {
    char *jwt = csc1_client_assertion(a, audience, now);
    if (!jwt)
      return -1;
    csc1_form_add(f, "client_id", a->client_id);
    csc1_form_add(f, "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    csc1_form_add(f, "client_assertion", jwt);
    OPENSSL_cleanse(jwt, strlen(jwt));
    free(jwt);
    break;
  }
  }
  return f->oom ? -1 : 0;
}
