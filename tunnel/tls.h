/* TLS server contexts for the HTTPS proxy listeners (listen_tls).
 *
 * TLS 1.2 and 1.3 only, no renegotiation, ALPN "h2" then "http/1.1". With a
 * client CA, a device must present a certificate that chains to it (and is
 * within its validity period); without one, no certificate is asked for.
 */
#ifndef TN_TLS_H
#define TN_TLS_H

#include <openssl/ssl.h>

/* Which file a problem is about, so a config checker can point at its line. */
typedef enum { TN_TLS_FILE_CERT = 0, TN_TLS_FILE_KEY, TN_TLS_FILE_CLIENT_CA } tn_tls_file;

/* Builds a server context from PEM files (cert: a chain, leaf first).
 * client_ca may be NULL. The caller owns the context (SSL_CTX_free); file
 * may be NULL when not wanted. On failure returns NULL, and writes a precise
 * reason to why (e.g. "cannot read /etc/mcgw/proxy.key: No such file or
 * directory", "private key does not match the certificate") and which file
 * it is about to *file. */
SSL_CTX *tn_tls_server_ctx(const char *cert, const char *key, const char *client_ca,
                           char *why, size_t why_len, tn_tls_file *file);

#endif
