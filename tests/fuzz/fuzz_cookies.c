/* Fuzzes mcx-login's cookie jar (device/cookies.c), which reads the
 * Set-Cookie headers of the IdMS's login pages.
 *
 * Input: the first byte picks the clock (now) and whether the requests are
 * https; the rest is the Set-Cookie lines of one response (NUL ends them),
 * stored from host "idms.example" for /oidc/login/step. Oracles:
 *   - no crash, leak or UB (Max-Age and Expires arithmetic included);
 *   - mcx_cookies_store returns how many lines it took (never more than the
 *     lines given) and the jar holds at most 64 cookies;
 *   - the Cookie header for each of a few paths is "name=value" pairs joined
 *     by "; ", each name non-empty, and nothing at all for another host;
 *   - a second store of the same lines changes nothing: replacement by
 *     name+host+path keeps the count;
 *   - round trip: a cookie built from the input (name and value reduced to
 *     cookie-octets) stored with Path=/ in a fresh jar comes back as exactly
 *     "name=value" for /x, and Max-Age=0 removes it again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cookies.h"
#include "driver.h"

#define HARNESS "fuzz_cookies"
#define HOST "idms.example"

static void check_header(const char *h) {
  if (!h)
    return;
  for (const char *p = h;;) {
    const char *sep = strstr(p, "; ");
    size_t n = sep ? (size_t)(sep - p) : strlen(p);
    const char *eq = memchr(p, '=', n);
    if (!eq || eq == p)
      fz_fail(HARNESS ": Cookie header part without a name: \"%.*s\"", (int)n, p);
    if (!sep)
      break;
    p = sep + 2;
  }
}

static void check_jar(const char *lines, int64_t now, bool https) {
  mcx_cookie_jar *j = mcx_cookies_new();
  if (!j)
    fz_fail(HARNESS ": out of memory");
  size_t n_lines = 1;
  for (const char *c = lines; *c; c++)
    n_lines += *c == '\n';
  int stored = mcx_cookies_store(j, HOST, "/oidc/login/step", lines, now);
  if (stored < 0 || (size_t)stored > n_lines || mcx_cookies_count(j) > 64)
    fz_fail(HARNESS ": store returned %d for %zu lines, jar holds %zu", stored, n_lines,
            mcx_cookies_count(j));
  size_t count = mcx_cookies_count(j);
  if (mcx_cookies_store(j, HOST, "/oidc/login/step", lines, now) < 0 ||
      mcx_cookies_count(j) != count)
    fz_fail(HARNESS ": storing the same lines again went from %zu to %zu cookies", count,
            mcx_cookies_count(j));
  static const char *const paths[] = {"/", "/oidc", "/oidc/login/step", "/other/x"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    char *h = mcx_cookies_header(j, HOST, paths[i], https, now);
    check_header(h);
    free(h);
  }
  char *other = mcx_cookies_header(j, "other.example", "/", true, now);
  if (other)
    fz_fail(HARNESS ": a cookie of " HOST " went to other.example");
  mcx_cookies_free(j);
}

/* RFC 6265 cookie-octet. */
static bool octet(uint8_t c) {
  return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
         (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

static void check_round_trip(const uint8_t *data, size_t size, int64_t now) {
  char name[64], value[256];
  size_t nn = 0, nv = 0, i = 0;
  for (; i < size && nn < sizeof(name) - 1 && data[i] != '='; i++)
    if (octet(data[i]))
      name[nn++] = (char)data[i];
  for (; i < size && nv < sizeof(value) - 1; i++)
    if (octet(data[i]) && data[i] != '=')
      value[nv++] = (char)data[i];
  name[nn] = value[nv] = '\0';
  if (nn == 0)
    return;
  char line[400], want[400];
  snprintf(line, sizeof(line), "%s=%s; Path=/; Secure; HttpOnly", name, value);
  snprintf(want, sizeof(want), "%s=%s", name, value);
  mcx_cookie_jar *j = mcx_cookies_new();
  if (!j)
    fz_fail(HARNESS ": out of memory");
  if (mcx_cookies_store(j, HOST, "/a/b", line, now) != 1)
    fz_fail(HARNESS ": round trip: \"%s\" not stored", line);
  char *h = mcx_cookies_header(j, HOST, "/x", true, now);
  if (!h || strcmp(h, want) != 0)
    fz_fail(HARNESS ": round trip: stored \"%s\", header \"%s\"", line, h ? h : "(none)");
  free(h);
  if ((h = mcx_cookies_header(j, HOST, "/x", false, now)))
    fz_fail(HARNESS ": round trip: a Secure cookie went to http");
  snprintf(line, sizeof(line), "%s=; Max-Age=0; Path=/", name);
  if (mcx_cookies_store(j, HOST, "/", line, now) != 1 || mcx_cookies_count(j) != 0)
    fz_fail(HARNESS ": round trip: Max-Age=0 did not remove the cookie");
  mcx_cookies_free(j);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) { return fz_initialize(argc, argv); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > 16 * 1024)
    return -1;
  /* Unix seconds, as time() gives them: never negative. */
  static const int64_t clocks[] = {
      0, 1, 1700000000, 1800000000, 4102444800, INT64_MAX / 2, INT64_MAX - 1, INT64_MAX};
  int64_t now = clocks[data[0] & 7];
  bool https = data[0] & 8;
  char *lines = strndup((const char *)data + 1, size - 1);
  if (!lines)
    fz_fail(HARNESS ": out of memory");
  check_jar(lines, now, https);
  free(lines);
  check_round_trip(data + 1, size - 1, now);
  return 0;
}
