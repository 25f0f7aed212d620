/* Fuzzes the admin listener's request parser and life cycle (gateway/ops/admin.c:
 * llhttp with our header, URL and body callbacks, routing, synchronous and
 * asynchronous responses, a client that leaves while its request is pending)
 * through a real TCP connection on 127.0.0.1, like a device or an operator's
 * tool would reach it.
 *
 * Routes: the built-in GET /healthz; GET /status answering at once with what
 * the accessors return; POST /login answering on the next loop iteration
 * (the way identity management answers after a token exchange), possibly
 * after the client has gone. Oracle: every response is an HTTP/1.1 status
 * line with a status the listener is meant to send. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "gateway/log.h"
#include "gateway/ops/admin.h"
#include "tunnel/addr.h"

static uv_loop_t loop;
static gw_admin *admin;
static struct sockaddr_storage admin_addr;
static uv_timer_t later;
static gw_admin_req *pending[64];
static size_t n_pending;

/* Answers with what the accessors return. Header values are reported by
 * length only: they may be any bytes, and JSON needs UTF-8. */
static void handle_status(gw_admin_req *req, void *arg) {
  (void)arg;
  const char *auth = gw_admin_req_header(req, "Authorization");
  const char *accept = gw_admin_req_header(req, "accept");
  const char *host = gw_admin_req_header(req, "HOST");
  size_t body_len;
  gw_admin_req_body(req, &body_len);
  (void)gw_admin_req_peer(req);
  char text[256];
  int n = snprintf(text, sizeof(text), "path=%zu query=%zu auth=%zu accept=%zu host=%zu body=%zu\n",
                   strlen(gw_admin_req_path(req)), strlen(gw_admin_req_query(req)),
                   auth ? strlen(auth) : 0, accept ? strlen(accept) : 0, host ? strlen(host) : 0,
                   body_len);
  if (gw_admin_req_path(req)[1] == 's') { /* also the JSON helper, with a fixed document */
    gw_admin_respond_json(req, 200, json_pack("{s:i}", "n", n));
    return;
  }
  gw_admin_respond_text(req, 200, text);
}

static void answer_later(uv_timer_t *t) {
  (void)t;
  for (size_t i = 0; i < n_pending; i++) {
    gw_admin_req *req = pending[i];
    if (!gw_admin_req_alive(req)) {
      gw_admin_respond_text(req, 503, "gone\n"); /* must just free it */
      continue;
    }
    size_t len;
    const char *body = gw_admin_req_body(req, &len);
    const char *auth = gw_admin_req_header(req, "authorization");
    int status = auth && strcmp(auth, "Bearer fuzz") == 0 ? 200 : 401;
    gw_admin_respond(req, status, "application/octet-stream", "X-Fuzz: 1\r\n", body, len);
  }
  n_pending = 0;
}

static void handle_login(gw_admin_req *req, void *arg) {
  (void)arg;
  if (n_pending == sizeof(pending) / sizeof(pending[0])) {
    gw_admin_respond_text(req, 503, "busy\n");
    return;
  }
  pending[n_pending++] = req;
  uv_timer_start(&later, answer_later, 0, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  gw_log_setup(TN_LOG_DEBUG, TN_LOG_TEXT);
  uv_loop_init(&loop);
  uv_timer_init(&loop, &later);
  struct sockaddr_storage ss;
  if (tn_addr_parse_listen("127.0.0.1:0", &ss) != 0 || gw_admin_start(&loop, &ss, &admin) != 0 ||
      gw_admin_route(admin, "GET", "/status", handle_status, NULL) != 0 ||
      gw_admin_route(admin, "GET", "/", handle_status, NULL) != 0 ||
      gw_admin_route(admin, "POST", "/login", handle_login, NULL) != 0 ||
      gw_admin_addr(admin, &admin_addr) != 0)
    fz_fail("fuzz_admin: cannot start the admin listener on 127.0.0.1");
  return 0;
}

/* The admin keeps no counters: settled once no asynchronous answer is due. */
static bool settled(void *arg) {
  (void)arg;
  return n_pending == 0;
}

static bool status_expected(int status) {
  switch (status) {
  case 0: case 200: case 400: case 401: case 404: case 405: case 408: case 431: case 503:
    return true;
  default:
    return false;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_reply reply;
  fz_exchange(&loop, &admin_addr, data, size, settled, NULL, &reply);
  int status = fz_reply_status(&reply);
  if (!status_expected(status)) {
    fz_fail("fuzz_admin: unexpected reply (status %d): %.80s", status, reply.head);
  }
  return 0;
}
