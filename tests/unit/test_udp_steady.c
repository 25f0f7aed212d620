/* Issue 13: "Nothing per datagram is allocated on the heap in the steady
 * state" of a CONNECT-UDP tunnel, in both directions, on each kind of device
 * connection: HTTP/1.1 Upgrade and HTTP/2 (h2c), on the plain listener and
 * on the TLS listener.
 *
 * The real engine on a real loop in this thread, a device client (raw
 * HTTP/1.1, or an nghttp2 client session; OpenSSL for TLS) and a UDP echo
 * target on 127.0.0.1. The test alternates: the engine's loop runs
 * (uv_run(UV_RUN_NOWAIT)), then the device and the target do their part
 * outside it. Every heap allocation made while the loop runs is counted,
 * whoever makes it (mcgw, libuv, nghttp2, OpenSSL):
 * - normally by defining malloc, calloc, realloc, free and the aligned
 *   allocators here, forwarding to glibc's (the executable's definitions
 *   come first for every shared library);
 * - under AddressSanitizer, whose allocator is the process's, through its
 *   malloc hook (__sanitizer_install_malloc_and_free_hooks).
 * After a warm-up (pools and queues filled once), ROUNDS rounds each send
 * BURST datagrams each way (the target's in one burst, read by recvmmsg; the
 * device's in one write), and the loop must have allocated nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine_helpers.h"
#include "selfsigned_helpers.h"
#include "tunnel/capsule.h"

/* ---- counting the loop's allocations ---- */

/* volatile: the compiler takes malloc to touch no global of ours, and would
 * move or drop the stores around the calls below. */
static volatile bool counting;    /* the engine's loop is running */
static unsigned long allocs;      /* allocations made while counting, OpenSSL's aside */
static unsigned long ossl_allocs; /* OpenSSL's, while counting */

#if defined(__SANITIZE_ADDRESS__)
#define COUNT_WITH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNT_WITH_ASAN 1
#endif
#endif

#ifdef COUNT_WITH_ASAN
/* sanitizer/allocator_interface.h (clang's; gcc's libasan has the function
 * but not the header) */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
static void on_malloc(const volatile void *p, size_t n) {
  (void)p;
  (void)n;
  if (counting)
    allocs++;
}
static void on_free(const volatile void *p) { (void)p; }
static void count_install(void) { __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free); }
#else
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);
/* Exported from the executable (the build hides symbols by default), so
 * that every shared library's calls come here. */
#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t n) {
  allocs += counting;
  return __libc_malloc(n);
}
EXPORT void *calloc(size_t n, size_t m) {
  allocs += counting;
  return __libc_calloc(n, m);
}
EXPORT void *realloc(void *p, size_t n) {
  allocs += counting;
  return __libc_realloc(p, n);
}
EXPORT void *aligned_alloc(size_t align, size_t n) {
  allocs += counting;
  return __libc_memalign(align, n);
}
EXPORT int posix_memalign(void **out, size_t align, size_t n) {
  allocs += counting;
  void *p = __libc_memalign(align, n);
  if (!p)
    return ENOMEM;
  *out = p;
  return 0;
}
EXPORT void free(void *p) { __libc_free(p); }
static void count_install(void) {}
#endif

/* OpenSSL's allocations are counted apart (CRYPTO_set_mem_functions, set
 * in main before OpenSSL allocates anything): OpenSSL 3.0's record layer
 * allocates a small WPACKET (crypto/packet.c) for every record it reads or
 * writes, which mcgw cannot avoid. */
static void *ossl_malloc(size_t n, const char *file, int line) {
  (void)file;
  (void)line;
  bool was = counting;
  ossl_allocs += was;
  counting = false;
  void *p = malloc(n);
  counting = was;
  return p;
}
static void *ossl_realloc(void *p, size_t n, const char *file, int line) {
  (void)file;
  (void)line;
  bool was = counting;
  ossl_allocs += was;
  counting = false;
  void *q = realloc(p, n);
  counting = was;
  return q;
}
static void ossl_free(void *p, const char *file, int line) {
  (void)file;
  (void)line;
  free(p);
}

/* ---- the set-up ---- */

#define PAYLOAD 172 /* an RTP packet of 20 ms of G.711, as in the bench */
#define BURST 8     /* datagrams each way per round */
#define WARMUP 50
#define ROUNDS 500
#define STEP_MS 5000

static char cert_path[64], key_path[64];
static X509 *server_cert;

/* A self-signed certificate for 127.0.0.1: the TLS listener's, and the
 * device's trust anchor. */
static int group_setup(void **state) {
  (void)state;
  count_install();
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = key ? selfsigned_127(key, "test_udp_steady") : NULL;
  if (!x)
    return -1;
  snprintf(cert_path, sizeof cert_path, "/tmp/test_udp_steady_crt_XXXXXX");
  snprintf(key_path, sizeof key_path, "/tmp/test_udp_steady_key_XXXXXX");
  int cfd = mkstemp(cert_path), kfd = mkstemp(key_path);
  FILE *cf = fdopen(cfd, "w"), *kf = fdopen(kfd, "w");
  if (!cf || !kf || PEM_write_X509(cf, x) != 1 ||
      PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL) != 1)
    return -1;
  fclose(cf);
  fclose(kf);
  server_cert = x;
  EVP_PKEY_free(key);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  unlink(cert_path);
  unlink(key_path);
  X509_free(server_cert);
  return 0;
}

typedef struct rig {
  uv_loop_t loop;
  tn_engine *engine;
  uint16_t plain_port, tls_port;
  int target; /* the echo target's UDP socket */
  uint16_t target_port;
  /* the device */
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  nghttp2_session *h2;
  int32_t stream;
  bool h2_mode, up; /* the tunnel's 200 or 101 arrived */
  char head[1024];  /* HTTP/1.1: the response head so far */
  size_t head_len;
  tn_capsule_reader reader;     /* the device's side of the capsule stream */
  unsigned long got;            /* datagrams the device received */
  unsigned long echoed;         /* datagrams the target echoed */
  unsigned long window_updates; /* HTTP/2: WINDOW_UPDATE frames the device received */
  uint8_t out[65536];           /* device bytes not yet sent */
  size_t out_len;
  uint8_t pend[65536]; /* HTTP/2: capsules for the data source */
  size_t pend_len;
  bool deferred;
} rig;

static void rig_start(rig *r) {
  memset(r, 0, sizeof(*r));
  tn_engine_opts o;
  tn_engine_opts_init(&o);
  o.logger = &test_logger;
  struct sockaddr_storage ss[2];
  assert_int_equal(tn_addr_parse_listen("127.0.0.1:0", &ss[0]), 0);
  assert_int_equal(tn_addr_parse_listen("127.0.0.1:0", &ss[1]), 0);
  o.listen = &ss[0];
  o.n_listen = 1;
  o.listen_tls = &ss[1];
  o.n_listen_tls = 1;
  o.tls_cert = cert_path;
  o.tls_key = key_path;
  o.require_tls = false;
  o.policy.allow_private = true;
  tn_rule rule;
  const char *why;
  assert_int_equal(tn_rule_parse_udp("127.0.0.1:1-65535", &rule, &why), 0);
  assert_int_equal(tn_policy_add(&o.policy, &rule), 0);
  assert_int_equal(uv_loop_init(&r->loop), 0);
  assert_int_equal(tn_engine_start(&r->loop, &o, &r->engine), 0);
  tn_policy_free(&o.policy);
  struct sockaddr_storage bound;
  assert_int_equal(tn_engine_listener_addr(r->engine, 0, &bound), 0);
  r->plain_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  assert_int_equal(tn_engine_listener_addr(r->engine, 1, &bound), 0);
  r->tls_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);

  r->target = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sin);
  assert_int_equal(bind(r->target, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(getsockname(r->target, (struct sockaddr *)&sin, &len), 0);
  r->target_port = ntohs(sin.sin_port);
  tn_capsule_reader_init(&r->reader, 65527);
}

static void on_engine_done(void *arg) { *(bool *)arg = true; }

static void rig_stop(rig *r) {
  if (r->h2)
    nghttp2_session_del(r->h2);
  SSL_free(r->ssl);
  SSL_CTX_free(r->ctx);
  close(r->fd);
  close(r->target);
  bool done = false;
  tn_engine_drain(r->engine, on_engine_done, &done);
  uint64_t deadline = test_now_ms() + STEP_MS;
  while (!done) {
    assert_true(test_now_ms() < deadline);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    struct pollfd pfd = {.fd = uv_backend_fd(&r->loop), .events = POLLIN};
    (void)poll(&pfd, 1, 1);
  }
  uv_run(&r->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&r->loop), 0);
}

/* ---- the device's bytes ---- */

static void dev_queue(rig *r, const void *p, size_t n) {
  assert_true(r->out_len + n <= sizeof r->out);
  memcpy(r->out + r->out_len, p, n);
  r->out_len += n;
}

static void dev_flush(rig *r) {
  while (r->out_len) {
    int n;
    if (r->ssl) {
      n = SSL_write(r->ssl, r->out, (int)r->out_len);
      if (n <= 0) {
        int why = SSL_get_error(r->ssl, n);
        assert_true(why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE);
        return;
      }
    } else {
      n = (int)send(r->fd, r->out, r->out_len, MSG_NOSIGNAL);
      if (n < 0) {
        assert_true(errno == EAGAIN);
        return;
      }
    }
    memmove(r->out, r->out + n, r->out_len - (size_t)n);
    r->out_len -= (size_t)n;
  }
}

static void on_datagram(void *arg, const uint8_t *p, size_t len) {
  rig *r = arg;
  assert_int_equal(len, PAYLOAD);
  assert_int_equal(p[0], 0xa5);
  r->got++;
}

static const tn_capsule_ops capsule_ops = {on_datagram, NULL, NULL};

static void dev_bytes(rig *r, const uint8_t *p, size_t n) {
  if (r->h2_mode) {
    assert_int_equal(nghttp2_session_mem_recv(r->h2, p, n), (ssize_t)n);
    return;
  }
  if (!r->up) { /* the 101 head, then capsules */
    size_t take = n < sizeof r->head - 1 - r->head_len ? n : sizeof r->head - 1 - r->head_len;
    memcpy(r->head + r->head_len, p, take);
    r->head_len += take;
    r->head[r->head_len] = '\0';
    char *end = strstr(r->head, "\r\n\r\n");
    if (!end)
      return;
    assert_memory_equal(r->head, "HTTP/1.1 101 ", 13);
    r->up = true;
    size_t used = (size_t)(end + 4 - r->head) - (r->head_len - take);
    p += used;
    n -= used;
  }
  assert_int_equal(tn_capsule_read(&r->reader, p, n, &capsule_ops, r), 0);
}

static void dev_read(rig *r) {
  uint8_t buf[65536];
  for (;;) {
    int n;
    if (r->ssl) {
      n = SSL_read(r->ssl, buf, sizeof buf);
      if (n <= 0) {
        int why = SSL_get_error(r->ssl, n);
        assert_true(why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE);
        return;
      }
    } else {
      n = (int)recv(r->fd, buf, sizeof buf, 0);
      if (n < 0) {
        assert_true(errno == EAGAIN);
        return;
      }
      assert_true(n > 0); /* the gateway never closes the connection here */
    }
    dev_bytes(r, buf, (size_t)n);
  }
}

static void h2_send(rig *r) {
  const uint8_t *p;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(r->h2, &p)) > 0)
    dev_queue(r, p, (size_t)n);
  assert_true(n == 0);
}

/* The target echoes whatever reaches it, in one burst per pass. */
static void target_echo(rig *r) {
  uint8_t buf[2048];
  struct sockaddr_storage from;
  socklen_t len = sizeof(from);
  ssize_t n;
  while ((n = recvfrom(r->target, buf, sizeof buf, 0, (struct sockaddr *)&from, &len)) > 0) {
    assert_int_equal(sendto(r->target, buf, (size_t)n, 0, (struct sockaddr *)&from, len), n);
    r->echoed++;
    len = sizeof(from);
  }
}

/* Runs the engine's loop (counted) and the device and target (not
 * counted) until done(r) or the deadline. */
static void pump(rig *r, bool (*done)(rig *), const char *what) {
  uint64_t deadline = test_now_ms() + STEP_MS;
  while (!done(r)) {
    if (test_now_ms() > deadline)
      fail_msg("timed out waiting for %s", what);
    counting = true;
    uv_run(&r->loop, UV_RUN_NOWAIT);
    counting = false;
    if (r->h2)
      h2_send(r);
    dev_flush(r);
    dev_read(r);
    target_echo(r);
    if (r->h2)
      h2_send(r);
    dev_flush(r);
    struct pollfd fds[3] = {{.fd = uv_backend_fd(&r->loop), .events = POLLIN},
                            {.fd = r->fd, .events = POLLIN},
                            {.fd = r->target, .events = POLLIN}};
    (void)poll(fds, 3, 1);
  }
}

/* ---- HTTP/2 device ---- */

static int on_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *user) {
  (void)s;
  (void)flags;
  rig *r = user;
  if (fr->hd.stream_id == r->stream && nl == 7 && memcmp(name, ":status", 7) == 0) {
    assert_int_equal(vl, 3);
    assert_memory_equal(value, "200", 3);
    r->up = true;
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *user) {
  (void)s;
  rig *r = user;
  if (fr->hd.type == NGHTTP2_WINDOW_UPDATE)
    r->window_updates++;
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *user) {
  (void)s;
  (void)flags;
  rig *r = user;
  assert_int_equal(id, r->stream);
  assert_int_equal(tn_capsule_read(&r->reader, data, len, &capsule_ops, r), 0);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *user) {
  (void)s;
  (void)code;
  (void)user;
  fail_msg("stream %d closed", (int)id);
  return 0;
}

/* The device's capsules, as DATA on the tunnel's stream. */
static ssize_t capsule_source(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)s;
  (void)id;
  (void)flags;
  (void)src;
  rig *r = user;
  if (!r->pend_len) {
    r->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = r->pend_len < len ? r->pend_len : len;
  memcpy(buf, r->pend, n);
  memmove(r->pend, r->pend + n, r->pend_len - n);
  r->pend_len -= n;
  return (ssize_t)n;
}

static void h2_open(rig *r, const char *path) {
  nghttp2_session_callbacks *cbs;
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  assert_int_equal(nghttp2_session_client_new(&r->h2, cbs, r), 0);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(r->h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
#define NV(n, v)                                                                                   \
  { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }
  const nghttp2_nv nv[] = {NV(":method", "CONNECT"), NV(":protocol", "connect-udp"),
                           NV(":scheme", "https"),   NV(":authority", "127.0.0.1"),
                           NV(":path", path),        NV("capsule-protocol", "?1")};
#undef NV
  nghttp2_data_provider dp = {.read_callback = capsule_source};
  r->stream = nghttp2_submit_request(r->h2, NULL, nv, 6, &dp, r);
  assert_true(r->stream > 0);
}

/* ---- one tunnel's life ---- */

static bool is_up(rig *r) { return r->up; }

static void connect_device(rig *r, bool tls, bool h2) {
  uint16_t port = tls ? r->tls_port : r->plain_port;
  struct sockaddr_in sin = {
      .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
  r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(r->fd >= 0);
  assert_true(connect(r->fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 || errno == EINPROGRESS);
  if (tls) {
    r->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r->ctx);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(r->ctx), server_cert), 1);
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(r->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
    if (h2)
      SSL_CTX_set_alpn_protos(r->ctx, alpn_h2, sizeof alpn_h2 - 1);
    else
      SSL_CTX_set_alpn_protos(r->ctx, alpn_h1, sizeof alpn_h1 - 1);
    r->ssl = SSL_new(r->ctx);
    assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), "127.0.0.1"), 1);
    SSL_set_fd(r->ssl, r->fd);
    SSL_set_connect_state(r->ssl);
  }
  char path[64];
  snprintf(path, sizeof path, "/.well-known/masque/udp/127.0.0.1/%u/", r->target_port);
  r->h2_mode = h2;
  if (h2) {
    h2_open(r, path);
  } else {
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                     "Upgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n",
                     path);
    dev_queue(r, req, (size_t)n);
  }
  pump(r, is_up, "the tunnel's 200 or 101");
  if (r->ssl)
    assert_int_equal(SSL_get_verify_result(r->ssl), X509_V_OK);
}

static unsigned long want_got, want_echoed;
static bool all_back(rig *r) { return r->got >= want_got && r->echoed >= want_echoed; }

/* BURST capsules from the device in one write; the target echoes them as
 * they come; the round ends when all are back at the device. */
static void round_trip(rig *r) {
  uint8_t capsule[TN_CAPSULE_HEAD_MAX + PAYLOAD];
  size_t h = tn_capsule_datagram_head(capsule, PAYLOAD);
  memset(capsule + h, 0xa5, PAYLOAD);
  for (int i = 0; i < BURST; i++) {
    if (r->h2_mode) {
      assert_true(r->pend_len + h + PAYLOAD <= sizeof r->pend);
      memcpy(r->pend + r->pend_len, capsule, h + PAYLOAD);
      r->pend_len += h + PAYLOAD;
    } else {
      dev_queue(r, capsule, h + PAYLOAD);
    }
  }
  if (r->h2_mode && r->deferred) {
    r->deferred = false;
    assert_int_equal(nghttp2_session_resume_data(r->h2, r->stream), 0);
  }
  want_got = r->got + BURST;
  want_echoed = r->echoed + BURST;
  pump(r, all_back, "a burst of datagrams and their echoes");
}

static void steady_state(bool tls, bool h2) {
  rig r;
  rig_start(&r);
  connect_device(&r, tls, h2);
  for (int i = 0; i < WARMUP; i++)
    round_trip(&r);
  allocs = 0;
  ossl_allocs = 0;
  unsigned long updates_before = r.window_updates;
  for (int i = 0; i < ROUNDS; i++)
    round_trip(&r);
  unsigned long counted = allocs;
  unsigned long updates = r.window_updates - updates_before;
  tn_engine_stats st;
  tn_engine_stats_get(r.engine, &st);
  print_message("%s %s: %lu datagrams each way, %lu allocations in the loop after warm-up "
                "(%lu WINDOW_UPDATE frames), %lu in OpenSSL\n",
                tls ? "tls" : "plain", h2 ? "h2" : "http/1.1", (unsigned long)ROUNDS * BURST,
                counted, updates, ossl_allocs);
  assert_int_equal(st.udp_datagrams_up, (WARMUP + ROUNDS) * BURST);
  assert_int_equal(st.udp_datagrams_down, (WARMUP + ROUNDS) * BURST);
  for (int i = 0; i < TN_UDP_DROP_COUNT_; i++)
    assert_int_equal(st.udp_dropped[i], 0);
  /* nghttp2 allocates the one frame of each WINDOW_UPDATE it queues (every
   * half window: 128 KiB of the device's DATA by default); nothing else. */
  assert_true(updates * 100 < (unsigned long)ROUNDS * BURST);
  assert_true(counted <= updates);
  if (tls) /* one or two per record, none where there is no TLS */
    assert_true(ossl_allocs <= 4UL * ROUNDS * BURST);
  else
    assert_int_equal(ossl_allocs, 0);
  rig_stop(&r);
}

static void plain_h1(void **state) {
  (void)state;
  steady_state(false, false);
}
static void plain_h2(void **state) {
  (void)state;
  steady_state(false, true);
}
static void tls_h1(void **state) {
  (void)state;
  steady_state(true, false);
}
static void tls_h2(void **state) {
  (void)state;
  steady_state(true, true);
}

/* The counter itself counts: an allocation while counting is seen. */
static void counter_counts(void **state) {
  (void)state;
  allocs = 0;
  counting = true;
  void *(*volatile alloc)(size_t) = malloc; /* not folded away by the compiler */
  void *volatile p = alloc(64);
  counting = false;
  free(p);
  assert_int_equal(allocs, 1);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as the daemon: the engine writes to sockets the device closed */
  if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
    fprintf(stderr, "OpenSSL allocated before main\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(counter_counts), cmocka_unit_test(plain_h1), cmocka_unit_test(plain_h2),
      cmocka_unit_test(tls_h1),         cmocka_unit_test(tls_h2),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
