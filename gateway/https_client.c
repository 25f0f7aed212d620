/* Asynchronous HTTPS client. See https_client.h.
 *
 * Life of a request: resolve (uv_getaddrinfo) -> connect to each address in
 * turn -> TLS handshake through memory BIOs -> write the request -> parse the
 * response with llhttp -> finish() calls back once -> every handle closes ->
 * free. finish() is the only place that ends a request; a cancelled request
 * goes the same way without the callback. */
#include "gateway/https_client.h"

#include <ctype.h>
#include <llhttp.h>
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

struct gw_https_ctx {
  SSL_CTX *ssl_ctx;
};

enum { H_NONE = -1, H_CONTENT_TYPE = 0, H_RETRY_AFTER, H_DATE, H_COUNT_ };
static const char *const wanted_headers[H_COUNT_] = {"content-type", "retry-after", "date"};

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
  int last_connect_err;
  bool resolving, tcp_open, connected;
  int handles; /* open uv handles */

  SSL *ssl;
  BIO *rbio, *wbio; /* network -> TLS, TLS -> network */
  bool handshake_done, request_sent;

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
  return c;
}

void gw_https_ctx_free(gw_https_ctx *c) {
  if (!c)
    return;
  SSL_CTX_free(c->ssl_ctx);
  free(c);
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
  default: return "unknown error";
  }
}

/* ---- dates -------------------------------------------------------------- */

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
  if (r->addrs)
    uv_freeaddrinfo(r->addrs);
  SSL_free(r->ssl); /* frees both BIOs */
  SSL_CTX_free(r->ssl_ctx);
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
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->gai); /* its callback still runs, with UV_ECANCELED */
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
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  gw_https_req *r = req_of(p);
  if (count_head(r, len))
    return -1;
  if (r->cur_header == H_NONE)
    return 0;
  char **v = &r->headers[r->cur_header];
  size_t have = *v ? strlen(*v) : 0;
  if (have + len > HTTPS_HEADER_VALUE_MAX)
    return -1;
  char *grown = realloc(*v, have + len + 1);
  if (!grown)
    return -1;
  memcpy(grown + have, at, len);
  grown[have + len] = '\0';
  *v = grown;
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  gw_https_req *r = req_of(p);
  if (r->body_len + len > r->max_body) {
    r->too_big = true;
    return -1;
  }
  char *grown = realloc(r->body, r->body_len + len + 1);
  if (!grown)
    return -1;
  memcpy(grown + r->body_len, at, len);
  r->body_len += len;
  grown[r->body_len] = '\0';
  r->body = grown;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  gw_https_req *r = req_of(p);
  if (p->status_code < 200) /* an interim 1xx: the real response follows */
    return 0;
  r->complete = true;
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
  llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
  if (r->complete)
    finish(r, GW_HTTPS_OK, NULL);
  else if (r->too_big)
    finish(r, GW_HTTPS_ETOOBIG, "response body over the size cap");
  else if (r->head_bytes > HTTPS_MAX_HEAD)
    finish(r, GW_HTTPS_ETOOBIG, "response head over the size cap");
  else if (e != HPE_OK)
    finish(r, GW_HTTPS_EPROTO, llhttp_errno_name(e));
}

/* The peer closed: a response delimited by close ends here. */
static void on_eof(gw_https_req *r) {
  if (r->finished)
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

/* ---- TLS pump ------------------------------------------------------------ */

static void on_written(uv_write_t *w, int status) {
  write_chunk *c = (write_chunk *)w;
  gw_https_req *r = c->r;
  free(c);
  if (status < 0 && !r->finished)
    finish(r, GW_HTTPS_ECONNECT, uv_strerror(status));
}

/* Sends whatever TLS has queued for the network. */
static int flush(gw_https_req *r) {
  size_t n = BIO_ctrl_pending(r->wbio);
  if (n == 0)
    return 0;
  write_chunk *c = malloc(sizeof *c + n);
  if (!c)
    return UV_ENOMEM;
  int got = BIO_read(r->wbio, c->data, (int)n);
  if (got <= 0) {
    free(c);
    return 0;
  }
  c->r = r;
  uv_buf_t b = uv_buf_init(c->data, (unsigned)got);
  int err = uv_write(&c->w, (uv_stream_t *)&r->tcp, &b, 1, on_written);
  if (err)
    free(c);
  return err;
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

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[HTTPS_READ_BUF]; /* one loop thread; consumed at once */
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  gw_https_req *r = s->data;
  if (r->finished)
    return;
  if (nread == UV_EOF)
    return on_eof(r);
  if (nread < 0) {
    char detail[HTTPS_DETAIL_MAX];
    snprintf(detail, sizeof detail, "%s:%u: %s", r->url.host, r->url.port, uv_strerror((int)nread));
    return finish(r, r->handshake_done ? GW_HTTPS_EPROTO : GW_HTTPS_ETLS, detail);
  }
  if (nread > 0) {
    BIO_write(r->rbio, buf->base, (int)nread);
    pump(r);
  }
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
  if (start_tls(r) != 0)
    return finish(r, GW_HTTPS_ENOMEM, "cannot set up TLS");
  uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  pump(r);
}

static void try_next_address(gw_https_req *r) {
  char detail[HTTPS_DETAIL_MAX];
  if (!r->next_addr) {
    snprintf(detail, sizeof detail, "cannot connect to %s:%u: %s", r->url.host, r->url.port,
             uv_strerror(r->last_connect_err ? r->last_connect_err : UV_ECONNREFUSED));
    return finish(r, GW_HTTPS_ECONNECT, detail);
  }
  struct addrinfo *ai = r->next_addr;
  r->next_addr = ai->ai_next;
  uv_tcp_init(r->loop, &r->tcp);
  r->tcp.data = r;
  r->tcp_open = true;
  r->handles++;
  r->connect_req.data = r;
  int err = uv_tcp_connect(&r->connect_req, &r->tcp, ai->ai_addr, on_connect);
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
    snprintf(detail, sizeof detail, "cannot resolve %s: %s", r->url.host, uv_strerror(status));
    return finish(r, GW_HTTPS_ERESOLVE, detail);
  }
  r->addrs = r->next_addr = res;
  try_next_address(r);
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
               (o->content_type ? strlen(o->content_type) : 0);
  if (!(r->request = malloc(cap)))
    return -1;
  int len = snprintf(r->request, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mcgw/" MCGW_VERSION
                     "\r\nAccept: application/json\r\nConnection: close\r\n",
                     o->method, r->url.target, host);
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
  SSL_CTX_up_ref(ctx->ssl_ctx);
  r->ssl_ctx = ctx->ssl_ctx;
  r->loop = loop;
  r->cb = cb;
  r->arg = arg;
  r->timeout_ms = o->timeout_ms ? o->timeout_ms : HTTPS_DEFAULT_TIMEOUT_MS;
  r->max_body = o->max_body ? o->max_body : HTTPS_DEFAULT_MAX_BODY;
  r->cur_header = H_NONE;
  llhttp_init(&r->parser, HTTP_RESPONSE, &response_settings);
  r->parser.data = r;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->handles = 1;
  char port[8];
  snprintf(port, sizeof port, "%u", r->url.port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = r->url.host_is_ip ? AI_NUMERICHOST : AI_ADDRCONFIG};
  r->gai.data = r;
  int err = uv_getaddrinfo(loop, &r->gai, on_resolved, r->url.host, port, &hints);
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
