/* See driver.h. */
#include "driver.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

static FILE *report;

void fz_setup(void) {
  int fd = dup(2);
  report = fd >= 0 ? fdopen(fd, "w") : NULL;
}

int fz_initialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  return 0;
}

void fz_fail(const char *fmt, ...) {
  FILE *out = report ? report : stderr;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(out, fmt, ap);
  va_end(ap);
  fputc('\n', out);
  fflush(out);
  abort();
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void die(const char *what) { fz_fail("fuzz driver: %s (%s)", what, strerror(errno)); }

static void check_deadline(uint64_t deadline, const char *what) {
  if (now_ms() > deadline)
    fz_fail("fuzz driver: hang: %s for more than %d ms", what, FZ_DEADLINE_MS);
}

/* Waits up to 10 ms for the client socket or the loop to have something. */
static void wait_events(uv_loop_t *loop, int fd, bool want_write) {
  struct pollfd p[2] = {
      {.fd = fd, .events = (short)(POLLIN | (want_write ? POLLOUT : 0))},
      {.fd = uv_backend_fd(loop), .events = POLLIN},
  };
  int timeout = uv_backend_timeout(loop);
  if (timeout < 0 || timeout > 10)
    timeout = 10;
  poll(p, 2, timeout);
}

/* Non-blocking from the start: libFuzzer's SIGALRM (-timeout) would make a
 * blocking connect fail with EINTR. */
static int client_connect(const struct sockaddr_storage *addr, uint64_t deadline) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    die("socket");
  socklen_t len =
      addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  /* The listener is bound and listening: the kernel completes the handshake
   * into its backlog without the loop running. */
  if (connect(fd, (const struct sockaddr *)addr, len) == 0)
    return fd;
  if (errno != EINPROGRESS && errno != EINTR)
    die("connect");
  for (;;) {
    check_deadline(deadline, "connecting");
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 10) == 1)
      break;
  }
  int err = 0;
  socklen_t elen = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
    errno = err;
    die("connect");
  }
  return fd;
}

/* True once every byte written on fd has reached the peer's socket (on
 * loopback, acknowledged means queued at the receiver). The loop then reads
 * them all in its next iteration (libuv reads until EAGAIN). */
static bool delivered(int fd) {
  int unacked = 0;
  return ioctl(fd, SIOCOUTQ, &unacked) == 0 && unacked == 0;
}

#define AT_SERVER_ITERATIONS 3

static bool transient(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

static void keep_reply(fz_reply *out, const char *buf, size_t n) {
  size_t cap = sizeof(out->head) - 1;
  size_t at = out->len < cap ? out->len : cap;
  size_t take = n < cap - at ? n : cap - at;
  memcpy(out->head + at, buf, take);
  out->head[at + take] = '\0';
  out->len += n;
}

void fz_exchange(uv_loop_t *loop, const struct sockaddr_storage *addr, const uint8_t *data,
                 size_t size, fz_settled_fn settled, void *arg, fz_reply *out) {
  fz_exchange_ex(loop, addr, data, size, NULL, settled, arg, out);
}

void fz_exchange_ex(uv_loop_t *loop, const struct sockaddr_storage *addr, const uint8_t *data,
                    size_t size, fz_settled_fn ready_to_shut, fz_settled_fn settled, void *arg,
                    fz_reply *out) {
  memset(out, 0, sizeof(*out));
  uint64_t deadline = now_ms() + FZ_DEADLINE_MS;
  int fd = client_connect(addr, deadline);
  size_t off = 0;
  bool shut = false, eof = false;
  int at_server = 0;
  while (!eof) {
    check_deadline(deadline, shut ? "waiting for the server to close"
                                  : "waiting for the server to answer before the client's FIN");
    if (off < size) {
      ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
      if (n > 0)
        off += (size_t)n;
      else if (!transient(errno))
        off = size; /* the server closed on us: nothing more to send */
    }
    /* ready_to_shut is asked only after AT_SERVER_ITERATIONS loop iterations
     * that each began with every byte at the server's socket: one accepts the
     * connection, the next reads all (libuv reads until EAGAIN), one spare. */
    if (off == size && !shut &&
        (!ready_to_shut || (at_server >= AT_SERVER_ITERATIONS && ready_to_shut(arg)))) {
      shutdown(fd, SHUT_WR);
      shut = true;
    }
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
      keep_reply(out, buf, (size_t)n);
    if (n == 0) {
      eof = true;
    } else if (!transient(errno)) {
      out->reset = true;
      eof = true;
    }
    bool was_delivered = ready_to_shut && off == size && !shut && delivered(fd);
    uv_run(loop, UV_RUN_NOWAIT);
    if (was_delivered)
      at_server++;
    if (!eof)
      wait_events(loop, fd, off < size);
  }
  while (!settled(arg)) {
    check_deadline(deadline, "waiting for the server to settle");
    uv_run(loop, UV_RUN_NOWAIT);
    wait_events(loop, fd, false);
  }
  uv_run(loop, UV_RUN_NOWAIT); /* close callbacks of the last handles */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);
}

int fz_reply_status(const fz_reply *r) {
  if (r->len == 0)
    return 0;
  int status = 0;
  char sp = 0;
  if (strncmp(r->head, "HTTP/1.1 ", 9) != 0 || sscanf(r->head + 9, "%3d%c", &status, &sp) != 2 ||
      sp != ' ')
    return -1;
  return status;
}

static void add_rule(tn_engine_opts *o, const char *text) {
  tn_rule r;
  const char *why = NULL;
  if (tn_rule_parse(text, &r, &why) != 0 || tn_policy_add(&o->policy, &r) != 0)
    fz_fail("fz_loopback_engine: rule %s: %s", text, why ? why : "ENOMEM");
}

tn_logger *fz_logger(void) {
  static tn_logger logger = {.level = TN_LOG_DEBUG, .format = TN_LOG_TEXT, .ts_sec = -1};
  return &logger;
}

tn_engine *fz_loopback_engine(uv_loop_t *loop, bool allow_private, void (*tune)(tn_engine_opts *o),
                              struct sockaddr_storage *listen_addr) {
  static const char *const rules[] = {"localhost:*", "127.0.0.1:443", "127.0.0.0/8:*", "[::1]:*",
                                      "[::ffff:127.0.0.1]:443"};
  tn_engine_opts o;
  tn_engine_opts_init(&o);
  struct sockaddr_storage ss;
  if (tn_addr_parse_listen("127.0.0.1:0", &ss) != 0)
    fz_fail("fz_loopback_engine: listen address");
  o.listen = &ss;
  o.n_listen = 1;
  for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
    add_rule(&o, rules[i]);
  o.policy.allow_private = allow_private;
  o.require_tls = true;
  o.header_timeout_ms = 60 * 1000;
  o.connect_timeout_ms = 60 * 1000;
  /* One client sending thousands of requests a second: with the new-tunnel
   * rates on, all but the first 50 would be 429 before parsing's outcome
   * reaches the policy the oracles watch. */
  o.new_tunnels_per_client.per_s = 0;
  o.new_upstream_per_target.per_s = 0;
  o.logger = fz_logger();
  if (tune)
    tune(&o);
  tn_engine *engine = NULL;
  if (tn_engine_start(loop, &o, &engine) != 0 ||
      tn_engine_listener_addr(engine, 0, listen_addr) != 0)
    fz_fail("fz_loopback_engine: cannot start the engine on 127.0.0.1");
  tn_policy_free(&o.policy);
  return engine;
}

/* Decodes one header block with the connection's inflater; fails on
 * ":status: 200". Returns -1 when the block does not decode (then the rest
 * of the kept bytes cannot be trusted either: stop checking). */
static int check_block(nghttp2_hd_inflater *inf, const uint8_t *in, size_t len, bool final,
                       const char *harness) {
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, len, final);
    if (n < 0)
      return -1;
    in += n;
    len -= (size_t)n;
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0 && nv.valuelen == 3 &&
          memcmp(nv.value, "200", 3) == 0)
        fz_fail("%s: the server answered :status 200 (a tunnel opened)", harness);
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inf);
      return 0;
    }
    if (n == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT))
      return 0; /* needs the next CONTINUATION */
  }
}

void fz_h2_check_reply(const fz_reply *r, const char *harness) {
  size_t kept = r->len < sizeof(r->head) - 1 ? r->len : sizeof(r->head) - 1;
  const uint8_t *p = (const uint8_t *)r->head;
  nghttp2_hd_inflater *inf;
  if (nghttp2_hd_inflate_new(&inf) != 0)
    fz_fail("%s: nghttp2_hd_inflate_new", harness);
  size_t off = 0;
  while (off + 9 <= kept) {
    size_t len = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
    uint8_t type = p[off + 3], flags = p[off + 4];
    if (off + 9 + len > kept)
      break; /* truncated by the driver */
    if (type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) {
      size_t start = off + 9, end = off + 9 + len;
      if (type == NGHTTP2_HEADERS) {
        size_t pad = 0;
        if (flags & NGHTTP2_FLAG_PADDED) {
          if (start >= end)
            break;
          pad = p[start++];
        }
        if (flags & NGHTTP2_FLAG_PRIORITY)
          start += 5;
        if (start + pad > end)
          break;
        end -= pad;
      }
      if (check_block(inf, p + start, end - start, (flags & NGHTTP2_FLAG_END_HEADERS) != 0,
                      harness) != 0)
        break;
    }
    off += 9 + len;
  }
  nghttp2_hd_inflate_del(inf);
}
