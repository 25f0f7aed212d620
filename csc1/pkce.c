/* PKCE and random tokens. See pkce.h. */
#include "csc1/pkce.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <string.h>

size_t csc1_b64url_encode(const unsigned char *in, size_t n, char *out) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
    out[o++] = tbl[v & 63];
  }
  if (n - i == 1) {
    unsigned v = (unsigned)in[i] << 16;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
  } else if (n - i == 2) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
  }
  out[o] = '\0';
  return o;
}

int csc1_random_token(size_t nbytes, char *out) {
  unsigned char raw[64];
  if (nbytes == 0 || nbytes > sizeof raw || RAND_bytes(raw, (int)nbytes) != 1)
    return -1;
  csc1_b64url_encode(raw, nbytes, out);
  OPENSSL_cleanse(raw, sizeof raw);
  return 0;
}

int csc1_pkce_verifier_new(char out[CSC1_PKCE_VERIFIER_LEN + 1]) {
  return csc1_random_token(CSC1_PKCE_RANDOM_BYTES, out);
}

static bool verifier_ok(const char *v) {
  size_t n = strlen(v);
  if (n < 43 || n > 128)
    return false;
  for (; *v; v++)
    if (!isalnum((unsigned char)*v) && !strchr("-._~", *v))
      return false;
  return true;
}

int csc1_pkce_challenge(const char *verifier, char out[CSC1_PKCE_CHALLENGE_LEN + 1]) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  if (!verifier || !verifier_ok(verifier))
    return -1;
  SHA256((const unsigned char *)verifier, strlen(verifier), md);
  csc1_b64url_encode(md, sizeof md, out);
  return 0;
}
