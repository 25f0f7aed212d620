/* Fuzzes the plain proxy listener's front end with the real engine on a real
 * loop: each input is written into one TCP connection to the engine's
 * listener on 127.0.0.1. That is the HTTP/1.1 CONNECT front end (tunnel/h1.c:
 * llhttp plus our callbacks, then authority parsing, policy, admission, the
 * require_tls check on pipelined bytes, error responses and the lingering
 * close) and, for inputs that start with the HTTP/2 client preface, h2c with
 * prior knowledge (tunnel/h2.c) - a dedicated HTTP/2 session harness is
 * issue 3's; here h2 gets the same "never 200" oracle.
 *
 * The policy allows only loopback targets, by name, literal and prefix, with
 * allow_private = no. So no input can ever be relayed anywhere, and the
 * harness checks that as an oracle: any "200" (or a status mcgw never sends)
 * is a policy bypass and aborts (for h2: any HEADERS block that decodes, with
 * nghttp2's HPACK inflater, to ":status: 200": fz_h2_check_reply, not just
 * a first byte of 0x88). Nothing is ever resolved through DNS: names not
 * allowed are refused before resolution, and the one allowed name is
 * "localhost", which the resolver answers from /etc/hosts. (No suffix rule:
 * "*.localhost" would send names such as x.localhost to DNS.)
 *
 * Logs go to stderr at debug level so the logger's escaping of raw request
 * targets is fuzzed too; run with -close_fd_mask=2 to silence them. */
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

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  uv_loop_init(&loop);
  engine = fz_loopback_engine(&loop, false, NULL, &listen_addr);
  return 0;
}

static bool settled(void *arg) {
  (void)arg;
  tn_engine_stats st;
  tn_engine_stats_get(engine, &st);
  return st.connections_active == 0 && st.tunnels_active == 0 && st.clients_active == 0;
}

static bool status_expected(int status) {
  switch (status) {
  case 0:   /* closed without a response: client left mid-request, or not TLS */
  case 400: /* malformed request or authority */
  case 403: /* not allowed: every allowed target is loopback */
  case 405: /* not CONNECT */
  case 431: /* head too large */
  case 503: /* resolver or memory trouble */
    return true;
  default:
    return false;
  }
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reply reply;
  fz_exchange(&loop, &listen_addr, data, size, settled, NULL, &reply);
  if (size >= sizeof(h2_preface) - 1 && memcmp(data, h2_preface, sizeof(h2_preface) - 1) == 0) {
    fz_h2_check_reply(&reply, "fuzz_h1_connect");
    return 0;
  }
  int status = fz_reply_status(&reply);
  if (!status_expected(status))
    fz_fail("fuzz_h1_connect: unexpected reply (status %d): %.80s", status, reply.head);
  return 0;
}
