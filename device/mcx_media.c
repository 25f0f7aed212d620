/* mcx-media: an MC device's media path through an MC gateway UE, for tests,
 * `make demo` and `make bench`.
 *
 *   mcx-media --proxy URL --target HOST:PORT [--h2] [TLS options] [stream options]
 *     opens a CONNECT-UDP tunnel (RFC 9298; HTTP/1.1 Upgrade, or HTTP/2
 *     extended CONNECT with --h2) and sends an RTP-shaped stream through it to
 *     a reflector, then prints what came back: sent, received, lost,
 *     reordered, round trip p50/p99, RFC 3550 interarrival jitter.
 *   mcx-media reflect --listen HOST:PORT
 *     a plain UDP echo: each datagram goes back to its sender.
 *
 * Self-contained on OpenSSL, nghttp2 and blocking sockets with ppoll(2): it
 * shares no code with the gateway (only its proxy options with mcx-login,
 * device/proxy_opts.c, libc only), so what it proves about the gateway's
 * CONNECT-UDP is proven by an independent implementation of the capsule
 * protocol. The gateway's TLS listener is always verified. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "device/proxy_opts.h"

#define PROG "mcx-media"
#define RTP_HEADER 12
#define STAMP 8   /* send time (ns, big-endian) at the start of the payload */
#define COUNTER 4 /* then the packet's number over all tunnels (big-endian) */
#define TUNNELS_MAX 1000
#define MAX_DATAGRAM 1500 /* the gateway's default udp_max_payload */
#define SETUP_TIMEOUT_MS 10000
#define GRACE_MS 1000 /* after the last datagram sent, wait this long for echoes */

typedef struct opts {
  mcx_proxy_opts proxy;
  const char *target;
  bool json, direct;
  unsigned pps, size, tunnels;
  double seconds, hold;
} opts;

/* ---- the connection to the gateway: TCP or TLS ---- */

typedef struct conn {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  char in[1 << 16]; /* bytes read and not yet parsed */
  size_t in_len;
} conn;

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, PROG ": ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port (in buf). */
static void split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s)
    die("expected HOST:PORT, got '%s'", s);
  size_t n = (size_t)(colon - s);
  if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
    s++;
    n -= 2;
  }
  if (n >= hlen || strlen(colon + 1) >= plen || !colon[1])
    die("expected HOST:PORT, got '%s'", s);
  memcpy(host, s, n);
  host[n] = '\0';
  strcpy(port, colon + 1);
}

static int dial(const char *host, const char *port, int socktype) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = socktype}, *res, *ai;
  int err = getaddrinfo(host, port, &hints, &res), fd = -1;
  if (err)
    die("%s: %s", host, gai_strerror(err));
  for (ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0)
    die("cannot connect to %s:%s: %s", host, port, strerror(errno));
  return fd;
}

static void tls_start(conn *c, const mcx_proxy_opts *o, const char *host) {
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (!c->ctx)
    die("out of memory");
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
  if (o->cacert ? SSL_CTX_load_verify_locations(c->ctx, o->cacert, NULL) != 1
                : SSL_CTX_set_default_verify_paths(c->ctx) != 1)
    die("cannot load trust anchors%s%s", o->cacert ? " from " : "", o->cacert ? o->cacert : "");
  if (o->cert) {
    char err[512];
    if (mcx_proxy_opts_check_key(o, err, sizeof err) != 0)
      die("%s", err);
    if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) != 1)
      die("cannot load the device certificate %s and key %s", o->cert, o->key);
  }
  static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
  if (o->h2)
    SSL_CTX_set_alpn_protos(c->ctx, alpn_h2, sizeof(alpn_h2) - 1);
  else
    SSL_CTX_set_alpn_protos(c->ctx, alpn_h1, sizeof(alpn_h1) - 1);
  c->ssl = SSL_new(c->ctx);
  SSL_set_fd(c->ssl, c->fd);
  SSL_set_tlsext_host_name(c->ssl, host);
  SSL_set1_host(c->ssl, host);
  if (SSL_connect(c->ssl) != 1) {
    unsigned long e = ERR_peek_last_error();
    die("TLS with the gateway failed: %s", e ? ERR_reason_error_string(e) : "handshake");
  }
}

/* The scheme was checked with the options (mcx_proxy_opts_usage_error). */
static void conn_open(conn *c, const mcx_proxy_opts *o) {
  char host[256], port[16];
  bool tls = mcx_proxy_opts_tls(o);
  const char *rest = strstr(o->url, "://") + 3;
  char hp[300];
  snprintf(hp, sizeof hp, "%.*s", (int)strcspn(rest, "/"), rest);
  split_hostport(hp, host, sizeof host, port, sizeof port);
  c->fd = dial(host, port, SOCK_STREAM);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (tls)
    tls_start(c, o, host);
}

static void conn_write(conn *c, const void *p, size_t n) {
  const char *b = p;
  while (n) {
    ssize_t k = c->ssl ? SSL_write(c->ssl, b, (int)n) : write(c->fd, b, n);
    if (k <= 0) {
      if (!c->ssl && k < 0 && errno == EINTR)
        continue;
      die("the gateway connection failed while writing");
    }
    b += k;
    n -= (size_t)k;
  }
}

#define MS ((uint64_t)1000000) /* in ns */

/* Whether fd became readable within ns. To the nanosecond (ppoll), so that
 * waiting for the next send of a fast stream (every 200 µs for 100 tunnels
 * at 50/s) sleeps instead of spinning: a spinning load generator takes a
 * core from the relay it measures. */
static bool readable(int fd, uint64_t ns) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
  return ppoll(&p, 1, &ts, NULL) > 0;
}

/* Waits up to ns for bytes from the gateway and appends them to c->in.
 * Returns false on timeout; dies when the gateway closes. */
static bool conn_read(conn *c, uint64_t ns) {
  if (!(c->ssl && SSL_pending(c->ssl)) && !readable(c->fd, ns))
    return false;
  if (c->in_len == sizeof c->in)
    die("the gateway sent more than this client can hold");
  ssize_t n = c->ssl ? SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof c->in - c->in_len))
                     : read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
  if (n <= 0) {
    if (c->ssl && SSL_get_error(c->ssl, (int)n) == SSL_ERROR_WANT_READ)
      return true;
    die("the gateway closed the connection");
  }
  c->in_len += (size_t)n;
  return true;
}

static void conn_consume(conn *c, size_t n) {
  memmove(c->in, c->in + n, c->in_len - n);
  c->in_len -= n;
}

/* ---- capsules (RFC 9297), written here independently of the gateway ---- */

static size_t varint_put(uint8_t *p, uint64_t v) {
  if (v < 64) {
    p[0] = (uint8_t)v;
    return 1;
  }
  if (v < 16384) {
    p[0] = (uint8_t)(0x40 | (v >> 8));
    p[1] = (uint8_t)v;
    return 2;
  }
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * (3 - i)));
  p[0] |= 0x80;
  return 4;
}

/* A varint at p[0..n): its length, or 0 if incomplete. */
static size_t varint_get(const uint8_t *p, size_t n, uint64_t *v) {
  if (!n)
    return 0;
  size_t len = (size_t)1 << (p[0] >> 6);
  if (n < len)
    return 0;
  *v = p[0] & 0x3f;
  for (size_t i = 1; i < len; i++)
    *v = (*v << 8) | p[i];
  return len;
}

/* A DATAGRAM capsule (Context ID 0) around payload into out; its length. */
static size_t capsule_wrap(uint8_t *out, const uint8_t *payload, size_t n) {
  size_t h = 0;
  out[h++] = 0;
  h += varint_put(out + h, n + 1);
  out[h++] = 0;
  memcpy(out + h, payload, n);
  return h + n;
}

/* The next complete capsule at p[0..n): calls on_datagram for a DATAGRAM
 * with Context ID 0 and returns its total length; 0 if incomplete. */
typedef void (*datagram_fn)(void *arg, const uint8_t *p, size_t n);
static size_t capsule_next(const uint8_t *p, size_t n, datagram_fn fn, void *arg) {
  uint64_t type, len, ctx;
  size_t a = varint_get(p, n, &type), b;
  if (!a || !(b = varint_get(p + a, n - a, &len)) || len > n - a - b)
    return 0;
  if (type == 0) {
    size_t c = varint_get(p + a + b, (size_t)len, &ctx);
    if (!c)
      die("malformed DATAGRAM capsule from the gateway");
    if (ctx == 0)
      fn(arg, p + a + b + c, (size_t)len - c);
  }
  return a + b + (size_t)len;
}

/* ---- statistics ---- */

typedef struct stats {
  uint64_t sent, received, reordered, duplicates;
  unsigned tunnels;  /* packet k goes through tunnel k % tunnels */
  uint64_t *highest; /* per tunnel: 1 + the highest packet number received; 0 none */
  uint8_t *seen;     /* per sequence number sent */
  double *rtt_ms;
  double jitter_ms; /* RFC 3550 6.4.1 estimate, in ms */
  double last_transit_ms;
  bool have_transit;
  uint64_t start_ns;
  uint64_t send_ns; /* first to last send: sent / this is the rate really offered */
} stats;

/* An echoed packet: its sequence number and send time (in the payload). */
static void on_echo(void *arg, const uint8_t *p, size_t n) {
  stats *s = arg;
  uint64_t now = now_ns();
  if (n < RTP_HEADER + STAMP + COUNTER)
    return;
  uint64_t sent_ns = 0, full = 0;
  for (int i = 0; i < STAMP; i++)
    sent_ns = sent_ns << 8 | p[RTP_HEADER + i];
  for (int i = 0; i < COUNTER; i++)
    full = full << 8 | p[RTP_HEADER + STAMP + i];
  if (full >= s->sent || s->seen[full]) {
    s->duplicates++;
    return;
  }
  s->seen[full] = 1;
  uint64_t *hi = &s->highest[full % s->tunnels]; /* order is per tunnel */
  if (*hi && full + 1 < *hi)
    s->reordered++;
  if (full + 1 > *hi)
    *hi = full + 1;
  double rtt = (double)(now - sent_ns) / 1e6;
  s->rtt_ms[s->received++] = rtt;
  /* RFC 3550 6.4.1: D = difference of transit times, J += (|D| - J) / 16;
   * transit here is the round trip (the reflector's clock is ours). */
  if (s->have_transit) {
    double d = fabs(rtt - s->last_transit_ms);
    s->jitter_ms += (d - s->jitter_ms) / 16.0;
  }
  s->last_transit_ms = rtt;
  s->have_transit = true;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double percentile(double *v, uint64_t n, double q) {
  if (!n)
    return 0;
  size_t i = (size_t)ceil(q * (double)n) - 1;
  return v[i < n ? i : n - 1];
}

static void report(stats *s, const opts *o) {
  qsort(s->rtt_ms, s->received, sizeof(double), cmp_double);
  double p50 = percentile(s->rtt_ms, s->received, 0.50);
  double p99 = percentile(s->rtt_ms, s->received, 0.99);
  uint64_t lost = s->sent - s->received;
  if (o->json)
    printf("{\"sent\": %llu, \"received\": %llu, \"lost\": %llu, \"reordered\": %llu, "
           "\"duplicates\": %llu, \"rtt_p50_ms\": %.3f, \"rtt_p99_ms\": %.3f, "
           "\"jitter_ms\": %.3f, \"send_s\": %.6f, \"pps\": %u, \"size\": %u, \"tunnels\": %u, "
           "\"proto\": \"%s\"}\n",
           (unsigned long long)s->sent, (unsigned long long)s->received, (unsigned long long)lost,
           (unsigned long long)s->reordered, (unsigned long long)s->duplicates, p50, p99,
           s->jitter_ms, (double)s->send_ns / 1e9, o->pps, o->size, o->tunnels,
           o->direct     ? "direct"
           : o->proxy.h2 ? "h2"
                         : "h1");
  else
    printf("sent %llu, received %llu, lost %llu, reordered %llu\n"
           "round trip p50 %.3f ms, p99 %.3f ms\njitter %.3f ms (RFC 3550)\n",
           (unsigned long long)s->sent, (unsigned long long)s->received, (unsigned long long)lost,
           (unsigned long long)s->reordered, p50, p99, s->jitter_ms);
}

/* One RTP packet (RFC 3550 5.1: V=2, PT 0, 8 kHz clock) of o->size payload
 * bytes, the send time first in the payload. */
static size_t rtp_packet(uint8_t *p, uint32_t seq, uint32_t ssrc, const opts *o, uint64_t t,
                         uint64_t number) {
  uint32_t ts = seq * (8000 / (o->pps ? o->pps : 50));
  p[0] = 0x80;
  p[1] = 0;
  p[2] = (uint8_t)(seq >> 8);
  p[3] = (uint8_t)seq;
  for (int i = 0; i < 4; i++) {
    p[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
    p[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
  }
  memset(p + RTP_HEADER, 0xd5, o->size); /* PCMU silence */
  for (int i = 0; i < STAMP; i++)
    p[RTP_HEADER + i] = (uint8_t)(t >> (56 - 8 * i));
  for (int i = 0; i < COUNTER; i++)
    p[RTP_HEADER + STAMP + i] = (uint8_t)(number >> (24 - 8 * i));
  return RTP_HEADER + o->size;
}

/* ---- the tunnel: HTTP/1.1 Upgrade or HTTP/2 extended CONNECT ---- */

typedef struct tunnel {
  conn c;
  const opts *o;
  stats *st;
  char path[600];
  /* HTTP/2: one stream per tunnel */
  nghttp2_session *h2;
  struct h2s *s;
  unsigned n;
  int udp; /* --direct: a UDP socket connected to the target, no gateway */
} tunnel;

/* One CONNECT-UDP stream of the HTTP/2 connection. */
typedef struct h2s {
  tunnel *t;
  int32_t sid;
  int status;
  bool reset;
  uint8_t out[16384]; /* capsules waiting for the data provider */
  size_t out_len;
  uint8_t rx[16384]; /* DATA bytes not yet parsed into capsules */
  size_t rx_len;
} h2s;

/* The stream of sid, or NULL (client stream ids are 1, 3, 5...). */
static h2s *stream_of(tunnel *t, int32_t sid) {
  if (sid < 1 || !(sid & 1) || (unsigned)(sid - 1) / 2 >= t->n || t->s[(sid - 1) / 2].sid != sid)
    return NULL;
  return &t->s[(sid - 1) / 2];
}

static void build_path(tunnel *t) {
  char host[256], port[16], enc[400];
  split_hostport(t->o->target, host, sizeof host, port, sizeof port);
  size_t j = 0;
  for (size_t i = 0; host[i] && j + 4 < sizeof enc; i++) {
    if (host[i] == ':') {
      memcpy(enc + j, "%3A", 3);
      j += 3;
    } else {
      enc[j++] = host[i];
    }
  }
  enc[j] = '\0';
  snprintf(t->path, sizeof t->path, "/.well-known/masque/udp/%s/%s/", enc, port);
}

/* The end of a response head in p[0..n) (its blank line), or NULL. */
static char *head_end(char *p, size_t n) {
  for (size_t i = 0; i + 4 <= n; i++)
    if (memcmp(p + i, "\r\n\r\n", 4) == 0)
      return p + i;
  return NULL;
}

static void h1_open(tunnel *t) {
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n"
                   "Upgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n",
                   t->path);
  conn_write(&t->c, req, (size_t)n);
  uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000u;
  char *end;
  while (!(end = head_end(t->c.in, t->c.in_len))) {
    if (now_ns() > deadline)
      die("no answer from the gateway");
    conn_read(&t->c, 100 * MS);
  }
  int status = 0;
  sscanf(t->c.in, "HTTP/1.1 %d", &status);
  if (status != 101)
    die("the gateway refused the tunnel: %.*s", (int)strcspn(t->c.in, "\r\n"), t->c.in);
  conn_consume(&t->c, (size_t)(end + 4 - t->c.in));
}

static ssize_t h2_send(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *u) {
  (void)s, (void)f;
  conn_write(&((tunnel *)u)->c, d, n);
  return (ssize_t)n;
}

static int h2_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t fl, void *u) {
  (void)s, (void)fl;
  tunnel *t = u;
  (void)vl; /* nghttp2 NUL-terminates values */
  h2s *st = stream_of(t, fr->hd.stream_id);
  if (st && nl == 7 && memcmp(name, ":status", 7) == 0)
    st->status = (int)strtol((const char *)value, NULL, 10);
  return 0;
}

static int h2_chunk(nghttp2_session *s, uint8_t fl, int32_t sid, const uint8_t *d, size_t n,
                    void *u) {
  (void)s, (void)fl;
  tunnel *t = u;
  h2s *st = stream_of(t, sid);
  if (!st)
    return 0;
  if (n > sizeof st->rx - st->rx_len)
    die("capsule larger than this client can hold");
  memcpy(st->rx + st->rx_len, d, n);
  st->rx_len += n;
  size_t used, off = 0;
  while ((used = capsule_next(st->rx + off, st->rx_len - off, on_echo, t->st)))
    off += used;
  memmove(st->rx, st->rx + off, st->rx_len - off);
  st->rx_len -= off;
  return 0;
}

static int h2_closed(nghttp2_session *s, int32_t sid, uint32_t code, void *u) {
  (void)s, (void)code;
  h2s *st = stream_of(u, sid);
  if (st)
    st->reset = true;
  return 0;
}

static ssize_t h2_provide(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                          uint32_t *flags, nghttp2_data_source *src, void *u) {
  (void)s, (void)sid, (void)flags, (void)u;
  h2s *st = src->ptr;
  if (!st->out_len)
    return NGHTTP2_ERR_DEFERRED;
  size_t n = st->out_len < len ? st->out_len : len;
  memcpy(buf, st->out, n);
  memmove(st->out, st->out + n, st->out_len - n);
  st->out_len -= n;
  return (ssize_t)n;
}

/* Feeds what was read to nghttp2 and writes what it wants to send. */
static void h2_pump(tunnel *t, uint64_t ns) {
  if (conn_read(&t->c, ns)) {
    ssize_t n = nghttp2_session_mem_recv(t->h2, (const uint8_t *)t->c.in, t->c.in_len);
    if (n < 0)
      die("HTTP/2 error from the gateway: %s", nghttp2_strerror((int)n));
    conn_consume(&t->c, (size_t)n);
  }
  if (nghttp2_session_send(t->h2) != 0)
    die("HTTP/2 send failed");
}

static void h2_open(tunnel *t) {
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, h2_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, h2_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_closed);
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_http_messaging(opt, 1);
  if (nghttp2_session_client_new2(&t->h2, cb, t, opt) != 0)
    die("out of memory");
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(t->h2, NGHTTP2_FLAG_NONE, iv, 1);
  nghttp2_session_set_local_window_size(t->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24);
  nghttp2_session_send(t->h2);
  uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000u;
  /* RFC 8441 3: extended CONNECT only once the server said it takes it */
  while (!nghttp2_session_get_remote_settings(t->h2, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL)) {
    if (now_ns() > deadline)
      die("the gateway does not offer extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)");
    h2_pump(t, 100 * MS);
  }
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nv[] = {NV(":method", "CONNECT"), NV(":protocol", "connect-udp"),
                     NV(":scheme", "https"),   NV(":authority", "gateway"),
                     NV(":path", t->path),     NV("capsule-protocol", "?1")};
#undef NV
  for (unsigned i = 0; i < t->n; i++) {
    h2s *st = &t->s[i];
    st->t = t;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = h2_provide};
    st->sid = nghttp2_submit_request(t->h2, NULL, nv, sizeof nv / sizeof nv[0], &dp, NULL);
    if (st->sid < 0)
      die("cannot send the request: %s", nghttp2_strerror(st->sid));
    if (st->sid != (int32_t)(2 * i + 1))
      die("unexpected stream id %d", st->sid);
  }
  for (unsigned i = 0; i < t->n; i++) {
    h2s *st = &t->s[i];
    while (!st->status) {
      if (now_ns() > deadline || st->reset)
        die("no answer from the gateway");
      h2_pump(t, 100 * MS);
    }
    if (st->status != 200)
      die("the gateway refused the tunnel: %d", st->status);
  }
}

/* Sends one datagram through tunnel k (HTTP/2: stream k; else the one). */
static void send_datagram(tunnel *t, unsigned k, const uint8_t *p, size_t n) {
  if (t->udp >= 0) {
    (void)send(t->udp, p, n, 0); /* lost if the socket is full: UDP */
    return;
  }
  uint8_t cap[MAX_DATAGRAM + 16];
  size_t len = capsule_wrap(cap, p, n);
  if (!t->h2) {
    conn_write(&t->c, cap, len);
    return;
  }
  h2s *st = &t->s[k];
  if (len > sizeof st->out - st->out_len)
    return; /* the stream's window is closed: dropped, as UDP would */
  memcpy(st->out + st->out_len, cap, len);
  st->out_len += len;
  nghttp2_session_resume_data(t->h2, st->sid);
  nghttp2_session_send(t->h2);
}

/* Reads echoes for up to ns. */
static void receive(tunnel *t, uint64_t ns) {
  if (t->udp >= 0) {
    uint8_t buf[MAX_DATAGRAM];
    if (!readable(t->udp, ns))
      return;
    ssize_t n;
    while ((n = recv(t->udp, buf, sizeof buf, MSG_DONTWAIT)) >= 0)
      on_echo(t->st, buf, (size_t)n);
    return;
  }
  if (t->h2) {
    h2_pump(t, ns);
    for (unsigned i = 0; i < t->n; i++)
      if (t->s[i].reset)
        die("the gateway reset a tunnel");
    return;
  }
  if (!conn_read(&t->c, ns))
    return;
  size_t used, off = 0;
  while ((used = capsule_next((uint8_t *)t->c.in + off, t->c.in_len - off, on_echo, t->st)))
    off += used;
  conn_consume(&t->c, off);
}

/* --hold: every tunnel carried one datagram each way; now they stay open
 * and idle (the benchmark reads the gateway's memory meanwhile). */
static void hold_idle(tunnel *t, const opts *o) {
  printf("holding %u tunnels\n", t->n);
  fflush(stdout);
  uint64_t end = now_ns() + (uint64_t)(o->hold * 1e9);
  while (now_ns() < end)
    receive(t, 100 * MS);
}

static int run_stream(const opts *o) {
  static tunnel t; /* large buffers: not on the stack */
  stats st = {0};
  unsigned n = o->tunnels;
  uint64_t total = o->hold > 0 ? n : (uint64_t)(o->seconds * o->pps) * n;
  st.seen = calloc(total + 1, 1);
  st.rtt_ms = calloc(total + 1, sizeof(double));
  st.highest = calloc(n, sizeof(uint64_t));
  st.tunnels = n;
  t.s = calloc(n, sizeof(h2s));
  t.n = n;
  if (!st.seen || !st.rtt_ms || !st.highest || !t.s)
    die("out of memory");
  t.o = o;
  t.st = &st;
  t.udp = -1;
  if (o->direct) {
    char host[256], port[16];
    split_hostport(o->target, host, sizeof host, port, sizeof port);
    t.udp = dial(host, port, SOCK_DGRAM);
  } else {
    build_path(&t);
    conn_open(&t.c, &o->proxy);
    if (o->proxy.h2)
      h2_open(&t);
    else
      h1_open(&t);
  }
  uint32_t ssrc = (uint32_t)getpid() * 2654435761u;
  /* packet k goes through tunnel k % n, with RTP sequence number k / n */
  uint64_t interval = o->hold > 0 ? 0 : 1000000000u / ((uint64_t)o->pps * n), next = now_ns();
  st.start_ns = next;
  uint8_t pkt[MAX_DATAGRAM];
  while (st.sent < total) {
    uint64_t now = now_ns();
    if (now >= next) {
      unsigned k = (unsigned)(st.sent % n);
      size_t len = rtp_packet(pkt, (uint32_t)(st.sent / n), ssrc + k, o, now, st.sent);
      send_datagram(&t, k, pkt, len);
      st.sent++;
      next += interval;
      continue;
    }
    receive(&t, next - now);
  }
  st.send_ns = now_ns() - st.start_ns;
  uint64_t grace_end = now_ns() + (uint64_t)GRACE_MS * 1000000u;
  while (st.received < st.sent && now_ns() < grace_end)
    receive(&t, 20 * MS);
  if (o->hold > 0)
    hold_idle(&t, o);
  report(&st, o);
  free(st.seen);
  free(st.rtt_ms);
  free(st.highest);
  free(t.s);
  return 0;
}

/* ---- the reflector ---- */

/* Echoes until killed (or a receive error other than EINTR). */
static int run_reflect(const char *listen) {
  char host[256], port[16];
  split_hostport(listen, host, sizeof host, port, sizeof port);
  struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE}, *res;
  int err = getaddrinfo(host, port, &hints, &res);
  if (err)
    die("%s: %s", listen, gai_strerror(err));
  int fd = socket(res->ai_family, SOCK_DGRAM, 0);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0)
    die("cannot listen on %s: %s", listen, strerror(errno));
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  char addr[INET6_ADDRSTRLEN];
  uint16_t p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  inet_ntop(ss.ss_family,
            ss.ss_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                     : (void *)&((struct sockaddr_in *)&ss)->sin_addr,
            addr, sizeof addr);
  printf(ss.ss_family == AF_INET6 ? "reflecting on [%s]:%u\n" : "reflecting on %s:%u\n", addr, p);
  fflush(stdout);
  uint8_t buf[65536];
  for (;;) {
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n >= 0)
      sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    else if (errno != EINTR)
      die("receive failed: %s", strerror(errno));
  }
  return 0;
}

static void usage(FILE *f) {
  static const char head[] = "Usage: " PROG " --proxy URL --target HOST:PORT [options]\n"
                             "       " PROG " reflect --listen HOST:PORT\n\n";
  static const char proxy[] =
      MCX_PROXY_HELP("HTTP/1.1 Upgrade", "HTTP/2 extended CONNECT instead of HTTP/1.1 Upgrade");
  static const char rest[] =
      "  --target HOST:PORT     where the datagrams go (a reflector)\n"
      "  --pps N                packets per second (default 50: one every 20 ms)\n"
      "  --size N               RTP payload bytes (default 160; 8..1488)\n"
      "  --seconds S            how long to send (default 10)\n"
      "  --json                 the figures as one JSON object\n"
      "  --tunnels N            N tunnels on the one HTTP/2 connection (--h2; default 1),\n"
      "                         each carrying --pps packets per second; with --direct,\n"
      "                         the same N streams on one UDP socket (their floor)\n"
      "  --hold S               one packet through each tunnel, then keep them idle S s\n"
      "  --direct               no gateway: straight to the target (the benchmark's floor)\n";
  fputs(head, f);
  fputs(proxy, f);
  fputs(rest, f);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && strcmp(argv[1], "reflect") == 0) {
    if (argc == 4 && strcmp(argv[2], "--listen") == 0)
      return run_reflect(argv[3]);
    usage(stderr);
    return 2;
  }
  opts o = {.pps = 50, .size = 160, .seconds = 10, .tunnels = 1};
  enum { O_TARGET = 256, O_PPS, O_SIZE, O_SECONDS, O_JSON, O_DIRECT, O_TUNNELS, O_HOLD };
  static const struct option longopts[] = {
      MCX_PROXY_LONGOPTS,
      {"target", required_argument, NULL, O_TARGET},
      {"pps", required_argument, NULL, O_PPS},
      {"size", required_argument, NULL, O_SIZE},
      {"seconds", required_argument, NULL, O_SECONDS},
      {"json", no_argument, NULL, O_JSON},
      {"direct", no_argument, NULL, O_DIRECT},
      {"tunnels", required_argument, NULL, O_TUNNELS},
      {"hold", required_argument, NULL, O_HOLD},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (mcx_proxy_opt(&o.proxy, c, optarg))
      continue;
    switch (c) {
    case O_TARGET:
      o.target = optarg;
      break;
    case O_PPS:
      o.pps = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case O_SIZE:
      o.size = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case O_SECONDS:
      o.seconds = strtod(optarg, NULL);
      break;
    case O_JSON:
      o.json = true;
      break;
    case O_DIRECT:
      o.direct = true;
      break;
    case O_TUNNELS:
      o.tunnels = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case O_HOLD:
      o.hold = strtod(optarg, NULL);
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if ((!o.proxy.url && !o.direct) || !o.target)
    die("--proxy and --target are required (or: " PROG " reflect --listen HOST:PORT)");
  const char *bad = mcx_proxy_opts_usage_error(&o.proxy);
  if (bad)
    die("%s", bad);
  if (o.pps < 1 || o.pps > 100000 || o.size < STAMP + COUNTER ||
      o.size > MAX_DATAGRAM - RTP_HEADER || !(o.seconds > 0 && o.seconds <= 3600) ||
      o.tunnels < 1 || o.tunnels > TUNNELS_MAX || o.hold < 0 || o.hold > 3600)
    die("--pps 1..100000, --size %d..%d, --seconds up to 3600, --tunnels 1..%d, --hold up to 3600",
        STAMP + COUNTER, MAX_DATAGRAM - RTP_HEADER, TUNNELS_MAX);
  if (o.tunnels > 1 && !o.proxy.h2 && !o.direct)
    die("--tunnels needs --h2 (HTTP/2 streams on one connection) or --direct");
  return run_stream(&o);
}
