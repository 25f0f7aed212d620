/* Fuzzes the CONNECT-UDP relay (RFC 9298, capsules of RFC 9297) after the
 * 101/200: the real engine on this process's loop, a policy whose allow_udp
 * rule admits 127.0.0.1 (allow_private on), and for each of up to 16 tunnels
 * its own in-process UDP echo upstream (a socket on 127.0.0.1:0, the
 * tunnel's target), so a datagram that reaches the wrong upstream is seen.
 * The device side is driven by the input: over HTTP/1.1 (GET + Upgrade:
 * connect-udp, one connection per tunnel) or HTTP/2 (extended CONNECT with
 * :protocol connect-udp, one stream per tunnel on one connection).
 *
 * Each tunnel's device writes a stream of capsules the harness builds from
 * the input, so it knows what each one is: DATAGRAM capsules with Context
 * ID 0 (a UDP payload), other Context IDs, capsules of other types, payloads
 * over udp_max_payload, any varint encoding (non-minimal ones included),
 * malformed DATAGRAM capsules (RFC 9297 3.2: too short for their Context ID)
 * and a capsule cut short by the end of the stream. The bytes go out in
 * pieces the input sizes, so capsules are split across reads.
 *
 * Input: the first byte picks the front end (bit 0: HTTP/2, else HTTP/1.1)
 * and the engine (bit 1: udp_max_payload 200 and 16 KiB HTTP/2 stream
 * windows towards the engine; 4 KiB windows (HTTP/2) or receive buffers
 * (HTTP/1.1) on the device, so drops for a device that does not read come
 * quickly; else the defaults). Then
 * operations, one byte each: the low nibble is the operation, the high
 * nibble the tunnel:
 *   0 open: the request (the capsules written later may reach the engine
 *     before its 101/200: they are held, then relayed)
 *   1 DATAGRAM, Context ID 0: an encoding byte (bits 0-1 length varint
 *     width, 2-3 Context ID width, 4-5 type width: 1, 2, 4 or 8 bytes, never
 *     below the shortest), a length byte, then that many payload bytes
 *   2 DATAGRAM, Context ID 0, (n + 1) * 12 bytes of filler (n: next byte;
 *     over the small engine's limit from 17 on, the default's from 125)
 *   3 DATAGRAM, Context ID from the next byte (never 0), then as 1
 *   4 a capsule of another type (next two bytes, never 0), then as 1
 *   5 a malformed DATAGRAM capsule (kind: next byte); the tunnel writes no
 *     more capsules
 *   6 write the next n + 1 bytes of the tunnel's capsule stream (n: next
 *     byte; 255: all of it)
 *   7 end: write everything, wait until the tunnel's datagrams are all
 *     accounted for (settle, below), then END_STREAM or FIN; if the next
 *     byte is odd, a last capsule cut short goes first (bit 1: of another
 *     type, else a DATAGRAM)
 *   8 reset: RST_STREAM(CANCEL), or the connection closed with a RST
 *   9 the device stops reading (HTTP/2: stops consuming: its window shuts)
 *   10 ... reads again
 *   11 the tunnel's upstream sends datagrams of its own: count (next byte,
 *     1..32) of a size (next byte * 8: over either limit from 188 on)
 *   12 settle every tunnel
 *   13-15 run the loop (1..16 turns, next byte)
 * At the end every device reads again, writes all it has, every tunnel
 * settles and ends; the loop runs until the engine has no tunnel and no
 * connection left.
 *
 * Settled: the upstream has read every datagram that reached it, and the
 * engine's live counts for the tunnel (tn_engine_foreach) account for
 * every datagram written on either side: datagrams_up + datagrams_down +
 * dropped = the DATAGRAM capsules the device wrote + the datagrams the
 * upstream sent. One neither relayed nor counted as dropped makes it hang:
 * a failure (run with FZR_TRACE=1 to see the counts).
 *
 * Oracles:
 *   - every datagram an upstream receives is a Context ID 0 payload its own
 *     tunnel's device wrote, unaltered, in order (a subsequence: drops are
 *     allowed), always from the same engine socket;
 *   - every capsule the device receives is a well-formed DATAGRAM capsule,
 *     Context ID 0, whose payload is a datagram its own tunnel's upstream
 *     sent, in order (a subsequence);
 *   - each request is answered 101 (HTTP/1.1, with Upgrade: connect-udp and
 *     Capsule-Protocol: ?1) or 200 (HTTP/2, with capsule-protocol: ?1);
 *   - loss is accounted: for a tunnel that neither side reset and that sent
 *     nothing malformed, its access-log figures are exactly the upstream's
 *     count (datagrams_up), the device's (datagrams_down), and dropped =
 *     the other Context IDs + the payloads over the limit (either way) +
 *     what did not arrive either way; it closed with close=eof;
 *   - a malformed capsule ends its own tunnel only: close=malformed_capsule
 *     (HTTP/2: RST_STREAM(PROTOCOL_ERROR)), what it relayed before still
 *     accounted; no other tunnel sees a reset;
 *   - the engine's counters move by the access-log sums (datagrams up, down,
 *     dropped), and, when nothing was reset or malformed, by exactly the
 *     predicted drops for context and too_large;
 *   - no crash, leak or UB; nothing left open once both sides are done.
 * Run with -close_fd_mask=2 to silence the engine's logs. */
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "relay.h"
#include "tunnel/capsule.h"
#include "tunnel/engine.h"
#include "tunnel/policy.h"

#define HARNESS "fuzz_relay_udp"
#define OUT_MAX (128 * 1024) /* capsule bytes per tunnel: held before the 101 under TN_RELAY_HIGH */
#define DGRAMS_MAX 2048      /* datagrams either way, per input */
#define BIG_MAX 3072
#define SMALL_PAYLOAD 200
#define RCVBUF (16 * 1024 * 1024) /* no datagram is lost in the kernel (see widen) */

/* What the device wrote, capsule by capsule. */
enum { K_DATAGRAM, K_CONTEXT, K_TOO_LARGE, K_OTHER_TYPE, K_MALFORMED, K_CUT };

typedef struct entry {
  size_t head_end; /* offsets in the tunnel's stream: just past its header, */
  size_t end;      /* and just past the capsule */
  uint8_t kind;
} entry;

/* Datagrams in order: datagram k is data[k ? ends[k - 1] : 0 .. ends[k]). */
typedef struct dg_list {
  fzr_bytes data;
  size_t *ends;
  size_t n, cap;
} dg_list;

typedef struct utunnel {
  /* first (the HTTP/2 stream's user data): the capsule stream in h.out,
   * written up to h.out_at, released by the input up to h.limit; on HTTP/2
   * also the stream itself */
  fzr_h2_stream h;
  size_t i;
  bool used, broken, ended, reset_asked, reset_seen;
  bool status_ok; /* HTTP/1.1: the 101 came (HTTP/2: see answered) */
  entry *entries;
  size_t n_entries, cap_entries;
  dg_list sent; /* the Context ID 0 payloads within the limit */
  /* the upstream */
  struct sockaddr_in peer; /* the engine's socket, once a datagram came */
  bool peer_known;
  size_t up_got, up_next; /* received; index in sent to match from */
  dg_list up_sent;        /* sent back: echoes and its own */
  size_t too_large_down;  /* of those, over the limit */
  /* engine -> device */
  fzr_bytes in;
  size_t in_at, dev_got, dev_next;
  /* the engine's figures: live (foreach), then final (access log) */
  bool live, closed;
  uint64_t dg_up, dg_down, dg_dropped;
  int status;
  const char *close_reason;
  /* HTTP/1.1 */
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  bool tcp_open, tcp_closing, tcp_closed, head_done;
  char head[512];
  size_t head_len;
} utunnel;

static uv_loop_t loop;
static tn_engine *engines[2]; /* defaults; small limits */
static struct sockaddr_storage listen_addrs[2];
static tn_engine *current;
static const struct sockaddr_storage *listen_addr;
static bool h2, small;
static uint32_t max_payload;
static size_t n_dgrams;
static uint8_t *filler;
static utunnel tunnels[FZR_TUNNELS];

static struct {
  uv_udp_t handle;
  int fd;
  uint16_t port;
} ups[FZR_TUNNELS];

static struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  nghttp2_session *session;
  fzr_h2_device d;
  bool open, closing, closed, shut;
} dev;

static uint8_t dev_key(size_t i) { return (uint8_t)(0x33 + 29 * i); }
static uint8_t up_key(size_t i) { return (uint8_t)(0xa5 ^ (7 * i)); }

/* ---- lists ---- */

static void dg_add(dg_list *l, const uint8_t *p, size_t n) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 32;
    if (!(l->ends = realloc(l->ends, l->cap * sizeof(*l->ends))))
      fz_fail(HARNESS ": out of memory");
  }
  fzr_bytes_add(&l->data, p, n);
  l->ends[l->n++] = l->data.len;
}

static const uint8_t *dg_at(const dg_list *l, size_t k, size_t *n) {
  size_t start = k ? l->ends[k - 1] : 0;
  *n = l->ends[k] - start;
  return *n ? l->data.p + start : NULL; /* no bytes yet when every datagram is empty */
}

static void dg_free(dg_list *l) {
  free(l->data.p);
  free(l->ends);
  *l = (dg_list){0};
}

/* Finds the first datagram of l from *next on equal to p[0..n) and moves
 * *next past it; false when there is none (then *next stays). */
static bool dg_match(const dg_list *l, size_t *next, const uint8_t *p, size_t n) {
  for (size_t k = *next; k < l->n; k++) {
    size_t len;
    const uint8_t *q = dg_at(l, k, &len);
    if (len == n && (n == 0 || memcmp(p, q, n) == 0)) {
      *next = k + 1;
      return true;
    }
  }
  return false;
}

/* ---- building capsules ---- */

/* v in width bytes (1, 2, 4, 8 by code), never fewer than it needs. */
static size_t put_varint(uint8_t *p, uint64_t v, unsigned code) {
  static const size_t widths[4] = {1, 2, 4, 8};
  size_t w = widths[code & 3], min = tn_varint_len(v);
  if (w < min)
    w = min;
  for (size_t k = w; k > 0; k--) {
    p[k - 1] = (uint8_t)v;
    v >>= 8;
  }
  p[0] |= (uint8_t)((w == 1 ? 0 : w == 2 ? 1 : w == 4 ? 2 : 3) << 6);
  return w;
}

static void add_entry(utunnel *t, size_t head_end, uint8_t kind) {
  if (t->n_entries == t->cap_entries) {
    t->cap_entries = t->cap_entries ? 2 * t->cap_entries : 32;
    if (!(t->entries = realloc(t->entries, t->cap_entries * sizeof(*t->entries))))
      fz_fail(HARNESS ": out of memory");
  }
  t->entries[t->n_entries++] = (entry){head_end, t->h.out.len, kind};
}

static bool can_add(const utunnel *t, size_t n) {
  return t->used && !t->broken && !t->ended && !t->reset_asked && n_dgrams < DGRAMS_MAX &&
         t->h.out.len + n + 32 <= OUT_MAX;
}

/* A capsule of type with payload p[0..n) (XORed with the tunnel's key),
 * after a Context ID when has_ctx; cut: declares one byte more than it has. */
static void add_capsule(utunnel *t, uint64_t type, bool has_ctx, uint64_t ctx, const uint8_t *p,
                        size_t n, uint8_t enc, bool cut) {
  if (!can_add(t, n))
    return;
  uint8_t head[3 * TN_VARINT_LEN_MAX], cbuf[TN_VARINT_LEN_MAX];
  size_t clen = has_ctx ? put_varint(cbuf, ctx, enc >> 2) : 0;
  size_t h = put_varint(head, type, enc >> 4);
  h += put_varint(head + h, clen + n + cut, enc);
  memcpy(head + h, cbuf, clen);
  fzr_bytes_add(&t->h.out, head, h + clen);
  size_t at = t->h.out.len;
  fzr_bytes_add(&t->h.out, p, n);
  for (size_t k = 0; k < n; k++)
    t->h.out.p[at + k] ^= dev_key(t->i);
  n_dgrams++;
  uint8_t kind = cut                           ? K_CUT
                 : type != TN_CAPSULE_DATAGRAM ? K_OTHER_TYPE
                 : ctx != 0                    ? K_CONTEXT
                 : n > max_payload             ? K_TOO_LARGE
                                               : K_DATAGRAM;
  add_entry(t, at, kind);
  if (kind == K_DATAGRAM)
    dg_add(&t->sent, t->h.out.p + at, n);
}

/* RFC 9297 3.2: a DATAGRAM capsule too short for its Context ID. */
static void add_malformed(utunnel *t, uint8_t how) {
  static const uint8_t forms[4][5] = {
      {0x00, 0x00}, {0x00, 0x01, 0x40}, {0x00, 0x03, 0x80, 0, 0}, {0x00, 0x40, 0x07, 0xc0, 0}};
  static const size_t lens[4] = {2, 3, 5, 5};
  if (!can_add(t, 8))
    return;
  fzr_bytes_add(&t->h.out, forms[how & 3], lens[how & 3]);
  add_entry(t, t->h.out.len, K_MALFORMED);
  t->broken = true;
}

/* ---- the upstreams ---- */

/* Gives the engine's socket for tunnel i (the peer, found among this
 * process's descriptors) a large receive buffer: a datagram the kernel
 * drops there is lost before the engine could count it, which the
 * accounting oracle would blame on the engine. Needs CAP_NET_ADMIN (root),
 * like the upstreams' own. */
static void widen(const struct sockaddr_in *peer) {
  for (int fd = 3; fd < 1024; fd++) {
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int type = 0;
    socklen_t tlen = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_DGRAM ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0 || sin.sin_family != AF_INET ||
        sin.sin_port != peer->sin_port || sin.sin_addr.s_addr != peer->sin_addr.s_addr)
      continue;
    int size = RCVBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
      fz_fail(HARNESS ": SO_RCVBUFFORCE on the engine's socket (run as root)");
    return;
  }
  /* None: the tunnel has closed already (a malformed capsule, a reset). */
}

static void up_send(size_t i, const uint8_t *p, size_t n) {
  utunnel *t = &tunnels[i];
  uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
  if (uv_udp_try_send(&ups[i].handle, &b, 1, (const struct sockaddr *)&t->peer) < 0)
    return; /* not sent: not in the ledger */
  dg_add(&t->up_sent, p, n);
  if (n > max_payload)
    t->too_large_down++;
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void up_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  (void)flags;
  size_t i = (size_t)(uintptr_t)h->data;
  utunnel *t = &tunnels[i];
  if (n < 0)
    fz_fail(HARNESS ": upstream %zu: %s", i, uv_strerror((int)n));
  if (!addr)
    return; /* nothing more for now */
  const struct sockaddr_in *from = (const struct sockaddr_in *)addr;
  if (!t->used)
    fz_fail(HARNESS ": upstream %zu received a datagram, though its tunnel was never opened", i);
  if (!t->peer_known) {
    t->peer = *from;
    t->peer_known = true;
    widen(from);
  } else if (from->sin_port != t->peer.sin_port ||
             from->sin_addr.s_addr != t->peer.sin_addr.s_addr) {
    fz_fail(HARNESS ": upstream %zu received datagrams from two sources", i);
  }
  const uint8_t *p = (const uint8_t *)buf->base;
  if (!dg_match(&t->sent, &t->up_next, p, (size_t)n))
    fz_fail(HARNESS ": upstream %zu received a %zd-byte datagram (#%zu) that its device did not "
                    "send as a Context ID 0 payload, or not in this order (%zu sent)",
            i, n, t->up_got, t->sent.n);
  t->up_got++;
  uint8_t echo[64 * 1024];
  for (ssize_t k = 0; k < n; k++)
    echo[k] = p[k] ^ up_key(i);
  up_send(i, echo, (size_t)n);
}

static void burst(utunnel *t, size_t count, size_t size) {
  if (!t->peer_known || t->broken || t->ended || t->reset_asked)
    return;
  for (size_t k = 0; k < count && n_dgrams < DGRAMS_MAX; k++, n_dgrams++)
    up_send(t->i, filler + (n_dgrams * 7) % (BIG_MAX - size + 1), size);
}

static bool up_pending(size_t i) {
  struct pollfd p = {.fd = ups[i].fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1;
}

/* ---- the engine's view ---- */

static utunnel *by_target(const char *target) {
  const char *colon = target ? strrchr(target, ':') : NULL;
  unsigned port = colon ? (unsigned)atoi(colon + 1) : 0;
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    if (ups[i].port == port)
      return &tunnels[i];
  fz_fail(HARNESS ": a tunnel to %s, which no device asked for", target ? target : "-");
}

static void take_counts(utunnel *t, const tn_tunnel_info *info) {
  t->dg_up = info->datagrams_up;
  t->dg_down = info->datagrams_down;
  t->dg_dropped = info->datagrams_dropped;
  t->status = info->status;
}

static void on_live(const tn_tunnel_info *info, void *arg) {
  (void)arg;
  utunnel *t = by_target(info->target);
  t->live = true;
  take_counts(t, info);
}

static void on_closed(const tn_tunnel_info *info, void *arg) {
  (void)arg;
  if (!info->udp)
    fz_fail(HARNESS ": a TCP tunnel closed (%s)", info->close_reason);
  if (!info->target)
    return; /* the device went before its request was read */
  utunnel *t = by_target(info->target);
  int want = h2 ? 200 : 101;
  if (info->status && info->status != want)
    fz_fail(HARNESS ": tunnel %zu was answered %d (%s), not %d", t->i, info->status,
            info->close_reason, want);
  t->closed = true;
  t->close_reason = info->close_reason;
  take_counts(t, info);
}

/* What the engine has read from tunnel t's device, by kind: the capsules
 * written up to the first malformed one. A datagram counts once all of it
 * is written; a drop for its Context ID or size once its header is (the
 * engine decides there, and skips the payload as it comes). */
static void processed(const utunnel *t, size_t count[6]) {
  memset(count, 0, 6 * sizeof(*count));
  for (size_t k = 0; k < t->n_entries; k++) {
    const entry *e = &t->entries[k];
    bool early = e->kind == K_CONTEXT || e->kind == K_TOO_LARGE;
    if ((early ? e->head_end : e->end) > t->h.out_at)
      break; /* later capsules are not written either */
    count[e->kind]++;
    if (e->kind == K_MALFORMED)
      break;
  }
}

/* The device has the engine's 101, or 200 with capsule-protocol: ?1. */
static bool answered(const utunnel *t) {
  return h2 ? t->h.status_200 && t->h.capsule_protocol : t->status_ok;
}

static bool good(const utunnel *t) { return !t->broken && !t->reset_asked; }

static bool settled_one(utunnel *t) {
  if (!t->used || !good(t) || t->ended)
    return true;
  size_t c[6];
  processed(t, c);
  /* The engine's status: a device that stopped reading has not read it. */
  bool ok = t->live && t->status == (h2 ? 200 : 101) && t->h.out_at == t->h.limit &&
            !up_pending(t->i) &&
            t->dg_up + t->dg_down + t->dg_dropped ==
                c[K_DATAGRAM] + c[K_CONTEXT] + c[K_TOO_LARGE] + t->up_sent.n;
  if (!ok && getenv("FZR_TRACE"))
    fprintf(
        stderr,
        HARNESS
        ": tunnel %zu not settled: status %d (device %d) live %d written %zu/%zu; engine up %llu "
        "down %llu dropped %llu; device wrote %zu+%zu+%zu, upstream got %zu sent %zu\n",
        t->i, t->status, answered(t), t->live, t->h.out_at, t->h.limit,
        (unsigned long long)t->dg_up, (unsigned long long)t->dg_down,
        (unsigned long long)t->dg_dropped, c[K_DATAGRAM], c[K_CONTEXT], c[K_TOO_LARGE], t->up_got,
        t->up_sent.n);
  if (!ok && getenv("FZR_TRACE"))
    for (size_t k = 0; k < t->n_entries; k++)
      fprintf(stderr, HARNESS ":   capsule %zu: kind %d, header to %zu, ends at %zu\n", k,
              t->entries[k].kind, t->entries[k].head_end, t->entries[k].end);
  return ok;
}

static utunnel *settling; /* NULL: all */

static bool settled(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    tunnels[i].live = false;
  tn_engine_foreach(current, on_live, NULL);
  bool ok = true;
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    if (!settling || settling == &tunnels[i])
      ok &= settled_one(&tunnels[i]);
  return ok;
}

static void flush(void);

static void settle(utunnel *only) {
  flush();
  settling = only;
  fzr_run_until(settled, HARNESS ": settle: a datagram neither relayed nor counted as dropped");
}

/* ---- engine -> device: DATAGRAM capsules ---- */

static void dev_bytes(utunnel *t, const uint8_t *p, size_t n) {
  fzr_bytes_add(&t->in, p, n);
  while (t->in_at < t->in.len) {
    const uint8_t *c = t->in.p + t->in_at;
    size_t left = t->in.len - t->in_at, a;
    uint64_t len;
    if (c[0] != TN_CAPSULE_DATAGRAM)
      fz_fail(HARNESS ": tunnel %zu: the engine sent a capsule of type byte 0x%02x", t->i, c[0]);
    if ((a = tn_varint_decode(c + 1, left - 1, &len)) == 0 || left < 1 + a + len)
      return; /* the rest is still to come */
    if (len == 0 || c[1 + a] != 0)
      fz_fail(HARNESS ": tunnel %zu: the engine sent a DATAGRAM capsule without Context ID 0",
              t->i);
    if (!dg_match(&t->up_sent, &t->dev_next, c + 2 + a, (size_t)len - 1))
      fz_fail(HARNESS ": tunnel %zu: the device received a %llu-byte datagram (#%zu) its upstream "
                      "did not send, or not in this order (%zu sent)",
              t->i, (unsigned long long)len - 1, t->dev_got, t->up_sent.n);
    t->dev_got++;
    t->in_at += 1 + a + (size_t)len;
  }
}

/* ---- HTTP/1.1 devices ---- */

static const char head_101[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                               "Upgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n";

static void h1_closed(uv_handle_t *h) { ((utunnel *)h->data)->tcp_closed = true; }

static void h1_close(utunnel *t, bool reset) {
  if (t->tcp_closing)
    return;
  t->tcp_closing = true;
  fzr_close(&t->tcp, reset, h1_closed);
}

static void h1_written(uv_write_t *req, int status) {
  utunnel *t = req->data;
  if (status < 0 && status != UV_ECANCELED)
    t->reset_seen = true;
  free(req);
}

static void h1_write(utunnel *t, const void *p, size_t n) {
  if (t->tcp_closing || n == 0)
    return;
  if (fzr_write((uv_stream_t *)&t->tcp, p, n, t, h1_written) != 0) {
    t->reset_seen = true;
    h1_close(t, false);
  }
}

static void h1_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  utunnel *t = s->data;
  if (n < 0) {
    /* The engine ends an HTTP/1.1 CONNECT-UDP tunnel only after the
     * device's FIN, or for a malformed capsule. */
    if (n != UV_EOF)
      t->reset_seen = true;
    else if (!t->ended && !t->broken && !t->reset_asked)
      fz_fail(HARNESS ": tunnel %zu: the engine closed the connection unasked", t->i);
    h1_close(t, false);
    return;
  }
  const char *p = buf->base;
  size_t len = (size_t)n;
  if (!t->head_done) {
    size_t k = len < sizeof(head_101) - 1 - t->head_len ? len : sizeof(head_101) - 1 - t->head_len;
    memcpy(t->head + t->head_len, p, k);
    t->head_len += k;
    if (memcmp(t->head, head_101, t->head_len) != 0)
      fz_fail(HARNESS ": tunnel %zu: the response is not the 101 of CONNECT-UDP: %.*s", t->i,
              (int)t->head_len, t->head);
    p += k;
    len -= k;
    if (t->head_len < sizeof(head_101) - 1)
      return;
    t->head_done = t->status_ok = true;
  }
  dev_bytes(t, (const uint8_t *)p, len);
}

static void h1_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void h1_connected(uv_connect_t *req, int status) {
  utunnel *t = req->data;
  if (status < 0 && !t->reset_asked)
    fz_fail(HARNESS ": connect to the engine: %s", uv_strerror(status));
}

static void h1_open(utunnel *t) {
  uv_tcp_init_ex(&loop, &t->tcp, AF_INET);
  t->tcp.data = t;
  t->connect.data = t;
  t->tcp_open = true;
  uv_os_fd_t fd;
  int size = 4096;
  if (small && uv_fileno((uv_handle_t *)&t->tcp, &fd) == 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  uv_tcp_nodelay(&t->tcp, 1);
  if (uv_tcp_connect(&t->connect, &t->tcp, (const struct sockaddr *)listen_addr, h1_connected) != 0)
    fz_fail(HARNESS ": cannot connect");
  uv_read_start((uv_stream_t *)&t->tcp, h1_alloc, h1_read);
  char req[256];
  unsigned port = ntohs(((const struct sockaddr_in *)listen_addr)->sin_port);
  int n = snprintf(req, sizeof(req),
                   "GET /.well-known/masque/udp/127.0.0.1/%u/ HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
                   "Connection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n",
                   (unsigned)ups[t->i].port, port);
  h1_write(t, req, (size_t)n);
}

static void h1_shut(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

/* ---- the HTTP/2 device ---- */

static void h2_closed(uv_handle_t *h) {
  (void)h;
  dev.closed = true;
}

static void h2_out(const uint8_t *p, size_t n) { fzr_send((uv_stream_t *)&dev.tcp, p, n); }

static void h2_flush(void) {
  if (dev.session && !dev.closing && !dev.shut)
    fzr_h2_send(dev.session, h2_out);
}

static void h2_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    if (dev.d.open_streams)
      fz_fail(HARNESS ": the engine closed the connection (%s) with %zu streams open",
              uv_err_name((int)n), dev.d.open_streams);
    uv_read_stop(s);
    if (!dev.closing) {
      dev.closing = true;
      uv_close((uv_handle_t *)&dev.tcp, h2_closed);
    }
    return;
  }
  ssize_t used = nghttp2_session_mem_recv(dev.session, (const uint8_t *)buf->base, (size_t)n);
  if (used < 0)
    fz_fail(HARNESS ": the engine sent what nghttp2 refuses: %s", nghttp2_strerror((int)used));
  h2_flush();
}

/* DATA on a stream: capsules, after the 200. */
static void h2_data(fzr_h2_stream *h, const uint8_t *p, size_t n) {
  utunnel *t = (utunnel *)h;
  if (!answered(t))
    fz_fail(HARNESS ": stream %zu: DATA before a 200 with capsule-protocol: ?1", t->i);
  dev_bytes(t, p, n);
}

static bool h2_settings_seen(void) { return dev.d.connect_protocol; }

static void h2_start(void) {
  dev.d = (fzr_h2_device){.harness = HARNESS, .data = h2_data};
  dev.session = fzr_h2_session(&dev.d);
  /* Small: 4 KiB stream windows, so a stream that stops reading fills
   * the engine's queue for it quickly (device_busy). */
  nghttp2_settings_entry window = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 4096};
  nghttp2_submit_settings(dev.session, NGHTTP2_FLAG_NONE, &window, small ? 1 : 0);
  /* The connection's window wide open: a stream that stops reading stalls
   * only itself. */
  nghttp2_submit_window_update(dev.session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
  uv_tcp_init(&loop, &dev.tcp);
  uv_tcp_nodelay(&dev.tcp, 1);
  dev.open = true;
  dev.connect.data = HARNESS;
  if (uv_tcp_connect(&dev.connect, &dev.tcp, (const struct sockaddr *)listen_addr, fzr_connected) !=
      0)
    fz_fail(HARNESS ": cannot connect");
  uv_read_start((uv_stream_t *)&dev.tcp, h1_alloc, h2_read);
  h2_flush();
  /* Extended CONNECT waits for SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 3). */
  fzr_run_until(h2_settings_seen, HARNESS ": SETTINGS_ENABLE_CONNECT_PROTOCOL");
}

static void h2_open(utunnel *t) {
  char path[64], authority[32];
  unsigned port = ntohs(((const struct sockaddr_in *)listen_addr)->sin_port);
  int plen = snprintf(path, sizeof(path), "/.well-known/masque/udp/127.0.0.1/%u/",
                      (unsigned)ups[t->i].port);
  int alen = snprintf(authority, sizeof(authority), "127.0.0.1:%u", port);
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (size_t)(vl), 0}
  nghttp2_nv nv[] = {
      NV(":method", "CONNECT", 7),       NV(":protocol", "connect-udp", 11),
      NV(":scheme", "https", 5),         NV(":path", path, plen),
      NV(":authority", authority, alen), NV("capsule-protocol", "?1", 2),
  };
#undef NV
  fzr_h2_submit(dev.session, &dev.d, &t->h, nv, sizeof(nv) / sizeof(nv[0]));
}

/* ---- operations ---- */

static void flush(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    utunnel *t = &tunnels[i];
    if (!t->used || t->reset_asked)
      continue;
    if (h2) {
      fzr_h2_resume(dev.session, &t->h);
    } else if (t->h.out_at < t->h.limit) {
      h1_write(t, t->h.out.p + t->h.out_at, t->h.limit - t->h.out_at);
      t->h.out_at = t->h.limit;
    }
  }
  if (h2)
    h2_flush();
}

static void op_open(utunnel *t) {
  if (t->used)
    return;
  t->used = true;
  if (h2)
    h2_open(t);
  else
    h1_open(t);
}

static void op_write(utunnel *t, size_t n) {
  if (!t->used || t->reset_asked)
    return;
  size_t left = t->h.out.len - t->h.limit;
  t->h.limit += n < left ? n : left;
}

static void op_end(utunnel *t, uint8_t b) {
  if (!t->used || t->ended || t->reset_asked)
    return;
  op_write(t, SIZE_MAX);
  settle(t);
  if (b & 1) {
    static const uint8_t part[3] = {1, 2, 3};
    add_capsule(t, (b & 2) ? 0x29 : TN_CAPSULE_DATAGRAM, !(b & 2), 0, part, sizeof(part), b >> 2,
                true);
    op_write(t, SIZE_MAX);
  }
  t->ended = true;
  if (h2) {
    t->h.fin = true;
    flush();
  } else {
    flush();
    if (!t->tcp_closing)
      uv_shutdown(&t->shutdown, (uv_stream_t *)&t->tcp, h1_shut);
  }
}

static void op_reset(utunnel *t) {
  if (!t->used || t->reset_asked)
    return;
  t->reset_asked = true;
  if (h2) {
    if (t->h.id > 0 && !t->h.closed)
      nghttp2_submit_rst_stream(dev.session, NGHTTP2_FLAG_NONE, t->h.id, NGHTTP2_CANCEL);
  } else {
    h1_close(t, true);
  }
}

static void op_stall(utunnel *t, bool stalled) {
  if (!t->used)
    return;
  if (h2) {
    fzr_h2_stall(dev.session, &t->h, stalled);
    return;
  }
  t->h.stalled = stalled;
  if (t->tcp_closing)
    return;
  if (stalled)
    uv_read_stop((uv_stream_t *)&t->tcp);
  else
    uv_read_start((uv_stream_t *)&t->tcp, h1_alloc, h1_read);
}

/* A DATAGRAM capsule (or another type) with payload bytes from the input. */
static void op_capsule(utunnel *t, fzr_input *in, uint64_t type, uint64_t ctx) {
  uint8_t enc = fzr_byte(in);
  const uint8_t *p;
  size_t n = fzr_take(in, fzr_byte(in), &p);
  add_capsule(t, type, type == TN_CAPSULE_DATAGRAM, ctx, p, n, enc, false);
}

static void run(fzr_input *in) {
  while (fzr_more(in)) {
    uint8_t b = fzr_byte(in), op = b & 0x0f;
    utunnel *t = &tunnels[(b >> 4) % FZR_TUNNELS];
    switch (op) {
    case 0:
      op_open(t);
      break;
    case 1:
      op_capsule(t, in, TN_CAPSULE_DATAGRAM, 0);
      break;
    case 2: {
      uint8_t enc = fzr_byte(in);
      size_t n = ((size_t)fzr_byte(in) + 1) * 12;
      add_capsule(t, TN_CAPSULE_DATAGRAM, true, 0, filler, n, enc, false);
      break;
    }
    case 3: {
      uint64_t ctx = fzr_byte(in);
      op_capsule(t, in, TN_CAPSULE_DATAGRAM, ctx ? ctx : 0x4000);
      break;
    }
    case 4: {
      uint64_t type = (uint64_t)fzr_byte(in) << 8;
      type |= fzr_byte(in);
      op_capsule(t, in, type ? type : 0x2a, 0);
      break;
    }
    case 5:
      add_malformed(t, fzr_byte(in));
      break;
    case 6: {
      uint8_t n = fzr_byte(in);
      op_write(t, n == 255 ? SIZE_MAX : (size_t)n + 1);
      break;
    }
    case 7:
      op_end(t, fzr_byte(in));
      break;
    case 8:
      op_reset(t);
      break;
    case 9:
      op_stall(t, true);
      break;
    case 10:
      op_stall(t, false);
      break;
    case 11: {
      size_t count = fzr_byte(in) % 32 + 1;
      burst(t, count, (size_t)fzr_byte(in) * 8);
      break;
    }
    case 12:
      settle(NULL);
      break;
    default:
      flush();
      fzr_turns(in);
    }
    flush();
  }
}

/* ---- the end of an input ---- */

static bool all_closed(void) {
  tn_engine_stats st;
  tn_engine_stats_get(current, &st);
  if (st.tunnels_active || st.connections_active)
    return false;
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    if (tunnels[i].tcp_open && !tunnels[i].tcp_closed)
      return false;
  return !dev.open || dev.closed;
}

static bool streams_closed(void) { return dev.d.open_streams == 0; }

static bool streams_done(void) {
  tn_engine_stats st;
  tn_engine_stats_get(current, &st);
  return dev.d.ping_acked && st.tunnels_active == 0;
}

static bool ups_drained(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    if (up_pending(i))
      return false;
  return true;
}

static void finish(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    op_stall(&tunnels[i], false);
    op_write(&tunnels[i], SIZE_MAX);
  }
  settle(NULL);
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    utunnel *t = &tunnels[i];
    if (!t->used || t->ended || t->reset_asked)
      continue;
    t->ended = true;
    if (h2)
      t->h.fin = true;
    else if (!t->tcp_closing)
      uv_shutdown(&t->shutdown, (uv_stream_t *)&t->tcp, h1_shut);
  }
  flush();
  if (dev.open) {
    fzr_run_until(streams_closed, HARNESS ": streams");
    nghttp2_submit_ping(dev.session, NGHTTP2_FLAG_NONE, (const uint8_t *)"mcgwdone");
    h2_flush();
    fzr_run_until(streams_done, HARNESS ": engine");
    nghttp2_session_terminate_session(dev.session, NGHTTP2_NO_ERROR);
    h2_flush();
    dev.shut = true;
    if (!dev.closing && uv_shutdown(&dev.shutdown, (uv_stream_t *)&dev.tcp, h1_shut) != 0)
      fz_fail(HARNESS ": shutdown refused");
  }
  fzr_run_until(all_closed, HARNESS ": a tunnel or connection left open");
  fzr_run_until(ups_drained, HARNESS ": upstream sockets");
}

/* ---- the oracles ---- */

static void check_tunnel(utunnel *t, uint64_t sums[3]) {
  size_t c[6];
  processed(t, c);
  if (getenv("FZR_TRACE"))
    fprintf(stderr,
            HARNESS ": tunnel %zu%s%s: device wrote %zu datagrams (+%zu other contexts, %zu too "
                    "large), upstream got %zu and sent %zu, device got %zu; engine: up %llu down "
                    "%llu dropped %llu, close=%s\n",
            t->i, t->broken ? " (malformed)" : "", t->reset_asked ? " (reset)" : "", c[K_DATAGRAM],
            c[K_CONTEXT], c[K_TOO_LARGE], t->up_got, t->up_sent.n, t->dev_got,
            (unsigned long long)t->dg_up, (unsigned long long)t->dg_down,
            (unsigned long long)t->dg_dropped, t->close_reason ? t->close_reason : "-");
  if (!t->closed) {
    if (t->up_got || (answered(t) && !t->reset_asked))
      fz_fail(HARNESS ": tunnel %zu relayed but never closed in the access log", t->i);
    return;
  }
  sums[0] += t->dg_up;
  sums[1] += t->dg_down;
  sums[2] += t->dg_dropped;
  if (t->dg_up != t->up_got)
    fz_fail(HARNESS ": tunnel %zu: the engine counted %llu datagrams up, its upstream got %zu",
            t->i, (unsigned long long)t->dg_up, t->up_got);
  if (t->reset_asked)
    return;
  const char *want = t->broken ? "malformed_capsule" : "eof";
  if (!t->close_reason || strcmp(t->close_reason, want) != 0)
    fz_fail(HARNESS ": tunnel %zu closed with close=%s, not %s", t->i,
            t->close_reason ? t->close_reason : "-", want);
  if (t->broken) {
    if (h2 && t->h.close_code != NGHTTP2_PROTOCOL_ERROR)
      fz_fail(HARNESS ": tunnel %zu: a malformed capsule, then RST_STREAM code %u", t->i,
              t->h.close_code);
    if (t->dev_got > t->dg_down)
      fz_fail(HARNESS ": tunnel %zu: the device got %zu datagrams, the engine sent %llu", t->i,
              t->dev_got, (unsigned long long)t->dg_down);
    return;
  }
  if (t->reset_seen || t->h.close_code != NGHTTP2_NO_ERROR)
    fz_fail(HARNESS ": tunnel %zu was reset, though no side asked for it", t->i);
  if (!answered(t))
    fz_fail(HARNESS ": tunnel %zu relayed, but its device never got the %s", t->i,
            h2 ? "200 with capsule-protocol: ?1" : "101");
  if (t->in_at != t->in.len)
    fz_fail(HARNESS ": tunnel %zu: the engine's stream ended mid-capsule", t->i);
  size_t lost_up = c[K_DATAGRAM] - t->up_got;
  size_t lost_down = t->up_sent.n - t->too_large_down - t->dev_got;
  uint64_t want_dropped = c[K_CONTEXT] + c[K_TOO_LARGE] + t->too_large_down + lost_up + lost_down;
  if (t->dg_down != t->dev_got || t->dg_dropped != want_dropped)
    fz_fail(HARNESS ": tunnel %zu: the engine counted %llu down and %llu dropped; the device got "
                    "%zu, and %zu other contexts + %zu too large up + %zu too large down + %zu "
                    "lost up + %zu lost down make %llu",
            t->i, (unsigned long long)t->dg_down, (unsigned long long)t->dg_dropped, t->dev_got,
            c[K_CONTEXT], c[K_TOO_LARGE], t->too_large_down, lost_up, lost_down,
            (unsigned long long)want_dropped);
}

static uint64_t dropped_total(const tn_engine_stats *s) {
  uint64_t n = 0;
  for (size_t k = 0; k < TN_UDP_DROP_COUNT_; k++)
    n += s->udp_dropped[k];
  return n;
}

static void check(const tn_engine_stats *before) {
  tn_engine_stats after;
  tn_engine_stats_get(current, &after);
  uint64_t sums[3] = {0, 0, 0}, ctx = 0, too_large = 0;
  bool exact = true;
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    utunnel *t = &tunnels[i];
    if (!t->used)
      continue;
    check_tunnel(t, sums);
    size_t c[6];
    processed(t, c);
    ctx += c[K_CONTEXT];
    too_large += c[K_TOO_LARGE] + t->too_large_down;
    exact &= good(t);
  }
  if (after.udp_datagrams_up - before->udp_datagrams_up != sums[0] ||
      after.udp_datagrams_down - before->udp_datagrams_down != sums[1] ||
      dropped_total(&after) - dropped_total(before) != sums[2])
    fz_fail(HARNESS ": the engine's counters moved by %llu up, %llu down, %llu dropped; its "
                    "access log says %llu, %llu, %llu",
            (unsigned long long)(after.udp_datagrams_up - before->udp_datagrams_up),
            (unsigned long long)(after.udp_datagrams_down - before->udp_datagrams_down),
            (unsigned long long)(dropped_total(&after) - dropped_total(before)),
            (unsigned long long)sums[0], (unsigned long long)sums[1], (unsigned long long)sums[2]);
  uint64_t d_ctx =
      after.udp_dropped[TN_UDP_DROP_CONTEXT] - before->udp_dropped[TN_UDP_DROP_CONTEXT];
  uint64_t d_large =
      after.udp_dropped[TN_UDP_DROP_TOO_LARGE] - before->udp_dropped[TN_UDP_DROP_TOO_LARGE];
  if (exact && (d_ctx != ctx || d_large != too_large))
    fz_fail(HARNESS ": dropped for context %llu (sent %llu), too_large %llu (sent %llu)",
            (unsigned long long)d_ctx, (unsigned long long)ctx, (unsigned long long)d_large,
            (unsigned long long)too_large);
}

/* ---- set-up ---- */

static void allow_udp(tn_engine_opts *o) {
  tn_rule r;
  const char *why = NULL;
  if (tn_rule_parse_udp("127.0.0.1:1-65535", &r, &why) != 0 || tn_policy_add(&o->policy, &r) != 0)
    fz_fail(HARNESS ": allow_udp rule: %s", why ? why : "ENOMEM");
}

static void small_limits(tn_engine_opts *o) {
  allow_udp(o);
  o->udp_max_payload = SMALL_PAYLOAD;
  o->h2_stream_window = 16 * 1024;
}

static void up_start(size_t i) {
  struct sockaddr_in sin;
  struct sockaddr_storage ss;
  int len = sizeof(ss), size = RCVBUF;
  uv_ip4_addr("127.0.0.1", 0, &sin);
  if (uv_udp_init(&loop, &ups[i].handle) != 0 ||
      uv_udp_bind(&ups[i].handle, (const struct sockaddr *)&sin, 0) != 0 ||
      uv_udp_getsockname(&ups[i].handle, (struct sockaddr *)&ss, &len) != 0 ||
      uv_fileno((uv_handle_t *)&ups[i].handle, &ups[i].fd) != 0 ||
      setsockopt(ups[i].fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
    fz_fail(HARNESS ": cannot start upstream %zu (SO_RCVBUFFORCE needs root)", i);
  ups[i].port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  ups[i].handle.data = (void *)(uintptr_t)i;
  if (uv_udp_recv_start(&ups[i].handle, up_alloc, up_recv) != 0)
    fz_fail(HARNESS ": upstream %zu: recv_start", i);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const fzr_engine_spec spec[2] = {{allow_udp, NULL, 0}, {small_limits, NULL, 0}};
  fzr_setup(&loop, NULL, spec, 2, engines, listen_addrs);
  for (size_t k = 0; k < 2; k++)
    tn_engine_on_close(engines[k], on_closed, NULL); /* in place of fzr_watch's TCP ledger */
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    up_start(i);
  filler = fzr_filler(BIG_MAX, 0x75647031);
  return 0;
}

static void begin(void) {
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    utunnel *t = &tunnels[i];
    free(t->h.out.p);
    free(t->in.p);
    free(t->entries);
    dg_free(&t->sent);
    dg_free(&t->up_sent);
    memset(t, 0, sizeof(*t));
    t->i = i;
  }
  memset(&dev, 0, sizeof(dev));
  n_dgrams = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16 * 1024)
    return -1;
  fzr_input in = {.p = data, .n = size};
  uint8_t mode = fzr_byte(&in);
  h2 = mode & 1;
  small = mode & 2;
  current = engines[small];
  listen_addr = &listen_addrs[small];
  max_payload = small ? SMALL_PAYLOAD : 1500;
  begin();
  tn_engine_stats before;
  tn_engine_stats_get(current, &before);
  if (h2)
    h2_start();
  run(&in);
  finish();
  check(&before);
  if (dev.session)
    nghttp2_session_del(dev.session);
  dev.session = NULL;
  return 0;
}
