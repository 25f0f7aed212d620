/* Unit tests for tunnel/ratelimit.c: token bucket arithmetic (burst, refill,
 * the clock going backwards or jumping forwards) and the bounded table of
 * buckets (eviction, idle entries dropped, limited keys listed), and the
 * refusal log windows (one refusal logged a window, the rest summarised). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tunnel/ratelimit.h"

static const tn_rate R20 = {.per_s = 20, .burst = 50};

/* How many takes succeed at now_ms, up to max. */
static unsigned drain(tn_bucket *b, const tn_rate *r, uint64_t now_ms, unsigned max) {
  unsigned n = 0;
  while (n < max && tn_bucket_take(b, r, now_ms) == 0)
    n++;
  return n;
}

static void burst_then_refused(void **state) {
  tn_bucket b;
  tn_bucket_init(&b, &R20, 1000);
  assert_int_equal(drain(&b, &R20, 1000, 1000), 50);
  /* Empty: the next token is 1/20 s away. */
  assert_int_equal(tn_bucket_take(&b, &R20, 1000), 50);
  assert_int_equal(tn_bucket_take(&b, &R20, 1010), 40);
}

static void refill_at_rate(void **state) {
  tn_bucket b;
  tn_bucket_init(&b, &R20, 0);
  drain(&b, &R20, 0, 1000);
  /* One second: 20 tokens, not one more. */
  assert_int_equal(drain(&b, &R20, 1000, 1000), 20);
  /* 10 s of steady takes every 50 ms: all pass, the 51st in a burst not. */
  uint64_t now = 1000;
  for (int i = 0; i < 200; i++) {
    now += 50;
    assert_int_equal(tn_bucket_take(&b, &R20, now), 0);
  }
  assert_int_not_equal(tn_bucket_take(&b, &R20, now), 0);
}

static void refill_capped_at_burst(void **state) {
  tn_bucket b;
  tn_bucket_init(&b, &R20, 0);
  drain(&b, &R20, 0, 1000);
  assert_false(tn_bucket_full(&b, &R20, 2000));
  assert_true(tn_bucket_full(&b, &R20, 2500));
  assert_int_equal(drain(&b, &R20, 60 * 1000, 1000), 50);
}

static void slow_rates_refill_in_fractions(void **state) {
  const tn_rate r = {.per_s = 3, .burst = 1};
  tn_bucket b;
  tn_bucket_init(&b, &r, 0);
  assert_int_equal(tn_bucket_take(&b, &r, 0), 0);
  assert_int_equal(tn_bucket_take(&b, &r, 0), 334); /* ceil(1000/3) */
  assert_int_not_equal(tn_bucket_take(&b, &r, 333), 0);
  assert_int_equal(tn_bucket_take(&b, &r, 334), 0);
}

static void clock_backwards_earns_nothing(void **state) {
  tn_bucket b;
  tn_bucket_init(&b, &R20, 100000);
  drain(&b, &R20, 100000, 1000);
  /* Back 50 s, then forward to where it was: no tokens appear from the
   * jump, and the time is not counted twice either. */
  assert_int_equal(drain(&b, &R20, 50000, 1000), 0);
  assert_int_equal(drain(&b, &R20, 50500, 1000), 10);
  assert_int_equal(drain(&b, &R20, 100000, 1000), 50);
}

static void clock_jump_forward_gives_one_burst(void **state) {
  tn_bucket b;
  tn_bucket_init(&b, &R20, 0);
  drain(&b, &R20, 0, 1000);
  assert_int_equal(drain(&b, &R20, UINT64_MAX / 2, 1000), 50);
  assert_int_equal(drain(&b, &R20, UINT64_MAX - 1, 1000), 50);
}

static void zero_rate_is_no_limit(void **state) {
  const tn_rate off = {0, 0};
  tn_bucket b;
  tn_bucket_init(&b, &off, 0);
  assert_int_equal(drain(&b, &off, 0, 100000), 100000);
  tn_ratetab *t = tn_ratetab_new(4);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(tn_ratetab_take(t, "k", 1, &off, 0), 0);
  assert_int_equal(tn_ratetab_size(t), 0);
  tn_ratetab_free(t);
}

static void high_rate_no_overflow(void **state) {
  const tn_rate r = {.per_s = 4000000000u, .burst = 4000000000u};
  tn_bucket b;
  tn_bucket_init(&b, &r, 0);
  assert_int_equal(drain(&b, &r, 0, 1000), 1000);
  assert_int_equal(drain(&b, &r, UINT64_MAX, 1000), 1000);
}

static void table_keys_apart(void **state) {
  tn_ratetab *t = tn_ratetab_new(16);
  const tn_rate r = {.per_s = 1, .burst = 2};
  assert_int_equal(tn_ratetab_take(t, "a", 1, &r, 0), 0);
  assert_int_equal(tn_ratetab_take(t, "a", 1, &r, 0), 0);
  assert_int_not_equal(tn_ratetab_take(t, "a", 1, &r, 0), 0);
  assert_int_equal(tn_ratetab_take(t, "b", 1, &r, 0), 0); /* its own bucket */
  assert_int_equal(tn_ratetab_size(t), 2);
  tn_ratetab_free(t);
}

static void table_bounded(void **state) {
  const tn_rate r = {.per_s = 1, .burst = 1};
  tn_ratetab *t = tn_ratetab_new(64);
  char key[32];
  for (int i = 0; i < 10000; i++) {
    int n = snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
    tn_ratetab_take(t, key, (size_t)n, &r, 0);
    assert_true(tn_ratetab_size(t) <= 64);
  }
  assert_int_equal(tn_ratetab_size(t), 64);
  tn_ratetab_free(t);
}

static void table_drops_idle_entries(void **state) {
  const tn_rate r = {.per_s = 10, .burst = 10};
  tn_ratetab *t = tn_ratetab_new(1000);
  char key[16];
  for (int i = 0; i < 100; i++) {
    int n = snprintf(key, sizeof key, "k%d", i);
    tn_ratetab_take(t, key, (size_t)n, &r, 0);
  }
  assert_int_equal(tn_ratetab_size(t), 100);
  /* Much later every bucket has refilled: each use drops idle ones. */
  for (int i = 0; i < 60; i++)
    tn_ratetab_take(t, "new", 3, &r, 60000 + (uint64_t)i * 1000);
  assert_true(tn_ratetab_size(t) <= 1);
  tn_ratetab_free(t);
}

typedef struct {
  char keys[4][16];
  uint64_t refused[4];
  size_t n;
} seen;

static void collect(const tn_ratetab_limited *l, void *arg) {
  seen *s = arg;
  snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s", (int)l->key_len, (const char *)l->key);
  s->refused[s->n++] = l->refused;
}

static void table_lists_limited_keys(void **state) {
  const tn_rate r = {.per_s = 1, .burst = 1};
  tn_ratetab *t = tn_ratetab_new(16);
  tn_ratetab_take(t, "calm", 4, &r, 0);
  for (int i = 0; i < 5; i++)
    tn_ratetab_take(t, "busy", 4, &r, 0);
  seen s = {0};
  assert_int_equal(tn_ratetab_foreach_limited(t, 100, collect, &s), 1);
  assert_string_equal(s.keys[0], "busy");
  assert_int_equal(s.refused[0], 4);
  /* The limited entry is kept even once its bucket refilled... */
  tn_ratetab_take(t, "x", 1, &r, 5000);
  tn_ratetab_take(t, "y", 1, &r, 5000);
  assert_int_equal(tn_ratetab_foreach_limited(t, 5000, NULL, NULL), 1);
  /* ...and no longer listed once it has not been refused for a while. */
  assert_int_equal(tn_ratetab_foreach_limited(t, TN_RATE_LIMITED_MS + 1, NULL, NULL), 0);
  tn_ratetab_free(t);
}

/* Refuses key at now_ms (taking its tokens first) and returns what
 * tn_ratetab_log_refusal says of that refusal. */
typedef struct {
  uint64_t suppressed[4], since[4], until[4];
  size_t n;
} summaries;

static void summary(const tn_ratetab_suppressed *s, void *arg) {
  summaries *w = arg;
  w->suppressed[w->n] = s->suppressed;
  w->since[w->n] = s->since_ms;
  w->until[w->n++] = s->until_ms;
}

static uint64_t refuse(tn_ratetab *t, const char *key, uint64_t now_ms, summaries *w) {
  static const tn_rate r = {.per_s = 1, .burst = 1};
  while (tn_ratetab_take(t, key, strlen(key), &r, now_ms) == 0)
    ;
  return tn_ratetab_log_refusal(t, key, strlen(key), now_ms, summary, w);
}

static void refusal_log_window(void **state) {
  tn_ratetab *t = tn_ratetab_new(16);
  summaries w = {0};
  /* The first refusal is logged and opens the window; 99 more are counted. */
  assert_int_equal(refuse(t, "dev", 1000, &w), 0);
  for (uint64_t i = 1; i < 100; i++)
    assert_int_equal(refuse(t, "dev", 1000 + i, &w), 1000 + TN_RATE_LOG_WINDOW_MS);
  /* Another key has a window of its own. */
  assert_int_equal(refuse(t, "other", 2000, &w), 0);
  /* Nothing is reported before the window ends... */
  assert_int_equal(tn_ratetab_flush_suppressed(t, 5000, false, summary, &w),
                   1000 + TN_RATE_LOG_WINDOW_MS);
  assert_int_equal(w.n, 0);
  /* ...then once, with the count. */
  assert_int_equal(tn_ratetab_flush_suppressed(t, 1000 + TN_RATE_LOG_WINDOW_MS, false, summary, &w),
                   0);
  assert_int_equal(w.n, 1);
  assert_int_equal(w.suppressed[0], 99);
  assert_int_equal(w.since[0], 1000);
  assert_int_equal(w.until[0], 1000 + TN_RATE_LOG_WINDOW_MS);
  assert_int_equal(tn_ratetab_flush_suppressed(t, 60000, false, summary, &w), 0);
  assert_int_equal(w.n, 1);
  /* After the window the next refusal is logged again. */
  assert_int_equal(refuse(t, "dev", 1000 + TN_RATE_LOG_WINDOW_MS + 1, &w), 0);
  tn_ratetab_free(t);
}

static void refusal_log_window_reported_when_the_next_opens(void **state) {
  tn_ratetab *t = tn_ratetab_new(16);
  summaries w = {0};
  assert_int_equal(refuse(t, "dev", 0, &w), 0);
  for (int i = 0; i < 4; i++)
    refuse(t, "dev", 10, &w);
  /* No flush ran: the refusal that opens the next window reports first. */
  assert_int_equal(refuse(t, "dev", 30000, &w), 0);
  assert_int_equal(w.n, 1);
  assert_int_equal(w.suppressed[0], 4);
  assert_int_equal(w.until[0], TN_RATE_LOG_WINDOW_MS);
  assert_int_equal(tn_ratetab_flush_suppressed(t, 90000, false, summary, &w), 0);
  assert_int_equal(w.n, 1);
  tn_ratetab_free(t);
}

static void refusal_log_count_kept_until_reported(void **state) {
  const tn_rate r = {.per_s = 1, .burst = 1};
  tn_ratetab *t = tn_ratetab_new(16);
  summaries w = {0};
  refuse(t, "dev", 0, &w);
  refuse(t, "dev", 0, &w);
  /* Long after: "dev" is neither limited nor short of tokens, yet its
   * unreported count keeps it from being pruned. */
  for (int i = 0; i < 10; i++)
    tn_ratetab_take(t, "x", 1, &r, 50000 + (uint64_t)i * 2000);
  /* all (at shutdown): reported although the window had not ended. */
  refuse(t, "late", 80000, &w);
  refuse(t, "late", 80001, &w);
  assert_int_equal(tn_ratetab_flush_suppressed(t, 80002, true, summary, &w), 0);
  assert_int_equal(w.n, 2);
  assert_int_equal(w.suppressed[0] + w.suppressed[1], 2);
  assert_true((w.since[0] == 80000 && w.until[0] == 80002) ||
              (w.since[1] == 80000 && w.until[1] == 80002));
  tn_ratetab_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(burst_then_refused),
      cmocka_unit_test(refill_at_rate),
      cmocka_unit_test(refill_capped_at_burst),
      cmocka_unit_test(slow_rates_refill_in_fractions),
      cmocka_unit_test(clock_backwards_earns_nothing),
      cmocka_unit_test(clock_jump_forward_gives_one_burst),
      cmocka_unit_test(zero_rate_is_no_limit),
      cmocka_unit_test(high_rate_no_overflow),
      cmocka_unit_test(table_keys_apart),
      cmocka_unit_test(table_bounded),
      cmocka_unit_test(table_drops_idle_entries),
      cmocka_unit_test(table_lists_limited_keys),
      cmocka_unit_test(refusal_log_window),
      cmocka_unit_test(refusal_log_window_reported_when_the_next_opens),
      cmocka_unit_test(refusal_log_count_kept_until_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
