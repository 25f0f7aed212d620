/* mcgw_loadgen h2: HTTP/2 CONNECT streams over TLS (ALPN h2) to mcgw's
 * listen_tls, many streams multiplexed on each connection.
 *
 *   mcgw_loadgen h2 bulk --proxy H:P --target H:P --ca FILE [--streams 100]
 *                        [--conns 1] [--bytes B] [--dir up|down] [--window BYTES]
 *       --streams CONNECT streams (spread over --conns connections) to the
 *       upstream's sink (up) or source (down), B bytes in all, split evenly.
 *       Every stream is opened and answered 200 first; the clock then runs
 *       from the moment all of them start sending (up) or ask for their bytes
 *       (down) until the last one is complete (up: every sink has answered
 *       its count; down: every byte has arrived). Byte counts are checked at
 *       the receiving end.
 *   mcgw_loadgen h2 hold --proxy H:P --target H:P --ca FILE [--streams 100]
 *                        [--conns 1] [--steps A,B,..] [--pause S] [--hold-secs S]
 *       Opens --conns connections (TLS handshake, SETTINGS exchanged and
 *       acknowledged) and prints "LEVEL streams=0 ..."; then, at each SIGUSR1
 *       (or after --pause), opens streams to the echo upstream up to the next
 *       step, each verified by a 1-byte echo, and prints "LEVEL ..."; after
 *       all --streams, "HELD ..."; SIGUSR1/SIGINT/SIGTERM (or --hold-secs)
 *       ends the run with "RESULT mode=h2hold ...".
 *
 * The server certificate is verified against --ca and must be valid for the
 * proxy's IP address; ALPN must select h2. Flow control is the
 * application's: automatic WINDOW_UPDATE is off and every DATA byte is
 * consumed (nghttp2_session_consume) once this program has read it, which
 * reopens the windows. The client's windows are large so that they are not
 * what limits a transfer: --window per stream (default 16 MiB) and the
 * connection window at its maximum, 2^31-1.
 *
 * The socket is driven with uv_poll and OpenSSL on the descriptor itself
 * (no memory BIOs): the load generator should cost as little as it can. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

#define IN_CHUNK (256 * 1024)     /* one SSL_read */
#define READS_PER_WAKE 16         /* then write (WINDOW_UPDATEs) before reading more */
#define OUT_COALESCE (256 * 1024) /* frames gathered before one SSL_write */
#define CHECK_MS 250
#define BULK_MAX_MS (120 * 1000)

typedef enum { OP_BULK, OP_HOLD } h2_op;

static struct {
  h2_op op;
  struct sockaddr_storage proxy;
  char proxy_host[64];
  char target[80];
  const char *ca;
  unsigned streams, conns;
  uint64_t bytes;
  int down;
  uint32_t window;
  uint64_t steps[64];
  size_t n_steps;
  double pause_s, hold_s, timeout_s;
} o;

typedef enum {
  HF_CONNECT, HF_TLS, HF_ALPN, HF_PROTO, HF_STATUS, HF_RESET, HF_ECHO, HF_TIMEOUT, HF_BULK,
  HF_COUNT_
} h2_failure;

static const char *const hf_names[HF_COUNT_] = {"connect", "tls",  "alpn",    "h2",  "status",
                                                "reset",   "echo", "timeout", "bulk"};

typedef enum { S_IDLE, S_OPENING, S_ECHO, S_HELD, S_READY, S_BULK, S_DONE, S_FAILED } sstate;

typedef struct conn conn;

typedef struct {
  conn *c;
  int32_t id;
  sstate state;
  int status;            /* :status of the response */
  int deferred;          /* the data provider returned DEFERRED */
  int want_echo;         /* hold: the echo byte is still to be sent */
  int send_eof;          /* END_STREAM on the next provider call */
  char line[24];         /* bulk: "<count>\n" for the sink or source */
  size_t line_len, line_off;
  uint64_t count;        /* bulk: this stream's payload bytes */
  uint64_t to_send;      /* up: payload bytes still to send */
  uint64_t got;          /* down: payload bytes received */
  char resp[32];         /* up: the sink's answer */
  size_t resp_len;
  uint64_t deadline_ms;
} strm;

struct conn {
  uv_poll_t poll;
  int fd;
  SSL *ssl;
  nghttp2_session *sess;
  int connected, handshaken, got_settings, settings_acked, ready, closing;
  int ssl_wants_write;
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  uint64_t deadline_ms;
};

static struct {
  uv_loop_t *loop;
  SSL_CTX *ctx;
  conn *conns;
  strm *streams;
  unsigned conns_ready, conns_closed;
  uint64_t started, ok, failed, dropped, done;
  uint64_t fail_by[HF_COUNT_];
  lg_levels lv;
  int finishing, logged;
  uint64_t established; /* bulk: streams answered 200 */
  double t_start, t0, t1;
  uint64_t bytes_moved;
  uv_timer_t check;
  char cipher[64], version[16];
} g;

static char payload[64 * 1024]; /* what the upload sends, over and over */
static uint8_t in_buf[IN_CHUNK];

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static void usage(void) {
  fprintf(stderr,
          "usage: mcgw_loadgen h2 bulk --proxy H:P --target H:P --ca FILE [--streams N] "
          "[--conns C] [--bytes B] [--dir up|down] [--window BYTES] [--timeout SECS]\n"
          "       mcgw_loadgen h2 hold --proxy H:P --target H:P --ca FILE [--streams N] "
          "[--conns C] [--steps A,B,...] [--pause SECS] [--hold-secs SECS]\n");
}

/* ---------------------------------------------------------------- options */

static int parse_proxy(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(o.proxy_host))
    return -1;
  memcpy(o.proxy_host, s, (size_t)(colon - s));
  o.proxy_host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port <= 0 || port > 65535)
    return -1;
  memset(&o.proxy, 0, sizeof(o.proxy));
  if (o.proxy_host[0] == '[') {
    size_t n = strlen(o.proxy_host);
    if (n < 3 || o.proxy_host[n - 1] != ']')
      return -1;
    memmove(o.proxy_host, o.proxy_host + 1, n - 2);
    o.proxy_host[n - 2] = '\0';
    return uv_ip6_addr(o.proxy_host, (int)port, (struct sockaddr_in6 *)&o.proxy) == 0 ? 0 : -1;
  }
  return uv_ip4_addr(o.proxy_host, (int)port, (struct sockaddr_in *)&o.proxy) == 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv) {
  if (argc < 3)
    return -1;
  if (strcmp(argv[2], "bulk") == 0)
    o.op = OP_BULK;
  else if (strcmp(argv[2], "hold") == 0)
    o.op = OP_HOLD;
  else
    return -1;
  o.streams = 100;
  o.conns = 1;
  o.window = 16u << 20;
  o.bytes = 1ull << 30;
  o.timeout_s = 10;
  int have_proxy = 0;
  for (int i = 3; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0;
    if (!v) {
      fprintf(stderr, "loadgen: %s needs a value\n", a);
      return -1;
    }
    if (strcmp(a, "--proxy") == 0)
      bad = parse_proxy(v), have_proxy = 1;
    else if (strcmp(a, "--target") == 0)
      bad = snprintf(o.target, sizeof(o.target), "%s", v) >= (int)sizeof(o.target);
    else if (strcmp(a, "--ca") == 0)
      o.ca = v;
    else if (strcmp(a, "--streams") == 0)
      bad = (o.streams = (unsigned)strtoul(v, NULL, 10)) == 0;
    else if (strcmp(a, "--conns") == 0)
      bad = (o.conns = (unsigned)strtoul(v, NULL, 10)) == 0;
    else if (strcmp(a, "--bytes") == 0)
      bad = (o.bytes = strtoull(v, NULL, 10)) == 0;
    else if (strcmp(a, "--dir") == 0)
      bad = !(strcmp(v, "up") == 0 || (o.down = strcmp(v, "down") == 0));
    else if (strcmp(a, "--window") == 0) {
      unsigned long long w = strtoull(v, NULL, 10);
      bad = w < 65535 || w > 0x7fffffff;
      o.window = (uint32_t)w;
    } else if (strcmp(a, "--steps") == 0)
      bad = lg_parse_steps(v, o.steps, &o.n_steps, sizeof(o.steps) / sizeof(o.steps[0]));
    else if (strcmp(a, "--pause") == 0)
      o.pause_s = strtod(v, NULL);
    else if (strcmp(a, "--hold-secs") == 0)
      o.hold_s = strtod(v, NULL);
    else if (strcmp(a, "--timeout") == 0)
      bad = (o.timeout_s = strtod(v, NULL)) <= 0;
    else {
      fprintf(stderr, "loadgen: unknown option %s\n", a);
      return -1;
    }
    if (bad) {
      fprintf(stderr, "loadgen: bad value for %s: %s\n", a, v);
      return -1;
    }
  }
  if (!have_proxy || !o.target[0] || !o.ca) {
    fprintf(stderr, "loadgen: --proxy, --target and --ca are required\n");
    return -1;
  }
  if (o.conns > o.streams && o.op == OP_BULK) {
    fprintf(stderr, "loadgen: more connections than streams\n");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- failures */

static void conn_close(conn *c);
static void finish_all(void);
static void hold_progress(void);
static void bulk_progress(void);
static void conn_write(conn *c);

static void note(const char *what, const char *detail) {
  if (g.logged++ < 5)
    fprintf(stderr, "loadgen: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
}

static void stream_fail(strm *s, h2_failure f) {
  if (s->state == S_FAILED || s->state == S_DONE || s->state == S_IDLE || g.finishing)
    return;
  if (s->state == S_HELD) {
    g.dropped++;
  } else {
    g.failed++;
    g.fail_by[f]++;
  }
  s->state = S_FAILED;
  if (s->c->sess && s->id > 0 && !s->c->closing)
    nghttp2_submit_rst_stream(s->c->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
  if (o.op == OP_HOLD)
    hold_progress();
  else
    bulk_progress();
}

/* The connection is lost: every stream on it fails, and so does the run's
 * wait for connections to be ready. */
static void conn_fail(conn *c, h2_failure f, const char *detail) {
  if (c->closing)
    return;
  if (!g.finishing)
    note(hf_names[f], detail);
  int was_ready = c->ready;
  conn_close(c);
  if (g.finishing)
    return;
  int any = 0;
  for (unsigned i = 0; i < o.streams; i++)
    if (g.streams[i].c == c && g.streams[i].state != S_IDLE) {
      any = 1;
      stream_fail(&g.streams[i], f);
    }
  if (!was_ready || !any) {
    g.failed++;
    g.fail_by[f]++;
    if (o.op == OP_HOLD)
      hold_progress();
    else
      bulk_progress();
  }
}

static void tls_detail(char *buf, size_t n) {
  unsigned long e = ERR_get_error();
  snprintf(buf, n, "%s", e ? ERR_reason_error_string(e) : "connection closed");
  ERR_clear_error();
}

/* ---------------------------------------------------------------- streams */

static strm *stream_of(nghttp2_session *sess, int32_t id) {
  return nghttp2_session_get_stream_user_data(sess, id);
}

static void stream_resume(strm *s) {
  if (s->deferred && s->c->sess && !s->c->closing) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->c->sess, s->id);
  }
}

static void stream_done(strm *s) {
  s->state = S_DONE;
  g.done++;
  g.ok++;
  s->send_eof = 1; /* the stream ends politely; the upstream closes on EOF */
  stream_resume(s);
  if (g.done == o.streams) {
    g.t1 = now_s();
    finish_all();
  }
}

/* Upstream -> here. Everything read is consumed at once: the windows reopen
 * as the application reads, never ahead of it. */
static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user) {
  (void)flags;
  (void)user;
  nghttp2_session_consume(sess, id, len);
  strm *s = stream_of(sess, id);
  if (!s || s->state == S_FAILED || s->state == S_DONE)
    return 0;
  switch (s->state) {
  case S_ECHO:
    if (len != 1 || data[0] != 'e') {
      stream_fail(s, HF_ECHO);
      return 0;
    }
    s->state = S_HELD;
    g.ok++;
    hold_progress();
    return 0;
  case S_BULK:
    if (o.down) {
      s->got += len;
      g.bytes_moved += len;
      if (s->got > s->count)
        stream_fail(s, HF_BULK);
      else if (s->got == s->count)
        stream_done(s);
      return 0;
    }
    if (s->resp_len + len >= sizeof(s->resp)) {
      stream_fail(s, HF_BULK);
      return 0;
    }
    memcpy(s->resp + s->resp_len, data, len);
    s->resp_len += len;
    s->resp[s->resp_len] = '\0';
    if (!strchr(s->resp, '\n'))
      return 0;
    if (strtoull(s->resp, NULL, 10) != s->count) {
      stream_fail(s, HF_BULK);
      return 0;
    }
    g.bytes_moved += s->count;
    stream_done(s);
    return 0;
  default:
    stream_fail(s, HF_ECHO); /* bytes where none were asked for */
    return 0;
  }
}

static ssize_t provide(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)sess;
  (void)id;
  (void)user;
  strm *s = src->ptr;
  size_t n = 0;
  if (s->want_echo && length) {
    buf[n++] = 'e';
    s->want_echo = 0;
  }
  if (s->state == S_BULK || s->state == S_DONE) {
    size_t take = s->line_len - s->line_off < length - n ? s->line_len - s->line_off : length - n;
    memcpy(buf + n, s->line + s->line_off, take);
    s->line_off += take;
    n += take;
    while (n < length && s->to_send) {
      size_t k = length - n < sizeof(payload) ? length - n : sizeof(payload);
      if (k > s->to_send)
        k = (size_t)s->to_send;
      memcpy(buf + n, payload, k);
      n += k;
      s->to_send -= k;
    }
  }
  if (s->send_eof && s->line_off == s->line_len && !s->to_send && !s->want_echo) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
  }
  if (n == 0) {
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

/* Bulk: every stream answered 200; the clock starts and they all go. */
static void bulk_start(void) {
  g.t0 = now_s();
  for (unsigned i = 0; i < o.streams; i++) {
    strm *s = &g.streams[i];
    if (s->state != S_READY)
      continue;
    s->state = S_BULK;
    s->line_len = (size_t)snprintf(s->line, sizeof(s->line), "%" PRIu64 "\n", s->count);
    s->to_send = o.down ? 0 : s->count;
    s->deadline_ms = uv_now(g.loop) + BULK_MAX_MS;
    stream_resume(s);
  }
  for (unsigned i = 0; i < o.conns; i++)
    conn_write(&g.conns[i]);
}

static void stream_open(strm *s);

static void on_response(strm *s) {
  if (s->status != 200) {
    if (!g.logged)
      fprintf(stderr, "loadgen: proxy answered :status %d\n", s->status);
    stream_fail(s, HF_STATUS);
    return;
  }
  if (o.op == OP_HOLD) {
    s->state = S_ECHO;
    s->want_echo = 1;
    stream_resume(s);
    return;
  }
  s->state = S_READY;
  if (++g.established + g.failed == o.streams && !g.failed)
    bulk_start();
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  (void)flags;
  (void)user;
  strm *s = stream_of(sess, frame->hd.stream_id);
  if (s && frame->hd.type == NGHTTP2_HEADERS && nlen == 7 && memcmp(name, ":status", 7) == 0) {
    char code[8] = {0};
    memcpy(code, value, vlen < 7 ? vlen : 7);
    s->status = atoi(code);
  }
  return 0;
}

/* TLS, h2 and SETTINGS both ways: hold reports the level once every
 * connection is here; bulk opens this connection's streams at once. */
static void conn_ready(conn *c) {
  c->ready = 1;
  g.conns_ready++;
  if (o.op == OP_HOLD) {
    hold_progress();
    return;
  }
  for (unsigned i = 0; i < o.streams; i++)
    if (g.streams[i].c == c && g.streams[i].state == S_IDLE)
      stream_open(&g.streams[i]);
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user) {
  conn *c = user;
  if (frame->hd.type == NGHTTP2_SETTINGS) {
    if (frame->hd.flags & NGHTTP2_FLAG_ACK)
      c->settings_acked = 1;
    else
      c->got_settings = 1;
    if (c->settings_acked && c->got_settings && !c->ready)
      conn_ready(c);
    return 0;
  }
  strm *s = stream_of(sess, frame->hd.stream_id);
  if (!s)
    return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && s->state == S_OPENING)
    on_response(s);
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->state != S_DONE)
    stream_fail(s, HF_RESET); /* the upstream went away early */
  return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *user) {
  (void)code;
  (void)user;
  strm *s = stream_of(sess, id);
  if (s && s->state != S_DONE)
    stream_fail(s, HF_RESET);
  return 0;
}

static void stream_open(strm *s) {
  conn *c = s->c;
  nghttp2_nv nv[] = {
      {(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)":authority", (uint8_t *)o.target, 10, strlen(o.target), NGHTTP2_NV_FLAG_NONE},
  };
  nghttp2_data_provider dp = {.source.ptr = s, .read_callback = provide};
  g.started++;
  s->state = S_OPENING;
  s->deadline_ms = uv_now(g.loop) + (uint64_t)(o.timeout_s * 1000);
  s->id = nghttp2_submit_request(c->sess, NULL, nv, 2, &dp, s);
  if (s->id < 0) {
    note("submit_request", nghttp2_strerror(s->id));
    stream_fail(s, HF_PROTO);
  }
}

/* ---------------------------------------------------------------- connection I/O */

static void on_poll(uv_poll_t *p, int status, int events);

static void update_poll(conn *c) {
  if (c->closing)
    return;
  int ev = UV_READABLE;
  if (!c->connected || c->ssl_wants_write || c->out_off < c->out_len)
    ev |= UV_WRITABLE;
  uv_poll_start(&c->poll, ev, on_poll);
}

static int out_append(conn *c, const uint8_t *d, size_t n) {
  if (c->out_len + n > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : OUT_COALESCE + 65536;
    while (cap < c->out_len + n)
      cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (!p)
      return -1;
    c->out = p;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, d, n);
  c->out_len += n;
  return 0;
}

/* Frames from nghttp2, gathered up to OUT_COALESCE, through SSL_write, until
 * nghttp2 has nothing more or the socket is full. */
static void conn_write(conn *c) {
  if (c->closing || !c->handshaken)
    return;
  c->ssl_wants_write = 0;
  for (;;) {
    if (c->out_off == c->out_len) {
      c->out_off = c->out_len = 0;
      while (c->out_len < OUT_COALESCE) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->sess, &d);
        if (n < 0) {
          conn_fail(c, HF_PROTO, nghttp2_strerror((int)n));
          return;
        }
        if (n == 0)
          break;
        if (out_append(c, d, (size_t)n) != 0) {
          conn_fail(c, HF_PROTO, "out of memory");
          return;
        }
      }
      if (c->out_len == 0)
        break;
    }
    int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
    if (n > 0) {
      c->out_off += (size_t)n;
      continue;
    }
    int why = SSL_get_error(c->ssl, n);
    if (why == SSL_ERROR_WANT_WRITE || why == SSL_ERROR_WANT_READ) {
      c->ssl_wants_write = why == SSL_ERROR_WANT_WRITE;
      break;
    }
    char d[96];
    tls_detail(d, sizeof(d));
    conn_fail(c, HF_TLS, d);
    return;
  }
  if (!nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess) &&
      c->out_off == c->out_len && !g.finishing) {
    conn_fail(c, HF_PROTO, "the server ended the session");
    return;
  }
  update_poll(c);
}

static void conn_read(conn *c) {
  for (int i = 0; i < READS_PER_WAKE && !c->closing; i++) {
    int n = SSL_read(c->ssl, in_buf, sizeof(in_buf));
    if (n > 0) {
      ssize_t rv = nghttp2_session_mem_recv(c->sess, in_buf, (size_t)n);
      if (rv < 0) {
        conn_fail(c, HF_PROTO, nghttp2_strerror((int)rv));
        return;
      }
      continue;
    }
    int why = SSL_get_error(c->ssl, n);
    if (why == SSL_ERROR_WANT_READ)
      return;
    if (why == SSL_ERROR_WANT_WRITE) {
      c->ssl_wants_write = 1;
      return;
    }
    char d[96];
    tls_detail(d, sizeof(d));
    conn_fail(c, why == SSL_ERROR_ZERO_RETURN ? HF_RESET : HF_TLS, d);
    return;
  }
}

static nghttp2_session_callbacks *callbacks(void) {
  static nghttp2_session_callbacks *cbs;
  if (!cbs && nghttp2_session_callbacks_new(&cbs) == 0) {
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  }
  return cbs;
}

/* TLS is up with h2: the session, with our windows and no server push. */
static void session_start(conn *c) {
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
  if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
    conn_fail(c, HF_ALPN, "the server did not select ALPN h2");
    return;
  }
  snprintf(g.cipher, sizeof(g.cipher), "%s", SSL_get_cipher_name(c->ssl));
  snprintf(g.version, sizeof(g.version), "%s", SSL_get_version(c->ssl));
  nghttp2_option *opt;
  if (!callbacks() || nghttp2_option_new(&opt) != 0) {
    conn_fail(c, HF_PROTO, "out of memory");
    return;
  }
  nghttp2_option_set_no_auto_window_update(opt, 1);
  int rv = nghttp2_session_client_new2(&c->sess, callbacks(), c, opt);
  nghttp2_option_del(opt);
  if (rv != 0) {
    conn_fail(c, HF_PROTO, nghttp2_strerror(rv));
    return;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o.window},
  };
  rv = nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, 2);
  if (rv == 0)
    rv = nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0, 0x7fffffff);
  if (rv != 0) {
    conn_fail(c, HF_PROTO, nghttp2_strerror(rv));
    return;
  }
  c->handshaken = 1;
  conn_write(c);
}

static void conn_handshake(conn *c) {
  int r = SSL_connect(c->ssl);
  if (r == 1) {
    session_start(c);
    return;
  }
  int why = SSL_get_error(c->ssl, r);
  if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE) {
    c->ssl_wants_write = why == SSL_ERROR_WANT_WRITE;
    update_poll(c);
    return;
  }
  char d[128];
  long v = SSL_get_verify_result(c->ssl);
  if (v != X509_V_OK)
    snprintf(d, sizeof(d), "certificate: %s", X509_verify_cert_error_string(v));
  else
    tls_detail(d, sizeof(d));
  conn_fail(c, HF_TLS, d);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  conn *c = p->data;
  if (status < 0) {
    conn_fail(c, c->connected ? HF_RESET : HF_CONNECT, uv_strerror(status));
    return;
  }
  if (!c->connected) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (!(events & UV_WRITABLE))
      return;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      conn_fail(c, HF_CONNECT, strerror(err));
      return;
    }
    c->connected = 1;
    conn_handshake(c);
    return;
  }
  if (!c->handshaken) {
    conn_handshake(c);
    return;
  }
  if (events & UV_READABLE)
    conn_read(c);
  conn_write(c);
}

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  close(c->fd);
  c->fd = -1;
  g.conns_closed++;
}

static void conn_close(conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->fd >= 0)
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
}

static void conn_start(conn *c) {
  c->fd = socket(o.proxy.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    conn_fail(c, HF_CONNECT, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  socklen_t alen = o.proxy.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
  c->deadline_ms = uv_now(g.loop) + (uint64_t)(o.timeout_s * 1000);
  if (connect(c->fd, (struct sockaddr *)&o.proxy, alen) != 0 && errno != EINPROGRESS) {
    int e = errno;
    close(c->fd);
    c->fd = -1;
    conn_fail(c, HF_CONNECT, strerror(e));
    return;
  }
  uv_poll_init_socket(g.loop, &c->poll, c->fd);
  c->poll.data = c;
  c->ssl = SSL_new(g.ctx);
  if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) ||
      !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), o.proxy_host)) {
    conn_fail(c, HF_TLS, "SSL_new");
    return;
  }
  update_poll(c);
}

static SSL_CTX *client_ctx(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  static const unsigned char alpn[] = "\x02h2";
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1 ||
      SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
    char d[96];
    tls_detail(d, sizeof(d));
    fprintf(stderr, "loadgen: TLS client set-up (CA %s): %s\n", o.ca, d);
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return ctx;
}

/* ---------------------------------------------------------------- run control */

static void print_failures(void) {
  for (int f = 0; f < HF_COUNT_; f++)
    if (g.fail_by[f])
      printf(" fail_%s=%" PRIu64, hf_names[f], g.fail_by[f]);
}

static double own_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Ends the run: GOAWAY on every session, then every handle closes and
 * uv_run returns. */
static void finish_all(void) {
  if (g.finishing)
    return;
  g.finishing = 1;
  for (unsigned i = 0; i < o.conns; i++) {
    conn *c = &g.conns[i];
    if (c->closing || !c->sess)
      continue;
    nghttp2_session_terminate_session(c->sess, NGHTTP2_NO_ERROR);
    conn_write(c);
  }
  for (unsigned i = 0; i < o.conns; i++)
    conn_close(&g.conns[i]);
  close_handle((uv_handle_t *)&g.check);
  lg_levels_close(&g.lv, close_handle);
}

static void bulk_progress(void) {
  if (g.finishing)
    return;
  if (g.failed) /* one failed stream spoils the aggregate figure */
    finish_all();
}

static void on_check(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_now(g.loop);
  for (unsigned i = 0; i < o.conns && !g.finishing; i++) {
    conn *c = &g.conns[i];
    if (!c->closing && !c->ready && now >= c->deadline_ms)
      conn_fail(c, HF_TIMEOUT, "connection not ready in time");
  }
  for (unsigned i = 0; i < o.streams && !g.finishing; i++) {
    strm *s = &g.streams[i];
    if ((s->state == S_OPENING || s->state == S_ECHO || s->state == S_BULK) &&
        now >= s->deadline_ms)
      stream_fail(s, HF_TIMEOUT);
  }
}

static void hold_report(const char *what) {
  unsigned open = 0;
  for (unsigned i = 0; i < o.conns; i++)
    open += g.conns[i].ready && !g.conns[i].closing;
  printf("%s conns=%u streams=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64 " dropped=%" PRIu64
         " secs=%.3f",
         what, open, g.started, g.ok, g.failed, g.dropped, now_s() - g.t_start);
  print_failures();
  if (g.version[0])
    printf(" tls=%s cipher=%s", g.version, g.cipher);
  printf("\n");
  fflush(stdout);
}

static void hold_open_more(void) {
  while (!g.lv.paused && !g.finishing && g.started < g.lv.target) {
    strm *s = &g.streams[g.started];
    if (s->c->closing) {
      g.started++;
      g.failed++;
      g.fail_by[HF_RESET]++;
      continue;
    }
    stream_open(s);
  }
  for (unsigned i = 0; i < o.conns; i++)
    conn_write(&g.conns[i]);
}

/* A level is complete when every connection is ready (or failed) and every
 * stream up to the level has been echoed (or failed). */
static void hold_progress(void) {
  if (g.finishing || g.lv.paused)
    return;
  unsigned settled = 0;
  for (unsigned i = 0; i < o.conns; i++)
    settled += g.conns[i].ready || g.conns[i].closing;
  if (settled < o.conns)
    return;
  uint64_t streams_settled = 0;
  for (uint64_t i = 0; i < g.started; i++)
    streams_settled += g.streams[i].state == S_HELD || g.streams[i].state == S_FAILED;
  if (g.started == g.lv.target && streams_settled == g.started) {
    lg_levels_reached(&g.lv);
    return;
  }
  hold_open_more();
}

static void hold_finish(void) {
  hold_report("RESULT mode=h2hold");
  finish_all();
}

int lg_h2_main(int argc, char **argv, uv_loop_t *loop) {
  if (parse_args(argc, argv) != 0) {
    usage();
    return 2;
  }
  g.loop = loop;
  if (!(g.ctx = client_ctx()))
    return 1;
  memset(payload, 'x', sizeof(payload));
  g.conns = calloc(o.conns, sizeof(*g.conns));
  g.streams = calloc(o.streams, sizeof(*g.streams));
  if (!g.conns || !g.streams) {
    fprintf(stderr, "loadgen: out of memory\n");
    return 1;
  }
  for (unsigned i = 0; i < o.streams; i++) {
    strm *s = &g.streams[i];
    s->c = &g.conns[i % o.conns];
    s->count = o.bytes / o.streams + (i < o.bytes % o.streams ? 1 : 0);
  }
  uv_timer_init(loop, &g.check);
  uv_timer_start(&g.check, on_check, CHECK_MS, CHECK_MS);
  lg_levels_init(&g.lv, loop);
  g.t_start = now_s();
  for (unsigned i = 0; i < o.conns; i++)
    g.conns[i].fd = -1;
  if (o.op == OP_HOLD) {
    g.lv.steps = o.steps;
    g.lv.n_steps = o.n_steps;
    g.lv.total = o.streams;
    g.lv.pause_s = o.pause_s;
    g.lv.hold_s = o.hold_s;
    g.lv.report = hold_report;
    g.lv.go_on = hold_progress; /* connections may still be settling */
    g.lv.finish = hold_finish;
    lg_levels_start(&g.lv);
    g.lv.target = 0; /* the first level: connections only */
  } else {
    g.lv.target = o.streams;
  }
  for (unsigned i = 0; i < o.conns; i++)
    conn_start(&g.conns[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  int rc = g.failed || g.dropped ? 1 : 0;
  if (o.op == OP_BULK) {
    double secs = g.t1 - g.t0;
    int ok = !g.failed && g.done == o.streams && secs > 0;
    printf("RESULT mode=h2bulk dir=%s streams=%u conns=%u bytes=%" PRIu64 " ok=%d failed=%" PRIu64
           " secs=%.3f gbit_s=%.3f mib_s=%.1f window=%u tls=%s cipher=%s",
           o.down ? "down" : "up", o.streams, o.conns, g.bytes_moved, ok, g.failed,
           ok ? secs : 0.0, ok ? (double)g.bytes_moved * 8 / secs / 1e9 : 0.0,
           ok ? (double)g.bytes_moved / secs / 1048576.0 : 0.0, o.window,
           g.version[0] ? g.version : "-", g.cipher[0] ? g.cipher : "-");
    print_failures();
    printf(" loadgen_cpu=%.2f\n", own_cpu_s() / (now_s() - g.t_start));
    rc = ok ? 0 : 1;
  }
  for (unsigned i = 0; i < o.conns; i++) {
    nghttp2_session_del(g.conns[i].sess);
    SSL_free(g.conns[i].ssl);
    free(g.conns[i].out);
  }
  SSL_CTX_free(g.ctx);
  free(g.conns);
  free(g.streams);
  fflush(stdout);
  return rc;
}
