/* Asynchronous HTTPS client. See https_client.h.
 *
 * Life of a request: resolve (the context's resolver, else uv_getaddrinfo;
 * either asks for AAAA and A at once) -> race connection attempts to the
 * addresses (Happy Eyeballs v2, https_connect.c) -> TLS handshake through
 * memory BIOs -> write the request -> parse the response with llhttp -> finish() calls back once -> every handle closes ->
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
 * records; upward, tunnel_recv() hands tunnel bytes to the server TLS's read
 * BIO and pump() runs once per network read. The server TLS starts only once
 * the tunnel is up. The proxy's part (used by mcx-login only: the daemon never
 * sets a proxy) is https_proxy.c; https_internal.h is what the two share. */
#include "csc1/https_client.h"

#include "csc1/append.h"

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
#include <unistd.h>

#include "csc1/https_connect.h"
#include "csc1/https_internal.h"
#include "csc1/url.h"

static const char *const wanted_headers[H_COUNT_] = {"content-type", "retry-after", "date",
                                                     "location"};

typedef struct write_chunk {
  uv_write_t w;
  csc1_https_req *r;
  char data[];
} write_chunk;

/* ---- context ------------------------------------------------------------ */

void csc1__https_ssl_error_text(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (e)
    ERR_error_string_n(e, buf, len);
  else
    snprintf(buf, len, "unknown error");
  ERR_clear_error();
}

csc1_https_ctx *csc1_https_ctx_new(const char *ca_file, const char *cert, const char *key,
                                   char *err, size_t errlen) {
  char why[256];
  csc1_https_ctx *c = calloc(1, sizeof *c);
  if (!c || !(c->ssl_ctx = SSL_CTX_new(TLS_client_method()))) {
    snprintf(err, errlen, "out of memory");
    free(c);
    return NULL;
  }
  c->attempt_delay_ms = HTTPS_DEFAULT_ATTEMPT_DELAY_MS;
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
  if (!ok) {
    csc1__https_ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load trust anchors %s: %s", ca_file ? ca_file : "(system)", why);
    csc1_https_ctx_free(c);
    return NULL;
  }
  if (cert && key &&
      (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert) != 1 ||
       SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key, SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(c->ssl_ctx) != 1)) {
    csc1__https_ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load client certificate %s / key %s: %s", cert, key, why);
    csc1_https_ctx_free(c);
    return NULL;
  }
  if (cert && key && !(c->client_cert = strdup(cert))) {
    snprintf(err, errlen, "out of memory");
    csc1_https_ctx_free(c);
    return NULL;
  }
  return c;
}

void csc1_https_ctx_free(csc1_https_ctx *c) {
  if (!c)
    return;
  SSL_CTX_free(c->ssl_ctx);
  csc1__https_proxy_unref(c->proxy);
  free(c->client_cert);
  free(c);
}

const char *csc1_https_strerror(int err) {
  switch (err) {
  case CSC1_HTTPS_OK:
    return "ok";
  case CSC1_HTTPS_EURL:
    return "bad URL";
  case CSC1_HTTPS_ERESOLVE:
    return "name resolution failed";
  case CSC1_HTTPS_ECONNECT:
    return "connection failed";
  case CSC1_HTTPS_ECERT:
    return "certificate verification failed";
  case CSC1_HTTPS_ETLS:
    return "TLS failure";
  case CSC1_HTTPS_ETIMEOUT:
    return "timed out";
  case CSC1_HTTPS_EPROTO:
    return "malformed HTTP response";
  case CSC1_HTTPS_ETOOBIG:
    return "response too large";
  case CSC1_HTTPS_ENOMEM:
    return "out of memory";
  case CSC1_HTTPS_EPROXY:
    return "proxy failure";
  case CSC1_HTTPS_ECLIENTCERT:
    return "client certificate required or refused";
  default:
    return "unknown error";
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

int64_t csc1_http_date_parse(const char *s) {
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
  int64_t when = csc1_http_date_parse(v);
  if (when < 0)
    return -1;
  int64_t d = when - (int64_t)time(NULL);
  return d < 0 ? 0 : d;
}

/* ---- teardown ----------------------------------------------------------- */

static void req_free(csc1_https_req *r) {
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
  csc1__https_proxy_unref(r->proxy);
  SSL_free(r->ssl); /* frees both BIOs */
  SSL_CTX_free(r->ssl_ctx);
  free(r->client_cert);
  free(r->url_text);
  free(r);
}

static void maybe_free(csc1_https_req *r) {
  if (r->finished && r->handles == 0 && !r->resolving)
    req_free(r);
}

static void on_handle_closed(uv_handle_t *h) {
  csc1_https_req *r = h->data;
  r->handles--;
  maybe_free(r);
}

static void close_handles(csc1_https_req *r) {
  if (r->resolving && r->lookup) { /* the resolver's: cancelled at once, no callback */
    r->resolver.cancel(r->resolver.ctx, r->lookup);
    r->lookup = NULL;
    r->resolving = false;
  } else if (r->resolving) {
    uv_cancel((uv_req_t *)&r->gai); /* its callback still runs, with UV_ECANCELED */
  }
  csc1__race_cancel(r->race); /* its attempts close; it frees itself */
  r->race = NULL;
  if (!uv_is_closing((uv_handle_t *)&r->timer))
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
  if (r->tcp_open && !uv_is_closing((uv_handle_t *)&r->tcp))
    uv_close((uv_handle_t *)&r->tcp, on_handle_closed);
}

/* Ends the request once: calls back (unless cancelled), closes, frees. */
void csc1__https_finish(csc1_https_req *r, int err, const char *detail) {
  if (r->finished)
    return;
  r->finished = true;
  uv_timer_stop(&r->timer);
  if (r->cb) {
    csc1_https_response resp = {
        .status = r->parser.status_code,
        .body = r->body ? r->body : "",
        .body_len = r->body_len,
        .content_type = r->headers[H_CONTENT_TYPE],
        .retry_after_s = retry_after(r->headers[H_RETRY_AFTER]),
        .date = r->headers[H_DATE] ? csc1_http_date_parse(r->headers[H_DATE]) : 0,
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

void csc1_https_cancel(csc1_https_req *r) {
  if (!r)
    return;
  r->cb = NULL;
  csc1__https_finish(r, CSC1_HTTPS_OK, NULL);
}

static void on_timeout(uv_timer_t *t) {
  csc1_https_req *r = t->data;
  char detail[HTTPS_DETAIL_MAX];
  if (r->complete) { /* lingering for the close: the response is all there */
    csc1__https_finish(r, CSC1_HTTPS_OK, NULL);
    return;
  }
  snprintf(detail, sizeof detail, "no complete response from %s:%u within %llu ms", r->url.host,
           r->url.port, (unsigned long long)r->timeout_ms);
  csc1__https_finish(r, CSC1_HTTPS_ETIMEOUT, detail);
}

/* ---- response parsing ---------------------------------------------------- */

static csc1_https_req *req_of(llhttp_t *p) { return p->data; }

static int count_head(csc1_https_req *r, size_t len) {
  r->head_bytes += len;
  return r->head_bytes > HTTPS_MAX_HEAD ? -1 : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  csc1_https_req *r = req_of(p);
  if (count_head(r, len))
    return -1;
  size_t room = sizeof r->field - 1 - r->field_len;
  len = len < room ? len : room;
  memcpy(r->field + r->field_len, at, len);
  r->field_len += len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  csc1_https_req *r = req_of(p);
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
static int append_set_cookie(csc1_https_req *r, const char *at, size_t len) {
  if (r->cookie_sep && csc1_append(&r->set_cookie, &r->set_cookie_len, "\n", 1,
                                   HTTPS_SET_COOKIE_MAX) != CSC1_APPEND_OK)
    return -1;
  r->cookie_sep = false;
  return csc1_append(&r->set_cookie, &r->set_cookie_len, at, len, HTTPS_SET_COOKIE_MAX) ? -1 : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  csc1_https_req *r = req_of(p);
  if (count_head(r, len))
    return -1;
  if (r->cur_header == H_NONE)
    return 0;
  if (r->cur_header == H_SET_COOKIE)
    return append_set_cookie(r, at, len);
  char **v = &r->headers[r->cur_header];
  size_t have = *v ? strlen(*v) : 0;
  return csc1_append(v, &have, at, len, HTTPS_HEADER_VALUE_MAX) ? -1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  csc1_https_req *r = req_of(p);
  int rc = csc1_append(&r->body, &r->body_len, at, len, r->max_body);
  r->too_big |= rc == CSC1_APPEND_TOO_BIG;
  return rc ? -1 : 0;
}

static int on_message_complete(llhttp_t *p) {
  csc1_https_req *r = req_of(p);
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
static void feed(csc1_https_req *r, const char *data, size_t len) {
  if (r->complete || r->finished)
    return;
  r->got_plaintext |= len > 0;
  llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
  if (r->complete) {
    if (!r->linger)
      csc1__https_finish(r, CSC1_HTTPS_OK, NULL);
  } else if (r->too_big)
    csc1__https_finish(r, CSC1_HTTPS_ETOOBIG, "response body over the size cap");
  else if (r->head_bytes > HTTPS_MAX_HEAD)
    csc1__https_finish(r, CSC1_HTTPS_ETOOBIG, "response head over the size cap");
  else if (e != HPE_OK)
    csc1__https_finish(r, CSC1_HTTPS_EPROTO, llhttp_errno_name(e));
}

static bool client_cert_failed(csc1_https_req *r, const char *how);

/* The peer closed: a response delimited by close ends here. */
static void on_eof(csc1_https_req *r) {
  if (r->finished)
    return;
  if (r->complete) {
    csc1__https_finish(r, CSC1_HTTPS_OK, NULL);
    return;
  }
  if (client_cert_failed(r, "the server asked for a certificate, then closed the connection "
                            "before responding"))
    return;
  if (!r->handshake_done) {
    char detail[HTTPS_DETAIL_MAX];
    snprintf(detail, sizeof detail, "%s:%u closed the connection during the TLS handshake",
             r->url.host, r->url.port);
    csc1__https_finish(r, CSC1_HTTPS_ETLS, detail);
    return;
  }
  llhttp_errno_t e = llhttp_finish(&r->parser);
  if (r->complete)
    csc1__https_finish(r, CSC1_HTTPS_OK, NULL);
  else
    csc1__https_finish(r, CSC1_HTTPS_EPROTO,
                       e == HPE_OK ? "connection closed before the response was complete"
                                   : llhttp_errno_name(e));
}

/* ---- network ------------------------------------------------------------- */

static void on_written(uv_write_t *w, int status) {
  write_chunk *c = (write_chunk *)w;
  csc1_https_req *r = c->r;
  free(c);
  if (status < 0 && !r->finished)
    csc1__https_finish(r, CSC1_HTTPS_ECONNECT, uv_strerror(status));
}

/* Writes a copy of data[0..n) to the TCP connection. */
int csc1__https_net_write(csc1_https_req *r, const char *data, size_t n) {
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

/* Hands everything a TLS session queued in its write BIO to sink. */
int csc1__https_drain_bio(csc1_https_req *r, BIO *b, sink_fn sink) {
  char buf[HTTPS_READ_BUF];
  int n;
  while ((n = BIO_read(b, buf, sizeof buf)) > 0)
    if (sink(r, buf, (size_t)n) != 0)
      return -1;
  return 0;
}

static int tls_out(csc1_https_req *r, const char *data, size_t n) {
  r->bytes_up += n;
  return csc1__https_tunnel_send(r, data, n);
}

/* Sends whatever the server TLS has queued. */
static int flush(csc1_https_req *r) { return csc1__https_drain_bio(r, r->wbio, tls_out); }

/* Bytes from the server (through the tunnel) for its TLS session. */
void csc1__https_tls_in(csc1_https_req *r, const char *data, size_t n) {
  r->bytes_down += n;
  BIO_write(r->rbio, data, (int)n);
}

/* ---- server TLS ------------------------------------------------------------ */

/* Records what mutual TLS failures are told by: the server's
 * CertificateRequest and the alert it sent last. */
static void on_tls_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg) {
  csc1_https_req *r = arg;
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
  case SSL_AD_HANDSHAKE_FAILURE:
    return "handshake failure";
  case SSL_AD_BAD_CERTIFICATE:
    return "bad certificate";
  case SSL_AD_UNSUPPORTED_CERTIFICATE:
    return "unsupported certificate";
  case SSL_AD_CERTIFICATE_REVOKED:
    return "certificate revoked";
  case SSL_AD_CERTIFICATE_EXPIRED:
    return "certificate expired";
  case SSL_AD_CERTIFICATE_UNKNOWN:
    return "certificate unknown";
  case SSL_AD_UNKNOWN_CA:
    return "unknown CA";
  case SSL_AD_ACCESS_DENIED:
    return "access denied";
  case SSL_AD_CERTIFICATE_REQUIRED:
    return "certificate required";
  default:
    return NULL;
  }
}

/* Ends the request with CSC1_HTTPS_ECLIENTCERT when the server's failure is
 * about our client certificate: it asked for one and then sent a
 * certificate alert, or (how != NULL: the connection ended) hung up before
 * any response byte - from the client's side a TLS 1.3 handshake is over
 * before the server has checked the certificate, and a server may refuse
 * it by just closing. The message says whether a certificate was sent (its
 * file) and what to fix; never its contents. Returns false, doing nothing,
 * for any other failure. */
static bool client_cert_failed(csc1_https_req *r, const char *how) {
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
  csc1__https_finish(r, CSC1_HTTPS_ECLIENTCERT, detail);
  return true;
}

static void tls_failed(csc1_https_req *r) {
  char detail[HTTPS_DETAIL_MAX], why[256];
  long vr = SSL_get_verify_result(r->ssl);
  if (vr != X509_V_OK) {
    snprintf(detail, sizeof detail, "certificate of %s:%u refused: %s", r->url.host, r->url.port,
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    csc1__https_finish(r, CSC1_HTTPS_ECERT, detail);
    return;
  }
  if (client_cert_failed(r, NULL))
    return;
  csc1__https_ssl_error_text(why, sizeof why);
  snprintf(detail, sizeof detail, "TLS with %s:%u failed: %s", r->url.host, r->url.port, why);
  csc1__https_finish(r, CSC1_HTTPS_ETLS, detail);
}

/* Advances the handshake, sends the request, reads what can be decrypted. */
static void pump(csc1_https_req *r) {
  char buf[HTTPS_READ_BUF];
  ERR_clear_error();
  if (!r->handshake_done) {
    int rc = SSL_do_handshake(r->ssl);
    if (rc == 1) {
      r->handshake_done = true;
    } else if (SSL_get_error(r->ssl, rc) != SSL_ERROR_WANT_READ) {
      flush(r); /* an alert, if any */
      tls_failed(r);
      return;
    }
  }
  if (r->handshake_done && !r->request_sent) {
    if (SSL_write(r->ssl, r->request, (int)r->request_len) <= 0) {
      tls_failed(r);
      return;
    }
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
    csc1__https_finish(r, CSC1_HTTPS_ECONNECT, "write failed");
}

/* Sets up TLS for the connected socket: SNI for names, and verification of
 * the URL's host name or IP address. */
static int start_tls(csc1_https_req *r) {
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
int csc1__https_tunnel_ready(csc1_https_req *r) {
  r->tunnel_up = true;
  return start_tls(r);
}

/* After new bytes went in at the bottom: run the server TLS, then send what
 * the layers below queued. */
static void advance(csc1_https_req *r) {
  if (!r->finished && r->tunnel_up)
    pump(r);
  if (!r->finished && r->tunnel_eof)
    on_eof(r);
  if (!r->finished && r->h2 && csc1__https_h2_flush(r) != 0)
    csc1__https_proxy_failed(r, "HTTP/2 send failed");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[HTTPS_READ_BUF]; /* one loop thread; consumed at once */
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  csc1_https_req *r = s->data;
  if (r->finished)
    return;
  if (nread == UV_EOF && r->proxy && !r->tunnel_up) {
    csc1__https_proxy_failed(r, "closed the connection before the tunnel was up");
    return;
  }
  if (nread == UV_EOF) {
    on_eof(r);
    return;
  }
  if (nread < 0) {
    char detail[HTTPS_DETAIL_MAX];
    if (client_cert_failed(r, "the server asked for a certificate, then reset the connection "
                              "before responding"))
      return;
    snprintf(detail, sizeof detail, "%s:%u: %s", r->peer->host, r->peer->port,
             uv_strerror((int)nread));
    csc1__https_finish(r, r->handshake_done ? CSC1_HTTPS_EPROTO : CSC1_HTTPS_ETLS, detail);
    return;
  }
  if (nread == 0)
    return;
  if (r->pssl) {
    BIO_write(r->prbio, buf->base, (int)nread);
    csc1__https_proxy_tls_step(r);
  } else {
    csc1__https_tunnel_recv(r, buf->base, (size_t)nread);
  }
  advance(r);
}

/* ---- connect ------------------------------------------------------------- */

/* Connected (and, through an https proxy, its TLS set up): the layers
 * above start. */
static void connected(csc1_https_req *r) {
  r->connected = true;
  uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  if (!r->proxy) {
    if (csc1__https_tunnel_ready(r) != 0) {
      csc1__https_finish(r, CSC1_HTTPS_ENOMEM, "cannot set up TLS");
      return;
    }
    pump(r);
    return;
  }
  if (!r->proxy->ssl_ctx) {
    csc1__https_proxy_start(r);
    return;
  }
  if (csc1__https_proxy_tls_start(r) != 0) {
    csc1__https_finish(r, CSC1_HTTPS_ENOMEM, "cannot set up TLS");
    return;
  }
  csc1__https_proxy_tls_step(r);
}

/* The race's outcome: its winner's socket becomes the request's TCP
 * handle, or every address failed. */
static void on_race_done(void *arg, int fd, int err) {
  csc1_https_req *r = arg;
  char detail[HTTPS_DETAIL_MAX];
  r->race = NULL;
  if (fd >= 0 && (err = uv_tcp_init(r->loop, &r->tcp)) == 0) {
    r->tcp.data = r;
    r->tcp_open = true;
    r->handles++;
    if ((err = uv_tcp_open(&r->tcp, fd)) == 0) {
      connected(r);
      return;
    }
  }
  if (fd >= 0)
    close(fd);
  snprintf(detail, sizeof detail, "cannot connect to %s%s:%u: %s", r->proxy ? "proxy " : "",
           r->peer->host, r->peer->port, uv_strerror(err));
  csc1__https_finish(r, CSC1_HTTPS_ECONNECT, detail);
}

/* The peer's addresses are known: the race starts (https_connect.h). */
static void addresses_known(csc1_https_req *r, const struct sockaddr_storage *addrs, size_t n) {
  const csc1__race_opts o = {.addrs = addrs,
                             .n = n,
                             .port = r->peer->port,
                             .attempt_delay_ms = r->attempt_delay_ms,
                             .setup = r->socket_setup,
                             .setup_arg = r->socket_arg};
  if (!(r->race = csc1__race_start(r->loop, &o, on_race_done, r)))
    csc1__https_finish(r, CSC1_HTTPS_ENOMEM, "out of memory");
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
  csc1_https_req *r = g->data;
  struct sockaddr_storage addrs[CSC1_RACE_ADDRS_MAX];
  size_t n = 0;
  r->resolving = false;
  if (r->finished) {
    uv_freeaddrinfo(res);
    maybe_free(r);
    return;
  }
  for (struct addrinfo *ai = res; ai && n < CSC1_RACE_ADDRS_MAX; ai = ai->ai_next)
    if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
        ai->ai_addrlen <= sizeof(addrs[n])) {
      memset(&addrs[n], 0, sizeof(addrs[n]));
      memcpy(&addrs[n++], ai->ai_addr, ai->ai_addrlen);
    }
  uv_freeaddrinfo(res);
  if (status < 0 || n == 0) {
    char detail[HTTPS_DETAIL_MAX];
    snprintf(detail, sizeof detail, "cannot resolve %s: %s", r->peer->host,
             status < 0 ? uv_strerror(status) : "no address");
    csc1__https_finish(r, CSC1_HTTPS_ERESOLVE, detail);
    return;
  }
  addresses_known(r, addrs, n);
}

static void on_resolver_done(void *arg, const char *err, const struct sockaddr_storage *addrs,
                             size_t n) {
  csc1_https_req *r = arg;
  char detail[HTTPS_DETAIL_MAX];
  r->resolving = false;
  r->lookup = NULL;
  if (err || n == 0) {
    snprintf(detail, sizeof detail, "cannot resolve %s: %s", r->peer->host,
             err ? err : "no address");
    csc1__https_finish(r, CSC1_HTTPS_ERESOLVE, detail);
    return;
  }
  addresses_known(r, addrs, n);
}

void csc1_https_ctx_set_resolver(csc1_https_ctx *c, const csc1_https_resolver *r) {
  c->resolver = *r;
}

void csc1_https_ctx_set_socket_setup(csc1_https_ctx *c, csc1_https_socket_fn setup, void *arg) {
  c->socket_setup = setup;
  c->socket_arg = arg;
}

void csc1_https_ctx_set_attempt_delay(csc1_https_ctx *c, uint64_t ms) {
  c->attempt_delay_ms = ms ? ms : HTTPS_DEFAULT_ATTEMPT_DELAY_MS;
}

/* Starts the lookup of the peer: the context's resolver, else getaddrinfo.
 * 0, or non-zero when it cannot start. */
static int start_resolve(csc1_https_req *r) {
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

static int build_request(csc1_https_req *r, const csc1_https_request_opts *o) {
  char host[CSC1_URL_HOST_MAX + 16];
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

int csc1_https_request(uv_loop_t *loop, csc1_https_ctx *ctx, const csc1_https_request_opts *o,
                       csc1_https_cb cb, void *arg, csc1_https_req **out) {
  const char *why = NULL;
  csc1_https_req *r = calloc(1, sizeof *r);
  if (!r)
    return CSC1_HTTPS_ENOMEM;
  if (!(r->url_text = strdup(o->url))) {
    free(r);
    return CSC1_HTTPS_ENOMEM;
  }
  if (csc1_url_parse(r->url_text, &r->url, &why) != 0 || !r->url.https) {
    free(r->url_text);
    free(r);
    return CSC1_HTTPS_EURL;
  }
  if (build_request(r, o) != 0) {
    free(r->url_text);
    free(r);
    return CSC1_HTTPS_ENOMEM;
  }
  if (ctx->client_cert && !(r->client_cert = strdup(ctx->client_cert))) {
    OPENSSL_cleanse(r->request, r->request_len);
    free(r->request);
    free(r->url_text);
    free(r);
    return CSC1_HTTPS_ENOMEM;
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
  r->attempt_delay_ms = ctx->attempt_delay_ms;
  int err = start_resolve(r);
  if (err) {
    r->finished = true; /* no callback: the caller gets the error */
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    return CSC1_HTTPS_ERESOLVE;
  }
  r->resolving = true;
  uv_timer_start(&r->timer, on_timeout, r->timeout_ms, 0);
  if (out)
    *out = r;
  return 0;
}
