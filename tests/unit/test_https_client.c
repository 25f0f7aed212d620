/* Unit tests for the deadline of csc1/https_client.c: a request runs on a
 * real libuv loop against a local server thread that stops answering at one
 * phase of the exchange, and must end with CSC1_HTTPS_ETIMEOUT once its
 * timeout_ms has passed - not before, and not much later:
 *
 *   - TCP: the server accepts, reads the ClientHello and never answers;
 *   - TLS: the handshake completes, the request arrives, no response;
 *   - partial: the response head and part of the body, then silence;
 *   - linger: a complete response, but the server never closes - with
 *     linger the deadline ends the wait with the response (CSC1_HTTPS_OK).
 *
 * And the connection race (Happy Eyeballs, csc1/https_connect.c), through
 * the resolver and socket hooks: an IPv6 address that fails (refused by the
 * kernel or by the socket hook) lets IPv4 start at once, not attempt_delay
 * later; one that hangs gets IPv4 started attempt_delay later, and the
 * request's deadline ends a race that nothing wins.
 *
 * The server's certificate (EC P-256, IP:127.0.0.1) is made at start and is
 * the client's only trust anchor, so verification stays on. The loop runs
 * until the request has called back and closed every handle; a guard timer
 * fails a request that never ends. The server thread checks that the client
 * reached the phase under test and closed the connection at the end. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "csc1/https_client.h"
#include "selfsigned_helpers.h"

#define TIMEOUT_MS 300
#define LATE_MS 2000  /* how late the callback may be on a loaded machine */
#define GUARD_MS 8000 /* a request still running then has no working deadline */
#define SERVER_IO_S 10

typedef enum { SILENT_TCP, SILENT_TLS, PARTIAL, COMPLETE_NO_CLOSE } behaviour;

static SSL_CTX *server_ctx;
static char ca_path[64];

/* ---- the server's certificate ------------------------------------------ */

static void make_server_identity(void) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  assert_non_null(key);
  X509 *x = selfsigned_127(key, "test_https_timeout");
  assert_non_null(x);

  server_ctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(server_ctx);
  assert_int_equal(SSL_CTX_use_certificate(server_ctx, x), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey(server_ctx, key), 1);
  /* The client hangs up without close_notify: that is the close we wait for. */
  SSL_CTX_set_options(server_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);

  /* The same certificate is the client's trust anchor. */
  snprintf(ca_path, sizeof ca_path, "/tmp/test_https_timeout_ca_XXXXXX");
  int fd = mkstemp(ca_path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_X509(f, x), 1);
  assert_int_equal(fclose(f), 0);
  X509_free(x);
  EVP_PKEY_free(key);
}

static int group_setup(void **state) {
  make_server_identity();
  return 0;
}

static int group_teardown(void **state) {
  unlink(ca_path);
  SSL_CTX_free(server_ctx);
  return 0;
}

/* ---- the server thread -------------------------------------------------- */

typedef struct server {
  int listen_fd;
  unsigned short port;
  behaviour how;
  pthread_t thread;
  /* What the client did, as the server saw it. */
  bool got_client_hello, handshake_ok, got_request, saw_close;
} server;

/* Reads until the client closes the connection (or the I/O timeout). */
static bool drain_until_close(int fd, SSL *ssl) {
  char buf[4096];
  for (;;) {
    int n = ssl ? SSL_read(ssl, buf, sizeof buf) : (int)recv(fd, buf, sizeof buf, 0);
    if (n > 0)
      continue;
    if (!ssl)
      return n == 0;
    return SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN; /* not the I/O timeout */
  }
}

/* Reads the request head over TLS. */
static bool read_request(SSL *ssl) {
  char req[4096];
  size_t got = 0;
  while (got < sizeof req - 1) {
    int n = SSL_read(ssl, req + got, (int)(sizeof req - 1 - got));
    if (n <= 0)
      return false;
    got += (size_t)n;
    req[got] = '\0';
    if (strstr(req, "\r\n\r\n"))
      return strncmp(req, "GET /slow HTTP/1.1\r\n", 20) == 0;
  }
  return false;
}

static void serve_tls(server *s, int fd) {
  static const char partial[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";
  static const char complete[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  SSL *ssl = SSL_new(server_ctx);
  if (!ssl)
    return;
  SSL_set_fd(ssl, fd);
  s->handshake_ok = SSL_accept(ssl) == 1;
  if (s->handshake_ok && (s->got_request = read_request(ssl))) {
    if (s->how == PARTIAL)
      SSL_write(ssl, partial, (int)sizeof partial - 1);
    else if (s->how == COMPLETE_NO_CLOSE)
      SSL_write(ssl, complete, (int)sizeof complete - 1);
    s->saw_close = drain_until_close(fd, ssl);
  }
  SSL_free(ssl);
}

static void *serve(void *arg) {
  server *s = arg;
  struct pollfd p = {.fd = s->listen_fd, .events = POLLIN};
  if (poll(&p, 1, SERVER_IO_S * 1000) != 1)
    return NULL;
  int fd = accept(s->listen_fd, NULL, NULL);
  if (fd < 0)
    return NULL;
  struct timeval tv = {.tv_sec = SERVER_IO_S};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (s->how == SILENT_TCP) {
    unsigned char first = 0;
    s->got_client_hello = recv(fd, &first, 1, 0) == 1 && first == 0x16; /* a TLS handshake */
    s->saw_close = s->got_client_hello && drain_until_close(fd, NULL);
  } else {
    serve_tls(s, fd);
  }
  close(fd);
  return NULL;
}

static void server_start(server *s, behaviour how) {
  memset(s, 0, sizeof *s);
  s->how = how;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(s->listen_fd >= 0);
  assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s->listen_fd, 4), 0);
  assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &alen), 0);
  s->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_join(server *s) {
  assert_int_equal(pthread_join(s->thread, NULL), 0);
  close(s->listen_fd);
}

/* ---- the client on a real loop ------------------------------------------ */

typedef struct outcome {
  int calls, err;
  char detail[512];
  char body[64];
  int status;
  uint64_t elapsed_ms;
  uint64_t t0; /* uv_hrtime() when the request started */
  bool guard_fired;
  uv_timer_t guard;
  csc1_https_req *req;
} outcome;

static void on_guard_closed(uv_handle_t *h) { (void)h; }

static void on_done(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  outcome *o = arg;
  o->calls++;
  o->err = err;
  o->elapsed_ms = (uv_hrtime() - o->t0) / 1000000;
  snprintf(o->detail, sizeof o->detail, "%s", detail ? detail : "");
  if (resp) {
    o->status = resp->status;
    snprintf(o->body, sizeof o->body, "%.*s", (int)resp->body_len, resp->body);
  }
  o->req = NULL;
  uv_close((uv_handle_t *)&o->guard, on_guard_closed);
}

/* The deadline did not work: give up on the request so the loop ends. */
static void on_guard(uv_timer_t *t) {
  outcome *o = t->data;
  o->guard_fired = true;
  csc1_https_cancel(o->req);
  o->req = NULL;
  uv_close((uv_handle_t *)&o->guard, on_guard_closed);
}

/* How a request reaches its server in the Happy Eyeballs tests: a
 * resolver hook, the socket hook, a long attempt_delay and deadline. */
typedef struct race_env {
  csc1_https_resolver resolver;
  uv_timer_t *lookup_timer; /* the resolver's: run_request inits and closes it */
  csc1_https_socket_fn setup;
  void *setup_arg;
  uint64_t attempt_delay_ms, timeout_ms;
} race_env;

/* Runs one GET https://127.0.0.1:PORT/slow to its end (he: NULL, or the
 * race's settings); every handle is closed when this returns. */
static void run_request(unsigned short port, bool linger, const race_env *he, outcome *o) {
  char err[256], url[64];
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  csc1_https_ctx *ctx = csc1_https_ctx_new(ca_path, NULL, NULL, err, sizeof err);
  assert_non_null(ctx);
  snprintf(url, sizeof url, "https://127.0.0.1:%u/slow", port);
  csc1_https_request_opts ro = {
      .method = "GET", .url = url, .timeout_ms = TIMEOUT_MS, .linger = linger};
  if (he) {
    uv_timer_init(&loop, he->lookup_timer);
    csc1_https_ctx_set_resolver(ctx, &he->resolver);
    csc1_https_ctx_set_socket_setup(ctx, he->setup, he->setup_arg);
    csc1_https_ctx_set_attempt_delay(ctx, he->attempt_delay_ms);
    ro.timeout_ms = he->timeout_ms;
  }
  memset(o, 0, sizeof *o);
  uv_timer_init(&loop, &o->guard);
  o->guard.data = o;
  uv_timer_start(&o->guard, on_guard, GUARD_MS, 0);
  /* t0 before the loop's clock is read: the request's timer counts from that
   * reading, so the measured time can only be longer, never short by the
   * time between the two (seen under qemu on a loaded machine). */
  o->t0 = uv_hrtime();
  uv_update_time(&loop);
  assert_int_equal(csc1_https_request(&loop, ctx, &ro, on_done, o, &o->req), 0);
  csc1_https_ctx_free(ctx); /* requests in flight keep what they need */
  uv_run(&loop, UV_RUN_DEFAULT);
  if (he) {
    uv_close((uv_handle_t *)he->lookup_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  assert_int_equal(uv_loop_close(&loop), 0); /* nothing left open */
  assert_false(o->guard_fired);
  assert_int_equal(o->calls, 1);
}

static void assert_in_deadline(const outcome *o) {
  assert_true(o->elapsed_ms + 1 >= TIMEOUT_MS); /* uv_now is whole milliseconds */
  assert_true(o->elapsed_ms <= TIMEOUT_MS + LATE_MS);
}

static void assert_timed_out(const outcome *o, unsigned short port) {
  char want[128];
  assert_int_equal(o->err, CSC1_HTTPS_ETIMEOUT);
  snprintf(want, sizeof want, "no complete response from 127.0.0.1:%u within %d ms", port,
           TIMEOUT_MS);
  assert_string_equal(o->detail, want);
  assert_in_deadline(o);
}

static void silent_after_accept(void **state) {
  server s;
  outcome o;
  server_start(&s, SILENT_TCP);
  run_request(s.port, false, NULL, &o);
  server_join(&s);
  assert_timed_out(&o, s.port);
  assert_true(s.got_client_hello); /* stuck in the handshake */
  assert_true(s.saw_close);        /* and the client hung up at the deadline */
}

static void silent_after_handshake(void **state) {
  server s;
  outcome o;
  server_start(&s, SILENT_TLS);
  run_request(s.port, false, NULL, &o);
  server_join(&s);
  assert_timed_out(&o, s.port);
  assert_true(s.handshake_ok && s.got_request); /* stuck waiting for the response */
  assert_true(s.saw_close);
}

static void silent_mid_body(void **state) {
  server s;
  outcome o;
  server_start(&s, PARTIAL);
  run_request(s.port, false, NULL, &o);
  server_join(&s);
  assert_timed_out(&o, s.port);
  assert_true(s.got_request && s.saw_close);
}

/* With linger, a complete response is waited on until the server closes or
 * the deadline passes; the deadline then ends the request with it. */
static void linger_ends_at_deadline(void **state) {
  server s;
  outcome o;
  server_start(&s, COMPLETE_NO_CLOSE);
  run_request(s.port, true, NULL, &o);
  server_join(&s);
  assert_int_equal(o.err, CSC1_HTTPS_OK);
  assert_int_equal(o.status, 200);
  assert_string_equal(o.body, "ok");
  assert_in_deadline(&o);
  assert_true(s.got_request && s.saw_close);
}

/* ---- Happy Eyeballs (csc1/https_connect.c) ------------------------------- */

/* The lookup: [::1, 127.0.0.1], answered from the loop. The server listens
 * on 127.0.0.1 only, so ::1 refuses the connection. */
typedef struct fake_dns {
  uv_timer_t timer;
  csc1_https_resolved_fn done;
  void *arg;
} fake_dns;

static void fake_dns_answer(uv_timer_t *t) {
  fake_dns *d = (fake_dns *)t;
  struct sockaddr_storage a[2];
  memset(a, 0, sizeof a);
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a[0];
  v6->sin6_family = AF_INET6;
  v6->sin6_addr = in6addr_loopback;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&a[1];
  v4->sin_family = AF_INET;
  v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  d->done(d->arg, NULL, a, 2);
}

static void *fake_dns_start(void *ctx, const char *host, csc1_https_resolved_fn done, void *arg) {
  fake_dns *d = ctx;
  d->done = done;
  d->arg = arg;
  uv_timer_start(&d->timer, fake_dns_answer, 0, 0);
  return d;
}

static void fake_dns_cancel(void *ctx, void *lookup) {
  uv_timer_stop(&((fake_dns *)lookup)->timer);
}

/* The socket hook: the families it saw, in order; refuses IPv6 when told. */
typedef struct hook_log {
  int families[4];
  int n;
  int v6_err;
} hook_log;

static int log_socket(void *arg, int fd, int family) {
  hook_log *h = arg;
  if (h->n < 4)
    h->families[h->n++] = family;
  return family == AF_INET6 ? h->v6_err : 0;
}

#define RACE_DELAY_MS 5000 /* longer than any of these requests may take */

/* The IPv6 address fails (refused, or refused by the hook) and nothing else
 * is connecting: IPv4 starts at once, not attempt_delay later. IPv6 went
 * first (the resolver's order), and each attempt went through the hook. */
static void race_falls_back_at_once(int v6_err) {
  server s;
  outcome o;
  hook_log h = {.v6_err = v6_err};
  fake_dns d = {.done = NULL};
  server_start(&s, COMPLETE_NO_CLOSE);
  race_env he = {.resolver = {fake_dns_start, fake_dns_cancel, &d},
                 .lookup_timer = &d.timer,
                 .setup = log_socket,
                 .setup_arg = &h,
                 .attempt_delay_ms = RACE_DELAY_MS,
                 .timeout_ms = GUARD_MS - 1000};
  run_request(s.port, false, &he, &o);
  server_join(&s);
  assert_int_equal(o.err, CSC1_HTTPS_OK);
  assert_int_equal(o.status, 200);
  assert_true(o.elapsed_ms < RACE_DELAY_MS / 2);
  assert_int_equal(h.n, 2);
  assert_int_equal(h.families[0], AF_INET6);
  assert_int_equal(h.families[1], AF_INET);
}

/* A port where connections hang, on ::1 and 127.0.0.1: a listener with a
 * backlog of 0 whose queue one connection (never accepted) fills, so the
 * kernel drops every further SYN. */
typedef struct hole {
  int fds[4]; /* the listeners, the fillers */
  unsigned short port;
} hole;

static int hole_listener(int family, unsigned short port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
  assert_true(fd >= 0);
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_loopback;
    v6->sin6_port = htons(port);
  } else {
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    v4->sin_port = htons(port);
  }
  socklen_t len = family == AF_INET6 ? sizeof *v6 : sizeof *v4;
  assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
  assert_int_equal(listen(fd, 0), 0);
  return fd;
}

static int hole_fill(int listener) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  assert_int_equal(getsockname(listener, (struct sockaddr *)&ss, &len), 0);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
  return fd;
}

static void hole_open(hole *h) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  h->fds[0] = hole_listener(AF_INET, 0);
  assert_int_equal(getsockname(h->fds[0], (struct sockaddr *)&a, &len), 0);
  h->port = ntohs(a.sin_port);
  h->fds[1] = hole_listener(AF_INET6, h->port);
  h->fds[2] = hole_fill(h->fds[0]);
  h->fds[3] = hole_fill(h->fds[1]);
}

static void hole_close(hole *h) {
  for (int i = 0; i < 4; i++)
    close(h->fds[i]);
}

static void race_refused_v6(void **state) { race_falls_back_at_once(0); }

static void race_hook_refuses_v6(void **state) { race_falls_back_at_once(-EPERM); }

/* Both addresses hang: IPv4 starts attempt_delay after IPv6 although IPv6
 * has not failed, and the request's deadline ends the race with both still
 * connecting (every handle closed: run_request checks the loop closes). */
static void race_bounded_by_the_deadline(void **state) {
  hole h;
  outcome o;
  hook_log log = {.v6_err = 0};
  fake_dns d = {.done = NULL};
  hole_open(&h);
  race_env he = {.resolver = {fake_dns_start, fake_dns_cancel, &d},
                 .lookup_timer = &d.timer,
                 .setup = log_socket,
                 .setup_arg = &log,
                 .attempt_delay_ms = TIMEOUT_MS / 3,
                 .timeout_ms = TIMEOUT_MS};
  run_request(h.port, false, &he, &o);
  hole_close(&h);
  assert_timed_out(&o, h.port);
  assert_int_equal(log.n, 2);
  assert_int_equal(log.families[0], AF_INET6);
  assert_int_equal(log.families[1], AF_INET);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(silent_after_accept),
      cmocka_unit_test(silent_after_handshake),
      cmocka_unit_test(silent_mid_body),
      cmocka_unit_test(linger_ends_at_deadline),
      cmocka_unit_test(race_refused_v6),
      cmocka_unit_test(race_hook_refuses_v6),
      cmocka_unit_test(race_bounded_by_the_deadline),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
