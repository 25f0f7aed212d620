/* Fuzzes an HTTP/2 server session with our callbacks (tunnel/h2.c on
 * nghttp2) through the real engine on a real loop, like fuzz_h1_connect: each
 * input is written into one TCP connection to the engine's plain listener on
 * 127.0.0.1, which speaks h2c with prior knowledge. An input that does not
 * start with the client preface gets it prepended, so every input reaches the
 * HTTP/2 session (fuzz_h1_connect covers the preface detection itself); the
 * rest is frames: SETTINGS, HEADERS/CONTINUATION with HPACK, DATA, flow
 * control, RST_STREAM, GOAWAY, in any order and shape. The client keeps its
 * write side open until the engine has answered every request it admitted
 * (fz_exchange_ex), so that each CONNECT runs to its policy decision instead
 * of being cancelled by the client's FIN.
 *
 * Policy: only loopback targets are allowed (by name, literal and prefix),
 * with allow_private = no, so no input may ever open a tunnel. Oracles:
 *   - every tunnel the engine closes (tn_engine_on_close) never connected
 *     or tried to connect upstream, was never established and never
 *     answered 200 or 502;
 *   - the engine's stats never count a TN_RESULT_OK;
 *   - the server's HEADERS frames, as far as the driver kept them (4 KiB),
 *     HPACK-decoded with nghttp2's own inflater, never carry :status 200;
 *   - the engine settles (no connection, tunnel or client left) within the
 *     driver's deadline, and ASan/LSan see no error or leak.
 * The oracle can fail: FZ_ORACLE_SELFTEST=1 sets allow_private = yes, and then
 * the seed connect-loopback aborts ("went upstream ... connect_failed").
 * Seeds: tests/fuzz/gen_h2_seeds.py (python3-h2). Run with -close_fd_mask=2
 * to silence the engine's debug logs. */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "tunnel/engine.h"
#include "tunnel/log.h"

static uv_loop_t loop;
static tn_engine *engine;
static struct sockaddr_storage listen_addr;

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(preface) - 1)
#define H2_MAX_INPUT (64 * 1024)
static uint8_t framed[PREFACE_LEN + H2_MAX_INPUT];

/* Every tunnel, as it closes: nothing may have reached upstream. */
static void on_tunnel_closed(const tn_tunnel_info *t, void *arg) {
  (void)arg;
  /* CONNECT_FAILED (502) means an upstream connect was tried: only a name
   * the policy allows is ever resolved ("localhost", from /etc/hosts), and
   * its addresses are all refused as private, so that is a bypass too. */
  if (t->established || t->connected || t->status == 200 || t->status == 502 ||
      t->result == TN_RESULT_OK || t->result == TN_RESULT_CONNECT_FAILED)
    fz_fail("fuzz_h2_session: tunnel %llu to %s went upstream (status %d, result %s): "
            "policy bypass",
            (unsigned long long)t->id, t->target ? t->target : "?", t->status,
            tn_result_name(t->result));
}

/* Small, so that the stream limit paths are reached. */
static void few_streams(tn_engine_opts *o) { o->h2_max_concurrent_streams = 8; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  uv_loop_init(&loop);
  engine = fz_loopback_engine(&loop, getenv("FZ_ORACLE_SELFTEST") != NULL, /* normally no */
                              few_streams, &listen_addr);
  tn_engine_on_close(engine, on_tunnel_closed, NULL);
  return 0;
}

static bool settled(void *arg) {
  (void)arg;
  tn_engine_stats st;
  tn_engine_stats_get(engine, &st);
  return st.connections_active == 0 && st.tunnels_active == 0 && st.clients_active == 0 &&
         st.h2_connections_active == 0;
}

/* Every tunnel still being set up: none may be established or have been
 * answered 200; one without a response yet keeps the client from sending
 * its FIN (which would cancel the tunnel before its outcome). */
static void count_pending(const tn_tunnel_info *t, void *arg) {
  if (t->established || t->status == 200 || t->connected)
    fz_fail("fuzz_h2_session: tunnel %llu to %s established: policy bypass",
            (unsigned long long)t->id, t->target ? t->target : "?");
  if (t->status == 0)
    ++*(size_t *)arg;
}

static bool answered(void *arg) {
  (void)arg;
  size_t pending = 0;
  tn_engine_foreach(engine, count_pending, &pending);
  return pending == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > H2_MAX_INPUT)
    return -1; /* libFuzzer: not added to the corpus */
  size_t n = 0;
  if (size < PREFACE_LEN || memcmp(data, preface, PREFACE_LEN) != 0) {
    memcpy(framed, preface, PREFACE_LEN);
    n = PREFACE_LEN;
  }
  memcpy(framed + n, data, size);
  n += size;
  fz_reply reply;
  fz_exchange_ex(&loop, &listen_addr, framed, n, answered, settled, NULL, &reply);
  fz_h2_check_reply(&reply, "fuzz_h2_session");
  tn_engine_stats st;
  tn_engine_stats_get(engine, &st);
  if (st.by_result[TN_RESULT_OK] != 0)
    fz_fail("fuzz_h2_session: %llu tunnels established", (unsigned long long)st.by_result[TN_RESULT_OK]);
  return 0;
}
