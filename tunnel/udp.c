/* The CONNECT-UDP relay (RFC 9298): one connected UDP socket per tunnel,
 * DATAGRAM capsules (RFC 9297) on the device side.
 *
 * - Device -> target: the stream's bytes go through the tunnel's capsule
 *   reader; each UDP payload is sent at once with uv_udp_try_send. A
 *   datagram the socket cannot take now is dropped (target_busy): UDP is
 *   lossy, so nothing towards the target is queued.
 * - Target -> device: the socket is connected, so the kernel hands on only
 *   datagrams from the target's address and port. Each becomes one DATAGRAM
 *   capsule written to the device endpoint, unless the endpoint already
 *   holds 64 KiB or 64 capsules unsent (an HTTP/2 window closed, a full TLS
 *   or TCP socket): then it is dropped (device_busy).
 * - Nothing per datagram is allocated in the steady state: a capsule towards
 *   the device is built in a buffer of the engine's datagram pool
 *   (TN_DGRAM_BUF_SIZE; a larger one, over the default udp_max_payload, is
 *   malloc'd), which the endpoint gives back once it is written; a payload
 *   split across the device's reads is collected in a relay buffer of the
 *   engine's pool; whole payloads go to the socket from where they arrived;
 *   a TLS connection carrying the tunnel keeps its record buffers
 *   (tn__ep_tls_keep_buffers). nghttp2 allocates one frame per
 *   WINDOW_UPDATE it queues (every half window of the device's DATA), none
 *   per datagram.
 * - ICMP port unreachable (ECONNREFUSED on a later send or receive) is
 *   counted and the tunnel stays up: RTP peers come and go.
 * - Datagrams the kernel dropped because the socket's receive buffer was
 *   full (a burst faster than the loop) never reach mcgw: they are counted
 *   from the socket's own drop count (SO_MEMINFO), read at each idle sweep
 *   and when the tunnel ends (tn__udp_collect_drops).
 * - The socket receives with recvmmsg (UV_UDP_RECVMMSG) into a buffer of
 *   the engine's pool, given back after each batch.
 * Owned by its tunnel (t->udp); tn__tunnel_close closes the socket, and
 * the handle's close callback frees it and reports the endpoint closed.
 */
#include <linux/sock_diag.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tunnel/capsule.h"
#include "tunnel/error.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

/* What may wait for the device, whichever is smaller: 64 KiB of capsules,
 * or 64 capsules. The device endpoint reports bytes queued, not capsules, so
 * the count is taken as 64 capsules of the size of the one arriving (exact
 * for a stream of equal datagrams, as RTP is). */
#define TN_UDP_QUEUE_BYTES (64 * 1024)
#define TN_UDP_QUEUE_DATAGRAMS 64

struct tn_udp {
  uv_udp_t handle; /* data: the tunnel */
  tn_capsule_reader reader;
  char *held; /* a split payload being collected (the reader's body): a relay buffer */
  uint64_t datagrams_up, datagrams_down, dropped, icmp;
  uint32_t kernel_drops; /* the socket's SK_MEMINFO_DROPS already counted */
  bool open;             /* handle initialised, close callback owed */
  bool malformed;        /* the device sent a malformed capsule */
};

int tn__udp_new(tn_tunnel *t) {
  tn_udp *u = calloc(1, sizeof(*u));
  if (!u)
    return TN_ENOMEM;
  tn_capsule_reader_init(&u->reader, tn__opts(t->engine)->udp_max_payload);
  t->udp = u;
  return 0;
}

static void count_drops(tn_tunnel *t, tn_udp_drop why, uint64_t n) {
  t->udp->dropped += n;
  tn__count_udp_drop(t->engine, why, n);
}

static void count_drop(tn_tunnel *t, tn_udp_drop why) { count_drops(t, why, 1); }

void tn__udp_collect_drops(tn_tunnel *t) {
  tn_udp *u = t->udp;
  uv_os_fd_t fd;
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof mem;
  if (!u || !u->open || uv_fileno((const uv_handle_t *)&u->handle, &fd) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 ||
      len <= SK_MEMINFO_DROPS * sizeof mem[0])
    return;
  uint32_t n = mem[SK_MEMINFO_DROPS] - u->kernel_drops; /* a wrapping counter */
  u->kernel_drops = mem[SK_MEMINFO_DROPS];
  if (n)
    count_drops(t, TN_UDP_DROP_RECEIVE_OVERFLOW, n);
}

/* ---- device -> target ---- */

static void up_datagram(void *arg, const uint8_t *p, size_t len) {
  tn_tunnel *t = arg;
  tn_udp *u = t->udp;
  uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)len);
  int rc = uv_udp_try_send(&u->handle, &b, 1, NULL);
  if (rc == UV_ECONNREFUSED) { /* an earlier datagram's ICMP; this one was not sent */
    u->icmp++;
    tn__count_udp_icmp(t->engine);
    rc = uv_udp_try_send(&u->handle, &b, 1, NULL);
  }
  if (rc >= 0) {
    u->datagrams_up++;
    t->bytes_up += len;
    tn__count_udp_datagram(t->engine, true, len);
  } else {
    count_drop(t, rc == UV_EAGAIN || rc == UV_ENOBUFS ? TN_UDP_DROP_TARGET_BUSY
                                                      : TN_UDP_DROP_SEND_FAILED);
  }
  if (p == (const uint8_t *)u->held) {
    tn__buf_release(u->held);
    u->held = NULL;
  }
}

static void skipped(void *arg, tn_capsule_skip why) {
  tn_tunnel *t = arg;
  if (why == TN_CAPSULE_SKIP_CONTEXT)
    count_drop(t, TN_UDP_DROP_CONTEXT);
  else if (why == TN_CAPSULE_SKIP_TOO_LARGE)
    count_drop(t, TN_UDP_DROP_TOO_LARGE);
  else if (why == TN_CAPSULE_SKIP_NO_BUFFER)
    count_drop(t, TN_UDP_DROP_NO_MEMORY);
  /* a capsule of another type is no datagram: skipped, not counted */
}

/* A relay buffer (TN_BUF_SIZE > the largest udp_max_payload) for a payload
 * split across reads. */
static uint8_t *hold(void *arg, size_t len) {
  tn_tunnel *t = arg;
  (void)len;
  t->udp->held = tn__buf_get(tn__bufpool(t->engine));
  return (uint8_t *)t->udp->held;
}

static const tn_capsule_ops capsule_ops = {up_datagram, skipped, hold};

bool tn__udp_from_device(tn_tunnel *t, const char *p, size_t n) {
  tn_udp *u = t->udp;
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (!u->open)
    return true;
  if (tn_capsule_read(&u->reader, (const uint8_t *)p, n, &capsule_ops, t) == 0)
    return true;
  u->malformed = true;
  return false;
}

bool tn__udp_malformed(const tn_tunnel *t) { return t->udp && t->udp->malformed; }

/* ---- target -> device ---- */

static void down_datagram(tn_tunnel *t, const char *p, size_t n) {
  tn_udp *u = t->udp;
  uint8_t head[TN_CAPSULE_HEAD_MAX];
  if (t->phase != TN_PHASE_RELAY || t->down_gone)
    return;
  if (n > tn__opts(t->engine)->udp_max_payload) {
    count_drop(t, TN_UDP_DROP_TOO_LARGE);
    return;
  }
  size_t hlen = tn_capsule_datagram_head(head, n);
  size_t bound = TN_UDP_QUEUE_DATAGRAMS * (hlen + n);
  if (bound > TN_UDP_QUEUE_BYTES)
    bound = TN_UDP_QUEUE_BYTES;
  if (tn__ep_queued(t->down) + hlen + n > bound) {
    count_drop(t, TN_UDP_DROP_DEVICE_BUSY);
    return;
  }
  tn_buf_kind kind = hlen + n <= TN_DGRAM_BUF_SIZE ? TN_BUF_POOL : TN_BUF_HEAP;
  char *capsule = kind == TN_BUF_POOL ? tn__buf_get(tn__dgram_pool(t->engine)) : malloc(hlen + n);
  if (!capsule) {
    count_drop(t, TN_UDP_DROP_NO_MEMORY);
    return;
  }
  memcpy(capsule, head, hlen);
  memcpy(capsule + hlen, p, n);
  u->datagrams_down++;
  t->bytes_down += n;
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  tn__count_udp_datagram(t->engine, false, n);
  if (tn__ep_write(t->down, capsule, kind, hlen + n) != 0)
    tn__tunnel_close(t, TN_RESULT_OK, "reset_down", TN_CLOSE_RESET);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tn_tunnel *t = h->data;
  (void)suggested;
  buf->base = tn__buf_get(tn__bufpool(t->engine));
  buf->len = buf->base ? TN_BUF_SIZE : 0;
}

/* With recvmmsg a batch shares one buffer: the callback for each datagram
 * has UV_UDP_MMSG_CHUNK set, and a last one with UV_UDP_MMSG_FREE gives
 * the buffer back (libuv's uv_udp_recv_cb contract). */
static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  tn_tunnel *t = h->data;
  if (nread > 0 || (nread == 0 && addr))
    down_datagram(t, buf->base, (size_t)nread);
  else if (nread == UV_ECONNREFUSED) {
    t->udp->icmp++;
    tn__count_udp_icmp(t->engine);
  }
  if (!(flags & UV_UDP_MMSG_CHUNK))
    tn__buf_release(buf->base);
}

/* ---- opening and closing ---- */

static bool is_resource_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOMEM || err == UV_ENOBUFS;
}

/* The first datagrams, sent before the 200 and held by the set-up. */
static bool send_pending(tn_tunnel *t, char *pending, size_t len) {
  bool ok = tn__udp_from_device(t, pending, len);
  free(pending);
  return ok;
}

static void start_relay(tn_tunnel *t, const tn_dns_addr *addr) {
  tn_setup *s = t->setup;
  char *pending = s->pending;
  size_t pending_len = s->pending_len;
  t->phase = TN_PHASE_RELAY;
  t->deadline_ms = 0;
  t->result = TN_RESULT_OK;
  t->status = 200;
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  memcpy(&t->connected, addr, sizeof(t->connected));
  t->connect_ms = t->last_activity_ms - t->request_ms;
  tn__list_move(t->engine, t, true);
  if (t->conn->tls)
    tn__ep_tls_keep_buffers(t->conn->tls);
  s->pending = NULL;
  tn__setup_free(t);
  if (t->proto->established(t) != 0) {
    free(pending);
    tn__tunnel_close(t, TN_RESULT_ERROR, "reset_down", TN_CLOSE_RESET);
    return;
  }
  tn__tunnel_log_opened(t);
  if (!send_pending(t, pending, pending_len)) {
    tn__tunnel_close(t, TN_RESULT_OK, "malformed_capsule", TN_CLOSE_RESET);
    return;
  }
  if (t->down->eof) {
    tn__udp_device_ended(t);
    return;
  }
  if (tn__ep_read_start(t->down) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
}

/* The tunnel's egress (interface, mark, DSCP, source) on its socket, before
 * the connect picks a source address. */
static int apply_egress(tn_tunnel *t, int family) {
  uv_os_fd_t fd;
  int err = uv_fileno((const uv_handle_t *)&t->udp->handle, &fd);
  return err ? err : tn_egress_apply(fd, &t->setup->egress, family);
}

void tn__udp_open(tn_tunnel *t, const tn_dns_addr *addr) {
  tn_udp *u = t->udp;
  int err = uv_udp_init_ex(tn__loop(t->engine), &u->handle,
                           (unsigned)addr->sa.sa_family | UV_UDP_RECVMMSG);
  if (err == 0) {
    u->handle.data = t;
    u->open = true;
    t->eps_open++;
    err = apply_egress(t, addr->sa.sa_family);
    if (err == 0)
      err = uv_udp_connect(&u->handle, &addr->sa);
    if (err == 0)
      err = uv_udp_recv_start(&u->handle, on_alloc, on_recv);
  }
  if (err == 0) {
    int len = sizeof(t->local);
    if (uv_udp_getsockname(&u->handle, (struct sockaddr *)&t->local, &len) != 0)
      memset(&t->local, 0, sizeof(t->local));
    start_relay(t, addr);
    return;
  }
  tn_log(tn__logger(t->engine), TN_LOG_DEBUG, "udp_open_failed", TN_U("id", t->id),
         TN_S("error", uv_err_name(err)), TN_LOG_END);
  if (is_resource_error(err))
    tn__tunnel_fail(t, TN_RESULT_LIMIT, 503, "out of resources, try again later");
  else
    tn__tunnel_fail(t, TN_RESULT_CONNECT_FAILED, 502, "cannot connect to target");
}

/* The device ended its side (END_STREAM, or its HTTP/1.1 connection's EOF):
 * the tunnel ends, after what is queued towards it. */
void tn__udp_device_ended(tn_tunnel *t) {
  if (t->phase != TN_PHASE_RELAY)
    return;
  (void)tn__ep_shutdown(t->down);
  tn__tunnel_close(t, TN_RESULT_OK, "eof", TN_CLOSE_FIN);
}

static void on_closed(uv_handle_t *h) {
  tn_tunnel *t = h->data;
  tn_udp *u = t->udp;
  t->udp = NULL;
  tn__buf_release(u->held);
  free(u);
  tn__tunnel_ep_closed(t);
}

void tn__udp_close(tn_tunnel *t) {
  tn_udp *u = t->udp;
  if (!u)
    return;
  if (!u->open) {
    t->udp = NULL;
    free(u);
    return;
  }
  if (!uv_is_closing((uv_handle_t *)&u->handle))
    uv_close((uv_handle_t *)&u->handle, on_closed);
}

void tn__udp_counts(const tn_tunnel *t, uint64_t *up, uint64_t *down, uint64_t *dropped,
                    uint64_t *icmp) {
  const tn_udp *u = t->udp;
  *up = u ? u->datagrams_up : 0;
  *down = u ? u->datagrams_down : 0;
  *dropped = u ? u->dropped : 0;
  *icmp = u ? u->icmp : 0;
}
