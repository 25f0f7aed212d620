/* The HTTP/2 front end (tunnel/h2.c) through its protocol table entry, the
 * device's bytes fed without sockets (front_helpers.h): an nghttp2 client
 * session in the test writes the device's frames, and reads what the front
 * end wrote to the fake transport. Stream handling: each request stream is
 * its own tunnel; refusals answer their stream only (status or RST_STREAM)
 * while the connection and its other streams go on; an established stream
 * relays both ways and ends with END_STREAM (its destination a real
 * loopback socket). */
#include <nghttp2/nghttp2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "front_helpers.h"

#define IDS 256 /* stream ids recorded: 1..255 */

/* The device: a client session and what came back on each stream. */
typedef struct device {
  nghttp2_session *session;
  int status[IDS];     /* :status by stream id */
  uint32_t rst[IDS];   /* RST_STREAM code + 1 by stream id; 0 none */
  char body[IDS][128]; /* DATA by stream id */
  bool goaway, settings;
  size_t consumed;                     /* bytes of the fake's output already read */
} device;

static int on_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *user) {
  device *d = user;
  if (nl == 7 && memcmp(name, ":status", 7) == 0 && fr->hd.stream_id < IDS) {
    char v[8] = "";
    memcpy(v, value, vl < 7 ? vl : 7);
    d->status[fr->hd.stream_id] = atoi(v);
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *user) {
  device *d = user;
  if (fr->hd.type == NGHTTP2_RST_STREAM && fr->hd.stream_id < IDS)
    d->rst[fr->hd.stream_id] = fr->rst_stream.error_code + 1;
  if (fr->hd.type == NGHTTP2_GOAWAY)
    d->goaway = true;
  if (fr->hd.type == NGHTTP2_SETTINGS)
    d->settings = true;
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *user) {
  device *d = user;
  if (id < IDS) {
    size_t have = strlen(d->body[id]);
    size_t n = len < sizeof d->body[id] - 1 - have ? len : sizeof d->body[id] - 1 - have;
    memcpy(d->body[id] + have, data, n);
  }
  return 0;
}

static void device_init(device *d) {
  memset(d, 0, sizeof(*d));
  nghttp2_session_callbacks *cbs;
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  assert_int_equal(nghttp2_session_client_new(&d->session, cbs, d), 0);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(d->session, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

/* Everything the device has to send: the preface (client sessions send it
 * themselves) and frames. */
static size_t device_out(device *d, char *buf, size_t cap) {
  size_t n = 0;
  const uint8_t *p;
  ssize_t len;
  while ((len = nghttp2_session_mem_send(d->session, &p)) > 0) {
    assert_true(n + (size_t)len <= cap);
    memcpy(buf + n, p, (size_t)len);
    n += (size_t)len;
  }
  assert_true(len == 0);
  return n;
}

/* Hands the device's pending frames to the front end, and what it answered
 * back to the device, until neither side has more. */
static void exchange(front *f, device *d) {
  static char buf[65536];
  for (int round = 0; round < 8; round++) {
    size_t n = device_out(d, buf, sizeof buf);
    if (n)
      front_feed(f, buf, n);
    front_settle(f);
    size_t fresh = f->dev.out_len - d->consumed;
    if (fresh) {
      ssize_t rv = nghttp2_session_mem_recv(d->session, (const uint8_t *)f->dev.out + d->consumed,
                                            fresh);
      assert_int_equal(rv, (ssize_t)fresh);
      d->consumed = f->dev.out_len;
    }
    if (!n && !fresh)
      return;
  }
}

#define NV(n, v)                                                                                   \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}

static int32_t request(device *d, const nghttp2_nv *nv, size_t n) {
  int32_t id = nghttp2_submit_request(d->session, NULL, nv, n, NULL, NULL);
  assert_true(id > 0 && id < IDS);
  return id;
}

/* Starts the front end with the h2c preface and the device's SETTINGS, as
 * conn.c hands them over. */
static void start(front *f, device *d) {
  static char buf[4096];
  front_start(f);
  device_init(d);
  size_t n = device_out(d, buf, sizeof buf);
  assert_memory_equal(buf, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
  front_connect(f, &tn__proto_h2, buf, n);
  exchange(f, d);
  assert_true(d->settings); /* the server's SETTINGS */
}

static void stop(front *f, device *d) {
  nghttp2_session_del(d->session);
  front_stop(f);
}

/* Refusals on four streams of one connection, each with its own answer;
 * the connection stays up throughout. */
static void refusals_per_stream(void **state) {
  (void)state;
  front f;
  device d;
  start(&f, &d);
  const nghttp2_nv denied[] = {NV(":method", "CONNECT"), NV(":authority", "203.0.113.7:443")};
  const nghttp2_nv get[] = {NV(":method", "GET"), NV(":scheme", "https"), NV(":path", "/"),
                            NV(":authority", "example.com")};
  const nghttp2_nv extended[] = {NV(":method", "CONNECT"), NV(":protocol", "websocket"),
                                 NV(":scheme", "https"), NV(":path", "/chat"),
                                 NV(":authority", "example.com:443")};
  const nghttp2_nv bad_target[] = {NV(":method", "CONNECT"), NV(":authority", "example.com")};
  const nghttp2_nv no_authority[] = {NV(":method", "CONNECT")};
  int32_t s403 = request(&d, denied, 2);
  int32_t s405 = request(&d, get, 4);
  int32_t s501 = request(&d, extended, 5);
  int32_t s400 = request(&d, bad_target, 2);
  int32_t sbad = request(&d, no_authority, 1);
  exchange(&f, &d);
  assert_int_equal(d.status[s403], 403);
  assert_string_equal(d.body[s403], "target not allowed\n");
  assert_int_equal(d.status[s405], 405);
  assert_int_equal(d.status[s501], 501);
  assert_int_equal(d.status[s400], 400);
  /* A malformed request is a stream error (RFC 9113 8.1.1), not an answer. */
  assert_int_equal(d.status[sbad], 0);
  assert_int_equal(d.rst[sbad], NGHTTP2_PROTOCOL_ERROR + 1);
  assert_false(d.goaway);
  assert_false(f.dev.closed);
  assert_int_equal(f.closed.n, 5);
  assert_string_equal(f.closed.proto, "h2");
  tn_engine_stats st;
  tn_engine_stats_get(f.engine, &st);
  assert_int_equal(st.h2_connections_active, 1);
  assert_int_equal(st.by_result[TN_RESULT_DENIED], 1);
  assert_int_equal(st.by_result[TN_RESULT_BAD_REQUEST], 4);
  stop(&f, &d);
}

/* CONNECT-UDP (RFC 9298) on the same front end: SETTINGS_ENABLE_CONNECT_PROTOCOL
 * is offered, each refusal answers its own stream (404 another path, 400 a
 * bad port, 403 no allow_udp rule, 501 another :protocol), the connection
 * goes on. */
static void connect_udp_refusals_per_stream(void **state) {
  (void)state;
  front f;
  device d;
  start(&f, &d);
  assert_int_equal(
      nghttp2_session_get_remote_settings(d.session, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL), 1);
#define UDP(path)                                                                                  \
  {NV(":method", "CONNECT"), NV(":protocol", "connect-udp"), NV(":scheme", "https"),             \
   NV(":authority", "gw.example"), NV(":path", path), NV("capsule-protocol", "?1")}
  const nghttp2_nv elsewhere[] = UDP("/elsewhere/");
  const nghttp2_nv port0[] = UDP("/.well-known/masque/udp/192.0.2.7/0/");
  const nghttp2_nv denied[] = UDP("/.well-known/masque/udp/192.0.2.7/5004/");
  const nghttp2_nv v6[] = UDP("/.well-known/masque/udp/2001%3Adb8%3A%3A1/5004/");
#undef UDP
  const nghttp2_nv ws[] = {NV(":method", "CONNECT"), NV(":protocol", "websocket"),
                           NV(":scheme", "https"), NV(":path", "/.well-known/masque/udp/a/1/"),
                           NV(":authority", "gw.example")};
  int32_t s404 = request(&d, elsewhere, 6);
  int32_t s400 = request(&d, port0, 6);
  int32_t s403 = request(&d, denied, 6);
  int32_t s403v6 = request(&d, v6, 6);
  int32_t s501 = request(&d, ws, 5);
  exchange(&f, &d);
  assert_int_equal(d.status[s404], 404);
  assert_int_equal(d.status[s400], 400);
  assert_int_equal(d.status[s403], 403);
  assert_string_equal(d.body[s403], "target not allowed\n");
  assert_int_equal(d.status[s403v6], 403);
  assert_int_equal(d.status[s501], 501);
  assert_false(d.goaway);
  assert_false(f.dev.closed);
  assert_int_equal(f.closed.n, 5);
  tn_engine_stats st;
  tn_engine_stats_get(f.engine, &st);
  assert_int_equal(st.by_result[TN_RESULT_DENIED], 2);
  assert_int_equal(st.by_result[TN_RESULT_BAD_REQUEST], 3);
  stop(&f, &d);
}

/* Past the per-client rate (burst 50) streams get 429 with retry-after,
 * and other streams of the connection still get their own answer. */
static void rate_limited_stream(void **state) {
  (void)state;
  front f;
  device d;
  start(&f, &d);
  const nghttp2_nv denied[] = {NV(":method", "CONNECT"), NV(":authority", "203.0.113.7:443")};
  int32_t first = 0, last = 0;
  for (int round = 0; round < 6; round++) { /* at most 100 streams at once: in rounds */
    for (int i = 0; i < 10; i++) {
      last = request(&d, denied, 2);
      first = first ? first : last;
    }
    exchange(&f, &d);
  }
  assert_int_equal(d.status[first], 403);
  assert_int_equal(d.status[last], 429);
  assert_string_equal(d.body[last], "client_rate\n");
  tn_engine_stats st;
  tn_engine_stats_get(f.engine, &st);
  assert_int_equal(st.by_result[TN_RESULT_DENIED], 50);
  assert_int_equal(st.by_result[TN_RESULT_RATE_LIMITED], 10);
  assert_int_equal(f.closed.status, 429);
  assert_false(d.goaway); /* 10 refusals: below h2_max_refused_per_connection */
  stop(&f, &d);
}

/* The table's drain: GOAWAY(NO_ERROR) on the session, counted; streams
 * answered before it keep their answer. */
static void drain_sends_goaway(void **state) {
  (void)state;
  front f;
  device d;
  start(&f, &d);
  const nghttp2_nv denied[] = {NV(":method", "CONNECT"), NV(":authority", "203.0.113.7:443")};
  int32_t id = request(&d, denied, 2);
  exchange(&f, &d);
  assert_int_equal(d.status[id], 403);
  assert_false(d.goaway);
  tn__proto_h2.drain(f.engine, false);
  exchange(&f, &d);
  assert_true(d.goaway);
  tn_engine_stats st;
  tn_engine_stats_get(f.engine, &st);
  assert_int_equal(st.h2_goaway[TN_GOAWAY_DRAIN], 1);
  stop(&f, &d);
}

/* The device's DATA: "ping" then END_STREAM. */
static ssize_t ping_source(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)s;
  (void)id;
  (void)src;
  (void)user;
  assert_true(len >= 4);
  memcpy(buf, "ping", 4);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return 4;
}

typedef struct stream_wait {
  device *d;
  int32_t id;
} stream_wait;

static bool got_200(front *f, void *arg) {
  stream_wait *w = arg;
  exchange(f, w->d);
  return w->d->status[w->id] == 200;
}

static bool got_pong(front *f, void *arg) {
  stream_wait *w = arg;
  exchange(f, w->d);
  return strcmp(w->d->body[w->id], "pong") == 0 && f->closed.n == 1;
}

/* An allowed CONNECT on a stream: :status 200 through the table's
 * established, the device's DATA reaches the destination (a real socket)
 * and its END_STREAM becomes a FIN; the destination's bytes and FIN come
 * back as DATA and END_STREAM, and the tunnel ends ok while the connection
 * stays up. */
static void established_stream_relays(void **state) {
  (void)state;
  front f;
  device d;
  start(&f, &d);
  uint16_t port;
  int lfd = test_listen_loopback(&port);
  char authority[32];
  snprintf(authority, sizeof authority, "127.0.0.1:%u", port);
  nghttp2_nv nv[] = {
      NV(":method", "CONNECT"),
      {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), NGHTTP2_NV_FLAG_NONE}};
  /* HEADERS without END_STREAM (a request without a body would end the
   * stream at once) */
  int32_t id = nghttp2_submit_headers(d.session, NGHTTP2_FLAG_NONE, -1, NULL, nv, 2, NULL);
  assert_true(id > 0 && id < IDS);
  stream_wait w = {.d = &d, .id = id};
  front_wait(&f, got_200, &w, "the 200 on the stream");
  int up = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  assert_true(up >= 0);
  nghttp2_data_provider dp = {.read_callback = ping_source};
  assert_int_equal(nghttp2_submit_data(d.session, NGHTTP2_FLAG_END_STREAM, id, &dp), 0);
  exchange(&f, &d);
  sock_read r = {.fd = up, .want = 4};
  front_wait(&f, sock_read_done, &r, "the DATA upstream");
  assert_string_equal(r.buf, "ping");
  uint64_t deadline = test_now_ms() + 5000;
  char c;
  while (recv(up, &c, 1, 0) != 0) { /* END_STREAM became a FIN */
    assert_true(test_now_ms() < deadline);
    front_settle(&f);
  }
  assert_int_equal(send(up, "pong", 4, MSG_NOSIGNAL), 4);
  close(up);
  front_wait(&f, got_pong, &w, "the destination's bytes and the end of the tunnel");
  assert_int_equal(d.rst[id], 0);
  assert_int_equal(f.closed.result, TN_RESULT_OK);
  assert_int_equal(f.closed.status, 200);
  assert_string_equal(f.closed.close_reason, "eof");
  assert_false(f.dev.closed); /* the connection outlives its stream */
  close(lfd);
  stop(&f, &d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(refusals_per_stream),
      cmocka_unit_test(connect_udp_refusals_per_stream),
      cmocka_unit_test(rate_limited_stream),
      cmocka_unit_test(drain_sends_goaway),
      cmocka_unit_test(established_stream_relays),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
