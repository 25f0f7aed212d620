/* The gateway's clock against the IdMS's, from the Date header of the IdMS's
 * responses (RFC 9110 6.6.1: the server's time when it generated the
 * response, to the second).
 *
 * Vehicle gateways often start without a GNSS fix and without NTP on the
 * scene network; a clock that is off then shows up as ID tokens "issued in
 * the future" or "expired". The identity management module measures the
 * skew on every IdMS response, keeps the latest for /status and /metrics, and
 * warns once when it is large (csc1_clock_skew_update says when to log).
 *
 * Pure functions over numbers: no I/O, no clock reads, no logging. */
#ifndef CSC1_CLOCK_SKEW_H
#define CSC1_CLOCK_SKEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One measurement: skew = local time - IdMS time. > 0: the gateway's clock
 * is ahead of the IdMS's; < 0: behind. The true skew lies within
 * skew_ms +- uncertainty_ms. */
typedef struct csc1_clock_skew_sample {
  int64_t skew_ms;
  int64_t uncertainty_ms;
} csc1_clock_skew_sample;

/* sent_ms, recv_ms: the gateway's wall clock (unix milliseconds) when the
 * request was started and when its response arrived; date_s: the response's
 * Date (unix seconds). The IdMS wrote Date at some instant between the two,
 * truncated to its second, so the skew lies in
 *   [sent_ms - (date_s + 1) * 1000, recv_ms - date_s * 1000]:
 * out gets the middle of that interval and half its width (the round trip
 * and Date's 1 s resolution). Returns 0, or -1 (out untouched) when date_s
 * is not a time (<= 0: no or a malformed Date) or recv_ms < sent_ms (the
 * local clock was stepped during the request: no usable measurement). */
int csc1_clock_skew_measure(int64_t sent_ms, int64_t recv_ms, int64_t date_s,
                          csc1_clock_skew_sample *out);

/* What the caller should log after an update. */
typedef enum {
  CSC1_CLOCK_SKEW_QUIET = 0, /* nothing new worth a log line */
  CSC1_CLOCK_SKEW_LARGE,     /* newly beyond the threshold: warn */
  CSC1_CLOCK_SKEW_CHANGED,   /* still beyond, and moved by more than the threshold
                              since the last warning: warn again */
  CSC1_CLOCK_SKEW_NORMAL     /* back within the threshold after a warning: info */
} csc1_clock_skew_event;

/* The latest measurement and the warn-once state. Zero it, then
 * csc1_clock_skew_init. */
typedef struct csc1_clock_skew {
  int64_t threshold_ms;
  bool known;              /* at least one measurement */
  csc1_clock_skew_sample last;
  bool large;              /* warned about, not yet back to normal */
  int64_t warned_ms;       /* the skew of the last warning */
} csc1_clock_skew;

/* Resets *t: no measurement yet; a skew beyond threshold_s (either way) is
 * "large". *t owns nothing (no free needed). */
void csc1_clock_skew_init(csc1_clock_skew *t, unsigned threshold_s);

/* Takes a measurement as the latest and says whether to log.
 * Beyond and back are judged with the uncertainty, so a skew near the
 * threshold does not flap: it becomes large only when the whole interval
 * lies beyond +-threshold, and normal again only when the whole interval
 * lies within it. */
csc1_clock_skew_event csc1_clock_skew_update(csc1_clock_skew *t, const csc1_clock_skew_sample *s);

/* "the gateway's clock is 120 s behind the IdMS's" (seconds rounded; "in
 * step with" within 1 s). For logs and failure reasons. */
void csc1_clock_skew_describe(int64_t skew_ms, char *buf, size_t len);

#endif
