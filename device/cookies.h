/* A minimal cookie jar (RFC 6265 subset) for mcx-login's headless login:
 * enough for an IdMS's login and consent pages, nothing more.
 *
 * Cookies are host-only (kept per host name or address; a Domain attribute
 * naming another host refuses the cookie), matched by path (RFC 6265 5.1.4),
 * replaced by name+host+path, and removed when Max-Age <= 0 or Expires is in
 * the past. Secure cookies go only to https. Values are secrets (session
 * cookies): nothing here logs, and the jar wipes them when freed. */
#ifndef MCX_COOKIES_H
#define MCX_COOKIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mcx_cookie_jar mcx_cookie_jar;

mcx_cookie_jar *mcx_cookies_new(void);
void mcx_cookies_free(mcx_cookie_jar *j);

/* Takes the Set-Cookie values of one response (one value per line, as
 * csc1_https_response.set_cookie has them) from host for request_path (the
 * URL's path, without the query). Malformed ones are ignored. Returns how
 * many were stored or removed, or -1 when out of memory. */
int mcx_cookies_store(mcx_cookie_jar *j, const char *host, const char *request_path,
                      const char *set_cookie_lines, int64_t now);

/* The Cookie header value for a request to host and path: longer paths first
 * (RFC 6265 5.4). malloc'd, or NULL when no cookie applies. */
char *mcx_cookies_header(mcx_cookie_jar *j, const char *host, const char *path, bool https,
                         int64_t now);

size_t mcx_cookies_count(const mcx_cookie_jar *j);

#endif
