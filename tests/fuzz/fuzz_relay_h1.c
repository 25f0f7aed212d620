/* Fuzzes the HTTP/1.1 relay after the 200: the real engine on this
 * process's loop, a policy that allows the in-process echo upstream
 * (127.0.0.1, allow_private = yes, require_tls on), and up to 16 device
 * connections, each one CONNECT tunnel, driven by the input.
 *
 * Input: the first byte picks the engine (bit 0: splice = always rather than
 * auto, so both the copy relay and splice(2), and the switch between them at
 * 256 KiB, are reached; bit 1: the TLS listener instead, tunnel/ep_tls.c,
 * the device speaking TLS 1.3 over OpenSSL memory BIOs) and, on TLS, how
 * devices behave: bit 2, FIN without close_notify (a bare TCP FIN, which the
 * gateway also takes as the end of the stream) rather than close_notify then
 * FIN; bit 3, a TLS KeyUpdate (requesting the gateway's) before each send.
 * Then operations, one byte each: the low nibble is
 * the operation, the high nibble the tunnel it applies to:
 *   0 open: connect, send the CONNECT request and the tunnel's tag at once
 *     (so the tag is pipelined before the 200)
 *   1 send the next 1..256 input bytes (length byte, then the bytes)
 *   2 send (n + 1) * 4 KiB of filler (n: next byte, at most 512 KiB per input)
 *   3 FIN (shutdown the write side)     4 reset (close with RST)
 *   5 the device stops reading          6 ... and reads again
 *   7 upstream FIN                      8 upstream reset
 *   9 upstream stops reading            10 ... and reads again
 *   11-15 run the loop (1..16 turns, next byte)
 * At the end every side reads again and every device sends its FIN; the loop
 * runs until every connection is closed.
 *
 * Oracles: relay.h (bytes exact per tunnel and direction, no unasked reset,
 * access-log byte counts and close=eof), plus: every CONNECT is answered
 * 200 (the policy allows it); on TLS, the gateway ends every stream with a
 * close_notify, never a bare FIN, unless a reset was asked for; and once both
 * sides are done the engine has no tunnel, connection or client left,
 * within the driver's deadline.
 * ASan/UBSan/LSan watch the rest. Run with -close_fd_mask=2 to silence the
 * engine's logs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "relay.h"
#include "tunnel/engine.h"
#include "tunnel/log.h"

#define HARNESS "fuzz_relay_h1"
#define BIG_CHUNK (4 * 1024)
#define BIG_MAX (512 * 1024)

typedef struct device {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  size_t i;
  bool open, fin, fin_done, eof, closing, closed;
  char head[1024]; /* the response head, up to its blank line */
  size_t head_len;
  bool head_done;
  bool tls_on;      /* on the TLS listener: */
  fzr_tls tls;      /* the device's TLS client */
  bool fin_pending; /* FIN asked for before the handshake was done */
} device;

static uv_loop_t loop;
static tn_engine *engines[3]; /* splice auto, splice always, TLS listener */
static struct sockaddr_storage listen_addrs[3], upstream_addr;
static bool bare_fin, key_updates; /* this input's TLS device behaviour */
static device devices[FZR_TUNNELS];
static size_t open_devices;
static uint8_t *filler;

static void always_splice(tn_engine_opts *o) { o->splice = TN_SPLICE_ALWAYS; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const fzr_engine_spec spec[3] = {
      {NULL, NULL, 0}, {always_splice, NULL, 0}, {NULL, "\x08http/1.1", 9}};
  fzr_setup(&loop, &upstream_addr, spec, 3, engines, listen_addrs);
  filler = fzr_filler(BIG_MAX, 0x6d636777);
  return 0;
}

/* ---- one device connection ---- */

static void dev_closed(uv_handle_t *h) {
  device *d = h->data;
  d->closed = true;
  open_devices--;
}

static void dev_close(device *d, bool reset) {
  if (d->closing)
    return;
  d->closing = true;
  fzr_close(&d->tcp, reset, dev_closed);
  if (d->tls_on)
    fzr_tls_free(&d->tls);
}

static void dev_written(uv_write_t *req, int status) {
  device *d = req->data;
  if (status < 0 && status != UV_ECANCELED)
    fzr_tunnel_at(d->i)->reset_seen = true;
  free(req);
}

/* Bytes onto the TCP connection as they are. */
static void raw_write(device *d, const void *p, size_t n) {
  if (d->closing || n == 0)
    return;
  if (fzr_write((uv_stream_t *)&d->tcp, p, n, d, dev_written) != 0) {
    fzr_tunnel_at(d->i)->reset_seen = true;
    dev_close(d, false);
  }
}

/* What OpenSSL has produced for the gateway. */
static void tls_flush(device *d) {
  char buf[16 * 1024];
  size_t n;
  while (d->tls_on && !d->closing && (n = fzr_tls_output(&d->tls, buf, sizeof(buf))) > 0)
    raw_write(d, buf, n);
}

/* Request and payload bytes: through TLS on the TLS listener. */
static void dev_write(device *d, const void *p, size_t n) {
  if (!d->open || d->fin || d->closing || n == 0)
    return;
  if (!d->tls_on) {
    raw_write(d, p, n);
    return;
  }
  fzr_tls_write(&d->tls, p, n, key_updates);
  tls_flush(d);
}

/* Tunnel payload: counted in the ledger. */
static void dev_send(device *d, const void *p, size_t n) {
  if (!d->open || d->fin || d->closing)
    return;
  fzr_bytes_add(&fzr_tunnel_at(d->i)->dev_sent, p, n);
  dev_write(d, p, n);
}

static void dev_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof(slab));
}

/* The response head, then tunnel bytes. Every CONNECT here is allowed. */
static size_t dev_head(device *d, const char *p, size_t n) {
  size_t used = 0;
  while (used < n && !d->head_done) {
    if (d->head_len == sizeof(d->head) - 1)
      fz_fail(HARNESS ": tunnel %zu: response head longer than %zu bytes", d->i, d->head_len);
    d->head[d->head_len++] = p[used++];
    d->head[d->head_len] = '\0';
    d->head_done = d->head_len >= 4 && memcmp(d->head + d->head_len - 4, "\r\n\r\n", 4) == 0;
  }
  if (d->head_done && strncmp(d->head, "HTTP/1.1 200 ", 13) != 0)
    fz_fail(HARNESS ": tunnel %zu to the allowed echo upstream answered: %.60s", d->i, d->head);
  return used;
}

/* The end of the gateway's stream: TCP EOF, or a close_notify on TLS. */
static void dev_eof(device *d) {
  fzr_tunnel *t = fzr_tunnel_at(d->i);
  if (d->eof)
    return;
  if (!d->head_done && !t->reset_asked)
    fz_fail(HARNESS ": tunnel %zu: closed without a response (%zu bytes of head)", d->i,
            d->head_len);
  d->eof = true;
  if (d->fin_done)
    dev_close(d, false);
}

static void dev_plain(device *d, const char *p, size_t n) {
  size_t used = d->head_done ? 0 : dev_head(d, p, n);
  fzr_bytes_add(&fzr_tunnel_at(d->i)->dev_got, p + used, n - used);
}

static void dev_shutdown(device *d);

static void plain_in(void *arg, const char *p, size_t n) { dev_plain(arg, p, n); }

/* Ciphertext from the gateway: handshake, then plaintext until close_notify. */
static void tls_in(device *d, const char *p, size_t n) {
  bool ended = fzr_tls_input(&d->tls, p, n, plain_in, d);
  tls_flush(d); /* what was held for the handshake; answers to a KeyUpdate */
  if (d->closing)
    return;
  if (d->fin_pending && d->tls.ready)
    dev_shutdown(d);
  if (ended)
    dev_eof(d);
}

static void dev_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  device *d = s->data;
  fzr_tunnel *t = fzr_tunnel_at(d->i);
  if (n == UV_EOF) {
    uv_read_stop(s);
    if (d->tls_on && !d->tls.close_notify_seen && !t->reset_asked)
      fz_fail(HARNESS ": tunnel %zu: the gateway ended its TLS stream with a bare FIN, no "
                      "close_notify",
              d->i);
    dev_eof(d);
    return;
  }
  if (n < 0) {
    t->reset_seen = true;
    dev_close(d, false);
    return;
  }
  if (d->tls_on) {
    tls_in(d, buf->base, (size_t)n);
    return;
  }
  dev_plain(d, buf->base, (size_t)n);
}

static void dev_connected(uv_connect_t *req, int status) {
  device *d = req->data;
  if (status < 0 && status != UV_ECANCELED)
    fz_fail(HARNESS ": tunnel %zu: connect to the engine: %s", d->i, uv_strerror(status));
}

static void dev_open(size_t i, const struct sockaddr_storage *listen, bool tls) {
  device *d = &devices[i];
  if (d->open)
    return;
  *d = (device){.i = i, .open = true};
  d->tcp.data = d->connect.data = d->shutdown.data = d;
  uv_tcp_init(&loop, &d->tcp);
  uv_tcp_nodelay(&d->tcp, 1); /* no Nagle stalls between small writes */
  open_devices++;
  fzr_tunnel_at(i)->used = true;
  if (uv_tcp_connect(&d->connect, &d->tcp, (const struct sockaddr *)listen, dev_connected) != 0)
    fz_fail(HARNESS ": tunnel %zu: cannot connect", i);
  uv_read_start((uv_stream_t *)&d->tcp, dev_alloc, dev_read);
  if ((d->tls_on = tls)) {
    fzr_tls_open(&d->tls);
    tls_flush(d); /* the ClientHello */
  }
  char req[128];
  unsigned port = ntohs(((const struct sockaddr_in *)&upstream_addr)->sin_port);
  int n = snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
                   port, port);
  dev_write(d, req, (size_t)n);
  uint8_t tag[FZR_TAG_LEN];
  fzr_tag(i, tag);
  dev_send(d, tag, sizeof(tag));
}

static void dev_shut(uv_shutdown_t *req, int status) {
  device *d = req->data;
  d->fin_done = true;
  if (status < 0 && status != UV_ECANCELED)
    fzr_tunnel_at(d->i)->reset_seen = true;
  if (status < 0 || d->eof)
    dev_close(d, false);
}

/* FIN, after a close_notify on TLS (unless this input's devices send bare
 * FINs), once the handshake and what was written before it are through. */
static void dev_shutdown(device *d) {
  d->fin_pending = false;
  if (d->tls_on && !bare_fin) {
    fzr_tls_close_notify(&d->tls); /* the gateway's comes later */
    tls_flush(d);
  }
  if (uv_shutdown(&d->shutdown, (uv_stream_t *)&d->tcp, dev_shut) != 0)
    fz_fail(HARNESS ": tunnel %zu: shutdown refused", d->i);
}

static void dev_fin(device *d) {
  if (!d->open || d->fin || d->closing)
    return;
  d->fin = true;
  if (d->tls_on && !d->tls.ready)
    d->fin_pending = true;
  else
    dev_shutdown(d);
}

static void dev_reset(device *d) {
  if (!d->open || d->closing)
    return;
  fzr_tunnel_at(d->i)->reset_asked = true;
  dev_close(d, true);
}

static void dev_reading(device *d, bool on) {
  if (!d->open || d->closing || d->eof)
    return;
  if (on)
    uv_read_start((uv_stream_t *)&d->tcp, dev_alloc, dev_read);
  else
    uv_read_stop((uv_stream_t *)&d->tcp);
}

/* ---- the input ---- */

static tn_engine *current;

/* Both sides are done, and the engine has nothing left open. */
static bool finished(void) {
  tn_engine_stats st;
  tn_engine_stats_get(current, &st);
  if (open_devices == 0 && fzr_up_open() == 0 && st.connections_active == 0 &&
      st.tunnels_active == 0 && st.clients_active == 0)
    return true;
  if (getenv("FZR_TRACE"))
    fprintf(stderr, "devices %zu upstreams %zu connections %llu tunnels %llu clients %llu\n",
            open_devices, fzr_up_open(), (unsigned long long)st.connections_active,
            (unsigned long long)st.tunnels_active, (unsigned long long)st.clients_active);
  return false;
}

static void run(fzr_input *in, const struct sockaddr_storage *listen, bool tls) {
  size_t big = 0;
  while (fzr_more(in)) {
    uint8_t b = fzr_byte(in), op = b & 0x0f;
    size_t i = (size_t)(b >> 4) % FZR_TUNNELS;
    device *d = &devices[i];
    const uint8_t *p;
    size_t n;
    switch (op) {
    case 0:
      dev_open(i, listen, tls);
      break;
    case 1:
      n = fzr_take(in, (size_t)fzr_byte(in) + 1, &p);
      dev_send(d, p, n);
      break;
    case 2:
      n = ((size_t)fzr_byte(in) + 1) * BIG_CHUNK;
      if (big + n <= BIG_MAX) {
        dev_send(d, filler + big, n);
        big += n;
      }
      break;
    case 3:
      dev_fin(d);
      break;
    case 4:
      dev_reset(d);
      break;
    case 5:
      dev_reading(d, false);
      break;
    case 6:
      dev_reading(d, true);
      break;
    case 7:
      fzr_up_fin(i);
      break;
    case 8:
      fzr_up_reset(i);
      break;
    case 9:
      fzr_up_pause(i, true);
      break;
    case 10:
      fzr_up_pause(i, false);
      break;
    default:
      fzr_turns(in);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16 * 1024)
    return -1;
  fzr_input in = {.p = data, .n = size};
  uint8_t mode = fzr_byte(&in);
  bool tls = mode & 2;
  size_t which = tls ? 2 : (mode & 1);
  bare_fin = mode & 4;
  key_updates = mode & 8;
  tn_engine *e = engines[which];
  fzr_begin();
  run(&in, &listen_addrs[which], tls);
  /* Both sides finish: everyone reads again, every device sends its FIN. */
  fzr_up_resume_all();
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    dev_reading(&devices[i], true);
    dev_fin(&devices[i]);
  }
  current = e;
  fzr_run_until(finished, HARNESS);
  fzr_check(HARNESS);
  memset(devices, 0, sizeof(devices));
  return 0;
}
