/* TLS server endpoint over a TCP endpoint, with OpenSSL on memory BIOs so
 * that every byte still moves on the libuv loop: ciphertext read from the
 * socket is written into rbio, plaintext comes out of SSL_read; plaintext
 * written goes through SSL_write into wbio, whose ciphertext is flushed to
 * the socket. Backpressure and queued() are the TCP endpoint's. See ep.h.
 *
 * The device's own TLS to its destination travels inside this one as opaque
 * plaintext bytes: this layer protects the device-to-gateway hop only. */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/ep.h"
#include "tunnel/error.h"
#include "tunnel/log.h"

struct tn_ep_tls {
  tn_ep ep;       /* the plaintext side, seen by the owner */
  tn_ep_tcp *tcp; /* the transport; its memory belongs to whoever embeds it */
  SSL *ssl;
  BIO *rbio, *wbio;
  bool handshake_done;
  bool want_drain;
  bool write_closed; /* our close_notify and FIN are out: nothing more to send */
  char err[96];      /* why the handshake or a record failed, for logs */
};

static tn_ep_tls *tls_of(tn_ep *ep) { return (tn_ep_tls *)ep; }
static tn_ep_tls *tls_of_tcp(tn_ep *tcp_ep) { return tcp_ep->owner; }

static void note_error(tn_ep_tls *t) {
  unsigned long e = ERR_get_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  snprintf(t->err, sizeof(t->err), "%s", r ? r : "tls error");
  ERR_clear_error();
}

const char *tn__ep_tls_error(const tn_ep_tls *t) { return t->err[0] ? t->err : NULL; }

/* Sends whatever ciphertext OpenSSL produced. After our close_notify it
 * drops it instead: reading on (a half-closed stream) can still make
 * OpenSSL answer, e.g. a TLS 1.3 KeyUpdate that requests ours, but nothing
 * may follow a close_notify (RFC 8446 6.1), and the socket's write side is
 * shut: writing would fail and tear down a tunnel whose device is still
 * sending. */
static int flush_wbio(tn_ep_tls *t) {
  if (t->write_closed) {
    (void)BIO_reset(t->wbio);
    return 0;
  }
  while (BIO_ctrl_pending(t->wbio) > 0) {
    char *b = tn__buf_get(tn__ep_tcp_pool(t->tcp));
    if (!b)
      return UV_ENOMEM;
    int n = BIO_read(t->wbio, b, TN_BUF_SIZE);
    if (n <= 0) {
      tn__buf_release(b);
      break;
    }
    int err = tn__ep_write(&t->tcp->ep, b, TN_BUF_POOL, (size_t)n);
    if (err)
      return err;
  }
  return 0;
}

static void fail(tn_ep_tls *t, int err) {
  if (!t->ep.closing)
    t->ep.sink->error(&t->ep, err);
}

/* Delivers decrypted bytes while the owner wants them. */
static void read_plaintext(tn_ep_tls *t) {
  while (t->ep.reading && !t->ep.closing && !t->ep.eof) {
    char *b = tn__buf_get(tn__ep_tcp_pool(t->tcp));
    if (!b) {
      fail(t, UV_ENOMEM);
      return;
    }
    int n = SSL_read(t->ssl, b, TN_BUF_SIZE);
    if (n > 0) {
      t->ep.sink->data(&t->ep, b, TN_BUF_POOL, (size_t)n);
      continue;
    }
    tn__buf_release(b);
    int why = SSL_get_error(t->ssl, n);
    if (why == SSL_ERROR_WANT_READ)
      break;
    if (why == SSL_ERROR_ZERO_RETURN) { /* close_notify: a clean end of stream */
      t->ep.eof = true;
      t->ep.reading = false;
      t->ep.sink->eof(&t->ep);
      return;
    }
    note_error(t);
    fail(t, TN_ETLS);
    return;
  }
  if (flush_wbio(t) != 0) /* SSL_read may answer, e.g. a key update */
    fail(t, UV_EIO);
}

static void handshake(tn_ep_tls *t) {
  int r = SSL_do_handshake(t->ssl);
  int err = flush_wbio(t);
  if (r == 1) {
    t->handshake_done = true;
    if (!err)
      t->ep.sink->ready(&t->ep);
    return;
  }
  int why = SSL_get_error(t->ssl, r);
  if (why == SSL_ERROR_WANT_READ && !err)
    return;
  note_error(t);
  fail(t, TN_ETLS);
}

/* ---- the TCP endpoint's sink: ciphertext events ---- */

static void on_tcp_data(tn_ep *tcp, char *base, tn_buf_kind kind, size_t n) {
  tn_ep_tls *t = tls_of_tcp(tcp);
  int w = BIO_write(t->rbio, base, (int)n);
  tn__buf_free(base, kind);
  if (w != (int)n) {
    fail(t, UV_ENOMEM);
    return;
  }
  if (!t->handshake_done)
    handshake(t);
  else
    read_plaintext(t);
}

static void on_tcp_eof(tn_ep *tcp) {
  tn_ep_tls *t = tls_of_tcp(tcp);
  if (!t->handshake_done) {
    snprintf(t->err, sizeof(t->err), "client closed during handshake");
    fail(t, TN_ETLS);
    return;
  }
  read_plaintext(t);
  if (t->ep.eof || t->ep.closing)
    return;
  /* A FIN without close_notify: treated as the end of the stream. */
  t->ep.eof = true;
  t->ep.reading = false;
  t->ep.sink->eof(&t->ep);
}

static void on_tcp_error(tn_ep *tcp, int err) { fail(tls_of_tcp(tcp), err); }

static void on_tcp_drained(tn_ep *tcp) {
  tn_ep_tls *t = tls_of_tcp(tcp);
  if (t->want_drain && !t->ep.closing) {
    t->want_drain = false;
    t->ep.sink->drained(&t->ep);
  }
}

static void on_tcp_shut(tn_ep *tcp) {
  tn_ep_tls *t = tls_of_tcp(tcp);
  t->ep.shut = true;
  if (!t->ep.closing)
    t->ep.sink->shut(&t->ep);
}

static void on_tcp_closed(tn_ep *tcp) {
  tn_ep_tls *t = tls_of_tcp(tcp);
  t->ep.sink->closed(&t->ep);
}

static void on_tcp_ready(tn_ep *tcp) {}

static const tn_ep_sink tcp_sink = {
    .data = on_tcp_data,
    .eof = on_tcp_eof,
    .error = on_tcp_error,
    .drained = on_tcp_drained,
    .shut = on_tcp_shut,
    .closed = on_tcp_closed,
    .ready = on_tcp_ready,
};

/* ---- plaintext ops ---- */

static int tls_read_start(tn_ep *ep) {
  tn_ep_tls *t = tls_of(ep);
  if (ep->reading || ep->eof || ep->closing)
    return 0;
  ep->reading = true;
  read_plaintext(t); /* bytes OpenSSL already holds */
  if (!ep->reading || ep->closing)
    return 0;
  return tn__ep_read_start(&t->tcp->ep);
}

static void tls_read_stop(tn_ep *ep) {
  ep->reading = false;
  tn__ep_read_stop(&tls_of(ep)->tcp->ep);
}

static int tls_write(tn_ep *ep, char *base, tn_buf_kind kind, size_t len) {
  tn_ep_tls *t = tls_of(ep);
  int n = SSL_write(t->ssl, base, (int)len); /* memory BIO: all or error */
  tn__buf_free(base, kind);
  if (n != (int)len) {
    note_error(t);
    return TN_ETLS;
  }
  int err = flush_wbio(t);
  if (!err && tn__ep_queued(&t->tcp->ep) > TN_RELAY_HIGH)
    t->want_drain = true;
  return err;
}

static size_t tls_queued(const tn_ep *ep) {
  return tn__ep_queued(&((const tn_ep_tls *)ep)->tcp->ep);
}

static int tls_shutdown(tn_ep *ep) {
  tn_ep_tls *t = tls_of(ep);
  SSL_shutdown(t->ssl); /* queues close_notify; we do not wait for the peer's */
  int err = flush_wbio(t);
  t->write_closed = true;
  return err ? err : tn__ep_shutdown(&t->tcp->ep);
}

/* A clean close ends our side with a close_notify first, if it is not out
 * yet (RFC 8446 6.1: the peer can then tell a complete stream from a
 * truncated one), e.g. an HTTP/2 session closing after the device's GOAWAY.
 * Best effort: the socket closes right after. A reset sends none. */
static void tls_close(tn_ep *ep, bool reset) {
  tn_ep_tls *t = tls_of(ep);
  if (ep->closing)
    return;
  ep->closing = true;
  ep->reading = false;
  if (!reset && t->handshake_done && !t->write_closed) {
    SSL_shutdown(t->ssl);
    (void)flush_wbio(t);
    t->write_closed = true;
  }
  tn__ep_close(&t->tcp->ep, reset);
}

static const tn_ep_ops tls_ops = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .queued = tls_queued,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

tn_ep_tls *tn__ep_tls_new(tn_ep_tcp *tcp, SSL_CTX *ctx, const tn_ep_sink *sink, void *owner) {
  tn_ep_tls *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    SSL_free(t->ssl);
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    free(t);
    return NULL;
  }
  BIO_set_mem_eof_return(t->rbio, -1);   /* empty means "want more", not EOF */
  SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both BIOs now */
  SSL_set_accept_state(t->ssl);
  t->ep = (tn_ep){.ops = &tls_ops, .sink = sink, .owner = owner};
  t->tcp = tcp;
  tn__ep_set_sink(&tcp->ep, &tcp_sink, t);
  return t;
}

/* Starts reading ciphertext: the handshake runs as the ClientHello arrives. */
int tn__ep_tls_start(tn_ep_tls *t) { return tn__ep_read_start(&t->tcp->ep); }

tn_ep *tn__ep_tls_ep(tn_ep_tls *t) { return &t->ep; }

void tn__ep_tls_keep_buffers(tn_ep_tls *t) { SSL_clear_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS); }

void tn__ep_tls_free(tn_ep_tls *t) {
  if (!t)
    return;
  SSL_free(t->ssl);
  free(t);
}

const char *tn__ep_tls_alpn(const tn_ep_tls *t) {
  const unsigned char *p = NULL;
  unsigned len = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  if (len == 2 && memcmp(p, "h2", 2) == 0)
    return "h2";
  if (len == 8 && memcmp(p, "http/1.1", 8) == 0)
    return "http/1.1";
  return NULL;
}

char *tn__ep_tls_subject(const tn_ep_tls *t) {
  X509 *cert = SSL_get0_peer_certificate(t->ssl);
  if (!cert || SSL_get_verify_result(t->ssl) != X509_V_OK)
    return NULL;
  BIO *mem = BIO_new(BIO_s_mem());
  if (!mem)
    return NULL;
  X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char *out = NULL;
  long len = BIO_get_mem_data(mem, &out);
  char *copy = len >= 0 ? strndup(out, (size_t)len) : NULL;
  BIO_free(mem);
  return copy;
}
