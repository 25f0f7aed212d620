/* Unit tests for tunnel/capsule.c: QUIC varints, the DATAGRAM capsule header
 * mcgw writes, and the reader that turns a device's stream into UDP payloads
 * (whole or split at every byte, skipped capsules, malformed ones). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tunnel/capsule.h"
#include "tunnel/error.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* --- varints ------------------------------------------------------------- */

static void test_varint_rfc9000_examples(void **state) {
  (void)state;
  /* RFC 9000 appendix A.1 */
  static const struct {
    uint8_t bytes[8];
    size_t len;
    uint64_t value;
  } cases[] = {
      {{0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c}, 8, UINT64_C(151288809941952652)},
      {{0x9d, 0x7f, 0x3e, 0x7d}, 4, 494878333},
      {{0x7b, 0xbd}, 2, 15293},
      {{0x25}, 1, 37},
      {{0x40, 0x25}, 2, 37}, /* not minimal, still valid */
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    uint64_t v = 0;
    assert_int_equal(tn_varint_decode(cases[i].bytes, cases[i].len, &v), cases[i].len);
    assert_true(v == cases[i].value);
    /* one byte short: incomplete, out untouched */
    v = 7;
    assert_int_equal(tn_varint_decode(cases[i].bytes, cases[i].len - 1, &v), 0);
    assert_true(v == 7);
  }
}

static void test_varint_round_trip(void **state) {
  (void)state;
  static const uint64_t values[] = {0, 63, 64, 16383, 16384, 1073741823, 1073741824,
                                    TN_VARINT_MAX};
  static const size_t lens[] = {1, 1, 2, 2, 4, 4, 8, 8};
  for (size_t i = 0; i < N_ELEMS(values); i++) {
    uint8_t buf[TN_VARINT_LEN_MAX];
    uint64_t v = 0;
    assert_int_equal(tn_varint_len(values[i]), lens[i]);
    assert_int_equal(tn_varint_encode(values[i], buf), lens[i]);
    assert_int_equal(tn_varint_decode(buf, lens[i], &v), lens[i]);
    assert_true(v == values[i]);
  }
  uint8_t buf[TN_VARINT_LEN_MAX];
  assert_int_equal(tn_varint_len(TN_VARINT_MAX + 1), 0);
  assert_int_equal(tn_varint_encode(TN_VARINT_MAX + 1, buf), 0);
}

static void test_datagram_head(void **state) {
  (void)state;
  uint8_t h[TN_CAPSULE_HEAD_MAX];
  /* 160 bytes of payload: type 0, length 161 (0x40a1), Context ID 0 */
  assert_int_equal(tn_capsule_datagram_head(h, 160), 4);
  assert_memory_equal(h, "\x00\x40\xa1\x00", 4);
  assert_int_equal(tn_capsule_datagram_head(h, 0), 3);
  assert_memory_equal(h, "\x00\x01\x00", 3);
  assert_int_equal(tn_capsule_datagram_head(h, 65527), 6);
  assert_memory_equal(h, "\x00\x80\x00\xff\xf8\x00", 6);
}

/* --- the reader ------------------------------------------------------------ */

/* What the reader reported, in order. */
typedef struct {
  char log[512];
  uint8_t payloads[4][256];
  size_t lens[4];
  size_t n;
  uint8_t held[4][256];
  size_t holds;
  bool refuse_hold;
} sink;

static void on_datagram(void *arg, const uint8_t *p, size_t len) {
  sink *s = arg;
  assert_true(s->n < 4 && len <= 256);
  memcpy(s->payloads[s->n], p, len);
  s->lens[s->n++] = len;
  strcat(s->log, "D");
}

static void on_skip(void *arg, tn_capsule_skip why) {
  static const char *const names[] = {"c", "t", "l", "b"};
  strcat(((sink *)arg)->log, names[why]);
}

static uint8_t *on_hold(void *arg, size_t len) {
  sink *s = arg;
  assert_true(len > 0 && len <= 256 && s->holds < 4);
  if (s->refuse_hold)
    return NULL;
  return s->held[s->holds++];
}

static const tn_capsule_ops ops = {on_datagram, on_skip, on_hold};

/* Feeds in[0..n) in pieces of step bytes (0: all at once). */
static int feed(tn_capsule_reader *r, sink *s, const uint8_t *in, size_t n, size_t step) {
  if (step == 0)
    step = n;
  for (size_t off = 0; off < n; off += step) {
    size_t k = n - off < step ? n - off : step;
    int rc = tn_capsule_read(r, in + off, k, &ops, s);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* A stream of: a datagram "abc", an unknown capsule type 0x17 with 5 bytes,
 * a datagram with Context ID 2, an empty datagram, a datagram of 200 bytes
 * (two-byte length), a datagram over max_payload (150). */
static size_t mixed_stream(uint8_t *out) {
  size_t n = 0;
  memcpy(out + n, "\x00\x04\x00" "abc", 6), n += 6;
  memcpy(out + n, "\x17\x05" "hello", 7), n += 7;
  memcpy(out + n, "\x00\x03\x02" "xy", 5), n += 5;
  memcpy(out + n, "\x00\x01\x00", 3), n += 3;
  n += tn_capsule_datagram_head(out + n, 120);
  memset(out + n, 'R', 120), n += 120;
  n += tn_capsule_datagram_head(out + n, 151);
  memset(out + n, 'L', 151), n += 151;
  return n;
}

static void check_mixed(const sink *s) {
  assert_string_equal(s->log, "DtcDDl");
  assert_int_equal(s->n, 3);
  assert_int_equal(s->lens[0], 3);
  assert_memory_equal(s->payloads[0], "abc", 3);
  assert_int_equal(s->lens[1], 0);
  assert_int_equal(s->lens[2], 120);
  for (size_t i = 0; i < 120; i++)
    assert_int_equal(s->payloads[2][i], 'R');
}

static void test_reader_whole_and_split(void **state) {
  (void)state;
  uint8_t in[512];
  size_t n = mixed_stream(in);
  /* every split of the stream into equal pieces reads the same */
  for (size_t step = 0; step <= 13; step++) {
    tn_capsule_reader r;
    sink s;
    memset(&s, 0, sizeof(s));
    tn_capsule_reader_init(&r, 150);
    assert_int_equal(feed(&r, &s, in, n, step), 0);
    check_mixed(&s);
    assert_true(tn_capsule_reader_at_boundary(&r));
    assert_null(r.body);
    /* whole: no buffer needed; split at every byte: "abc" and the
     * 120-byte one are collected in held buffers */
    if (step == 0)
      assert_int_equal(s.holds, 0);
    if (step == 1)
      assert_int_equal(s.holds, 2);
  }
}

static void test_reader_no_buffer_skips(void **state) {
  (void)state;
  uint8_t in[512];
  size_t n = mixed_stream(in);
  tn_capsule_reader r;
  sink s;
  memset(&s, 0, sizeof(s));
  s.refuse_hold = true;
  tn_capsule_reader_init(&r, 150);
  assert_int_equal(feed(&r, &s, in, n, 1), 0);
  /* a byte at a time, every non-empty payload arrives in pieces and is
   * skipped; an empty one is complete with its header */
  assert_string_equal(s.log, "btcDbl");
  assert_int_equal(s.n, 1);
  assert_int_equal(s.lens[0], 0);
  assert_true(tn_capsule_reader_at_boundary(&r));
}

static void test_reader_mid_capsule_not_at_boundary(void **state) {
  (void)state;
  static const uint8_t cases[][3] = {{0x00}, {0x00, 0x04}, {0x00, 0x04, 0x00}};
  static const size_t lens[] = {1, 2, 3};
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_capsule_reader r;
    sink s;
    memset(&s, 0, sizeof(s));
    tn_capsule_reader_init(&r, 1500);
    assert_int_equal(tn_capsule_read(&r, cases[i], lens[i], &ops, &s), 0);
    assert_false(tn_capsule_reader_at_boundary(&r));
    assert_int_equal(s.n, 0);
  }
}

static void test_reader_malformed(void **state) {
  (void)state;
  static const struct {
    const char *bytes;
    size_t len;
  } cases[] = {
      {"\x00\x00", 2},                 /* DATAGRAM of length 0: no Context ID */
      {"\x00\x01\x40\x00", 4},         /* a 2-byte Context ID in a 1-byte capsule */
      {"\x00\x03\x80\x00\x00\x00", 6}, /* a 4-byte Context ID in 3 */
      {"\x00\x04\x00" "abc\x00\x00", 8}, /* good, then malformed */
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    for (size_t step = 0; step <= 2; step++) {
      tn_capsule_reader r;
      sink s;
      memset(&s, 0, sizeof(s));
      tn_capsule_reader_init(&r, 1500);
      assert_int_equal(feed(&r, &s, (const uint8_t *)cases[i].bytes, cases[i].len, step),
                       TN_EINVAL);
      /* and it stays broken */
      assert_int_equal(tn_capsule_read(&r, (const uint8_t *)"\x00\x01\x00", 3, &ops, &s),
                       TN_EINVAL);
      assert_int_equal(s.n, i == 3 ? 1 : 0);
    }
  }
}

static void test_reader_huge_unknown_capsule_skipped(void **state) {
  (void)state;
  /* an unknown type announcing 2^62-1 bytes is skipped as the bytes come,
   * never buffered */
  uint8_t in[64] = {0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  tn_capsule_reader r;
  sink s;
  memset(&s, 0, sizeof(s));
  tn_capsule_reader_init(&r, 1500);
  assert_int_equal(tn_capsule_read(&r, in, sizeof(in), &ops, &s), 0);
  assert_string_equal(s.log, "t");
  assert_false(tn_capsule_reader_at_boundary(&r));
  assert_true(r.remaining == TN_VARINT_MAX - (sizeof(in) - 9));
  assert_int_equal(s.holds, 0);
}

static void test_reader_context_id_non_minimal(void **state) {
  (void)state;
  /* Context ID 0 in two bytes is still 0 (RFC 9000 allows any length) */
  tn_capsule_reader r;
  sink s;
  memset(&s, 0, sizeof(s));
  tn_capsule_reader_init(&r, 1500);
  assert_int_equal(tn_capsule_read(&r, (const uint8_t *)"\x00\x04\x40\x00" "hi", 6, &ops, &s),
                   0);
  assert_string_equal(s.log, "D");
  assert_int_equal(s.lens[0], 2);
  assert_memory_equal(s.payloads[0], "hi", 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_varint_rfc9000_examples),
      cmocka_unit_test(test_varint_round_trip),
      cmocka_unit_test(test_datagram_head),
      cmocka_unit_test(test_reader_whole_and_split),
      cmocka_unit_test(test_reader_no_buffer_skips),
      cmocka_unit_test(test_reader_mid_capsule_not_at_boundary),
      cmocka_unit_test(test_reader_malformed),
      cmocka_unit_test(test_reader_huge_unknown_capsule_skipped),
      cmocka_unit_test(test_reader_context_id_non_minimal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
