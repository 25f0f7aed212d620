/* See relay.h. */
#include "relay.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>
#include <unistd.h>

#include "driver.h"
#include "fuzz_https_response_certs.h"

struct fzr_upstream {
  uv_tcp_t tcp;
  fzr_tunnel *t; /* NULL until the tag is complete */
  uint8_t head[FZR_TAG_LEN];
  size_t head_len;
  uint8_t key; /* echo XOR key: tunnel-specific */
  bool eof, shut, shut_done, closing;
  uv_shutdown_t shutdown;
  fzr_upstream *next;
};

static uv_loop_t *loop;
static uv_tcp_t server;
static fzr_upstream *ups; /* every upstream connection not yet closed */
static size_t n_ups;
static uint32_t generation;
static fzr_tunnel tunnels[FZR_TUNNELS];

/* What the engine's access log said about this input's tunnels. */
static struct {
  uint64_t bytes_up, bytes_down;
  size_t not_eof;
  const char *last_reason;
} closed;

/* ---- the input ---- */

uint8_t fzr_byte(fzr_input *in) { return in->at < in->n ? in->p[in->at++] : 0; }

size_t fzr_take(fzr_input *in, size_t want, const uint8_t **out) {
  size_t left = in->n - in->at, k = want < left ? want : left;
  *out = in->p + in->at;
  in->at += k;
  return k;
}

bool fzr_more(const fzr_input *in) { return in->at < in->n; }

/* ---- the ledger ---- */

void fzr_bytes_add(fzr_bytes *b, const void *p, size_t n) {
  if (n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *grown = realloc(b->p, cap);
    if (!grown)
      fz_fail("fuzz relay: out of memory");
    b->p = grown;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void fzr_pattern(uint8_t *out, size_t n, uint32_t seed) {
  uint32_t x = seed | 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = (uint8_t)x;
  }
}

void fzr_tag(size_t i, uint8_t out[FZR_TAG_LEN]) {
  /* A TLS handshake record header (type 22, version 3.3, length 9), then
   * "mcgw", the input's generation and the tunnel's index. */
  static const uint8_t fixed[9] = {0x16, 0x03, 0x03, 0x00, 0x09, 'm', 'c', 'g', 'w'};
  memcpy(out, fixed, sizeof(fixed));
  out[9] = (uint8_t)(generation >> 24);
  out[10] = (uint8_t)(generation >> 16);
  out[11] = (uint8_t)(generation >> 8);
  out[12] = (uint8_t)generation;
  out[13] = (uint8_t)i;
}

fzr_tunnel *fzr_tunnel_at(size_t i) { return i < FZR_TUNNELS ? &tunnels[i] : NULL; }

void fzr_begin(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    fzr_tunnel *t = &tunnels[i];
    fzr_bytes *b[] = {&t->dev_sent, &t->up_got, &t->up_sent, &t->dev_got};
    for (size_t k = 0; k < sizeof(b) / sizeof(b[0]); k++) {
      free(b[k]->p);
      *b[k] = (fzr_bytes){0};
    }
    *t = (fzr_tunnel){0};
  }
  memset(&closed, 0, sizeof(closed));
  generation++;
}

/* ---- the echo upstream ---- */

static void up_closed(uv_handle_t *h) {
  fzr_upstream *u = h->data;
  for (fzr_upstream **p = &ups; *p; p = &(*p)->next) {
    if (*p == u) {
      *p = u->next;
      break;
    }
  }
  n_ups--;
  if (u->t && u->t->up == u)
    u->t->up = NULL;
  /* A connection that never completed its tag got a prefix of one. */
  if (!u->t && u->head_len) {
    uint8_t tag[FZR_TAG_LEN];
    fzr_tag(0, tag);
    size_t fixed = u->head_len < FZR_TAG_LEN - 1 ? u->head_len : FZR_TAG_LEN - 1;
    if (memcmp(u->head, tag, fixed) != 0)
      fz_fail("fuzz relay: an upstream connection received %zu bytes that are no tag's start",
              u->head_len);
  }
  free(u);
}

void fzr_close(uv_tcp_t *tcp, bool reset, uv_close_cb cb) {
  /* Not uv_tcp_close_reset: it refuses (EINVAL) while a shutdown is pending,
   * and the input may well reset after a FIN. */
  uv_os_fd_t fd;
  if (reset && uv_fileno((uv_handle_t *)tcp, &fd) == 0) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  uv_close((uv_handle_t *)tcp, cb);
}

static void up_close(fzr_upstream *u, bool reset) {
  if (u->closing)
    return;
  u->closing = true;
  fzr_close(&u->tcp, reset, up_closed);
}

static void saw_reset(fzr_upstream *u) {
  if (u->t)
    u->t->reset_seen = true;
}

typedef struct {
  uv_write_t req;
  fzr_upstream *u;
  uint8_t data[];
} up_write;

static void echo_written(uv_write_t *req, int status) {
  up_write *w = (up_write *)req;
  if (status < 0 && status != UV_ECANCELED)
    saw_reset(w->u);
  free(w);
}

static void echo(fzr_upstream *u, const uint8_t *p, size_t n) {
  if (u->shut || u->closing || n == 0)
    return;
  up_write *w = malloc(sizeof(*w) + n);
  if (!w)
    fz_fail("fuzz relay: out of memory");
  for (size_t i = 0; i < n; i++)
    w->data[i] = p[i] ^ u->key;
  w->u = u;
  uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&u->tcp, &buf, 1, echo_written) != 0) {
    free(w);
    saw_reset(u);
    up_close(u, false);
    return;
  }
  fzr_bytes_add(&u->t->up_sent, w->data, n);
}

static void up_shut(uv_shutdown_t *req, int status) {
  fzr_upstream *u = req->data;
  u->shut_done = true;
  if (status < 0 && status != UV_ECANCELED)
    saw_reset(u);
  if (status < 0 || u->eof)
    up_close(u, false);
}

static void up_shutdown(fzr_upstream *u) {
  if (u->shut || u->closing)
    return;
  u->shut = true;
  u->shutdown.data = u;
  if (uv_shutdown(&u->shutdown, (uv_stream_t *)&u->tcp, up_shut) != 0)
    up_close(u, false);
}

/* The first FZR_TAG_LEN bytes name the tunnel. */
static void claim(fzr_upstream *u) {
  uint8_t tag[FZR_TAG_LEN];
  size_t i = u->head[FZR_TAG_LEN - 1];
  fzr_tag(i, tag);
  if (i >= FZR_TUNNELS || memcmp(u->head, tag, FZR_TAG_LEN) != 0)
    fz_fail("fuzz relay: an upstream connection started with bytes that are no tag of this input");
  fzr_tunnel *t = &tunnels[i];
  if (!t->used || t->up_got.len)
    fz_fail("fuzz relay: upstream connection for tunnel %zu that %s", i,
            t->used ? "already has one" : "the device never opened");
  u->t = t;
  t->up = u;
  u->key = (uint8_t)(0x5a + 17 * i);
  fzr_bytes_add(&t->up_got, u->head, FZR_TAG_LEN);
  echo(u, u->head, FZR_TAG_LEN);
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fzr_upstream *u = s->data;
  if (n == UV_EOF) {
    u->eof = true;
    uv_read_stop(s);
    if (!u->shut)
      up_shutdown(u);
    else if (u->shut_done)
      up_close(u, false);
    return;
  }
  if (n < 0) {
    saw_reset(u);
    up_close(u, false);
    return;
  }
  const uint8_t *p = (const uint8_t *)buf->base;
  size_t len = (size_t)n;
  if (!u->t) {
    size_t k = FZR_TAG_LEN - u->head_len < len ? FZR_TAG_LEN - u->head_len : len;
    memcpy(u->head + u->head_len, p, k);
    u->head_len += k;
    p += k;
    len -= k;
    if (u->head_len < FZR_TAG_LEN)
      return;
    claim(u);
  }
  if (len) {
    fzr_bytes_add(&u->t->up_got, p, len);
    echo(u, p, len);
  }
}

static void up_accept(uv_stream_t *srv, int status) {
  if (status < 0)
    fz_fail("fuzz relay: upstream accept: %s", uv_strerror(status));
  fzr_upstream *u = calloc(1, sizeof(*u));
  if (!u)
    fz_fail("fuzz relay: out of memory");
  uv_tcp_init(loop, &u->tcp);
  u->tcp.data = u;
  u->next = ups;
  ups = u;
  n_ups++;
  if (uv_accept(srv, (uv_stream_t *)&u->tcp) != 0 || uv_tcp_nodelay(&u->tcp, 1) != 0 ||
      uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) != 0)
    up_close(u, false);
}

void fzr_init(uv_loop_t *l, struct sockaddr_storage *addr) {
  loop = l;
  struct sockaddr_in sin;
  uv_ip4_addr("127.0.0.1", 0, &sin);
  int len = sizeof(*addr);
  if (uv_tcp_init(loop, &server) != 0 || uv_tcp_bind(&server, (struct sockaddr *)&sin, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 256, up_accept) != 0 ||
      uv_tcp_getsockname(&server, (struct sockaddr *)addr, &len) != 0)
    fz_fail("fuzz relay: cannot start the echo upstream");
}

void fzr_up_fin(size_t i) {
  if (i < FZR_TUNNELS && tunnels[i].up)
    up_shutdown(tunnels[i].up);
}

void fzr_up_reset(size_t i) {
  if (i < FZR_TUNNELS && tunnels[i].up) {
    tunnels[i].reset_asked = true;
    up_close(tunnels[i].up, true);
  }
}

void fzr_up_pause(size_t i, bool paused) {
  fzr_upstream *u = i < FZR_TUNNELS ? tunnels[i].up : NULL;
  if (!u || u->closing || u->eof)
    return;
  if (paused)
    uv_read_stop((uv_stream_t *)&u->tcp);
  else
    uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read);
}

void fzr_up_resume_all(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    fzr_up_pause(i, false);
}

size_t fzr_up_open(void) { return n_ups; }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wake(uv_timer_t *t) {
  if (getenv("FZR_TRACE"))
    fprintf(stderr, "fuzz relay: nothing happened for 10 ms (%s)\n", (const char *)t->data);
}

void fzr_turns(fzr_input *in) {
  for (int k = fzr_byte(in) % 16; k >= 0; k--)
    uv_run(loop, UV_RUN_NOWAIT);
}

void fzr_run_until(bool (*done)(void), const char *harness) {
  /* UV_RUN_ONCE with a 10 ms timer: waits for the loop's next event (a
   * poll on uv_backend_fd would miss watchers started since the last turn,
   * which libuv registers only when it polls) without blocking for good. */
  static uv_timer_t guard;
  static bool guard_init;
  if (!guard_init) {
    uv_timer_init(loop, &guard);
    uv_unref((uv_handle_t *)&guard);
    guard_init = true;
  }
  uint64_t deadline = now_ms() + FZ_DEADLINE_MS;
  while (!done()) {
    if (now_ms() > deadline)
      fz_fail("%s: hang: not finished after %d ms (%zu upstream connections open)", harness,
              FZ_DEADLINE_MS, n_ups);
    guard.data = (void *)harness;
    uv_timer_start(&guard, wake, 10, 0);
    uv_run(loop, UV_RUN_ONCE);
    uv_timer_stop(&guard);
  }
}

/* ---- a device's TLS client ---- */

static SSL_CTX *client_ctx;
static char cert_path[64], key_path[64];
static struct sockaddr_storage tls_listen;

static void write_file(char *path, const char *dir, const char *name, const char *pem) {
  snprintf(path, 64, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f || fputs(pem, f) < 0 || fclose(f) != 0)
    fz_fail("fuzz relay: cannot write %s", path);
}

static void (*user_tune)(tn_engine_opts *o);

static void with_tls(tn_engine_opts *o) {
  if (tn_addr_parse_listen("127.0.0.1:0", &tls_listen) != 0)
    fz_fail("fuzz relay: listen address");
  o->listen_tls = &tls_listen;
  o->n_listen_tls = 1;
  o->tls_cert = cert_path;
  o->tls_key = key_path;
  if (user_tune)
    user_tune(o);
}

tn_engine *fzr_tls_engine(uv_loop_t *l, bool allow_private, void (*tune)(tn_engine_opts *o),
                          struct sockaddr_storage *tls_addr, const char *alpn, size_t alpn_len) {
  char dir[] = "/tmp/fuzz_relay_tls.XXXXXX";
  if (!mkdtemp(dir))
    fz_fail("fuzz relay: mkdtemp");
  write_file(cert_path, dir, "cert.pem", fz_cert_pem);
  write_file(key_path, dir, "key.pem", fz_key_pem);
  user_tune = tune;
  struct sockaddr_storage plain;
  tn_engine *e = fz_loopback_engine(l, allow_private, with_tls, &plain);
  if (tn_engine_listener_addr(e, 1, tls_addr) != 0)
    fz_fail("fuzz relay: no TLS listener");
  unlink(cert_path); /* the engine has read them */
  unlink(key_path);
  rmdir(dir);
  client_ctx = SSL_CTX_new(TLS_client_method());
  BIO *ca = BIO_new_mem_buf(fz_ca_pem, -1);
  X509 *x = ca ? PEM_read_bio_X509(ca, NULL, NULL, NULL) : NULL;
  if (!client_ctx || !x || X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx), x) != 1)
    fz_fail("fuzz relay: client TLS context");
  X509_free(x);
  BIO_free(ca);
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
  SSL_CTX_set_alpn_protos(client_ctx, (const unsigned char *)alpn, (unsigned)alpn_len);
  return e;
}

void fzr_tls_open(fzr_tls *t) {
  *t = (fzr_tls){0};
  BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
  if (!(t->ssl = SSL_new(client_ctx)) || !rbio || !wbio)
    fz_fail("fuzz relay: SSL_new");
  SSL_set_bio(t->ssl, rbio, wbio);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), "127.0.0.1");
  SSL_set_connect_state(t->ssl);
  SSL_do_handshake(t->ssl); /* the ClientHello */
}

void fzr_tls_free(fzr_tls *t) {
  if (t->ssl)
    SSL_free(t->ssl); /* and both BIOs */
  free(t->early.p);
  *t = (fzr_tls){0};
}

void fzr_tls_write(fzr_tls *t, const void *p, size_t n, bool key_update) {
  if (!t->ready) {
    fzr_bytes_add(&t->early, p, n);
    return;
  }
  if (key_update && SSL_key_update(t->ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
    fz_fail("fuzz relay: SSL_key_update");
  if (n && SSL_write(t->ssl, p, (int)n) != (int)n)
    fz_fail("fuzz relay: SSL_write");
}

void fzr_tls_close_notify(fzr_tls *t) { SSL_shutdown(t->ssl); }

size_t fzr_tls_output(fzr_tls *t, char *buf, size_t cap) {
  int n = t->ssl ? BIO_read(SSL_get_wbio(t->ssl), buf, (int)cap) : 0;
  return n > 0 ? (size_t)n : 0;
}

bool fzr_tls_input(fzr_tls *t, const char *p, size_t n,
                   void (*plain)(void *arg, const char *p, size_t n), void *arg) {
  if (BIO_write(SSL_get_rbio(t->ssl), p, (int)n) != (int)n)
    fz_fail("fuzz relay: BIO_write");
  if (!t->ready) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
        fz_fail("fuzz relay: the TLS handshake with the gateway failed");
      return false;
    }
    t->ready = true;
    fzr_bytes early = t->early;
    t->early = (fzr_bytes){0};
    fzr_tls_write(t, early.p, early.len, false);
    free(early.p);
  }
  char buf[16 * 1024];
  for (;;) {
    int r = SSL_read(t->ssl, buf, sizeof(buf));
    if (r > 0) {
      plain(arg, buf, (size_t)r);
      continue;
    }
    int why = SSL_get_error(t->ssl, r);
    if (why == SSL_ERROR_ZERO_RETURN)
      return t->close_notify_seen = true;
    if (why != SSL_ERROR_WANT_READ)
      fz_fail("fuzz relay: TLS error reading from the gateway");
    return t->close_notify_seen;
  }
}

/* ---- writes and nghttp2 client streams ---- */

int fzr_write(uv_stream_t *s, const void *p, size_t n, void *data, uv_write_cb cb) {
  uv_write_t *req = malloc(sizeof(*req) + n);
  if (!req)
    fz_fail("fuzz relay: out of memory");
  memcpy(req + 1, p, n);
  req->data = data;
  uv_buf_t buf = uv_buf_init((char *)(req + 1), (unsigned)n);
  int err = uv_write(req, s, &buf, 1, cb);
  if (err)
    free(req);
  return err;
}

static void sent(uv_write_t *req, int status) {
  if (status < 0 && status != UV_ECANCELED)
    fz_fail("fuzz relay: writing to the engine: %s", uv_strerror(status));
  free(req);
}

void fzr_send(uv_stream_t *s, const void *p, size_t n) {
  if (fzr_write(s, p, n, NULL, sent) != 0)
    fz_fail("fuzz relay: uv_write to the engine refused");
}

void fzr_connected(uv_connect_t *req, int status) {
  if (status < 0)
    fz_fail("%s: connect to the engine: %s", (const char *)req->data, uv_strerror(status));
}

static ssize_t read_out(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *arg) {
  (void)s;
  (void)id;
  (void)arg;
  fzr_h2_stream *st = src->ptr;
  size_t end = st->limit < st->out.len ? st->limit : st->out.len;
  size_t n = end - st->out_at < len ? end - st->out_at : len;
  if (n) {
    memcpy(buf, st->out.p + st->out_at, n);
    st->out_at += n;
  }
  if (st->fin && st->out_at == st->out.len) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
  }
  if (n == 0) {
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

nghttp2_data_provider fzr_h2_provider(fzr_h2_stream *st) {
  return (nghttp2_data_provider){.source.ptr = st, .read_callback = read_out};
}

void fzr_h2_resume(nghttp2_session *s, fzr_h2_stream *st) {
  if (st->deferred && st->id > 0 && !st->closed) {
    st->deferred = false;
    nghttp2_session_resume_data(s, st->id);
  }
}

void fzr_h2_received(nghttp2_session *s, fzr_h2_stream *st, size_t len) {
  if (st->stalled)
    st->unconsumed += len;
  else
    nghttp2_session_consume(s, st->id, len);
}

void fzr_h2_stall(nghttp2_session *s, fzr_h2_stream *st, bool stalled) {
  if (st->id <= 0)
    return;
  st->stalled = stalled;
  if (!stalled && st->unconsumed && !st->closed)
    nghttp2_session_consume(s, st->id, st->unconsumed);
  if (!stalled)
    st->unconsumed = 0;
}

static bool is(const uint8_t *p, size_t n, const char *want) {
  return n == strlen(want) && memcmp(p, want, n) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg) {
  (void)flags;
  fzr_h2_device *dev = arg;
  fzr_h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!st)
    return 0;
  if (is(name, namelen, ":status")) {
    if (!is(value, valuelen, "200"))
      fz_fail("%s: stream %d to an allowed upstream answered :status %.*s", dev->harness, st->id,
              (int)valuelen, value);
    st->status_200 = true;
  } else if (is(name, namelen, "capsule-protocol") && is(value, valuelen, "?1")) {
    st->capsule_protocol = true;
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *arg) {
  (void)flags;
  fzr_h2_device *dev = arg;
  fzr_h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
  if (!st)
    return 0;
  if (!st->status_200)
    fz_fail("%s: stream %d: DATA before :status", dev->harness, id);
  dev->data(st, data, len);
  fzr_h2_received(s, st, len);
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg) {
  fzr_h2_device *dev = arg;
  fzr_h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
  if (!st || st->closed)
    return 0;
  st->closed = true;
  st->close_code = code;
  dev->open_streams--;
  return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *arg) {
  fzr_h2_device *dev = arg;
  if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
    dev->connect_protocol =
        nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1;
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK) &&
      memcmp(f->ping.opaque_data, "mcgwdone", 8) == 0)
    dev->ping_acked = true;
  if (f->hd.type == NGHTTP2_GOAWAY && dev->open_streams)
    fz_fail("%s: GOAWAY (error %u) with %zu streams open", dev->harness, f->goaway.error_code,
            dev->open_streams);
  return 0;
}

static int on_frame_sent(nghttp2_session *s, const nghttp2_frame *f, void *arg) {
  (void)arg;
  fzr_h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    st->fin_sent = true;
  return 0;
}

nghttp2_session *fzr_h2_session(fzr_h2_device *dev) {
  static nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  nghttp2_session *s;
  if (!cbs) {
    if (nghttp2_session_callbacks_new(&cbs) != 0)
      fz_fail("%s: nghttp2_session_callbacks_new", dev->harness);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_sent);
  }
  if (nghttp2_option_new(&opt) != 0)
    fz_fail("%s: nghttp2_option_new", dev->harness);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  if (nghttp2_session_client_new2(&s, cbs, dev, opt) != 0)
    fz_fail("%s: nghttp2_session_client_new2", dev->harness);
  nghttp2_option_del(opt);
  return s;
}

void fzr_h2_submit(nghttp2_session *s, fzr_h2_device *dev, fzr_h2_stream *st, const nghttp2_nv *nv,
                   size_t n) {
  nghttp2_data_provider prd = fzr_h2_provider(st);
  int32_t id = nghttp2_submit_request(s, NULL, nv, n, &prd, st);
  if (id < 0)
    fz_fail("%s: nghttp2_submit_request: %s", dev->harness, nghttp2_strerror(id));
  st->id = id;
  dev->open_streams++;
}

void fzr_h2_send(nghttp2_session *s, void (*out)(const uint8_t *p, size_t n)) {
  for (;;) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(s, &p);
    if (n < 0)
      fz_fail("fuzz relay: nghttp2_session_mem_send: %s", nghttp2_strerror((int)n));
    if (n == 0)
      return;
    out(p, (size_t)n);
  }
}

/* ---- the harness's set-up ---- */

void fzr_setup(uv_loop_t *l, struct sockaddr_storage *upstream, const fzr_engine_spec *spec,
               size_t n, tn_engine **engines, struct sockaddr_storage *addrs) {
  fz_setup();
  uv_loop_init(l);
  loop = l; /* fzr_run_until's */
  /* libuv writes without MSG_NOSIGNAL; mcgw ignores SIGPIPE the same way.
   * (Not doing so killed fuzz_relay_udp silently: a device writing to the
   * connection the engine reset after a malformed capsule.) */
  signal(SIGPIPE, SIG_IGN);
  if (upstream)
    fzr_init(l, upstream);
  for (size_t k = 0; k < n; k++) {
    if (spec[k].alpn)
      engines[k] = fzr_tls_engine(l, true, spec[k].tune, &addrs[k], spec[k].alpn, spec[k].alpn_len);
    else
      engines[k] = fz_loopback_engine(l, true, spec[k].tune, &addrs[k]);
    fzr_watch(engines[k]);
  }
}

uint8_t *fzr_filler(size_t n, uint32_t seed) {
  uint8_t *p = malloc(n);
  if (!p)
    fz_fail("fuzz relay: out of memory");
  fzr_pattern(p, n, seed);
  return p;
}

/* ---- the oracles ---- */

static void on_closed(const tn_tunnel_info *info, void *arg) {
  (void)arg;
  if (info->status != 200)
    return;
  closed.bytes_up += info->bytes_up;
  closed.bytes_down += info->bytes_down;
  if (!info->close_reason || strcmp(info->close_reason, "eof") != 0) {
    closed.not_eof++;
    closed.last_reason = info->close_reason;
  }
}

void fzr_watch(tn_engine *e) { tn_engine_on_close(e, on_closed, NULL); }

/* got must equal sent, or be a prefix of it when the tunnel was reset. */
static void same(const char *harness, size_t i, const char *what, const fzr_bytes *got,
                 const fzr_bytes *sent, bool prefix_ok) {
  size_t n = got->len < sent->len ? got->len : sent->len;
  for (size_t k = 0; k < n; k++) {
    if (got->p[k] != sent->p[k])
      fz_fail("%s: tunnel %zu: %s: byte %zu is 0x%02x, sent 0x%02x (of %zu sent, %zu got)", harness,
              i, what, k, got->p[k], sent->p[k], sent->len, got->len);
  }
  if (got->len > sent->len)
    fz_fail("%s: tunnel %zu: %s: %zu bytes more than were sent (%zu)", harness, i, what,
            got->len - sent->len, sent->len);
  if (!prefix_ok && got->len < sent->len)
    fz_fail("%s: tunnel %zu: %s: %zu of %zu bytes lost without a reset", harness, i, what,
            sent->len - got->len, sent->len);
}

void fzr_check(const char *harness) {
  bool any_reset = false;
  uint64_t up = 0, down = 0;
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    fzr_tunnel *t = &tunnels[i];
    if (!t->used)
      continue;
    /* After device_gone the engine may close upstream with the echo unread:
     * the upstream's writes may then meet a reset. */
    if (t->reset_seen && !t->reset_asked && !t->device_gone)
      fz_fail("%s: tunnel %zu was reset, though no side asked for it", harness, i);
    same(harness, i, "upstream received", &t->up_got, &t->dev_sent, t->reset_asked);
    same(harness, i, "device received", &t->dev_got, &t->up_sent, t->reset_asked || t->device_gone);
    if (getenv("FZR_TRACE"))
      fprintf(stderr, "%s: tunnel %zu: sent %zu, upstream got %zu and sent %zu, device got %zu%s\n",
              harness, i, t->dev_sent.len, t->up_got.len, t->up_sent.len, t->dev_got.len,
              t->reset_asked   ? " (reset)"
              : t->device_gone ? " (device gone)"
                               : "");
    any_reset |= t->reset_asked || t->device_gone;
    up += t->up_got.len;
    down += t->dev_got.len;
  }
  if (any_reset)
    return;
  if (closed.not_eof)
    fz_fail("%s: %zu tunnels closed with close=%s rather than eof, though none was reset", harness,
            closed.not_eof, closed.last_reason ? closed.last_reason : "-");
  if (closed.bytes_up != up || closed.bytes_down != down)
    fz_fail("%s: the access log counted %llu bytes up and %llu down; upstream got %llu and the "
            "device %llu",
            harness, (unsigned long long)closed.bytes_up, (unsigned long long)closed.bytes_down,
            (unsigned long long)up, (unsigned long long)down);
}
