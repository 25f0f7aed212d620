/* Fuzzes the two parsers of CONNECT-UDP: the capsule reader
 * (tn_capsule_read) with the input as a device's stream, and the URI
 * template parser (tn_udp_target_parse) with the input as a :path.
 * Oracles beyond the sanitizers:
 * - the reader reads the same datagrams, skips and outcome whether the
 *   stream comes whole or a byte at a time, and in two pieces split at a
 *   point the input chooses;
 * - no payload it hands on is longer than max_payload, and read whole it
 *   borrows a buffer only for a last payload the input cuts short;
 * - a template it accepts names a port 1..65535, and a refusal leaves the
 *   out-parameter untouched. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/capsule.h"
#include "tunnel/error.h"
#include "tunnel/udp_target.h"

#define MAX_PAYLOAD 300
#define TRACE_MAX 4096

/* A digest of what the reader reported: each event and payload hashed in. */
typedef struct {
  uint64_t hash;
  size_t events;
  size_t holds;
  uint8_t held[MAX_PAYLOAD];
} trace;

static void fail(const char *why) {
  fprintf(stderr, "fuzz_capsule: %s\n", why);
  abort();
}

static void mix(trace *t, uint64_t v) {
  t->hash = (t->hash ^ v) * UINT64_C(0x100000001b3);
  t->events++;
}

static void on_datagram(void *arg, const uint8_t *p, size_t len) {
  trace *t = arg;
  if (len > MAX_PAYLOAD)
    fail("payload over max_payload");
  mix(t, 0x100 + len);
  for (size_t i = 0; i < len; i++)
    mix(t, p[i]);
}

static void on_skip(void *arg, tn_capsule_skip why) { mix(arg, 0x200 + (uint64_t)why); }

static uint8_t *on_hold(void *arg, size_t len) {
  trace *t = arg;
  if (len == 0 || len > MAX_PAYLOAD)
    fail("hold for a length out of range");
  t->holds++;
  return t->held;
}

static const tn_capsule_ops ops = {on_datagram, on_skip, on_hold};

/* Reads data in pieces of step bytes (0: whole), or split once at cut. */
static int read_stream(const uint8_t *data, size_t size, size_t step, size_t cut, trace *t) {
  tn_capsule_reader r;
  int rc = 0;
  memset(t, 0, sizeof(*t));
  tn_capsule_reader_init(&r, MAX_PAYLOAD);
  if (step == 0 && cut > 0 && cut < size) {
    rc = tn_capsule_read(&r, data, cut, &ops, t);
    if (rc == 0)
      rc = tn_capsule_read(&r, data + cut, size - cut, &ops, t);
  } else {
    size_t n = step ? step : size;
    for (size_t off = 0; off < size && rc == 0; off += n)
      rc = tn_capsule_read(&r, data + off, size - off < n ? size - off : n, &ops, t);
  }
  mix(t, rc == 0 ? (tn_capsule_reader_at_boundary(&r) ? 1 : 2) : 3);
  return rc;
}

static void fuzz_reader(const uint8_t *data, size_t size) {
  trace whole, bytes, two;
  int a = read_stream(data, size, 0, 0, &whole);
  int b = read_stream(data, size, 1, 0, &bytes);
  int c = read_stream(data, size, 0, size ? data[0] % size : 0, &two);
  if (a != b || a != c || (a != 0 && a != TN_EINVAL))
    fail("outcome depends on how the stream is split");
  if (whole.hash != bytes.hash || whole.hash != two.hash || whole.events != bytes.events)
    fail("events depend on how the stream is split");
  if (whole.holds > 1)
    fail("a buffer lent for a payload read whole"); /* only the last may be cut short */
}

static void fuzz_template(const uint8_t *data, size_t size) {
  tn_authority a, untouched;
  memset(&a, 0xa5, sizeof(a));
  memcpy(&untouched, &a, sizeof(a));
  int rc = tn_udp_target_parse((const char *)data, size, &a);
  if (rc != 0) {
    if (rc != TN_ENOENT && rc != TN_EINVAL)
      fail("template: an unexpected error code");
    if (memcmp(&a, &untouched, sizeof(a)) != 0)
      fail("template: out-parameter modified on failure");
    return;
  }
  if (a.port == 0 || size < sizeof(TN_UDP_PATH_PREFIX) - 1)
    fail("template: accepted port 0 or a short path");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > TRACE_MAX)
    return 0;
  fuzz_reader(data, size);
  fuzz_template(data, size);
  return 0;
}
