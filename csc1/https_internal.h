/* What https_client.c (the request's life: resolve, connect, server TLS,
 * llhttp) and https_proxy.c (through a proxy: its TLS, HTTP/1.1 CONNECT,
 * HTTP/2 CONNECT) share. Internal to csc1/: the csc1__https_ functions are
 * hidden (not part of the library's API) and may change at any time. */
#ifndef CSC1_HTTPS_INTERNAL_H
#define CSC1_HTTPS_INTERNAL_H

#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "csc1/https_client.h"
#include "csc1/url.h"

#define HTTPS_DEFAULT_TIMEOUT_MS 10000
#define HTTPS_DEFAULT_ATTEMPT_DELAY_MS 250 /* RFC 8305's recommended Connection Attempt Delay */
#define HTTPS_DEFAULT_MAX_BODY (256 * 1024)
#define HTTPS_MAX_HEAD 65536
#define HTTPS_HEADER_VALUE_MAX 1024
#define HTTPS_READ_BUF 16384
#define HTTPS_DETAIL_MAX 1024 /* host names are at most 255 bytes */

#define HTTPS_SET_COOKIE_MAX 16384
#define HTTPS_PROXY_HEAD_MAX 8192

typedef enum { VIA_DIRECT = 0, VIA_H1, VIA_H2 } via_kind;

/* A proxy, shared by a context and its requests (reference counted). */
typedef struct https_proxy {
  int refs;
  via_kind kind;
  char *url_text;
  csc1_url url;
  SSL_CTX *ssl_ctx; /* an https proxy; NULL for http */
} https_proxy;

struct csc1_https_ctx {
  SSL_CTX *ssl_ctx;
  https_proxy *proxy;                /* NULL: direct */
  char *client_cert;                 /* its file, for messages; NULL: none */
  csc1_https_resolver resolver;      /* start NULL: uv_getaddrinfo */
  csc1_https_socket_fn socket_setup; /* or NULL */
  void *socket_arg;
  uint64_t attempt_delay_ms; /* Happy Eyeballs: between connection attempts */
};

enum { H_NONE = -1, H_CONTENT_TYPE = 0, H_RETRY_AFTER, H_DATE, H_LOCATION, H_COUNT_ };
enum { H_SET_COOKIE = H_COUNT_ }; /* repeated: kept apart, one value per line */

struct csc1_https_req {
  uv_loop_t *loop;
  SSL_CTX *ssl_ctx; /* a reference of our own */
  csc1_https_cb cb;
  void *arg;
  char *url_text;
  csc1_url url;
  char *request; /* head and body; wiped on free */
  size_t request_len;
  uint64_t timeout_ms;
  size_t max_body;

  uv_getaddrinfo_t gai;
  uv_tcp_t tcp; /* the race's winner (https_connect.h) */
  uv_timer_t timer;
  csc1_https_resolver resolver;
  void *lookup;            /* the resolver's pending lookup */
  struct csc1__race *race; /* connecting; NULL before and after */
  csc1_https_socket_fn socket_setup;
  void *socket_arg;
  uint64_t attempt_delay_ms;
  bool resolving, tcp_open, connected;
  int handles; /* open uv handles */

  SSL *ssl;
  BIO *rbio, *wbio; /* network -> TLS, TLS -> network */
  bool handshake_done, request_sent;
  /* Mutual TLS diagnosis: the server's CertificateRequest, the last alert it
   * sent (-1: none), any response byte, our certificate's file (or NULL). */
  bool cert_requested, got_plaintext;
  int alert_received;
  char *client_cert;

  llhttp_t parser;
  size_t head_bytes;
  char field[32];
  size_t field_len;
  int cur_header;
  char *headers[H_COUNT_];
  char *body;
  size_t body_len;
  bool complete, too_big;

  bool finished;

  /* Through a proxy (proxy != NULL). */
  https_proxy *proxy;
  const csc1_url *peer; /* where the TCP connection goes: the proxy or the server */
  char *set_cookie;
  size_t set_cookie_len;
  bool cookie_sep;
  SSL *pssl;          /* TLS to an https proxy */
  BIO *prbio, *pwbio; /* its memory BIOs */
  bool phandshake_done;
  bool tunnel_up;     /* the proxy answered 200: server TLS may start */
  bool tunnel_eof;    /* the tunnel ended (h2 stream closed) */
  char *connect_head; /* HTTP/1.1: the proxy's answer so far */
  size_t connect_head_len;
  char authority[CSC1_URL_HOST_MAX + 16]; /* CONNECT target host:port */
  nghttp2_session *h2;
  int32_t stream_id;
  int h2_status;
  char *h2_out; /* server TLS records waiting for DATA frames */
  size_t h2_out_len, h2_out_off;
  bool linger;                        /* complete: wait for the server's close */
  int64_t sent_at_ms, received_at_ms; /* wall clock, for csc1_https_response */
  uint64_t bytes_up, bytes_down;      /* server TLS records sent / received */
};

typedef int (*sink_fn)(csc1_https_req *r, const char *data, size_t n);

/* ---- https_client.c, for the proxy layer ---- */

/* Ends the request once: calls back (unless cancelled), closes, frees. After
 * it returns r may be gone: the caller touches r no more. */
void csc1__https_finish(csc1_https_req *r, int err, const char *detail);
/* Queues n bytes on the TCP connection. 0, or -1 (no memory, write failed). */
int csc1__https_net_write(csc1_https_req *r, const char *data, size_t n);
/* Hands everything queued in a TLS write BIO b to sink. 0, or sink's -1. */
int csc1__https_drain_bio(csc1_https_req *r, BIO *b, sink_fn sink);
/* Tunnel bytes from the server, for the server TLS's read BIO. */
void csc1__https_tls_in(csc1_https_req *r, const char *data, size_t n);
/* The tunnel is up: sets up the server TLS. 0, or -1 (no memory). */
int csc1__https_tunnel_ready(csc1_https_req *r);
/* OpenSSL's error queue as one line into buf (cleared). */
void csc1__https_ssl_error_text(char *buf, size_t len);

/* ---- https_proxy.c, for the request ---- */

/* Drops a reference to p; the last one frees it. NULL is a no-op. */
void csc1__https_proxy_unref(https_proxy *p);
/* The server TLS's records into the tunnel, or straight to the server when
 * there is no proxy. 0, or -1 (no memory, send failed). */
int csc1__https_tunnel_send(csc1_https_req *r, const char *data, size_t n);
/* Sends what the HTTP/2 session has queued. 0, or -1. */
int csc1__https_h2_flush(csc1_https_req *r);
/* Connected to the proxy (its TLS, if any, done): sends the CONNECT. On
 * failure the request is finished. */
void csc1__https_proxy_start(csc1_https_req *r);
/* Sets up the TLS to an https proxy, verified like any server. 0, or -1. */
int csc1__https_proxy_tls_start(csc1_https_req *r);
/* Runs the proxy TLS after bytes went into its read BIO. May finish r. */
void csc1__https_proxy_tls_step(csc1_https_req *r);
/* Bytes that came up from below the tunnel: the proxy's answer or frames,
 * then the server's TLS records. May finish r. */
void csc1__https_tunnel_recv(csc1_https_req *r, const char *data, size_t n);
/* Finishes r with CSC1_HTTPS_EPROXY, naming the proxy and what went wrong. */
void csc1__https_proxy_failed(csc1_https_req *r, const char *what);

#endif
