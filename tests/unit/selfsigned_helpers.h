/* A throw-away TLS identity for unit tests that run a TLS server on
 * loopback. Needs OpenSSL's headers only. */
#ifndef MCGW_TEST_SELFSIGNED_HELPERS_H
#define MCGW_TEST_SELFSIGNED_HELPERS_H

#include <openssl/evp.h>
#include <openssl/x509v3.h>

/* A self-signed certificate for IP:127.0.0.1 with common name cn, valid from
 * a minute ago for an hour, signed by key (which it carries): a server's
 * certificate and, the same, its clients' trust anchor. NULL on failure. */
static inline X509 *selfsigned_127(EVP_PKEY *key, const char *cn) {
  X509 *x = X509_new();
  if (!x)
    return NULL;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_set_pubkey(x, key);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
  if (!san || !X509_add_ext(x, san, -1) || X509_sign(x, key, EVP_sha256()) <= 0) {
    X509_EXTENSION_free(san);
    X509_free(x);
    return NULL;
  }
  X509_EXTENSION_free(san);
  return x;
}

#endif
