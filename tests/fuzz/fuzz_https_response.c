/* Fuzzes the CSC-1 client's HTTP response parsing (csc1/https_client.c:
 * llhttp with our callbacks, header capture, Set-Cookie joining, body caps,
 * chunked and close-delimited bodies, 1xx, EOF handling) through its real
 * path and without any hook in gateway/: each input is the response of a
 * loopback HTTPS server (a thread of this process, OpenSSL, a throwaway CA
 * and 127.0.0.1 certificate from gen_https_certs.sh) to one
 * csc1_https_request() made on this process's libuv loop. TLS is verified as
 * always (the CA is the trust anchor given to csc1_https_ctx_new).
 *
 * Input: byte 0 steers the server: its low 7 bits say where to split the
 * rest into two TLS records (so the parser also sees a response in two
 * reads), bit 7 that the server closes without close_notify. Bytes 1.. are
 * the response.
 * Oracles, beyond ASan/UBSan/LSan:
 *   - the callback runs exactly once, before the request's deadline;
 *   - a CSC1_HTTPS_OK response has a status of 200..999 (1xx are interim and
 *     skipped), a body within max_body, NUL-terminated at body_len, and came
 *     from bytes that start "HTTP/" (after any empty lines);
 *   - afterwards every handle of the request is closed (the loop has no
 *     active handles left): nothing leaks on any path.
 * The pure parsers next to it (csc1_https_connect_response_parse,
 * csc1_http_date_parse) get the response bytes too. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver.h"
#include "fuzz_https_response_certs.h"
#include "csc1/https_client.h"

#define MAX_BODY 4096
#define TIMEOUT_MS 4000

static uv_loop_t loop;
static csc1_https_ctx *ctx;
static char url[64];
static int listen_fd;
static SSL_CTX *server_ctx;

/* The current input, for the server thread. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *resp;
static size_t resp_len, split;
static bool abrupt;

static SSL_CTX *make_server_ctx(void) {
  SSL_CTX *c = SSL_CTX_new(TLS_server_method());
  BIO *cb = BIO_new_mem_buf(fz_cert_pem, -1), *kb = BIO_new_mem_buf(fz_key_pem, -1);
  X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
  EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
  if (!c || !cert || !key || SSL_CTX_use_certificate(c, cert) != 1 ||
      SSL_CTX_use_PrivateKey(c, key) != 1)
    fz_fail("fuzz_https_response: server certificate");
  X509_free(cert);
  EVP_PKEY_free(key);
  BIO_free(cb);
  BIO_free(kb);
  return c;
}

/* Reads the request head (up to the blank line), then writes the response. */
static void serve(int fd) {
  SSL *ssl = SSL_new(server_ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) {
      int n = SSL_read(ssl, req + got, (int)(sizeof req - 1 - got));
      if (n <= 0)
        break;
      got += (size_t)n;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n"))
        break;
    }
    pthread_mutex_lock(&mu);
    size_t first = split < resp_len ? split : resp_len;
    if (first > 0)
      SSL_write(ssl, resp, (int)first);
    if (resp_len > first)
      SSL_write(ssl, resp + first, (int)(resp_len - first));
    bool rst = abrupt;
    pthread_mutex_unlock(&mu);
    if (!rst)
      SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  ERR_clear_error();
  close(fd);
}

static void *server(void *arg) {
  (void)arg;
  for (;;) {
    int fd = accept(listen_fd, NULL, NULL);
    if (fd >= 0)
      serve(fd);
  }
  return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  uv_loop_init(&loop);
  server_ctx = make_server_ctx();
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(listen_fd, 16) != 0 || getsockname(listen_fd, (struct sockaddr *)&a, &alen) != 0)
    fz_fail("fuzz_https_response: cannot listen on 127.0.0.1");
  snprintf(url, sizeof url, "https://127.0.0.1:%u/token", ntohs(a.sin_port));
  char ca_path[] = "/tmp/fuzz_https_ca_XXXXXX";
  int cfd = mkstemp(ca_path);
  if (cfd < 0 || write(cfd, fz_ca_pem, strlen(fz_ca_pem)) != (ssize_t)strlen(fz_ca_pem))
    fz_fail("fuzz_https_response: cannot write the CA file");
  close(cfd);
  char err[256];
  ctx = csc1_https_ctx_new(ca_path, NULL, NULL, err, sizeof err);
  unlink(ca_path);
  if (!ctx)
    fz_fail("fuzz_https_response: csc1_https_ctx_new: %s", err);
  pthread_t t;
  if (pthread_create(&t, NULL, server, NULL) != 0)
    fz_fail("fuzz_https_response: pthread_create");
  pthread_detach(t);
  return 0;
}

typedef struct outcome {
  int calls, err;
  bool body_ok;
  int status;
} outcome;

static void on_done(int err, const char *detail, const csc1_https_response *r, void *arg) {
  outcome *o = arg;
  (void)detail;
  o->calls++;
  o->err = err;
  if (err == CSC1_HTTPS_OK) {
    o->status = r->status;
    o->body_ok = r->body_len <= MAX_BODY && (!r->body || r->body[r->body_len] == '\0') &&
                 (r->body || r->body_len == 0);
  }
}

static uint64_t now_ms(void) {
  uv_update_time(&loop);
  return uv_now(&loop);
}

static void pure_parsers(const uint8_t *data, size_t size) {
  char *copy = malloc(size + 1);
  if (!copy)
    return;
  memcpy(copy, data, size);
  int status = 0;
  long head = csc1_https_connect_response_parse(copy, size, 8192, &status);
  /* Any 3DIGIT, "000".."999": the caller only accepts 200 (a "099" is not a
   * valid status class, RFC 9110 15, but is refused there as any non-200). */
  if (head > (long)size || (head > 0 && (status < 0 || status > 999)))
    fz_fail("fuzz_https_response: connect_response_parse returned %ld (status %d) for %zu bytes",
            head, status, size);
  copy[size] = '\0';
  (void)csc1_http_date_parse(copy);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  pthread_mutex_lock(&mu);
  resp = data + 1;
  resp_len = size - 1;
  split = (resp_len * (data[0] & 0x7f)) / 128;
  abrupt = (data[0] & 0x80) != 0;
  pthread_mutex_unlock(&mu);

  outcome o = {0};
  csc1_https_request_opts ro = {.method = "POST", .url = url,
                              .content_type = "application/x-www-form-urlencoded",
                              .body = "grant_type=refresh_token", .body_len = 24,
                              .timeout_ms = TIMEOUT_MS, .max_body = MAX_BODY};
  if (csc1_https_request(&loop, ctx, &ro, on_done, &o, NULL) != 0)
    fz_fail("fuzz_https_response: csc1_https_request did not start");
  uint64_t deadline = now_ms() + TIMEOUT_MS + 2000;
  while (uv_loop_alive(&loop)) {
    if (now_ms() > deadline)
      fz_fail("fuzz_https_response: hang: handles still open %d ms after the request",
              TIMEOUT_MS + 2000);
    uv_run(&loop, UV_RUN_ONCE);
  }
  if (o.calls != 1)
    fz_fail("fuzz_https_response: callback ran %d times", o.calls);
  if (o.err == CSC1_HTTPS_ETIMEOUT)
    fz_fail("fuzz_https_response: timeout though the server always answers and closes");
  if (o.err == CSC1_HTTPS_OK) {
    if (o.status < 200 || o.status > 999 || !o.body_ok)
      fz_fail("fuzz_https_response: OK with status %d, body_ok %d", o.status, o.body_ok);
    /* llhttp skips empty lines before a status line (as RFC 9112 2.2
     * allows before a request line). */
    size_t at = 0;
    while (at < resp_len && (resp[at] == '\r' || resp[at] == '\n'))
      at++;
    if (resp_len - at < 5 || memcmp(resp + at, "HTTP/", 5) != 0)
      fz_fail("fuzz_https_response: OK for a response not starting with HTTP/");
  }
  pure_parsers(data + 1, size - 1);
  return 0;
}
