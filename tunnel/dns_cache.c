/* The resolver's cache: a hash table of names chained per bucket, and one
 * LRU list through every entry. See dns_cache.h. */
#include "tunnel/dns_cache.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tunnel/error.h"

typedef struct entry {
  struct entry *chain;         /* next in its bucket */
  struct entry *older, *newer; /* LRU list */
  uint64_t expires_ms;         /* end of the TTL */
  uint64_t stale_until_ms;     /* end of the stale window (= expires_ms if none) */
  int err;                     /* < 0: a negative entry */
  char *name;
  tn_dns_answer answer; /* last: only answer.n addresses are allocated */
} entry;

struct tn_dns_cache {
  entry **buckets;
  size_t mask;
  size_t count, size;
  entry *newest, *oldest;
};

static size_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (uint64_t)tolower((unsigned char)*s)) * 1099511628211u;
  return (size_t)h;
}

tn_dns_cache *tn_dns_cache_new(uint32_t size) {
  tn_dns_cache *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  size_t n = 16;
  while (n < size)
    n <<= 1;
  if (!(c->buckets = calloc(n, sizeof(*c->buckets)))) {
    free(c);
    return NULL;
  }
  c->mask = n - 1;
  c->size = size;
  return c;
}

static entry **slot_of(tn_dns_cache *c, const char *name) {
  entry **p = &c->buckets[hash_name(name) & c->mask];
  while (*p && strcasecmp((*p)->name, name) != 0)
    p = &(*p)->chain;
  return p;
}

static void lru_unlink(tn_dns_cache *c, entry *e) {
  if (e->older)
    e->older->newer = e->newer;
  else
    c->oldest = e->newer;
  if (e->newer)
    e->newer->older = e->older;
  else
    c->newest = e->older;
  e->older = e->newer = NULL;
}

static void lru_push(tn_dns_cache *c, entry *e) {
  e->older = c->newest;
  e->newer = NULL;
  if (c->newest)
    c->newest->newer = e;
  else
    c->oldest = e;
  c->newest = e;
}

static void drop(tn_dns_cache *c, entry *e) {
  entry **p = slot_of(c, e->name);
  *p = e->chain;
  lru_unlink(c, e);
  c->count--;
  free(e->name);
  free(e);
}

void tn_dns_cache_free(tn_dns_cache *c) {
  if (!c)
    return;
  while (c->oldest)
    drop(c, c->oldest);
  free(c->buckets);
  free(c);
}

size_t tn_dns_cache_count(const tn_dns_cache *c) { return c->count; }

tn_dns_hit tn_dns_cache_get(tn_dns_cache *c, const char *name, uint64_t now_ms, bool allow_stale,
                            tn_dns_answer *out, int *err) {
  entry *e = *slot_of(c, name);
  if (!e)
    return TN_DNS_MISS;
  if (now_ms >= e->stale_until_ms) {
    drop(c, e);
    return TN_DNS_MISS;
  }
  bool fresh = now_ms < e->expires_ms;
  if (!fresh && (e->err || !allow_stale))
    return TN_DNS_MISS;
  lru_unlink(c, e);
  lru_push(c, e);
  if (e->err) {
    *err = e->err;
    return TN_DNS_NEGATIVE;
  }
  out->n = e->answer.n;
  memcpy(out->addrs, e->answer.addrs, e->answer.n * sizeof(out->addrs[0]));
  return fresh ? TN_DNS_FRESH : TN_DNS_STALE;
}

/* Replaces name's entry with a new one; the oldest goes when full. */
static int store(tn_dns_cache *c, const char *name, const tn_dns_answer *a, int err,
                 uint64_t expires_ms, uint64_t stale_until_ms) {
  if (c->size == 0)
    return 0;
  size_t addrs = a ? a->n : 0;
  entry *e = malloc(offsetof(entry, answer.addrs) + addrs * sizeof(tn_dns_addr));
  if (!e)
    return TN_ENOMEM;
  char *copy = strdup(name);
  if (!copy) {
    free(e);
    return TN_ENOMEM;
  }
  entry *old = *slot_of(c, name);
  if (old)
    drop(c, old);
  else if (c->count >= c->size)
    drop(c, c->oldest);
  memset(e, 0, offsetof(entry, answer.addrs));
  e->expires_ms = expires_ms;
  e->stale_until_ms = stale_until_ms;
  e->err = err;
  e->answer.n = (uint8_t)addrs;
  if (addrs)
    memcpy(e->answer.addrs, a->addrs, addrs * sizeof(tn_dns_addr));
  e->name = copy;
  entry **p = slot_of(c, name);
  *p = e;
  lru_push(c, e);
  c->count++;
  return 0;
}

int tn_dns_cache_put(tn_dns_cache *c, const char *name, const tn_dns_answer *a, uint64_t ttl_ms,
                     uint64_t stale_ms, uint64_t now_ms) {
  if (ttl_ms == 0 || a->n == 0)
    return 0;
  return store(c, name, a, 0, now_ms + ttl_ms, now_ms + ttl_ms + stale_ms);
}

int tn_dns_cache_put_negative(tn_dns_cache *c, const char *name, int err, uint64_t ttl_ms,
                              uint64_t now_ms) {
  if (ttl_ms == 0) {
    entry *old = *slot_of(c, name);
    if (old)
      drop(c, old);
    return 0;
  }
  return store(c, name, NULL, err, now_ms + ttl_ms, now_ms + ttl_ms);
}
