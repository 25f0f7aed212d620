/* The gateway's clock against the IdMS's. See clock_skew.h. */
#include "csc1/clock_skew.h"

#include <stdio.h>
#include <string.h>

/* 9999-12-31T23:59:59Z: later "dates" are garbage, and keep the arithmetic
 * below far from overflow. */
#define MAX_DATE_S INT64_C(253402300799)

int csc1_clock_skew_measure(int64_t sent_ms, int64_t recv_ms, int64_t date_s,
                          csc1_clock_skew_sample *out) {
  if (date_s <= 0 || date_s > MAX_DATE_S || recv_ms < sent_ms || sent_ms < 0)
    return -1;
  if (recv_ms > MAX_DATE_S * 1000)
    return -1;
  int64_t lo = sent_ms - (date_s + 1) * 1000; /* Date written at once, late in its second */
  int64_t hi = recv_ms - date_s * 1000;       /* Date written last, early in its second */
  out->skew_ms = lo + (hi - lo) / 2;
  out->uncertainty_ms = (hi - lo + 1) / 2;
  return 0;
}

void csc1_clock_skew_init(csc1_clock_skew *t, unsigned threshold_s) {
  memset(t, 0, sizeof *t);
  t->threshold_ms = (int64_t)threshold_s * 1000;
}

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

csc1_clock_skew_event csc1_clock_skew_update(csc1_clock_skew *t, const csc1_clock_skew_sample *s) {
  int64_t lo = s->skew_ms - s->uncertainty_ms, hi = s->skew_ms + s->uncertainty_ms;
  bool beyond = lo > t->threshold_ms || hi < -t->threshold_ms;
  bool within = lo >= -t->threshold_ms && hi <= t->threshold_ms;
  t->known = true;
  t->last = *s;
  if (!t->large) {
    if (!beyond)
      return CSC1_CLOCK_SKEW_QUIET;
    t->large = true;
    t->warned_ms = s->skew_ms;
    return CSC1_CLOCK_SKEW_LARGE;
  }
  if (within) {
    t->large = false;
    return CSC1_CLOCK_SKEW_NORMAL;
  }
  /* Still large. Again only when it moved by more than the threshold (more
   * than any measurement's uncertainty, bounded by the request timeout):
   * someone set the clock, or it is drifting fast - not jitter. */
  if (beyond && abs64(s->skew_ms - t->warned_ms) > t->threshold_ms) {
    t->warned_ms = s->skew_ms;
    return CSC1_CLOCK_SKEW_CHANGED;
  }
  return CSC1_CLOCK_SKEW_QUIET;
}

void csc1_clock_skew_describe(int64_t skew_ms, char *buf, size_t len) {
  int64_t a = abs64(skew_ms);
  if (a < 1000) {
    snprintf(buf, len, "the gateway's clock is in step with the IdMS's (within 1 s)");
    return;
  }
  snprintf(buf, len, "the gateway's clock is %lld s %s the IdMS's", (long long)((a + 500) / 1000),
           skew_ms > 0 ? "ahead of" : "behind");
}
