/* TLS server contexts. See tls.h. */
#include "tunnel/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const unsigned char alpn_h2[] = "h2";
static const unsigned char alpn_h1[] = "http/1.1";

/* Server preference: h2 when offered, else http/1.1, else no ALPN (which the
 * listener treats as HTTP/1.1). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  const unsigned char *prefs[] = {alpn_h2, alpn_h1};
  for (size_t p = 0; p < 2; p++) {
    size_t plen = strlen((const char *)prefs[p]);
    for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
      if (in[i] == plen && i + 1 + plen <= inlen && memcmp(in + i + 1, prefs[p], plen) == 0) {
        *out = in + i + 1;
        *outlen = (unsigned char)plen;
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

static const char *ssl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  return r ? r : "unknown error";
}

static int readable(const char *path, char *why, size_t len) {
  if (access(path, R_OK) == 0)
    return 1;
  snprintf(why, len, "cannot read %s: %s", path, strerror(errno));
  return 0;
}

static EVP_PKEY *read_key(const char *path) {
  BIO *in = BIO_new_file(path, "r");
  EVP_PKEY *pkey = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
  BIO_free(in);
  return pkey;
}

static int load_files(SSL_CTX *ctx, const char *cert, const char *key, const char *client_ca,
                      char *why, size_t len, tn_tls_file *file) {
  *file = TN_TLS_FILE_CERT;
  if (!readable(cert, why, len))
    return 0;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    snprintf(why, len, "%s is not a usable PEM certificate chain: %s", cert, ssl_reason());
    return 0;
  }
  *file = TN_TLS_FILE_KEY;
  if (!readable(key, why, len))
    return 0;
  EVP_PKEY *pkey = read_key(key);
  if (!pkey) {
    snprintf(why, len, "%s is not a usable PEM private key: %s", key, ssl_reason());
    return 0;
  }
  /* Compared first, so a mismatch is named as such. */
  int ok = X509_check_private_key(SSL_CTX_get0_certificate(ctx), pkey) == 1;
  if (!ok)
    snprintf(why, len, "private key %s does not match the certificate %s", key, cert);
  else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
    ok = 0;
    snprintf(why, len, "%s cannot be used: %s", key, ssl_reason());
  }
  EVP_PKEY_free(pkey);
  if (!ok)
    return 0;
  if (!client_ca)
    return 1;
  *file = TN_TLS_FILE_CLIENT_CA;
  if (!readable(client_ca, why, len))
    return 0;
  STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
  if (!names || SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    snprintf(why, len, "%s holds no usable PEM CA certificate", client_ca);
    return 0;
  }
  SSL_CTX_set_client_CA_list(ctx, names);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  return 1;
}

SSL_CTX *tn_tls_server_ctx(const char *cert, const char *key, const char *client_ca,
                           char *why, size_t why_len, tn_tls_file *file) {
  tn_tls_file ignored;
  if (!file)
    file = &ignored;
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(why, why_len, "cannot create a TLS context: %s", ssl_reason());
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Idle TLS connections give their record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
  if (!load_files(ctx, cert, key, client_ca, why, why_len, file)) {
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
  }
  return ctx;
}
