/* The admin (ops) HTTP listener: one request per connection, parsed with
 * llhttp, dispatched to handlers registered by path. Built in: GET /healthz.
 * Unknown paths answer 404, known paths with another method 405.
 *
 * Handlers may answer at once or later (e.g. after a token exchange): the
 * request stays valid until gw_admin_respond() is called for it, or until
 * the client goes away — in which case gw_admin_respond() on it is still
 * safe and just frees it. Responses never carry payload, tokens or secrets
 * in logs. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct gw_admin gw_admin;
typedef struct gw_admin_req gw_admin_req;

/* Handles one request. Must eventually call gw_admin_respond(req, ...). */
typedef void (*gw_admin_handler)(gw_admin_req *req, void *arg);

/* Binds and listens. Returns 0 or a negative libuv error (logged); *out is
 * untouched on failure and nothing is left open once the loop runs. */
int gw_admin_start(uv_loop_t *loop, const struct sockaddr_storage *addr, gw_admin **out);
/* The address a listens on (its port when bound to port 0). 0, or a
 * negative libuv error with *out untouched. */
int gw_admin_addr(const gw_admin *a, struct sockaddr_storage *out);

/* Registers handler for exact path (query string excluded) and method
 * ("GET", "POST"; HEAD is served as GET). Returns 0 or UV_ENOMEM. */
int gw_admin_route(gw_admin *a, const char *method, const char *path, gw_admin_handler h,
                   void *arg);

/* Like gw_admin_route, for a path that needs no admin token (GET /healthz,
 * the status page's static files: they hold no figures). */
int gw_admin_route_public(gw_admin *a, const char *method, const char *path,
                          gw_admin_handler h, void *arg);

/* Requires `Authorization: Bearer <token>` on every route but the public
 * ones from now on; a missing or wrong token gets 401 before the path is
 * even looked up. NULL turns the check off. Only a SHA-256 of the token is
 * kept, compared in constant time. Returns 0 or UV_ENOMEM. */
int gw_admin_set_token(gw_admin *a, const char *token);

/* Closes the listener and every admin connection; frees a once all closed.
 * Requests not yet answered are dropped (their connections closed). */
void gw_admin_close(gw_admin *a);

/* Request accessors (valid until gw_admin_respond). */
const char *gw_admin_req_path(const gw_admin_req *r);   /* without the query */
const char *gw_admin_req_query(const gw_admin_req *r);  /* after '?', or "" */
const char *gw_admin_req_method(const gw_admin_req *r);
/* Value of a request header by case-insensitive name, or NULL. Only headers
 * the admin listener keeps are available: Authorization, Accept, Host,
 * Content-Type, Sec-Fetch-Site. */
const char *gw_admin_req_header(const gw_admin_req *r, const char *name);
const char *gw_admin_req_body(const gw_admin_req *r, size_t *len); /* POST body */
/* Whether the request says Content-Type: application/json (parameters
 * allowed). State-changing routes require it: a cross-site form or image
 * cannot send it, and a cross-site script that tries needs a CORS
 * preflight, which the admin listener never grants. */
bool gw_admin_req_is_json(const gw_admin_req *r);
/* Whether a browser says the request comes from a page of another origin
 * (Sec-Fetch-Site other than same-origin or none: a link, form or image on
 * another site). False without the header (non-browser clients, old
 * browsers). */
bool gw_admin_req_from_another_site(const gw_admin_req *r);
/* The peer address of the admin client. */
const struct sockaddr *gw_admin_req_peer(const gw_admin_req *r);
/* Whether the client is still connected. */
bool gw_admin_req_alive(const gw_admin_req *r);

/* Sends the response and closes the connection. extra_headers: NULL or
 * complete "Name: value\r\n" lines. body may be binary (len given). */
void gw_admin_respond(gw_admin_req *r, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len);
/* Convenience: a JSON document (reference taken), 200 unless status given. */
void gw_admin_respond_json(gw_admin_req *r, int status, json_t *doc);
/* Convenience: text/plain. */
void gw_admin_respond_text(gw_admin_req *r, int status, const char *text);

#endif
