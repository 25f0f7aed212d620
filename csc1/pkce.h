/* PKCE (RFC 7636) with S256, and the random single-use values of an
 * authorization request (state, nonce). Never logs anything: every value
 * produced here is a secret until it is used. */
#ifndef CSC1_PKCE_H
#define CSC1_PKCE_H

#include <stddef.h>

#define CSC1_PKCE_RANDOM_BYTES 32 /* at least 32, per RFC 7636 7.1 */
#define CSC1_PKCE_VERIFIER_LEN 43 /* base64url of 32 bytes, unpadded */
#define CSC1_PKCE_CHALLENGE_LEN 43

/* base64url without padding of n bytes; out holds at least 4*ceil(n/3)+1.
 * Returns the length written (without the NUL). */
size_t csc1_b64url_encode(const unsigned char *in, size_t n, char *out);

/* A new code_verifier from 32 bytes of the OpenSSL CSPRNG. 0, or -1 when the
 * generator fails (out untouched). */
int csc1_pkce_verifier_new(char out[CSC1_PKCE_VERIFIER_LEN + 1]);

/* code_challenge = base64url(SHA-256(ASCII(verifier))). 0, or -1 when the
 * verifier is not 43..128 unreserved characters (RFC 7636 4.1). */
int csc1_pkce_challenge(const char *verifier, char out[CSC1_PKCE_CHALLENGE_LEN + 1]);

/* A random base64url token of nbytes random bytes (state, nonce, jti); out
 * holds 4*ceil(nbytes/3)+1. 0 or -1. */
int csc1_random_token(size_t nbytes, char *out);

#endif
