/* Token buckets and the bounded table of them. See ratelimit.h. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "tunnel/ratelimit.h"

/* ---- one bucket ---- */

static uint64_t cap_milli(const tn_rate *r) { return (uint64_t)(r->burst ? r->burst : 1) * 1000; }

static void refill(tn_bucket *b, const tn_rate *r, uint64_t now_ms) {
  if (now_ms <= b->last_ms) {
    /* Backwards (or no time): nothing earned; the clock is taken as it is
     * now so that time already counted is not counted twice. */
    b->last_ms = now_ms;
    return;
  }
  uint64_t cap = cap_milli(r);
  uint64_t elapsed = now_ms - b->last_ms;
  b->last_ms = now_ms;
  /* rate per_s = per_s thousandths per millisecond; past the time to fill
   * the bucket the product could only overflow, never matter. */
  if (elapsed >= cap / r->per_s + 1) {
    b->milli = cap;
    return;
  }
  b->milli += elapsed * r->per_s;
  if (b->milli > cap)
    b->milli = cap;
}

void tn_bucket_init(tn_bucket *b, const tn_rate *r, uint64_t now_ms) {
  b->milli = cap_milli(r);
  b->last_ms = now_ms;
}

uint64_t tn_bucket_take(tn_bucket *b, const tn_rate *r, uint64_t now_ms) {
  if (r->per_s == 0)
    return 0;
  refill(b, r, now_ms);
  if (b->milli >= 1000) {
    b->milli -= 1000;
    return 0;
  }
  uint64_t missing = 1000 - b->milli;
  return (missing + r->per_s - 1) / r->per_s;
}

bool tn_bucket_full(const tn_bucket *b, const tn_rate *r, uint64_t now_ms) {
  if (r->per_s == 0)
    return true;
  tn_bucket copy = *b;
  refill(&copy, r, now_ms);
  return copy.milli >= cap_milli(r);
}

/* ---- the table ---- */

typedef struct rt_entry {
  struct rt_entry *chain;         /* hash chain */
  struct rt_entry *newer, *older; /* recency list */
  tn_bucket bucket;
  uint64_t streak_since_ms, last_refused_ms, refused;
  uint64_t log_since_ms, log_until_ms, suppressed; /* the refusal log window; 0: none yet */
  uint16_t key_len;
  uint8_t key[];
} rt_entry;

struct tn_ratetab {
  rt_entry **slots;
  size_t n_slots; /* a power of two */
  size_t n, max;
  rt_entry *newest, *oldest;
  uint32_t seed; /* keys are chosen by devices: a per-table seed keeps chains short */
};

tn_ratetab *tn_ratetab_new(size_t max_entries) {
  tn_ratetab *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  t->max = max_entries ? max_entries : 1;
  t->n_slots = 16;
  while (t->n_slots < t->max)
    t->n_slots *= 2;
  if (!(t->slots = calloc(t->n_slots, sizeof(*t->slots)))) {
    free(t);
    return NULL;
  }
  if (uv_random(NULL, NULL, &t->seed, sizeof(t->seed), 0, NULL) != 0)
    t->seed = (uint32_t)uv_hrtime();
  return t;
}

void tn_ratetab_free(tn_ratetab *t) {
  if (!t)
    return;
  for (rt_entry *e = t->newest, *next; e; e = next) {
    next = e->older;
    free(e);
  }
  free(t->slots);
  free(t);
}

size_t tn_ratetab_size(const tn_ratetab *t) { return t->n; }

/* FNV-1a over the seed and the key. */
static size_t slot_of(const tn_ratetab *t, const uint8_t *k, size_t len) {
  uint32_t h = 2166136261u ^ t->seed;
  for (size_t i = 0; i < len; i++)
    h = (h ^ k[i]) * 16777619u;
  return h & (t->n_slots - 1);
}

static rt_entry **find(const tn_ratetab *t, const uint8_t *k, size_t len) {
  rt_entry **pp = &t->slots[slot_of(t, k, len)];
  while (*pp && ((*pp)->key_len != len || memcmp((*pp)->key, k, len) != 0))
    pp = &(*pp)->chain;
  return pp;
}

static void lru_unlink(tn_ratetab *t, rt_entry *e) {
  if (e->newer)
    e->newer->older = e->older;
  else
    t->newest = e->older;
  if (e->older)
    e->older->newer = e->newer;
  else
    t->oldest = e->newer;
  e->newer = e->older = NULL;
}

static void lru_push(tn_ratetab *t, rt_entry *e) {
  e->older = t->newest;
  e->newer = NULL;
  if (t->newest)
    t->newest->newer = e;
  t->newest = e;
  if (!t->oldest)
    t->oldest = e;
}

static void drop(tn_ratetab *t, rt_entry *e) {
  rt_entry **pp = find(t, e->key, e->key_len);
  *pp = e->chain;
  lru_unlink(t, e);
  free(e);
  t->n--;
}

static bool limited(const rt_entry *e, uint64_t now_ms) {
  return e->refused && now_ms - e->last_refused_ms <= TN_RATE_LIMITED_MS;
}

/* The oldest entries, while they carry nothing a new one would not: a full
 * bucket, no current streak and no unreported refusals. Two per call keeps
 * the cost constant. */
static void prune(tn_ratetab *t, const tn_rate *r, uint64_t now_ms) {
  for (int i = 0; i < 2 && t->oldest; i++) {
    rt_entry *e = t->oldest;
    if (limited(e, now_ms) || e->suppressed || !tn_bucket_full(&e->bucket, r, now_ms))
      return;
    drop(t, e);
  }
}

static rt_entry *add(tn_ratetab *t, const uint8_t *k, size_t len, const tn_rate *r,
                     uint64_t now_ms) {
  if (t->n >= t->max)
    drop(t, t->oldest); /* full: the least recently seen key starts afresh */
  rt_entry *e = calloc(1, sizeof(*e) + len);
  if (!e)
    return NULL;
  memcpy(e->key, k, len);
  e->key_len = (uint16_t)len;
  tn_bucket_init(&e->bucket, r, now_ms);
  rt_entry **pp = find(t, k, len);
  *pp = e;
  lru_push(t, e);
  t->n++;
  return e;
}

uint64_t tn_ratetab_take(tn_ratetab *t, const void *key, size_t len, const tn_rate *r,
                         uint64_t now_ms) {
  if (r->per_s == 0)
    return 0;
  if (len > TN_RATE_KEY_MAX)
    len = TN_RATE_KEY_MAX;
  prune(t, r, now_ms);
  rt_entry *e = *find(t, key, len);
  if (e) {
    lru_unlink(t, e);
    lru_push(t, e);
  } else if (!(e = add(t, key, len, r, now_ms))) {
    return 1000;
  }
  uint64_t wait = tn_bucket_take(&e->bucket, r, now_ms);
  if (wait) {
    if (!limited(e, now_ms)) {
      e->streak_since_ms = now_ms;
      e->refused = 0;
    }
    e->refused++;
    e->last_refused_ms = now_ms;
  }
  return wait;
}

size_t tn_ratetab_foreach_limited(const tn_ratetab *t, uint64_t now_ms,
                                  void (*cb)(const tn_ratetab_limited *l, void *arg), void *arg) {
  size_t n = 0;
  for (const rt_entry *e = t->newest; e; e = e->older) {
    if (!limited(e, now_ms))
      continue;
    n++;
    if (cb) {
      tn_ratetab_limited l = {.key = e->key,
                              .key_len = e->key_len,
                              .since_ms = e->streak_since_ms,
                              .last_ms = e->last_refused_ms,
                              .refused = e->refused};
      cb(&l, arg);
    }
  }
  return n;
}

/* ---- refusal log windows ---- */

static void report(rt_entry *e, uint64_t now_ms, tn_ratetab_suppressed_cb cb, void *arg) {
  tn_ratetab_suppressed s = {.key = e->key,
                             .key_len = e->key_len,
                             .since_ms = e->log_since_ms,
                             .until_ms = now_ms < e->log_until_ms ? now_ms : e->log_until_ms,
                             .suppressed = e->suppressed};
  e->suppressed = 0;
  if (cb)
    cb(&s, arg);
}

uint64_t tn_ratetab_log_refusal(tn_ratetab *t, const void *key, size_t len, uint64_t now_ms,
                                tn_ratetab_suppressed_cb cb, void *arg) {
  if (len > TN_RATE_KEY_MAX)
    len = TN_RATE_KEY_MAX;
  rt_entry *e = *find(t, key, len);
  if (!e)
    return 0; /* refused for want of memory: logged, as nothing can be counted */
  if (e->log_until_ms && now_ms < e->log_until_ms) {
    e->suppressed++;
    return e->log_until_ms;
  }
  if (e->suppressed) /* the last window ended, its summary not yet written */
    report(e, now_ms, cb, arg);
  e->log_since_ms = now_ms;
  e->log_until_ms = now_ms + TN_RATE_LOG_WINDOW_MS;
  return 0;
}

uint64_t tn_ratetab_flush_suppressed(tn_ratetab *t, uint64_t now_ms, bool all,
                                     tn_ratetab_suppressed_cb cb, void *arg) {
  uint64_t next = 0;
  for (rt_entry *e = t->newest; e; e = e->older) {
    if (!e->suppressed)
      continue;
    if (all || now_ms >= e->log_until_ms)
      report(e, now_ms, cb, arg);
    else if (!next || e->log_until_ms < next)
      next = e->log_until_ms;
  }
  return next;
}
