/* Absolute http(s) URLs as CSC-1 uses them: issuer, endpoints, redirect URI.
 *
 * Strict on purpose: no user info, no fragment, no spaces or control bytes,
 * a numeric port in 1..65535. The parsed form points into the input string,
 * which must outlive it. */
#ifndef CSC1_URL_H
#define CSC1_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSC1_URL_HOST_MAX 255

typedef struct csc1_url {
  bool https;
  char host[CSC1_URL_HOST_MAX + 1]; /* lower case; an IPv6 literal without brackets */
  bool host_is_ip;                /* IPv4 or IPv6 literal (verified by IP, no SNI) */
  bool host_is_v6;
  uint16_t port;      /* explicit, or 443 / 80 */
  const char *target; /* path and query ("/" when empty), into the input */
} csc1_url;

/* Returns 0, or -1 with *why set to a static reason; out is untouched then. */
int csc1_url_parse(const char *s, csc1_url *out, const char **why);

/* Appends s to buf (capacity cap, NUL-terminated) percent-encoding every byte
 * but unreserved ones (RFC 3986 2.3), as application/x-www-form-urlencoded
 * needs. Returns the new length, or (size_t)-1 when it does not fit. */
size_t csc1_url_encode(char *buf, size_t len, size_t cap, const char *s);

/* Decodes one application/x-www-form-urlencoded value ('+' is a space) of n
 * bytes into a new NUL-terminated string; NULL on a bad escape, an embedded
 * NUL or no memory. */
char *csc1_url_decode(const char *s, size_t n);

/* Finds parameter name in a query string ("a=1&b=2") and returns its decoded
 * value (malloc'd), or NULL when absent or malformed. *dup is set when the
 * parameter occurs more than once (callers must refuse such requests). */
char *csc1_url_query_param(const char *query, const char *name, bool *dup);

#endif
