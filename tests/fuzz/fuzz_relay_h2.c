/* Fuzzes the HTTP/2 relay after the 200: the real engine on this process's
 * loop, h2c with prior knowledge on its plain listener, a policy that allows
 * the in-process echo upstream (127.0.0.1, allow_private = yes, require_tls
 * on), and one device connection whose client session (nghttp2, so every
 * frame it sends is valid) multiplexes up to 16 CONNECT streams, driven by
 * the input. fuzz_h2_session covers malformed frames; this harness covers
 * what happens to the bytes once streams are open.
 *
 * Input: the first byte picks the engine (bit 0: 16 KiB stream windows
 * rather than the default 256 KiB, so flow control bites; bit 1: the TLS
 * listener with ALPN h2 instead, the device speaking TLS 1.3 over OpenSSL
 * memory BIOs, and, bit 3, requesting a TLS KeyUpdate before each write).
 * Then operations,
 * one byte each: the low nibble is the operation, the high nibble the
 * stream (tunnel) it applies to:
 *   0 open: HEADERS (CONNECT) and at once DATA with the tunnel's tag, before
 *     the 200
 *   1 DATA: the next 1..256 input bytes (length byte, then the bytes)
 *   2 DATA: (n + 1) * 4 KiB of filler (n: next byte; at most 512 KiB per input)
 *   3 END_STREAM
 *   4 RST_STREAM: CANCEL, or NO_ERROR when the next byte is odd (after an
 *     END_STREAM already written that only means "no more bytes for me":
 *     what the device sent must still reach upstream in full)
 *   5 stop consuming the stream's DATA (its window closes: the device stops
 *     reading)                           6 ... consume again
 *   7 upstream FIN                        8 upstream reset
 *   9 upstream stops reading              10 ... and reads again
 *   11 WINDOW_UPDATE on the stream, increment from the next two bytes
 *   12 SETTINGS: INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE from the next byte
 *   13 PING, and WINDOW_UPDATE on the connection
 *   14-15 run the loop (1..16 turns, next byte)
 * At the end every side reads again, the device's windows open wide, every
 * stream gets END_STREAM; the loop runs until every stream is closed and
 * the engine has answered a PING sent after them (so it has seen every
 * frame) and has no tunnel left; then the device closes the connection.
 *
 * Oracles: relay.h (bytes exact per stream and direction, no unasked reset
 * or RST_STREAM, access-log byte counts and close=eof), plus: every CONNECT
 * is answered :status 200; the engine never closes the connection or sends
 * GOAWAY while streams are open, and on TLS ends it with a close_notify; and afterwards the engine has no tunnel,
 * connection or client left, within the driver's deadline. ASan/UBSan/LSan
 * watch the rest. Run with -close_fd_mask=2 to silence the engine's logs. */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "relay.h"
#include "tunnel/engine.h"
#include "tunnel/log.h"

#define HARNESS "fuzz_relay_h2"
#define BIG_CHUNK (4 * 1024)
#define BIG_MAX (512 * 1024)

typedef struct stream {
  fzr_h2_stream h; /* first: its DATA (all of it may go: limit SIZE_MAX), window, response */
  size_t i;
} stream;

static uv_loop_t loop;
static tn_engine *engines[3]; /* 256 KiB windows, 16 KiB windows, TLS listener */
static tn_engine *current;
static struct sockaddr_storage listen_addrs[3], upstream_addr;
static bool key_updates;
static uint8_t *filler;

/* The device connection of the current input. */
static struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_shutdown_t shutdown;
  nghttp2_session *session;
  bool tls_on;
  fzr_tls tls;
  bool open, eof, shut, closing, closed;
  fzr_h2_device d; /* the session's streams, PING, GOAWAY */
  stream streams[FZR_TUNNELS];
} dev;

/* ---- the connection ---- */

static void dev_closed(uv_handle_t *h) {
  (void)h;
  dev.closed = true;
  if (dev.tls_on)
    fzr_tls_free(&dev.tls);
}

static void raw_write(const void *p, size_t n) { fzr_send((uv_stream_t *)&dev.tcp, p, n); }

/* What the TLS client has for the gateway. */
static void tls_flush(void) {
  char buf[16 * 1024];
  size_t n;
  while (dev.tls_on && !dev.closing && (n = fzr_tls_output(&dev.tls, buf, sizeof(buf))) > 0)
    raw_write(buf, n);
}

/* Everything nghttp2 has queued goes out now (through TLS on the TLS
 * listener). */
static void frames_out(const uint8_t *p, size_t n) {
  if (dev.tls_on)
    fzr_tls_write(&dev.tls, p, n, key_updates);
  else
    raw_write(p, n);
}

static void flush(void) {
  if (!dev.session || dev.closing || dev.shut)
    return;
  fzr_h2_send(dev.session, frames_out);
  tls_flush();
}

static void dev_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void plain_in(void *arg, const char *p, size_t n) {
  (void)arg;
  ssize_t used = nghttp2_session_mem_recv(dev.session, (const uint8_t *)p, n);
  if (used < 0)
    fz_fail(HARNESS ": the engine sent what nghttp2 refuses: %s", nghttp2_strerror((int)used));
}

static void dev_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)s;
  if (n < 0) {
    if (dev.d.open_streams)
      fz_fail(HARNESS ": the engine closed the connection (%s) with %zu streams open",
              uv_err_name((int)n), dev.d.open_streams);
    if (n != UV_EOF)
      fz_fail(HARNESS ": connection reset by the engine");
    if (dev.tls_on && !dev.tls.close_notify_seen)
      fz_fail(HARNESS ": the gateway ended its TLS stream with a bare FIN, no close_notify");
    dev.eof = true;
    uv_read_stop(s);
    if (!dev.closing) {
      dev.closing = true;
      uv_close((uv_handle_t *)&dev.tcp, dev_closed);
    }
    return;
  }
  if (dev.tls_on) {
    /* A close_notify ends the stream like EOF: the check above runs at the
     * FIN that follows it. */
    fzr_tls_input(&dev.tls, buf->base, (size_t)n, plain_in, NULL);
    tls_flush();
  } else {
    plain_in(NULL, buf->base, (size_t)n);
  }
  flush();
}

/* DATA on a stream: what the device received on its tunnel. */
static void got_data(fzr_h2_stream *h, const uint8_t *p, size_t n) {
  fzr_bytes_add(&fzr_tunnel_at(((stream *)h)->i)->dev_got, p, n);
}

/* ---- operations on one stream ---- */

static bool writable(const stream *st) { return st->h.id > 0 && !st->h.fin && !st->h.closed; }

static void send_data(stream *st, const void *p, size_t n) {
  if (!writable(st) || n == 0)
    return;
  fzr_bytes_add(&fzr_tunnel_at(st->i)->dev_sent, p, n);
  fzr_bytes_add(&st->h.out, p, n);
  fzr_h2_resume(dev.session, &st->h);
}

static void open_stream(size_t i) {
  stream *st = &dev.streams[i];
  if (st->h.id)
    return;
  char authority[32];
  unsigned port = ntohs(((const struct sockaddr_in *)&upstream_addr)->sin_port);
  int alen = snprintf(authority, sizeof(authority), "127.0.0.1:%u", port);
  nghttp2_nv nv[] = {
      {(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)":authority", (uint8_t *)authority, 10, (size_t)alen, NGHTTP2_NV_FLAG_NONE},
  };
  fzr_h2_submit(dev.session, &dev.d, &st->h, nv, 2);
  fzr_tunnel_at(i)->used = true;
  uint8_t tag[FZR_TAG_LEN];
  fzr_tag(i, tag);
  send_data(st, tag, sizeof(tag));
}

static void end_stream(stream *st) {
  if (!writable(st))
    return;
  st->h.fin = true;
  fzr_h2_resume(dev.session, &st->h);
}

static void reset_stream(stream *st, bool no_error) {
  if (st->h.id <= 0 || st->h.closed)
    return;
  fzr_tunnel *t = fzr_tunnel_at(st->i);
  /* nghttp2 sends RST_STREAM ahead of queued DATA: only an END_STREAM
   * already written reaches the engine first. */
  if (no_error && st->h.fin_sent)
    t->device_gone = true; /* only the way back may be cut short */
  else
    t->reset_asked = true;
  nghttp2_submit_rst_stream(dev.session, NGHTTP2_FLAG_NONE, st->h.id,
                            no_error ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
}

static void settings(uint8_t b) {
  static const uint32_t windows[] = {0, 1, 100, 16384, 65535, 1 << 20, 1 << 22, 1 << 24};
  static const uint32_t frames[] = {16384, 16385, 65536, (1 << 24) - 1};
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, windows[b & 7]},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, frames[(b >> 3) & 3]},
  };
  nghttp2_submit_settings(dev.session, NGHTTP2_FLAG_NONE, iv, (b & 0x20) ? 2 : 1);
}

/* ---- one input ---- */

static void dev_start(const struct sockaddr_storage *listen, bool tls) {
  memset(&dev, 0, sizeof(dev));
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    dev.streams[i].i = i;
    dev.streams[i].h.limit = SIZE_MAX;
  }
  dev.d = (fzr_h2_device){.harness = HARNESS, .data = got_data};
  dev.session = fzr_h2_session(&dev.d);
  nghttp2_submit_settings(dev.session, NGHTTP2_FLAG_NONE, NULL, 0);
  uv_tcp_init(&loop, &dev.tcp);
  uv_tcp_nodelay(&dev.tcp, 1); /* no Nagle stalls between small frames */
  dev.open = true;
  dev.connect.data = HARNESS;
  if (uv_tcp_connect(&dev.connect, &dev.tcp, (const struct sockaddr *)listen, fzr_connected) != 0)
    fz_fail(HARNESS ": cannot connect");
  uv_read_start((uv_stream_t *)&dev.tcp, dev_alloc, dev_read);
  if ((dev.tls_on = tls)) {
    fzr_tls_open(&dev.tls);
    tls_flush(); /* the ClientHello; the preface and SETTINGS wait for the handshake */
  }
}

static void run(fzr_input *in) {
  size_t big = 0;
  while (fzr_more(in)) {
    uint8_t b = fzr_byte(in), op = b & 0x0f;
    size_t i = (size_t)(b >> 4) % FZR_TUNNELS;
    stream *st = &dev.streams[i];
    const uint8_t *p;
    size_t n;
    switch (op) {
    case 0:
      open_stream(i);
      break;
    case 1:
      n = fzr_take(in, (size_t)fzr_byte(in) + 1, &p);
      send_data(st, p, n);
      break;
    case 2:
      n = ((size_t)fzr_byte(in) + 1) * BIG_CHUNK;
      if (big + n <= BIG_MAX && writable(st)) {
        send_data(st, filler + big, n);
        big += n;
      }
      break;
    case 3:
      end_stream(st);
      break;
    case 4:
      reset_stream(st, fzr_byte(in) & 1);
      break;
    case 5:
      fzr_h2_stall(dev.session, &st->h, true);
      break;
    case 6:
      fzr_h2_stall(dev.session, &st->h, false);
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
    case 11: {
      uint32_t inc = (uint32_t)fzr_byte(in) << 8 | fzr_byte(in);
      if (st->h.id > 0 && !st->h.closed && inc)
        nghttp2_submit_window_update(dev.session, NGHTTP2_FLAG_NONE, st->h.id, (int32_t)inc);
      break;
    }
    case 12:
      settings(fzr_byte(in));
      break;
    case 13:
      nghttp2_submit_ping(dev.session, NGHTTP2_FLAG_NONE, NULL);
      nghttp2_submit_window_update(dev.session, NGHTTP2_FLAG_NONE, 0, 1024);
      break;
    default:
      flush();
      fzr_turns(in);
    }
    flush();
  }
}

static bool streams_closed(void) { return dev.d.open_streams == 0; }

/* The engine answered the PING sent after every stream's last frame, so it
 * has seen them all; and it has no tunnel left (one may still have been
 * connecting upstream when the device's stream closed). */
static bool streams_done(void) {
  tn_engine_stats st;
  tn_engine_stats_get(current, &st);
  return dev.d.ping_acked && fzr_up_open() == 0 && st.tunnels_active == 0;
}

static bool finished(void) {
  tn_engine_stats st;
  tn_engine_stats_get(current, &st);
  return dev.closed && fzr_up_open() == 0 && st.connections_active == 0 && st.tunnels_active == 0 &&
         st.clients_active == 0 && st.h2_connections_active == 0;
}

static void dev_shut(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

static void small_windows(tn_engine_opts *o) { o->h2_stream_window = 16 * 1024; }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const fzr_engine_spec spec[3] = {
      {NULL, NULL, 0}, {small_windows, NULL, 0}, {NULL, "\x02h2", 3}};
  fzr_setup(&loop, &upstream_addr, spec, 3, engines, listen_addrs);
  filler = fzr_filler(BIG_MAX, 0x68326d63);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16 * 1024)
    return -1;
  fzr_input in = {.p = data, .n = size};
  uint8_t mode = fzr_byte(&in);
  bool tls = mode & 2;
  size_t which = tls ? 2 : (mode & 1);
  key_updates = mode & 8;
  current = engines[which];
  fzr_begin();
  dev_start(&listen_addrs[which], tls);
  run(&in);
  /* Both sides finish: everyone reads again with open windows, every
   * stream ends. */
  fzr_up_resume_all();
  settings(0x05); /* INITIAL_WINDOW_SIZE 1 MiB */
  nghttp2_submit_window_update(dev.session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
  for (size_t i = 0; i < FZR_TUNNELS; i++) {
    fzr_h2_stall(dev.session, &dev.streams[i].h, false);
    end_stream(&dev.streams[i]);
  }
  flush();
  fzr_run_until(streams_closed, HARNESS ": streams");
  nghttp2_submit_ping(dev.session, NGHTTP2_FLAG_NONE, (const uint8_t *)"mcgwdone");
  flush();
  fzr_run_until(streams_done, HARNESS ": engine");
  /* Then the device hangs up: GOAWAY, (close_notify,) FIN, and the engine
   * closes. */
  nghttp2_session_terminate_session(dev.session, NGHTTP2_NO_ERROR);
  flush();
  if (dev.tls_on) {
    fzr_tls_close_notify(&dev.tls);
    tls_flush();
  }
  dev.shut = true;
  if (uv_shutdown(&dev.shutdown, (uv_stream_t *)&dev.tcp, dev_shut) != 0)
    fz_fail(HARNESS ": shutdown refused");
  fzr_run_until(finished, HARNESS);
  for (size_t i = 0; i < FZR_TUNNELS; i++) /* an RST_STREAM other than NO_ERROR */
    if (dev.streams[i].h.closed && dev.streams[i].h.close_code != NGHTTP2_NO_ERROR)
      fzr_tunnel_at(i)->reset_seen = true;
  fzr_check(HARNESS);
  nghttp2_session_del(dev.session);
  for (size_t i = 0; i < FZR_TUNNELS; i++)
    free(dev.streams[i].h.out.p);
  return 0;
}
