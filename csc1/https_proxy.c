/* Through a proxy: the device's way to the IdMS (mcx-login; the daemon never
 * sets a proxy). See https_client.h (csc1_https_ctx_set_proxy) and the layer
 * picture at the top of https_client.c.
 *
 * The proxy's TLS (r->pssl, memory BIOs), then the tunnel: an HTTP/1.1
 * CONNECT, transparent once answered 2xx, or one HTTP/2 CONNECT stream whose
 * DATA frames carry the server's TLS records. */
#include "csc1/https_client.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csc1/https_internal.h"
#include "csc1/url.h"

/* ---- the proxy of a context ------------------------------------------------ */

void csc1__https_proxy_unref(https_proxy *p) {
  if (!p || --p->refs > 0)
    return;
  SSL_CTX_free(p->ssl_ctx);
  free(p->url_text);
  free(p);
}

/* The TLS context for an https proxy: verified like any server; ALPN offers
 * only the protocol that will be spoken, so a proxy that cannot is caught at
 * the handshake. */
static SSL_CTX *proxy_ssl_ctx(const csc1_https_proxy_opts *o, char *err, size_t errlen) {
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
    csc1__https_ssl_error_text(why, sizeof why);
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
    csc1__https_ssl_error_text(why, sizeof why);
    snprintf(err, errlen, "cannot load the proxy client certificate %s / key %s: %s", o->cert,
             o->key, why);
    SSL_CTX_free(x);
    return NULL;
  }
  return x;
}

int csc1_https_ctx_set_proxy(csc1_https_ctx *c, const csc1_https_proxy_opts *o, char *err,
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
  if (csc1_url_parse(p->url_text, &p->url, &why) != 0 || strcmp(p->url.target, "/") != 0) {
    snprintf(err, errlen, "proxy '%s': %s", o->url,
             why ? why : "a proxy URL is http://HOST:PORT or https://HOST:PORT, without a path");
    csc1__https_proxy_unref(p);
    return -1;
  }
  if (!p->url.https && (o->ca_file || o->cert || o->key)) {
    snprintf(err, errlen, "proxy '%s': a proxy CA, certificate or key needs an https:// proxy URL",
             o->url);
    csc1__https_proxy_unref(p);
    return -1;
  }
  if (p->url.https && !(p->ssl_ctx = proxy_ssl_ctx(o, err, errlen))) {
    csc1__https_proxy_unref(p);
    return -1;
  }
  csc1__https_proxy_unref(c->proxy);
  c->proxy = p;
  return 0;
}

/* Bytes for the proxy: under the proxy's TLS when it has one. */
static int proxy_send(csc1_https_req *r, const char *data, size_t n) {
  if (!r->pssl)
    return csc1__https_net_write(r, data, n);
  ERR_clear_error();
  if (n && SSL_write(r->pssl, data, (int)n) <= 0)
    return -1;
  return csc1__https_drain_bio(r, r->pwbio, csc1__https_net_write);
}

int csc1__https_h2_flush(csc1_https_req *r) { return nghttp2_session_send(r->h2) == 0 ? 0 : -1; }

/* The server TLS's records into the tunnel (or straight to the server). */
int csc1__https_tunnel_send(csc1_https_req *r, const char *data, size_t n) {
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
  return csc1__https_h2_flush(r);
}

/* ---- the proxy ------------------------------------------------------------- */

long csc1_https_connect_response_parse(const char *buf, size_t len, size_t max_head, int *status) {
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

void csc1__https_proxy_failed(csc1_https_req *r, const char *what) {
  char detail[HTTPS_DETAIL_MAX];
  snprintf(detail, sizeof detail, "proxy %s:%u: %s", r->peer->host, r->peer->port, what);
  csc1__https_finish(r, CSC1_HTTPS_EPROXY, detail);
}

static void proxy_refused(csc1_https_req *r, int status) {
  char what[512];
  snprintf(what, sizeof what, "CONNECT %s refused with status %d%s", r->authority, status,
           status == 403 ? " (not allowed by the gateway's rules, or limited service)" : "");
  csc1__https_proxy_failed(r, what);
}

/* HTTP/1.1 CONNECT: the proxy's answer, then tunnel bytes. */
static void h1_recv(csc1_https_req *r, const char *data, size_t n) {
  if (r->tunnel_up) {
    csc1__https_tls_in(r, data, n);
    return;
  }
  char *grown = realloc(r->connect_head, r->connect_head_len + n);
  if (!grown) {
    csc1__https_finish(r, CSC1_HTTPS_ENOMEM, "out of memory");
    return;
  }
  memcpy(grown + r->connect_head_len, data, n);
  r->connect_head = grown;
  r->connect_head_len += n;
  int status = 0;
  long head = csc1_https_connect_response_parse(r->connect_head, r->connect_head_len,
                                              HTTPS_PROXY_HEAD_MAX, &status);
  if (head == 0)
    return;
  if (head < 0) {
    csc1__https_proxy_failed(r, "answered CONNECT with something that is not an HTTP/1.1 response");
    return;
  }
  if (status < 200 || status > 299) {
    proxy_refused(r, status);
    return;
  }
  if (csc1__https_tunnel_ready(r) != 0) {
    csc1__https_finish(r, CSC1_HTTPS_ENOMEM, "cannot set up TLS");
    return;
  }
  if (r->connect_head_len > (size_t)head)
    csc1__https_tls_in(r, r->connect_head + head, r->connect_head_len - (size_t)head);
}

/* HTTP/2 CONNECT: one stream; its DATA frames are the tunnel. nghttp2's
 * callbacks only record and buffer; sending happens after mem_recv. */
static ssize_t h2_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                          void *ud) {
  return proxy_send(ud, (const char *)data, len) == 0 ? (ssize_t)len : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static ssize_t h2_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                          nghttp2_data_source *src, void *ud) {
  csc1_https_req *r = ud;
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
  csc1_https_req *r = ud;
  if (f->hd.stream_id == r->stream_id && namelen == 7 && memcmp(name, ":status", 7) == 0 &&
      valuelen == 3 && isdigit(value[0]) && isdigit(value[1]) && isdigit(value[2]))
    r->h2_status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
  return 0;
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  csc1_https_req *r = ud;
  if (f->hd.stream_id != r->stream_id || f->hd.type != NGHTTP2_HEADERS || r->tunnel_up)
    return 0;
  if (r->h2_status >= 200 && r->h2_status <= 299 && csc1__https_tunnel_ready(r) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *ud) {
  csc1_https_req *r = ud;
  if (id == r->stream_id && r->tunnel_up)
    csc1__https_tls_in(r, (const char *)data, len);
  return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
  csc1_https_req *r = ud;
  if (id == r->stream_id)
    r->tunnel_eof = true;
  return 0;
}

static void h2_recv(csc1_https_req *r, const char *data, size_t n) {
  char what[128];
  ssize_t rc = nghttp2_session_mem_recv(r->h2, (const uint8_t *)data, n);
  if (rc < 0) {
    snprintf(what, sizeof what, "HTTP/2: %s", nghttp2_strerror((int)rc));
    csc1__https_proxy_failed(r, what);
    return;
  }
  if (!r->tunnel_up && r->h2_status && (r->h2_status < 200 || r->h2_status > 299)) {
    proxy_refused(r, r->h2_status);
    return;
  }
  if (!r->tunnel_up && r->tunnel_eof) {
    csc1__https_proxy_failed(r, "closed the CONNECT stream without an answer");
    return;
  }
}

static int h2_start(csc1_https_req *r) {
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
  return csc1__https_h2_flush(r);
}

/* The proxy is reachable (and its TLS verified): ask for the tunnel. */
void csc1__https_proxy_start(csc1_https_req *r) {
  if (r->proxy->kind == VIA_H2) {
    if (h2_start(r) != 0)
      csc1__https_proxy_failed(r, "cannot start the HTTP/2 session");
    return;
  }
  char head[2 * sizeof r->authority + 128];
  int n = snprintf(head, sizeof head,
                   "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mcgw/" MCGW_VERSION "\r\n\r\n",
                   r->authority, r->authority);
  if (proxy_send(r, head, (size_t)n) != 0)
    csc1__https_proxy_failed(r, "cannot send CONNECT");
}

static void proxy_tls_failed(csc1_https_req *r) {
  char detail[HTTPS_DETAIL_MAX], why[256];
  long vr = SSL_get_verify_result(r->pssl);
  if (vr != X509_V_OK) {
    snprintf(detail, sizeof detail, "certificate of proxy %s:%u refused: %s", r->peer->host,
             r->peer->port, X509_verify_cert_error_string(vr));
    ERR_clear_error();
    csc1__https_finish(r, CSC1_HTTPS_ECERT, detail);
    return;
  }
  csc1__https_ssl_error_text(why, sizeof why);
  snprintf(detail, sizeof detail, "TLS with proxy %s:%u failed: %s", r->peer->host, r->peer->port,
           why);
  csc1__https_finish(r, CSC1_HTTPS_ETLS, detail);
}

int csc1__https_proxy_tls_start(csc1_https_req *r) {
  const csc1_url *u = r->peer;
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

void csc1__https_tunnel_recv(csc1_https_req *r, const char *data, size_t n) {
  if (!r->proxy)
    csc1__https_tls_in(r, data, n);
  else if (r->proxy->kind == VIA_H1)
    h1_recv(r, data, n);
  else
    h2_recv(r, data, n);
}

/* The proxy's TLS: handshake (then the CONNECT), then its plaintext, which
 * is the tunnel protocol. */
void csc1__https_proxy_tls_step(csc1_https_req *r) {
  char buf[HTTPS_READ_BUF];
  ERR_clear_error();
  if (!r->phandshake_done) {
    int rc = SSL_do_handshake(r->pssl);
    if (rc != 1) {
      csc1__https_drain_bio(r, r->pwbio, csc1__https_net_write);
      if (SSL_get_error(r->pssl, rc) != SSL_ERROR_WANT_READ)
        proxy_tls_failed(r);
      return;
    }
    r->phandshake_done = true;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(r->pssl, &alpn, &alpn_len);
    if (r->proxy->kind == VIA_H2 && !(alpn_len == 2 && memcmp(alpn, "h2", 2) == 0)) {
      csc1__https_proxy_failed(r, "did not negotiate HTTP/2 (ALPN h2)");
      return;
    }
    csc1__https_proxy_start(r);
  }
  while (!r->finished) {
    int n = SSL_read(r->pssl, buf, sizeof buf);
    if (n > 0) {
      csc1__https_tunnel_recv(r, buf, (size_t)n);
      continue;
    }
    int e = SSL_get_error(r->pssl, n);
    if (e == SSL_ERROR_ZERO_RETURN)
      r->tunnel_eof = true;
    else if (e != SSL_ERROR_WANT_READ)
      proxy_tls_failed(r);
    break;
  }
  if (!r->finished && csc1__https_drain_bio(r, r->pwbio, csc1__https_net_write) != 0)
    csc1__https_finish(r, CSC1_HTTPS_ECONNECT, "write failed");
}

