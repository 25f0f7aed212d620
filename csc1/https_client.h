/* A small asynchronous HTTPS client for CSC-1 (discovery, JWKS, token and
 * device authorization endpoints), on libuv, OpenSSL memory BIOs and llhttp.
 *
 * One request per connection ("Connection: close"): every endpoint gets its
 * own TCP connection, TLS session and verification, as TS 33.180 5.1.2.1
 * wants for the separately addressed authorization and token endpoints.
 *
 * TLS 1.2 or newer; the server certificate is always verified against the
 * context's trust anchors and the URL's host (name or IP address); there is
 * no way to switch that off. The whole request has one deadline. Response
 * bodies (Content-Length, chunked or until close) are capped.
 *
 * Nothing here logs. Request bodies and headers (which carry codes, tokens
 * and secrets) are wiped from memory when the request ends. */
#ifndef CSC1_HTTPS_CLIENT_H
#define CSC1_HTTPS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct csc1_https_ctx csc1_https_ctx;
typedef struct csc1_https_req csc1_https_req;

enum {
  CSC1_HTTPS_OK = 0,
  CSC1_HTTPS_EURL = -1,     /* not an https URL */
  CSC1_HTTPS_ERESOLVE = -2, /* name resolution failed */
  CSC1_HTTPS_ECONNECT = -3, /* every address refused or failed (Happy Eyeballs race lost) */
  CSC1_HTTPS_ECERT = -4,    /* certificate verification failed (CA, host name, dates) */
  CSC1_HTTPS_ETLS = -5,     /* other TLS failure */
  CSC1_HTTPS_ETIMEOUT = -6, /* the deadline passed */
  CSC1_HTTPS_EPROTO = -7,   /* malformed or truncated HTTP response */
  CSC1_HTTPS_ETOOBIG = -8,  /* response body or head over the cap */
  CSC1_HTTPS_ENOMEM = -9,
  CSC1_HTTPS_EPROXY = -10,     /* the proxy refused or broke the CONNECT tunnel */
  CSC1_HTTPS_ECLIENTCERT = -11 /* mutual TLS: the server asked for a client certificate
                                and there was none, or it refused ours */
};

/* A static English name for a CSC1_HTTPS_* code ("timeout", ...); "unknown
 * error" for any other value. Never NULL, never to be freed. */
const char *csc1_https_strerror(int err);

/* Trust anchors: ca_file (PEM), or the system store when NULL. cert/key:
 * client certificate for mutual TLS, or NULL. Returns NULL with err filled
 * when a file cannot be loaded. */
csc1_https_ctx *csc1_https_ctx_new(const char *ca_file, const char *cert, const char *key,
                                   char *err, size_t errlen);
/* How requests made with a context reach their servers: directly (the
 * default, what the daemon uses), or through an HTTP CONNECT proxy, one
 * tunnel per request. url: http://HOST:PORT (plain; with h2, HTTP/2 prior
 * knowledge, "h2c") or https://HOST:PORT (TLS to the proxy, verified against
 * ca_file or the system store and the URL's host, like any server; ALPN h2 or
 * http/1.1; cert/key: a client certificate for the proxy). h2: one HTTP/2
 * CONNECT stream (RFC 9113 8.5) instead of an HTTP/1.1 CONNECT.
 *
 * The server's TLS runs inside the tunnel, end to end: the proxy only relays
 * its records and can neither read nor alter them undetected.
 * Options: */
typedef struct csc1_https_proxy_opts {
  const char *url;
  bool h2;
  const char *ca_file, *cert, *key; /* for an https proxy; NULL: system store, no cert */
} csc1_https_proxy_opts;
/* Sets (or replaces) c's proxy for requests started from now on; requests in
 * flight keep the one they started with. o and its strings are copied. 0, or
 * -1 with err filled (bad URL, a file that does not load, no memory); c is
 * unchanged then. In csc1/https_proxy.c. */
int csc1_https_ctx_set_proxy(csc1_https_ctx *c, const csc1_https_proxy_opts *o, char *err,
                             size_t errlen);

/* How requests made with a context look names up, when set: the daemon
 * passes its c-ares resolver (gateway/dns_link.h), so that no lookup waits
 * on libuv's threadpool. Unset (the default): uv_getaddrinfo, for tools
 * that run without the daemon (mcx-login).
 * - start(ctx, host, done, arg) begins a lookup of host and returns a
 *   handle, or NULL when it cannot start (done is then never called);
 * - done(arg, err, addrs, n) is called exactly once, from the loop and
 *   never from inside start, unless cancel(ctx, handle) came first: err
 *   NULL and addrs[0..n) (ports 0; valid during the call only), or err a
 *   static reason ("name not found", ...);
 * - cancel(ctx, handle): done will not be called.
 * The struct is copied; ctx must outlive every request. */
typedef void (*csc1_https_resolved_fn)(void *arg, const char *err,
                                       const struct sockaddr_storage *addrs, size_t n);
typedef struct csc1_https_resolver {
  void *(*start)(void *ctx, const char *host, csc1_https_resolved_fn done, void *arg);
  void (*cancel)(void *ctx, void *lookup);
  void *ctx;
} csc1_https_resolver;
void csc1_https_ctx_set_resolver(csc1_https_ctx *c, const csc1_https_resolver *r);

/* A hook for every TCP socket requests made with a context open, before its
 * connect: setup(arg, fd, family) returns 0, or a negative errno that fails
 * that address like a refused connect. The daemon sets it for [idm] egress
 * (the socket options of an [egress NAME]); arg must outlive the requests. */
typedef int (*csc1_https_socket_fn)(void *arg, int fd, int family);
void csc1_https_ctx_set_socket_setup(csc1_https_ctx *c, csc1_https_socket_fn setup, void *arg);

/* Happy Eyeballs v2 (RFC 8305): a name's addresses (AAAA and A, asked at
 * once) are raced, families alternating in the resolver's order, a new
 * connection attempt every ms while none has connected (at once when the
 * last one failed); the first to connect carries the request and the others
 * are closed. The request's deadline (timeout_ms) bounds the whole race.
 * ms 0: the default, 250 ms. Applies to requests started from now on. */
void csc1_https_ctx_set_attempt_delay(csc1_https_ctx *c, uint64_t ms);

/* Requests in flight keep what they need; freeing the context is safe. */
void csc1_https_ctx_free(csc1_https_ctx *c);

typedef struct csc1_https_response {
  int status;
  const char *body; /* NUL-terminated for convenience; may hold NULs */
  size_t body_len;
  const char *content_type;    /* or NULL */
  int64_t retry_after_s;       /* Retry-After in seconds from now, or -1 */
  int64_t date;                /* Date header as unix time, or 0 */
  const char *location;        /* Location header, or NULL */
  const char *set_cookie;      /* every Set-Cookie value, one per line, or NULL */
  uint64_t tls_bytes_sent;     /* the server TLS session's records written ... */
  uint64_t tls_bytes_received; /* ... and read: what a tunnel carried */
  int64_t sent_at_ms;          /* local wall clock (unix ms) when the request was written ... */
  int64_t received_at_ms;      /* ... and when the response was complete: the server wrote
                                  its Date in between (clock skew, csc1/clock_skew.h) */
} csc1_https_response;

/* err: CSC1_HTTPS_OK (then resp is set, any status) or an error (resp NULL).
 * detail: what went wrong for humans (e.g. the X.509 verification error and
 * the host; for CSC1_HTTPS_ECLIENTCERT whether a certificate was configured,
 * its file, and the server's alert), never request or response contents.
 * After the callback the request is gone: clear any pointer to it there. */
typedef void (*csc1_https_cb)(int err, const char *detail, const csc1_https_response *resp,
                              void *arg);

typedef struct csc1_https_request_opts {
  const char *method;       /* "GET" or "POST" */
  const char *url;          /* https://host[:port]/path?query */
  const char *content_type; /* for a body, or NULL */
  const char *body;
  size_t body_len;
  const char *authorization; /* Authorization header value, or NULL */
  uint64_t timeout_ms;       /* whole request; 0 means 10 s */
  size_t max_body;           /* 0 means 256 KiB */
  const char *accept;        /* Accept header value; NULL means application/json */
  const char *cookie;        /* Cookie header value, or NULL */
  bool linger; /* after a complete response, wait (within the deadline) for the server to
                  close, so that tls_bytes_received counts all it sent */
} csc1_https_request_opts;

/* Starts a request. Returns 0 and *out (may be NULL if not wanted), or a
 * negative CSC1_HTTPS_E* when it cannot start - then cb is never called. */
int csc1_https_request(uv_loop_t *loop, csc1_https_ctx *ctx, const csc1_https_request_opts *o,
                       csc1_https_cb cb, void *arg, csc1_https_req **out);

/* Abandons a request: cb will not be called; resources are freed once the
 * handles have closed. */
void csc1_https_cancel(csc1_https_req *r);

/* Parses the head of a proxy's answer to an HTTP/1.1 CONNECT (RFC 9110
 * 9.3.6) in buf[0..len). Returns the head's length (through the blank line)
 * with *status set, 0 when more bytes are needed, -1 when it is not an
 * HTTP/1.x status line or the head exceeds max_head. Bytes after the head
 * already belong to the tunnel. */
long csc1_https_connect_response_parse(const char *buf, size_t len, size_t max_head, int *status);

/* Parses an HTTP-date (RFC 9110 IMF-fixdate) into unix time; -1 if not one. */
int64_t csc1_http_date_parse(const char *s);

#endif
