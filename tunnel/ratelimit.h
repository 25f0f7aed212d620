/* Token buckets for new-tunnel rates: one per client
 * (max_new_tunnels_per_client) and one per destination
 * (max_new_upstream_per_target).
 *
 * Pure logic on a millisecond clock the caller passes in (the loop's
 * monotonic uv_now), so it is unit-tested without a loop. Time that goes
 * backwards refills nothing; a jump forwards refills at most the burst.
 *
 * tn_ratetab keeps the buckets of many keys in a bounded table: at most
 * max_entries, least recently used first out. A bucket that has refilled
 * completely is the same as no bucket, so such entries are dropped as the
 * table is used: a flood from many source addresses costs at most
 * max_entries entries, and an idle table empties itself.
 */
#ifndef TN_RATELIMIT_H
#define TN_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* per_s tokens per second, at most burst held (burst >= 1 when per_s > 0).
 * per_s == 0: no limit. */
typedef struct tn_rate {
  uint32_t per_s;
  uint32_t burst;
} tn_rate;

/* Tokens are counted in thousandths so that rates below 1000/s refill in
 * whole units per millisecond. */
typedef struct tn_bucket {
  uint64_t milli;   /* tokens x 1000 */
  uint64_t last_ms; /* when milli was last brought up to date */
} tn_bucket;

/* A full bucket at now_ms. */
void tn_bucket_init(tn_bucket *b, const tn_rate *r, uint64_t now_ms);
/* Refills for the time since the last call, then takes one token. Returns 0
 * when a token was taken; otherwise the milliseconds until one will be
 * there (>= 1), and takes nothing. Always 0 when r->per_s == 0. */
uint64_t tn_bucket_take(tn_bucket *b, const tn_rate *r, uint64_t now_ms);
/* Whether the bucket holds its whole burst at now_ms (refilled completely). */
bool tn_bucket_full(const tn_bucket *b, const tn_rate *r, uint64_t now_ms);

typedef struct tn_ratetab tn_ratetab;

#define TN_RATE_KEY_MAX 320 /* bytes of a key: a client key or "host:port" */

/* A table of at most max_entries buckets (least recently used out), owned
 * by the caller until tn_ratetab_free. NULL on ENOMEM. */
tn_ratetab *tn_ratetab_new(size_t max_entries);
/* Frees t and its buckets; NULL is ignored. */
void tn_ratetab_free(tn_ratetab *t);
/* tn_bucket_take on key's bucket (a new key starts full). Keys longer than
 * TN_RATE_KEY_MAX are cut. When no entry can be allocated the request is
 * refused (1000 ms): a limit must not open under memory pressure. */
uint64_t tn_ratetab_take(tn_ratetab *t, const void *key, size_t len, const tn_rate *r,
                         uint64_t now_ms);
/* The number of keys t holds a bucket for. */
size_t tn_ratetab_size(const tn_ratetab *t);

/* A key counts as limited while its last refusal is at most this old; a
 * streak of refusals ends when the key goes this long without one. */
#define TN_RATE_LIMITED_MS 10000

/* A key being limited: the first refusal of its current streak, the last,
 * and the refusals in the streak. */
typedef struct tn_ratetab_limited {
  const uint8_t *key;
  size_t key_len;
  uint64_t since_ms, last_ms, refused;
} tn_ratetab_limited;

/* Calls cb (when not NULL) for each key limited at now_ms; returns how many. */
size_t tn_ratetab_foreach_limited(const tn_ratetab *t, uint64_t now_ms,
                                  void (*cb)(const tn_ratetab_limited *l, void *arg), void *arg);

/* Log windows for refusals, so that a key refused thousands of times a
 * second costs a bounded number of log lines: the refusal that finds no
 * window open is logged and opens one of TN_RATE_LOG_WINDOW_MS; the others
 * in that window are only counted, and reported once, as a summary, after
 * the window ends (or when the next window opens, whichever is first).
 * Counters elsewhere still count every refusal. An entry holding an
 * unreported count is not pruned; one evicted from a full table (max_entries
 * more recent keys) loses it. */
#define TN_RATE_LOG_WINDOW_MS 10000

/* A window's unreported refusals: the key, when its first (logged) refusal
 * opened it, until when it ran (its end, or now if it is cut short), and
 * the refusals after that first one. */
typedef struct tn_ratetab_suppressed {
  const uint8_t *key;
  size_t key_len;
  uint64_t since_ms, until_ms, suppressed;
} tn_ratetab_suppressed;
typedef void (*tn_ratetab_suppressed_cb)(const tn_ratetab_suppressed *s, void *arg);

/* After tn_ratetab_take refused key at now_ms: 0 when this refusal is to be
 * logged (it opens a window; cb first reports what the previous window
 * still held); else the time its window ends, when the summary is due (the
 * refusal is counted, not to be logged). 0 for a key without an entry. */
uint64_t tn_ratetab_log_refusal(tn_ratetab *t, const void *key, size_t len, uint64_t now_ms,
                                tn_ratetab_suppressed_cb cb, void *arg);
/* Reports (cb) and clears each count whose window has ended by now_ms (all:
 * every count, e.g. at shutdown). Returns the end of the earliest window
 * still holding a count, 0 when none does. */
uint64_t tn_ratetab_flush_suppressed(tn_ratetab *t, uint64_t now_ms, bool all,
                                     tn_ratetab_suppressed_cb cb, void *arg);

#endif
