/* Asynchronous HTTPS client. See https_client.h.
 *
 * Life of a request: resolve (the context's resolver, else uv_getaddrinfo) -> connect to each address in
 * turn -> TLS handshake through memory BIOs -> write the request -> parse the
 * response with llhttp -> finish() calls back once -> every handle closes ->
 * free. finish() is the only place that ends a request; a cancelled request
 * goes the same way without the callback.
 *
 * Through a proxy the same request runs over layers, each a pair of memory
 * BIOs or a framing step:
 *
 *   llhttp <-> server TLS (r->ssl) <-> tunnel <-> [proxy TLS (r->pssl)] <-> TCP
 *
 * where the tunnel is an HTTP/1.1 CONNECT (transparent once answered 200) or
 * an HTTP/2 CONNECT stream (nghttp2 client session; DATA frames carry the
 * server TLS records). Downward, tunnel_send() takes the server TLS's
 * records; upward, proxy_recv() hands tunnel bytes to the server TLS's read
 * BIO and pump() runs once per network read. The server TLS starts only once
 * the tunnel is up. */
#include "gateway/https_client.h"

#include "gateway/append.h"

#include <ctype.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/url.h"

#define HTTPS_DEFAULT_TIMEOUT_MS 10000
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
  gw_url url;
  SSL_CTX *ssl_ctx; /* an https proxy; NULL for http */
} https_proxy;

struct gw_https_ctx {
  SSL_CTX *ssl_ctx;
  https_proxy *proxy; /* NULL: direct */
  char *client_cert;  /* its file, for messages; NULL: none */
  gw_https_resolver resolver; /* start NULL: uv_getaddrinfo */
  gw_https_socket_fn socket_setup; /* or NULL */
  void *socket_arg;
};

enum { H_NONE = -1, H_CONTENT_TYPE = 0, H_RETRY_AFTER, H_DATE, H_LOCATION, H_COUNT_ };
enum { H_SET_COOKIE = H_COUNT_ }; /* repeated: kept apart, one value per line */
static const char *const wanted_headers[H_COUNT_] = {"content-type", "retry-after", "date",
                                                     "location"};

struct gw_https_req {
  uv_loop_t *loop;
  SSL_CTX *ssl_ctx; /* a reference of our own */
  gw_https_cb cb;
  void *arg;
  char *url_text;
  gw_url url;
  char *request; /* head and body; wiped on free */
  size_t request_len;
  uint64_t timeout_ms;
  size_t max_body;

  uv_getaddrinfo_t gai;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect_req;
  struct addrinfo *addrs, *next_addr;
  bool addrs_ours;  /* addrs is one malloc'd block (from the resolver), not getaddrinfo's */
  gw_https_resolver resolver;
  void *lookup;     /* the resolver's pending lookup */
  gw_https_socket_fn socket_setup;
  void *socket_arg;
  int last_connect_err;
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
  const gw_url *peer; /* where the TCP connection goes: the proxy or the server */
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
  char authority[GW_URL_HOST_MAX + 16]; /* CONNECT target host:port */
  nghttp2_session *h2;
  int32_t stream_id;
  int h2_status;
  char *h2_out; /* server TLS records waiting for DATA frames */
  size_t h2_out_len, h2_out_off;
  bool linger;                   /* complete: wait for the server's close */
  int64_t sent_at_ms, received_at_ms; /* wall clock, for gw_https_response */
  uint64_t bytes_up, bytes_down; /* server TLS records sent / received */
};

typedef struct write_chunk {
  uv_write_t w;
  gw_https_req *r;
  char data[];
} write_chunk;

/* ---- context ------------------------------------------------------------ */

static void ssl_error_text(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (e)
    ERR_error_string_n(e, buf, len);
  else
    snprintf(buf, len, "unknown error");
  ERR_clear_error();
}

gw_https_ctx *gw_https_ctx_new(const char *ca_file, const char *cert, const char *key, char *err,
                               size_t errlen) {
  char why[256];
  gw_https_ctx *c = calloc(1, sizeof *c);
  if (!c || !(c->ssl_ctx = SSL_CTX_new(TLS_client_method()))) {
    snprintf(err, errlen, "out of memory");
    free(c);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
  if (!ok) {
    ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load trust anchors %s: %s", ca_file ? ca_file : "(system)", why);
    gw_https_ctx_free(c);
    return NULL;
  }
  if (cert && key &&
      (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert) != 1 ||
       SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(c->ssl_ctx) != 1)) {
    ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load client certificate %s / key %s: %s", cert, key, why);
    gw_https_ctx_free(c);
    return NULL;
  }
  if (cert && key && !(c->client_cert = strdup(cert))) {
    snprintf(err, errlen, "out of memory");
    gw_https_ctx_free(c);
    return NULL;
  }
  return c;
}

static void proxy_unref(https_proxy *p) {
  if (!p || --p->refs > 0)
    return;
  SSL_CTX_free(p->ssl_ctx);
  free(p->url_text);
  free(p);
}

void gw_https_ctx_free(gw_https_ctx *c) {
  if (!c)
    return;
  SSL_CTX_free(c->ssl_ctx);
  proxy_unref(c->proxy);
  free(c->client_cert);
  free(c);
}

/* The TLS context for an https proxy: verified like any server; ALPN offers
 * only the protocol that will be spoken, so a proxy that cannot is caught at
 * the handshake. */
static SSL_CTX *proxy_ssl_ctx(const gw_https_proxy_opts *o, char *err, size_t errlen) {
  char why[256];
  static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
  SSL_CTX *x = SSL_CTX_new(TLS_client_method());
  if (!x) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
  SSL_CTX_set_verify(x, SSL_VERIFY_PEER, NULL);
  if (o->h2 ? SSL_CTX_set_alpn_protos(x, alpn_h2, sizeof alpn_h2 - 1)
            : SSL_CTX_set_alpn_protos(x, alpn_h1, sizeof alpn_h1 - 1)) {
    snprintf(err, errlen, "cannot set ALPN");
    SSL_CTX_free(x);
    return NULL;
  }
  int ok = o->ca_file ? SSL_CTX_load_verify_locations(x, o->ca_file, NULL)
                      : SSL_CTX_set_default_verify_paths(x);
  if (!ok) {
    ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load the proxy's trust anchors %s: %s",
             o->ca_file ? o->ca_file : "(system)", why);
    SSL_CTX_free(x);
    return NULL;
  }
  if ((o->cert != NULL) != (o->key != NULL)) {
    snprintf(err, errlen, "a client certificate for the proxy needs both the certificate and key");
    SSL_CTX_free(x);
    return NULL;
  }
  if (o->cert && (SSL_CTX_use_certificate_chain_file(x, o->cert) != 1 ||
                  SSL_CTX_use_PrivateKey_file(x, o->key, SSL_FILETYPE_PEM) != 1 ||
                  SSL_CTX_check_private_key(x) != 1)) {
    ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load the proxy client certificate %s / key %s: %s", o->cert,
             o->key, why);
    SSL_CTX_free(x);
    return NULL;
  }
  return x;
}

int gw_https_ctx_set_proxy(gw_https_ctx *c, const gw_https_proxy_opts *o, char *err,
                           size_t errlen) {
  const char *why = NULL;
  https_proxy *p = calloc(1, sizeof *p);
  if (!p || !(p->url_text = strdup(o->url))) {
    free(p);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->refs = 1;
  p->kind = o->h2 ? VIA_H2 : VIA_H1;
  if (gw_url_parse(p->url_text, &p->url, &why) != 0 || strcmp(p->url.target, "/") != 0) {
    snprintf(err, errlen, "proxy '%s': %s", o->url,
             why ? why : "a proxy URL is http://HOST:PORT or https://HOST:PORT, without a path");
    proxy_unref(p);
    return -1;
  }
  if (!p->url.https && (o->ca_file || o->cert || o->key)) {
    snprintf(err, errlen, "proxy '%s': a proxy CA, certificate or key needs an https:// proxy URL",
             o->url);
    proxy_unref(p);
    return -1;
  }
  if (p->url.https && !(p->ssl_ctx = proxy_ssl_ctx(o, err, errlen))) {
    proxy_unref(p);
    return -1;
  }
  proxy_unref(c->proxy);
  c->proxy = p;
  return 0;
}

const char *gw_https_strerror(int err) {
  switch (err) {
  case GW_HTTPS_OK: return "ok";
  case GW_HTTPS_EURL: return "bad URL";
  case GW_HTTPS_ERESOLVE: return "name resolution failed";
  case GW_HTTPS_ECONNECT: return "connection failed";
  case GW_HTTPS_ECERT: return "certificate verification failed";
  case GW_HTTPS_ETLS: return "TLS failure";
  case GW_HTTPS_ETIMEOUT: return "timed out";
  case GW_HTTPS_EPROTO: return "malformed HTTP response";
  case GW_HTTPS_ETOOBIG: return "response too large";
  case GW_HTTPS_ENOMEM: return "out of memory";
  case GW_HTTPS_EPROXY: return "proxy failure";
  case GW_HTTPS_ECLIENTCERT: return "client certificate required or refused";
  default: return "unknown error";
  }
}

/* ---- dates -------------------------------------------------------------- */

/* The wall clock in unix milliseconds (not the loop's monotonic time: it is
 * compared with the server's Date). */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gw_http_date_parse(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = s ? strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm) : NULL;
  if (!end || *end)
    return -1;
  return (int64_t)timegm(&tm);
}

static int64_t retry_after(const char *v) {
  if (!v)
    return -1;
  if (isdigit((unsigned char)*v)) {
    char *end;
    long long n = strtoll(v, &end, 10);
    return *end || n < 0 ? -1 : n;
  }
  int64_t when = gw_http_date_parse(v);
  if (when < 0)
    return -1;
  int64_t d = when - (int64_t)time(NULL);
  return d < 0 ? 0 : d;
}

/* ---- teardown ----------------------------------------------------------- */

static void req_free(gw_https_req *r) {
  if (r->request) {
    OPENSSL_cleanse(r->request, r->request_len);
    free(r->request);
  }
  if (r->body) {
    OPENSSL_cleanse(r->body, r->body_len);
    free(r->body);
  }
  for (int i = 0; i < H_COUNT_; i++)
    free(r->headers[i]);
  if (r->set_cookie) {
    OPENSSL_cleanse(r->set_cookie, r->set_cookie_len);
    free(r->set_cookie);
  }
  if (r->h2_out) {
    OPENSSL_cleanse(r->h2_out, r->h2_out_len);
    free(r->h2_out);
  }
  free(r->connect_head);
  nghttp2_session_del(r->h2);
  SSL_free(r->pssl);
  proxy_unref(r->proxy);
  if (r->addrs && r->addrs_ours)
    free(r->addrs);
  else if (r->addrs)
    uv_freeaddrinfo(r->addrs);
  SSL_free(r->ssl); /* frees both BIOs */
  SSL_CTX_free(r->ssl_ctx);
  free(r->client_cert);
  free(r->url_text);
  free(r);
}

static void maybe_free(gw_https_req *r) {
  if (r->finished && r->handles == 0 && !r->resolving)
    req_free(r);
}

static void on_handle_closed(uv_handle_t *h) {
  gw_https_req *r = h->data;
  r->handles--;
  maybe_free(r);
}

static void close_handles(gw_https_req *r) {
  if (r->resolving && r->lookup) { /* the resolver's: cancelled at once, no callback */
    r->resolver.cancel(r->resolver.ctx, r->lookup);
    r->lookup = NULL;
    r->resolving = false;
  } else if (r->resolving) {
    uv_cancel((uv_req_t *)&r->gai); /* its callback still runs, with UV_ECANCELED */
  }
  if (!uv_is_closing((uv_handle_t *)&r->timer))
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
  if (r->tcp_open && !uv_is_closing((uv_handle_t *)&r->tcp))
    uv_close((uv_handle_t *)&r->tcp, on_handle_closed);
}

/* Ends the request once: calls back (unless cancelled), closes, frees. */
static void finish(gw_https_req *r, int err, const char *detail) {
  if (r->finished)
    return;
  r->finished = true;
  uv_timer_stop(&r->timer);
  if (r->cb) {
    gw_https_response resp = {
        .status = r->parser.status_code,
        .body = r->body ? r->body : "",
        .body_len = r->body_len,
        .content_type = r->headers[H_CONTENT_TYPE],
        .retry_after_s = retry_after(r->headers[H_RETRY_AFTER]),
        .date = r->headers[H_DATE] ? gw_http_date_parse(r->headers[H_DATE]) : 0,
    };
    if (resp.date < 0)
      resp.date = 0;
    resp.location = r->headers[H_LOCATION];
    resp.tls_bytes_sent = r->bytes_up;
    resp.tls_bytes_received = r->bytes_down;
    resp.set_cookie = r->set_cookie;
    resp.sent_at_ms = r->sent_at_ms;
    resp.received_at_ms = r->received_at_ms;
    r->cb(err, err ? detail : NULL, err ? NULL : &resp, r->arg);
  }
  close_handles(r);
  maybe_free(r);
}

void gw_https_cancel(gw_https_req *r) {
  if (!r)
    return;
  r->cb = NULL;
  finish(r, GW_HTTPS_OK, NULL);
}

static void on_timeout(uv_timer_t *t) {
  gw_https_req *r = t->data;
  char detail[HTTPS_DETAIL_MAX];
  if (r->complete) /* lingering for the close: the response is all there */
    return finish(r, GW_HTTPS_OK, NULL);
  snprintf(detail, sizeof detail, "no complete response from %s:%u within %llu ms", r->url.host,
           r->url.port, (unsigned long long)r->timeout_ms);
  finish(r, GW_HTTPS_ETIMEOUT, detail);
}

/* ---- response parsing ---------------------------------------------------- */

static gw_https_req *req_of(llhttp_t *p) { return p->data; }

static int count_head(gw_https_req *r, size_t len) {
  r->head_bytes += len;
  return r->head_bytes > HTTPS_MAX_HEAD ? -1 : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  gw_https_req *r = req_of(p);
  if (count_head(r, len))
    return -1;
  size_t room = sizeof r->field - 1 - r->field_len;
  len = len < room ? len : room;
  memcpy(r->field + r->field_len, at, len);
  r->field_len += len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  gw_https_req *r = req_of(p);
  r->field[r->field_len] = '\0';
  r->field_len = 0;
  r->cur_header = H_NONE;
  for (int i = 0; i < H_COUNT_; i++)
    if (strcasecmp(r->field, wanted_headers[i]) == 0 && !r->headers[i])
      r->cur_header = i;
  if (strcasecmp(r->field, "set-cookie") == 0) {
    r->cur_header = H_SET_COOKIE;
    r->cookie_sep = r->set_cookie_len > 0; /* one value per line */
  }
  return 0;
}

/* Set-Cookie values, '\n'-separated. */
static int append_set_cookie(gw_https_req *r, const char *at, size_t len) {
  if (r->cookie_sep &&
      gw_append(&r->set_cookie, &r->set_cookie_len, "\n", 1, HTTPS_SET_COOKIE_MAX) != GW_APPEND_OK)
    return -1;
  r->cookie_sep = false;
  return gw_append(&r->set_cookie, &r->set_cookie_len, at, len, HTTPS_SET_COOKIE_MAX) ? -1 : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  gw_https_req *r = req_of(p);
  if (count_head(r, len))
    return -1;
  if (r->cur_header == H_NONE)
    return 0;
  if (r->cur_header == H_SET_COOKIE)
    return append_set_cookie(r, at, len);
  char **v = &r->headers[r->cur_header];
  size_t have = *v ? strlen(*v) : 0;
  return gw_append(v, &have, at, len, HTTPS_HEADER_VALUE_MAX) ? -1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  gw_https_req *r = req_of(p);
  int rc = gw_append(&r->body, &r->body_len, at, len, r->max_body);
  r->too_big |= rc == GW_APPEND_TOO_BIG;
  return rc ? -1 : 0;
}

static int on_message_complete(llhttp_t *p) {
  gw_https_req *r = req_of(p);
  if (p->status_code < 200) /* an interim 1xx: the real response follows */
    return 0;
  r->complete = true;
  r->received_at_ms = wall_ms();
  return HPE_PAUSED;
}

static const llhttp_settings_t response_settings = {
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds decrypted bytes to llhttp. */
static void feed(gw_https_req *r, const char *data, size_t len) {
  if (r->complete || r->finished)
    return;
  r->got_plaintext |= len > 0;
  llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
  if (r->complete) {
    if (!r->linger)
      finish(r, GW_HTTPS_OK, NULL);
  } else if (r->too_big)
    finish(r, GW_HTTPS_ETOOBIG, "response body over the size cap");
  else if (r->head_bytes > HTTPS_MAX_HEAD)
    finish(r, GW_HTTPS_ETOOBIG, "response head over the size cap");
  else if (e != HPE_OK)
    finish(r, GW_HTTPS_EPROTO, llhttp_errno_name(e));
}

static bool client_cert_failed(gw_https_req *r, const char *how);

/* The peer closed: a response delimited by close ends here. */
static void on_eof(gw_https_req *r) {
  if (r->finished)
    return;
  if (r->complete)
    return finish(r, GW_HTTPS_OK, NULL);
  if (client_cert_failed(r, "the server asked for a certificate, then closed the connection "
                             "before responding"))
    return;
  if (!r->handshake_done) {
    char detail[HTTPS_DETAIL_MAX];
    snprintf(detail, sizeof detail, "%s:%u closed the connection during the TLS handshake",
             r->url.host, r->url.port);
    return finish(r, GW_HTTPS_ETLS, detail);
  }
  llhttp_errno_t e = llhttp_finish(&r->parser);
  if (r->complete)
    finish(r, GW_HTTPS_OK, NULL);
  else
    finish(r, GW_HTTPS_EPROTO,
           e == HPE_OK ? "connection closed before the response was complete"
                       : llhttp_errno_name(e));
}

/* ---- network ------------------------------------------------------------- */

static void on_written(uv_write_t *w, int status) {
  write_chunk *c = (write_chunk *)w;
  gw_https_req *r = c->r;
  free(c);
  if (status < 0 && !r->finished)
    finish(r, GW_HTTPS_ECONNECT, uv_strerror(status));
}

/* Writes a copy of data[0..n) to the TCP connection. */
static int net_write(gw_https_req *r, const char *data, size_t n) {
  if (n == 0)
    return 0;
  write_chunk *c = malloc(sizeof *c + n);
  if (!c)
    return UV_ENOMEM;
  memcpy(c->data, data, n);
  c->r = r;
  uv_buf_t b = uv_buf_init(c->data, (unsigned)n);
  int err = uv_write(&c->w, (uv_stream_t *)&r->tcp, &b, 1, on_written);
  if (err)
    free(c);
  return err;
}

typedef int (*sink_fn)(gw_https_req *r, const char *data, size_t n);

/* Hands everything a TLS session queued in its write BIO to sink. */
static int drain_bio(gw_https_req *r, BIO *b, sink_fn sink) {
  char buf[HTTPS_READ_BUF];
  int n;
  while ((n = BIO_read(b, buf, sizeof buf)) > 0)
    if (sink(r, buf, (size_t)n) != 0)
      return -1;
  return 0;
}

/* Bytes for the proxy: under the proxy's TLS when it has one. */
static int proxy_send(gw_https_req *r, const char *data, size_t n) {
  if (!r->pssl)
    return net_write(r, data, n);
  ERR_clear_error();
  if (n && SSL_write(r->pssl, data, (int)n) <= 0)
    return -1;
  return drain_bio(r, r->pwbio, net_write);
}

static int h2_flush(gw_https_req *r) { return nghttp2_session_send(r->h2) == 0 ? 0 : -1; }

/* The server TLS's records into the tunnel (or straight to the server). */
static int tunnel_send(gw_https_req *r, const char *data, size_t n) {
  if (!r->h2)
    return proxy_send(r, data, n);
  size_t have = r->h2_out_len - r->h2_out_off;
  char *grown = malloc(have + n);
  if (!grown)
    return -1;
  if (r->h2_out) {
    memcpy(grown, r->h2_out + r->h2_out_off, have);
    free(r->h2_out);
  }
  memcpy(grown + have, data, n);
  r->h2_out = grown;
  r->h2_out_off = 0;
  r->h2_out_len = have + n;
  nghttp2_session_resume_data(r->h2, r->stream_id);
  return h2_flush(r);
}

static int tls_out(gw_https_req *r, const char *data, size_t n) {
  r->bytes_up += n;
  return tunnel_send(r, data, n);
}

/* Sends whatever the server TLS has queued. */
static int flush(gw_https_req *r) { return drain_bio(r, r->wbio, tls_out); }

/* Bytes from the server (through the tunnel) for its TLS session. */
static void tls_in(gw_https_req *r, const char *data, size_t n) {
  r->bytes_down += n;
  BIO_write(r->rbio, data, (int)n);
}

/* ---- server TLS ------------------------------------------------------------ */

/* Records what mutual TLS failures are told by: the server's
 * CertificateRequest and the alert it sent last. */
static void on_tls_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg) {
  gw_https_req *r = arg;
  const unsigned char *b = buf;
  if (write_p || len == 0)
    return;
  if (content_type == SSL3_RT_HANDSHAKE && b[0] == SSL3_MT_CERTIFICATE_REQUEST)
    r->cert_requested = true;
  else if (content_type == SSL3_RT_ALERT && len == 2 && b[1] != SSL_AD_CLOSE_NOTIFY)
    r->alert_received = b[1];
}

/* The name of an alert a server sends about the client's certificate
 * (RFC 8446 6.2; handshake_failure is what TLS 1.2 servers send for a
 * missing one), or NULL for any other alert. */
static const char *client_cert_alert(int a) {
  switch (a) {
  case SSL_AD_HANDSHAKE_FAILURE: return "handshake failure";
  case SSL_AD_BAD_CERTIFICATE: return "bad certificate";
  case SSL_AD_UNSUPPORTED_CERTIFICATE: return "unsupported certificate";
  case SSL_AD_CERTIFICATE_REVOKED: return "certificate revoked";
  case SSL_AD_CERTIFICATE_EXPIRED: return "certificate expired";
  case SSL_AD_CERTIFICATE_UNKNOWN: return "certificate unknown";
  case SSL_AD_UNKNOWN_CA: return "unknown CA";
  case SSL_AD_ACCESS_DENIED: return "access denied";
  case SSL_AD_CERTIFICATE_REQUIRED: return "certificate required";
  default: return NULL;
  }
}

/* Ends the request with GW_HTTPS_ECLIENTCERT when the server's failure is
 * about our client certificate: it asked for one and then sent a
 * certificate alert, or (how != NULL: the connection ended) hung up before
 * any response byte - from the client's side a TLS 1.3 handshake is over
 * before the server has checked the certificate, and a server may refuse
 * it by just closing. The message says whether a certificate was sent (its
 * file) and what to fix; never its contents. Returns false, doing nothing,
 * for any other failure. */
static bool client_cert_failed(gw_https_req *r, const char *how) {
  char detail[HTTPS_DETAIL_MAX], why[160];
  int a = r->alert_received;
  if (!r->ssl || r->got_plaintext)
    return false;
  if (a >= 0 ? !client_cert_alert(a) || (!r->cert_requested && a != SSL_AD_CERTIFICATE_REQUIRED)
             : !how || !r->cert_requested)
    return false;
  if (a >= 0)
    snprintf(why, sizeof why, "TLS alert: %s", client_cert_alert(a));
  else
    snprintf(why, sizeof why, "%s", how);
  if (!SSL_get_certificate(r->ssl))
    snprintf(detail, sizeof detail,
             "%s:%u requires a client certificate (mutual TLS) and none is configured (%s)",
             r->url.host, r->url.port, why);
  else
    snprintf(detail, sizeof detail,
             "%s:%u refused the client certificate %s (%s): it must be issued by a CA the server "
             "trusts, be valid now and allow TLS client authentication",
             r->url.host, r->url.port, r->client_cert ? r->client_cert : "", why);
  ERR_clear_error();
  finish(r, GW_HTTPS_ECLIENTCERT, detail);
  return true;
}

static void tls_failed(gw_https_req *r) {
  char detail[HTTPS_DETAIL_MAX], why[256];
  long vr = SSL_get_verify_result(r->ssl);
  if (vr != X509_V_OK) {
    snprintf(detail, sizeof detail, "certificate of %s:%u refused: %s", r->url.host, r->url.port,
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return finish(r, GW_HTTPS_ECERT, detail);
  }
  if (client_cert_failed(r, NULL))
    return;
  ssl_error_text(why, sizeof why);
  snprintf(detail, sizeof detail, "TLS with %s:%u failed: %s", r->url.host, r->url.port, why);
  finish(r, GW_HTTPS_ETLS, detail);
}

/* Advances the handshake, sends the request, reads what can be decrypted. */
static void pump(gw_https_req *r) {
  char buf[HTTPS_READ_BUF];
  ERR_clear_error();
  if (!r->handshake_done) {
    int rc = SSL_do_handshake(r->ssl);
    if (rc == 1) {
      r->handshake_done = true;
    } else if (SSL_get_error(r->ssl, rc) != SSL_ERROR_WANT_READ) {
      flush(r); /* an alert, if any */
      return tls_failed(r);
    }
  }
  if (r->handshake_done && !r->request_sent) {
    if (SSL_write(r->ssl, r->request, (int)r->request_len) <= 0)
      return tls_failed(r);
    r->request_sent = true;
    r->sent_at_ms = wall_ms();
  }
  while (r->handshake_done && !r->finished) {
    int n = SSL_read(r->ssl, buf, sizeof buf);
    if (n > 0) {
      feed(r, buf, (size_t)n);
      continue;
    }
    int e = SSL_get_error(r->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN)
      on_eof(r);
    else if (e != SSL_ERROR_WANT_READ)
      tls_failed(r);
    break;
  }
  OPENSSL_cleanse(buf, sizeof buf);
  if (!r->finished && flush(r) != 0)
    finish(r, GW_HTTPS_ECONNECT, "write failed");
}

/* Sets up TLS for the connected socket: SNI for names, and verification of
 * the URL's host name or IP address. */
static int start_tls(gw_https_req *r) {
  if (!(r->ssl = SSL_new(r->ssl_ctx)))
    return -1;
  r->rbio = BIO_new(BIO_s_mem());
  r->wbio = BIO_new(BIO_s_mem());
  if (!r->rbio || !r->wbio) {
    BIO_free(r->rbio);
    BIO_free(r->wbio);
    return -1;
  }
  SSL_set_bio(r->ssl, r->rbio, r->wbio);
  SSL_set_connect_state(r->ssl);
  SSL_set_verify(r->ssl, SSL_VERIFY_PEER, NULL);
  SSL_set_msg_callback(r->ssl, on_tls_msg);
  SSL_set_msg_callback_arg(r->ssl, r);
  if (r->url.host_is_ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), r->url.host) != 1)
      return -1;
  } else {
    SSL_set_hostflags(r->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(r->ssl, r->url.host) != 1 ||
        SSL_set_tlsext_host_name(r->ssl, r->url.host) != 1)
      return -1;
  }
  return 0;
}

/* The tunnel is up: the server TLS may start. */
static int tunnel_ready(gw_https_req *r) {
  r->tunnel_up = true;
  return start_tls(r);
}

/* ---- the proxy ------------------------------------------------------------- */

long gw_https_connect_response_parse(const char *buf, size_t len, size_t max_head, int *status) {
  size_t n = len < max_head ? len : max_head;
  const char *end = NULL;
  for (size_t i = 0; i + 3 < n; i++)
    if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
      end = buf + i + 4;
      break;
    }
  /* Refuse early what cannot become a status line. */
  static const char proto[] = "HTTP/1.";
  size_t check = n < sizeof proto - 1 ? n : sizeof proto - 1;
  if (memcmp(buf, proto, check) != 0)
    return -1;
  if (!end)
    return len >= max_head ? -1 : 0;
  /* HTTP/1.x SP 3DIGIT SP-or-CRLF */
  if (end - buf < 14 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ' ||
      !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
      !isdigit((unsigned char)buf[11]) || (buf[12] != ' ' && buf[12] != '\r'))
    return -1;
  *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
  return (long)(end - buf);
}

static void proxy_failed(gw_https_req *r, const char *what) {
  char detail[HTTPS_DETAIL_MAX];
  snprintf(detail, sizeof detail, "proxy %s:%u: %s", r->peer->host, r->peer->port, what);
  finish(r, GW_HTTPS_EPROXY, detail);
}

static void proxy_refused(gw_https_req *r, int status) {
  char what[512];
  snprintf(what, sizeof what, "CONNECT %s refused with status %d%s", r->authority, status,
           status == 403 ? " (not allowed by the gateway's rules, or limited service)" : "");
  proxy_failed(r, what);
}

/* HTTP/1.1 CONNECT: the proxy's answer, then tunnel bytes. */
static void h1_recv(gw_https_req *r, const char *data, size_t n) {
  if (r->tunnel_up) {
    tls_in(r, data, n);
    return;
  }
  char *grown = realloc(r->connect_head, r->connect_head_len + n);
  if (!grown)
    return finish(r, GW_HTTPS_ENOMEM, "out of memory");
  memcpy(grown + r->connect_head_len, data, n);
  r->connect_head = grown;
  r->connect_head_len += n;
  int status = 0;
  long head = gw_https_connect_response_parse(r->connect_head, r->connect_head_len,
                                              HTTPS_PROXY_HEAD_MAX, &status);
  if (head == 0)
    return;
  if (head < 0)
    return proxy_failed(r, "answered CONNECT with something that is not an HTTP/1.1 response");
  if (status < 200 || status > 299)
    return proxy_refused(r, status);
  if (tunnel_ready(r) != 0)
    return finish(r, GW_HTTPS_ENOMEM, "cannot set up TLS");
  if (r->connect_head_len > (size_t)head)
    tls_in(r, r->connect_head + head, r->connect_head_len - (size_t)head);
}

/* HTTP/2 CONNECT: one stream; its DATA frames are the tunnel. nghttp2's
 * callbacks only record and buffer; sending happens after mem_recv. */
static ssize_t h2_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                          void *ud) {
  return proxy_send(ud, (const char *)data, len) == 0 ? (ssize_t)len : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static ssize_t h2_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                          nghttp2_data_source *src, void *ud) {
  gw_https_req *r = ud;
  size_t have = r->h2_out_len - r->h2_out_off;
  if (have == 0)
    return NGHTTP2_ERR_DEFERRED; /* resumed by tunnel_send */
  if (len > have)
    len = have;
  memcpy(buf, r->h2_out + r->h2_out_off, len);
  r->h2_out_off += len;
  return (ssize_t)len;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud) {
  gw_https_req *r = ud;
  if (f->hd.stream_id == r->stream_id && namelen == 7 && memcmp(name, ":status", 7) == 0 &&
      valuelen == 3 && isdigit(value[0]) && isdigit(value[1]) && isdigit(value[2]))
    r->h2_status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
  return 0;
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  gw_https_req *r = ud;
  if (f->hd.stream_id != r->stream_id || f->hd.type != NGHTTP2_HEADERS || r->tunnel_up)
    return 0;
  if (r->h2_status >= 200 && r->h2_status <= 299 && tunnel_ready(r) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *ud) {
  gw_https_req *r = ud;
  if (id == r->stream_id && r->tunnel_up)
    tls_in(r, (const char *)data, len);
  return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
  gw_https_req *r = ud;
  if (id == r->stream_id)
    r->tunnel_eof = true;
  return 0;
}

static void h2_recv(gw_https_req *r, const char *data, size_t n) {
  char what[128];
  ssize_t rc = nghttp2_session_mem_recv(r->h2, (const uint8_t *)data, n);
  if (rc < 0) {
    snprintf(what, sizeof what, "HTTP/2: %s", nghttp2_strerror((int)rc));
    return proxy_failed(r, what);
  }
  if (!r->tunnel_up && r->h2_status && (r->h2_status < 200 || r->h2_status > 299))
    return proxy_refused(r, r->h2_status);
  if (!r->tunnel_up && r->tunnel_eof)
    return proxy_failed(r, "closed the CONNECT stream without an answer");
}

static int h2_start(gw_https_req *r) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return -1;
  nghttp2_session_callbacks_set_send_callback(cbs, h2_send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
  int rc = nghttp2_session_client_new(&r->h2, cbs, r);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0)
    return -1;
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  if (nghttp2_submit_settings(r->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0)
    return -1;
  /* RFC 9113 8.5: only :method and :authority. */
  nghttp2_nv nva[] = {
      {(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)":authority", (uint8_t *)r->authority, 10, strlen(r->authority),
       NGHTTP2_NV_FLAG_NONE},
  };
  nghttp2_data_provider prd = {.source.ptr = r, .read_callback = h2_read_cb};
  r->stream_id = nghttp2_submit_request(r->h2, NULL, nva, 2, &prd, r);
  if (r->stream_id < 0)
    return -1;
  return h2_flush(r);
}

/* The proxy is reachable (and its TLS verified): ask for the tunnel. */
static void proxy_start(gw_https_req *r) {
  if (r->proxy->kind == VIA_H2) {
    if (h2_start(r) != 0)
      proxy_failed(r, "cannot start the HTTP/2 session");
    return;
  }
  char head[2 * sizeof r->authority + 128];
  int n = snprintf(head, sizeof head,
                   "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mcgw/" MCGW_VERSION "\r\n\r\n",
                   r->authority, r->authority);
  if (proxy_send(r, head, (size_t)n) != 0)
    proxy_failed(r, "cannot send CONNECT");
}

static void proxy_tls_failed(gw_https_req *r) {
  char detail[HTTPS_DETAIL_MAX], why[256];
  long vr = SSL_get_verify_result(r->pssl);
  if (vr != X509_V_OK) {
    snprintf(detail, sizeof detail, "certificate of proxy %s:%u refused: %s", r->peer->host,
             r->peer->port, X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return finish(r, GW_HTTPS_ECERT, detail);
  }
  ssl_error_text(why, sizeof why);
  snprintf(detail, sizeof detail, "TLS with proxy %s:%u failed: %s", r->peer->host, r->peer->port,
           why);
  finish(r, GW_HTTPS_ETLS, detail);
}

static int start_proxy_tls(gw_https_req *r) {
  const gw_url *u = r->peer;
  if (!(r->pssl = SSL_new(r->proxy->ssl_ctx)))
    return -1;
  r->prbio = BIO_new(BIO_s_mem());
  r->pwbio = BIO_new(BIO_s_mem());
  if (!r->prbio || !r->pwbio) {
    BIO_free(r->prbio);
    BIO_free(r->pwbio);
    return -1;
  }
  SSL_set_bio(r->pssl, r->prbio, r->pwbio);
  SSL_set_connect_state(r->pssl);
  if (u->host_is_ip)
    return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->pssl), u->host) == 1 ? 0 : -1;
  SSL_set_hostflags(r->pssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return SSL_set1_host(r->pssl, u->host) == 1 && SSL_set_tlsext_host_name(r->pssl, u->host) == 1
             ? 0
             : -1;
}

static void tunnel_recv(gw_https_req *r, const char *data, size_t n) {
  if (!r->proxy)
    tls_in(r, data, n);
  else if (r->proxy->kind == VIA_H1)
    h1_recv(r, data, n);
  else
    h2_recv(r, data, n);
}

/* The proxy's TLS: handshake (then the CONNECT), then its plaintext, which
 * is the tunnel protocol. */
static void proxy_tls_step(gw_https_req *r) {
  char buf[HTTPS_READ_BUF];
  ERR_clear_error();
  if (!r->phandshake_done) {
    int rc = SSL_do_handshake(r->pssl);
    if (rc != 1) {
      drain_bio(r, r->pwbio, net_write);
      if (SSL_get_error(r->pssl, rc) != SSL_ERROR_WANT_READ)
        proxy_tls_failed(r);
      return;
    }
    r->phandshake_done = true;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(r->pssl, &alpn, &alpn_len);
    if (r->proxy->kind == VIA_H2 && !(alpn_len == 2 && memcmp(alpn, "h2", 2) == 0))
      return proxy_failed(r, "did not negotiate HTTP/2 (ALPN h2)");
    proxy_start(r);
  }
  while (!r->finished) {
    int n = SSL_read(r->pssl, buf, sizeof buf);
    if (n > 0) {
      tunnel_recv(r, buf, (size_t)n);
      continue;
    }
    int e = SSL_get_error(r->pssl, n);
    if (e == SSL_ERROR_ZERO_RETURN)
      r->tunnel_eof = true;
    else if (e != SSL_ERROR_WANT_READ)
      proxy_tls_failed(r);
    break;
  }
  if (!r->finished && drain_bio(r, r->pwbio, net_write) != 0)
    finish(r, GW_HTTPS_ECONNECT, "write failed");
}

/* After new bytes went in at the bottom: run the server TLS, then send what
 * the layers below queued. */
static void advance(gw_https_req *r) {
  if (!r->finished && r->tunnel_up)
    pump(r);
  if (!r->finished && r->tunnel_eof)
    on_eof(r);
  if (!r->finished && r->h2 && h2_flush(r) != 0)
    proxy_failed(r, "HTTP/2 send failed");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[HTTPS_READ_BUF]; /* one loop thread; consumed at once */
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  gw_https_req *r = s->data;
  if (r->finished)
    return;
  if (nread == UV_EOF && r->proxy && !r->tunnel_up)
    return proxy_failed(r, "closed the connection before the tunnel was up");
  if (nread == UV_EOF)
    return on_eof(r);
  if (nread < 0) {
    char detail[HTTPS_DETAIL_MAX];
    if (client_cert_failed(r, "the server asked for a certificate, then reset the connection "
                             "before responding"))
      return;
    snprintf(detail, sizeof detail, "%s:%u: %s", r->peer->host, r->peer->port,
             uv_strerror((int)nread));
    return finish(r, r->handshake_done ? GW_HTTPS_EPROTO : GW_HTTPS_ETLS, detail);
  }
  if (nread == 0)
    return;
  if (r->pssl) {
    BIO_write(r->prbio, buf->base, (int)nread);
    proxy_tls_step(r);
  } else {
    tunnel_recv(r, buf->base, (size_t)nread);
  }
  advance(r);
}

/* ---- connect ------------------------------------------------------------- */

static void try_next_address(gw_https_req *r);

/* A failed attempt's socket is closed before the next address is tried:
 * the handle is reused, so it must be fully closed first. */
static void on_failed_tcp_closed(uv_handle_t *h) {
  gw_https_req *r = h->data;
  r->handles--;
  r->tcp_open = false;
  if (r->finished)
    maybe_free(r);
  else
    try_next_address(r);
}

static void on_connect(uv_connect_t *c, int status) {
  gw_https_req *r = c->data;
  if (r->finished)
    return;
  if (status < 0) {
    r->last_connect_err = status;
    uv_close((uv_handle_t *)&r->tcp, on_failed_tcp_closed);
    return;
  }
  r->connected = true;
  uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  if (!r->proxy) {
    if (tunnel_ready(r) != 0)
      return finish(r, GW_HTTPS_ENOMEM, "cannot set up TLS");
    return pump(r);
  }
  if (!r->proxy->ssl_ctx)
    return proxy_start(r);
  if (start_proxy_tls(r) != 0)
    return finish(r, GW_HTTPS_ENOMEM, "cannot set up TLS");
  proxy_tls_step(r);
}

/* The TCP handle for the next attempt: with the socket hook, its socket is
 * made now (uv_tcp_init_ex) so the hook can set it up before connect. */
/* *inited: whether the handle exists (to be closed) whatever the result. */
static int tcp_for(gw_https_req *r, int family, bool *inited) {
  *inited = false;
  int err = r->socket_setup ? uv_tcp_init_ex(r->loop, &r->tcp, (unsigned)family)
                            : uv_tcp_init(r->loop, &r->tcp);
  if (err)
    return err;
  *inited = true;
  uv_os_fd_t fd;
  if (r->socket_setup && (err = uv_fileno((uv_handle_t *)&r->tcp, &fd)) == 0)
    err = r->socket_setup(r->socket_arg, fd, family);
  return err;
}

static void try_next_address(gw_https_req *r) {
  char detail[HTTPS_DETAIL_MAX];
  if (!r->next_addr) {
    snprintf(detail, sizeof detail, "cannot connect to %s%s:%u: %s", r->proxy ? "proxy " : "",
             r->peer->host, r->peer->port,
             uv_strerror(r->last_connect_err ? r->last_connect_err : UV_ECONNREFUSED));
    return finish(r, GW_HTTPS_ECONNECT, detail);
  }
  struct addrinfo *ai = r->next_addr;
  r->next_addr = ai->ai_next;
  bool inited;
  int err = tcp_for(r, ai->ai_family, &inited);
  if (!inited) {
    r->last_connect_err = err;
    return try_next_address(r);
  }
  r->tcp.data = r;
  r->tcp_open = true;
  r->handles++;
  r->connect_req.data = r;
  if (err == 0)
    err = uv_tcp_connect(&r->connect_req, &r->tcp, ai->ai_addr, on_connect);
  if (err)
    on_connect(&r->connect_req, err);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
  gw_https_req *r = g->data;
  r->resolving = false;
  if (r->finished) {
    if (res)
      uv_freeaddrinfo(res);
    return maybe_free(r);
  }
  if (status < 0) {
    char detail[HTTPS_DETAIL_MAX];
    snprintf(detail, sizeof detail, "cannot resolve %s: %s", r->peer->host, uv_strerror(status));
    return finish(r, GW_HTTPS_ERESOLVE, detail);
  }
  r->addrs = r->next_addr = res;
  try_next_address(r);
}

/* The resolver's answer as an addrinfo list in one block, ports set. */
static struct addrinfo *addr_list(const struct sockaddr_storage *addrs, size_t n, uint16_t port) {
  struct addrinfo *ai = calloc(n, sizeof(*ai) + sizeof(*addrs));
  if (!ai)
    return NULL;
  struct sockaddr_storage *ss = (struct sockaddr_storage *)(ai + n);
  for (size_t i = 0; i < n; i++) {
    ss[i] = addrs[i];
    ai[i].ai_family = ss[i].ss_family;
    ai[i].ai_addr = (struct sockaddr *)&ss[i];
    if (ss[i].ss_family == AF_INET) {
      ((struct sockaddr_in *)&ss[i])->sin_port = htons(port);
      ai[i].ai_addrlen = sizeof(struct sockaddr_in);
    } else {
      ((struct sockaddr_in6 *)&ss[i])->sin6_port = htons(port);
      ai[i].ai_addrlen = sizeof(struct sockaddr_in6);
    }
    ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
  }
  return ai;
}

static void on_resolver_done(void *arg, const char *err, const struct sockaddr_storage *addrs,
                             size_t n) {
  gw_https_req *r = arg;
  char detail[HTTPS_DETAIL_MAX];
  r->resolving = false;
  r->lookup = NULL;
  if (err || n == 0) {
    snprintf(detail, sizeof detail, "cannot resolve %s: %s", r->peer->host,
             err ? err : "no address");
    return finish(r, GW_HTTPS_ERESOLVE, detail);
  }
  if (!(r->addrs = r->next_addr = addr_list(addrs, n, r->peer->port)))
    return finish(r, GW_HTTPS_ENOMEM, "out of memory");
  r->addrs_ours = true;
  try_next_address(r);
}

void gw_https_ctx_set_resolver(gw_https_ctx *c, const gw_https_resolver *r) {
  c->resolver = *r;
}

void gw_https_ctx_set_socket_setup(gw_https_ctx *c, gw_https_socket_fn setup, void *arg) {
  c->socket_setup = setup;
  c->socket_arg = arg;
}


/* Starts the lookup of the peer: the context's resolver, else getaddrinfo.
 * 0, or non-zero when it cannot start. */
static int start_resolve(gw_https_req *r) {
  if (r->resolver.start) {
    r->lookup = r->resolver.start(r->resolver.ctx, r->peer->host, on_resolver_done, r);
    return r->lookup ? 0 : -1;
  }
  char port[8];
  snprintf(port, sizeof port, "%u", r->peer->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = r->peer->host_is_ip ? AI_NUMERICHOST : AI_ADDRCONFIG};
  r->gai.data = r;
  return uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->peer->host, port, &hints);
}

/* ---- request ------------------------------------------------------------- */

static int build_request(gw_https_req *r, const gw_https_request_opts *o) {
  char host[GW_URL_HOST_MAX + 16];
  int n = r->url.host_is_v6 ? snprintf(host, sizeof host, "[%s]", r->url.host)
                            : snprintf(host, sizeof host, "%s", r->url.host);
  if (r->url.port != 443)
    snprintf(host + n, sizeof host - (size_t)n, ":%u", r->url.port);
  size_t cap = strlen(r->url.target) + strlen(host) + o->body_len + 512 +
               (o->authorization ? strlen(o->authorization) : 0) +
               (o->content_type ? strlen(o->content_type) : 0) +
               (o->accept ? strlen(o->accept) : 0) + (o->cookie ? strlen(o->cookie) : 0);
  if (!(r->request = malloc(cap)))
    return -1;
  int len = snprintf(r->request, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mcgw/" MCGW_VERSION
                     "\r\nAccept: %s\r\nConnection: close\r\n",
                     o->method, r->url.target, host, o->accept ? o->accept : "application/json");
  if (o->cookie)
    len += snprintf(r->request + len, cap - (size_t)len, "Cookie: %s\r\n", o->cookie);
  if (o->authorization)
    len += snprintf(r->request + len, cap - (size_t)len, "Authorization: %s\r\n", o->authorization);
  if (o->body)
    len += snprintf(
        r->request + len, cap - (size_t)len, "Content-Type: %s\r\nContent-Length: %zu\r\n",
        o->content_type ? o->content_type : "application/x-www-form-urlencoded", o->body_len);
  len += snprintf(r->request + len, cap - (size_t)len, "\r\n");
  if (o->body) {
    memcpy(r->request + len, o->body, o->body_len);
    len += (int)o->body_len;
  }
  r->request_len = (size_t)len;
  return 0;
}

int gw_https_request(uv_loop_t *loop, gw_https_ctx *ctx, const gw_https_request_opts *o,
                     gw_https_cb cb, void *arg, gw_https_req **out) {
  const char *why = NULL;
  gw_https_req *r = calloc(1, sizeof *r);
  if (!r)
    return GW_HTTPS_ENOMEM;
  if (!(r->url_text = strdup(o->url))) {
    free(r);
    return GW_HTTPS_ENOMEM;
  }
  if (gw_url_parse(r->url_text, &r->url, &why) != 0 || !r->url.https) {
    free(r->url_text);
    free(r);
    return GW_HTTPS_EURL;
  }
  if (build_request(r, o) != 0) {
    free(r->url_text);
    free(r);
    return GW_HTTPS_ENOMEM;
  }
  if (ctx->client_cert && !(r->client_cert = strdup(ctx->client_cert))) {
    OPENSSL_cleanse(r->request, r->request_len);
    free(r->request);
    free(r->url_text);
    free(r);
    return GW_HTTPS_ENOMEM;
  }
  SSL_CTX_up_ref(ctx->ssl_ctx);
  r->ssl_ctx = ctx->ssl_ctx;
  r->loop = loop;
  r->cb = cb;
  r->arg = arg;
  r->timeout_ms = o->timeout_ms ? o->timeout_ms : HTTPS_DEFAULT_TIMEOUT_MS;
  r->max_body = o->max_body ? o->max_body : HTTPS_DEFAULT_MAX_BODY;
  r->linger = o->linger;
  r->cur_header = H_NONE;
  r->alert_received = -1;
  llhttp_init(&r->parser, HTTP_RESPONSE, &response_settings);
  r->parser.data = r;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->handles = 1;
  r->peer = &r->url;
  if (ctx->proxy) {
    r->proxy = ctx->proxy;
    r->proxy->refs++;
    r->peer = &r->proxy->url;
    snprintf(r->authority, sizeof r->authority, r->url.host_is_v6 ? "[%s]:%u" : "%s:%u",
             r->url.host, r->url.port);
  }
  r->resolver = ctx->resolver;
  r->socket_setup = ctx->socket_setup;
  r->socket_arg = ctx->socket_arg;
  int err = start_resolve(r);
  if (err) {
    r->finished = true; /* no callback: the caller gets the error */
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    return GW_HTTPS_ERESOLVE;
  }
  r->resolving = true;
  uv_timer_start(&r->timer, on_timeout, r->timeout_ms, 0);
  if (out)
    *out = r;
  return 0;
}
