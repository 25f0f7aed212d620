/* The one client of the admin API, for the CLI (`mcgw status`, `tunnels`,
 * `logout`, `login`): a blocking HTTP/1.1 client, one request per
 * connection, the response parsed with llhttp.
 *
 * Errors: functions return 0, or -1 with a one-line lower-case reason in
 * err (never the token); out-parameters are untouched on failure. */
#ifndef GW_ADMIN_CLIENT_H
#define GW_ADMIN_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A response body larger than this is an error ("response larger than
 * 64 MiB"), never silently cut: a /tunnels of 100,000 tunnels fits. */
#define GW_ADMIN_BODY_MAX (64u << 20)

/* An admin API endpoint: host (no brackets), port, the base URL for
 * messages ("http://host:port", IPv6 in brackets). */
typedef struct gw_admin_target {
  char host[256];
  char port[8];
  char url[300];
} gw_admin_target;

/* Parses "http://host[:port]" or "host:port" (host a name, IPv4 or [IPv6];
 * port 80 when the URL has none; an optional trailing "/"). host:port goes
 * through the one parser (base/hostport.h, URL host rules); https:// is
 * refused (the admin API is plain HTTP). Returns 0, or -1 with a reason
 * naming s in err (*t zeroed). */
int gw_admin_target_parse(const char *s, gw_admin_target *t, char *err, size_t errlen);

/* The target for a listen address (an AF_INET or AF_INET6 sockaddr); a
 * wildcard address is reached through loopback. */
void gw_admin_target_from_listen(const struct sockaddr_storage *ss, gw_admin_target *t);

/* A response: the status and the body (malloc'd, NUL-terminated, len bytes
 * before the NUL; NULL when empty). Freed with gw_admin_response_free. */
typedef struct gw_admin_response {
  int status;
  char *body;
  size_t len;
} gw_admin_response;

/* Sends one request to t and reads the whole response. method is "GET" or
 * "POST"; a POST carries the JSON body "{}" (Content-Type:
 * application/json, the admin listener's CSRF rule). token: the admin
 * token, sent as "Authorization: Bearer", or NULL; the request buffer that
 * held it is wiped. Each wait (connect, send, each read) is bounded by
 * timeout_ms. Returns 0 with *r filled, whatever the status, or -1 with the
 * reason in err (name resolution, connection, timeout, a malformed or
 * oversized response). */
int gw_admin_request(const gw_admin_target *t, const char *token, const char *method,
                     const char *path, int timeout_ms, gw_admin_response *r, char *err,
                     size_t errlen);

/* Frees r->body; *r may be reused. */
void gw_admin_response_free(gw_admin_response *r);

#endif
