/* Unit tests for csc1/clock_skew.c: the skew from an IdMS response's Date
 * header and the request's round trip, and when to warn (once), warn again
 * (a material change) and say it is back to normal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "csc1/clock_skew.h"

#define T0 INT64_C(1700000000) /* an IdMS Date, unix seconds */

static csc1_clock_skew_sample measure(int64_t sent_ms, int64_t recv_ms, int64_t date_s) {
  csc1_clock_skew_sample s = {-1, -1};
  assert_int_equal(csc1_clock_skew_measure(sent_ms, recv_ms, date_s, &s), 0);
  return s;
}

static void measure_in_step(void **state) {
  /* Sent 0.3 s into the IdMS's second T0, answered 0.1 s later: the skew is
   * in [-0.7 s, +0.4 s]; reported as its middle and half its width. */
  csc1_clock_skew_sample s = measure(T0 * 1000 + 300, T0 * 1000 + 400, T0);
  assert_int_equal(s.skew_ms, -150);
  assert_int_equal(s.uncertainty_ms, 550);
  /* The true skew (0) is within the interval. */
  assert_true(s.skew_ms - s.uncertainty_ms <= 0 && 0 <= s.skew_ms + s.uncertainty_ms);
}

static void measure_ahead_and_behind(void **state) {
  /* The gateway 120 s ahead: its clock reads T0+120 s when the IdMS says T0. */
  csc1_clock_skew_sample s = measure((T0 + 120) * 1000 + 200, (T0 + 120) * 1000 + 260, T0);
  assert_true(s.skew_ms - s.uncertainty_ms <= 120000 && 120000 <= s.skew_ms + s.uncertainty_ms);
  assert_true(s.skew_ms > 119000 && s.skew_ms < 121000);
  assert_int_equal(s.uncertainty_ms, 530);
  /* 3600 s behind. */
  s = measure((T0 - 3600) * 1000 + 900, (T0 - 3600) * 1000 + 950, T0);
  assert_true(s.skew_ms - s.uncertainty_ms <= -3600000 &&
              -3600000 <= s.skew_ms + s.uncertainty_ms);
  assert_true(s.skew_ms > -3601000 && s.skew_ms < -3599000);
}

static void measure_slow_request(void **state) {
  /* A 9 s round trip: the skew is only known to +-5 s. */
  csc1_clock_skew_sample s = measure(T0 * 1000, T0 * 1000 + 9000, T0 + 4);
  assert_int_equal(s.uncertainty_ms, 5000);
  assert_int_equal(s.skew_ms, 0);
}

static void measure_refuses(void **state) {
  csc1_clock_skew_sample s = {7, 7};
  assert_int_equal(csc1_clock_skew_measure(1000, 2000, 0, &s), -1);  /* no Date */
  assert_int_equal(csc1_clock_skew_measure(1000, 2000, -1, &s), -1); /* malformed Date */
  assert_int_equal(csc1_clock_skew_measure(2000, 1000, T0, &s), -1); /* clock stepped back */
  assert_int_equal(csc1_clock_skew_measure(1000, 2000, INT64_MAX, &s), -1);
  assert_int_equal(csc1_clock_skew_measure(-5, 2000, T0, &s), -1);
  assert_int_equal(csc1_clock_skew_measure(0, INT64_MAX, T0, &s), -1);
  assert_int_equal(s.skew_ms, 7); /* untouched */
  assert_int_equal(s.uncertainty_ms, 7);
}

/* skew and uncertainty in milliseconds */
static csc1_clock_skew_event feed(csc1_clock_skew *t, int64_t skew, int64_t unc) {
  csc1_clock_skew_sample s = {skew, unc};
  csc1_clock_skew_event e = csc1_clock_skew_update(t, &s);
  assert_true(t->known);
  assert_int_equal(t->last.skew_ms, s.skew_ms); /* always the latest */
  return e;
}

static void warn_once_change_recover(void **state) {
  csc1_clock_skew t;
  csc1_clock_skew_init(&t, 30);
  assert_false(t.known);
  assert_int_equal(feed(&t, 200, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, 25000, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_false(t.large);
  /* Beyond 30 s: one warning, then quiet on every further request. */
  assert_int_equal(feed(&t, 45000, 500), CSC1_CLOCK_SKEW_LARGE);
  assert_true(t.large);
  for (int i = 0; i < 10; i++)
    assert_int_equal(feed(&t, 45000 + 1000 * i, 500), CSC1_CLOCK_SKEW_QUIET);
  /* Moved by more than 30 s since the warning: warn again, once. */
  assert_int_equal(feed(&t, 76000, 500), CSC1_CLOCK_SKEW_CHANGED);
  assert_int_equal(feed(&t, 77000, 500), CSC1_CLOCK_SKEW_QUIET);
  /* Flipped sign: a change too. */
  assert_int_equal(feed(&t, -60000, 500), CSC1_CLOCK_SKEW_CHANGED);
  assert_int_equal(feed(&t, -61000, 500), CSC1_CLOCK_SKEW_QUIET);
  /* Fixed (NTP, GNSS): one info line, then quiet. */
  assert_int_equal(feed(&t, 100, 500), CSC1_CLOCK_SKEW_NORMAL);
  assert_false(t.large);
  assert_int_equal(feed(&t, 100, 500), CSC1_CLOCK_SKEW_QUIET);
  /* And large again later: warned again. */
  assert_int_equal(feed(&t, -120000, 500), CSC1_CLOCK_SKEW_LARGE);
}

static void no_flapping_at_the_threshold(void **state) {
  csc1_clock_skew t;
  csc1_clock_skew_init(&t, 30);
  /* Straddling +30 s: not certainly beyond, no warning. */
  assert_int_equal(feed(&t, 30300, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, -29800, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, 30600, 500), CSC1_CLOCK_SKEW_LARGE);
  /* Straddling again: stays large, says nothing. */
  assert_int_equal(feed(&t, 29800, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, 30400, 500), CSC1_CLOCK_SKEW_QUIET);
  assert_true(t.large);
  /* Certainly within: normal. */
  assert_int_equal(feed(&t, 29400, 500), CSC1_CLOCK_SKEW_NORMAL);
}

static void uncertain_measurements_do_not_warn(void **state) {
  csc1_clock_skew t;
  csc1_clock_skew_init(&t, 30);
  /* 40 s +- 15 s (a very slow round trip) might be 25 s. */
  assert_int_equal(feed(&t, 40000, 15000), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, -40000, 15000), CSC1_CLOCK_SKEW_QUIET);
  assert_int_equal(feed(&t, -46000, 15000), CSC1_CLOCK_SKEW_LARGE);
  /* -20 s +- 15 s might still be -35 s: not yet normal. */
  assert_int_equal(feed(&t, -20000, 15000), CSC1_CLOCK_SKEW_QUIET);
  assert_true(t.large);
  assert_int_equal(feed(&t, -10000, 15000), CSC1_CLOCK_SKEW_NORMAL);
}

static void describe(void **state) {
  char b[128];
  csc1_clock_skew_describe(120400, b, sizeof b);
  assert_string_equal(b, "the gateway's clock is 120 s ahead of the IdMS's");
  csc1_clock_skew_describe(-3599600, b, sizeof b);
  assert_string_equal(b, "the gateway's clock is 3600 s behind the IdMS's");
  csc1_clock_skew_describe(-999, b, sizeof b);
  assert_string_equal(b, "the gateway's clock is in step with the IdMS's (within 1 s)");
  csc1_clock_skew_describe(1000, b, sizeof b);
  assert_string_equal(b, "the gateway's clock is 1 s ahead of the IdMS's");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(measure_in_step),
      cmocka_unit_test(measure_ahead_and_behind),
      cmocka_unit_test(measure_slow_request),
      cmocka_unit_test(measure_refuses),
      cmocka_unit_test(warn_once_change_recover),
      cmocka_unit_test(no_flapping_at_the_threshold),
      cmocka_unit_test(uncertain_measurements_do_not_warn),
      cmocka_unit_test(describe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
