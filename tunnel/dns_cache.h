/* The resolver's cache (dns_cache.c): answers by name, each kept for its
 * TTL (capped by the caller), failures kept for the negative TTL, and past
 * its TTL a positive answer kept for a stale window more (RFC 8767
 * serve-stale), handed out only when the caller asks for stale answers
 * (the servers did not answer). At most `size` names; the least recently
 * used goes first. Pure logic: the clock is an argument, nothing here
 * touches the loop, so the unit tests drive it directly.
 */
#ifndef TN_DNS_CACHE_H
#define TN_DNS_CACHE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define TN_DNS_ADDRS_MAX 16 /* addresses kept per name */

/* One address: sa.sa_family says which member holds it; the port is 0. */
typedef union tn_dns_addr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} tn_dns_addr;

typedef struct tn_dns_answer {
  uint8_t n;
  tn_dns_addr addrs[TN_DNS_ADDRS_MAX];
} tn_dns_answer;

typedef enum { TN_DNS_MISS = 0, TN_DNS_FRESH, TN_DNS_STALE, TN_DNS_NEGATIVE } tn_dns_hit;

typedef struct tn_dns_cache tn_dns_cache;

/* A cache of at most size names (0: a cache that keeps nothing). NULL on
 * ENOMEM. */
tn_dns_cache *tn_dns_cache_new(uint32_t size);
void tn_dns_cache_free(tn_dns_cache *c);

/* name (case-insensitive) at now_ms:
 * - FRESH: within its TTL; *out is the answer;
 * - NEGATIVE: a failure within the negative TTL; *err is its code;
 * - STALE: past its TTL but within its stale window, only when allow_stale;
 *   *out is the answer;
 * - MISS: nothing usable (out and err untouched). An entry past every
 *   window is dropped here. A hit makes the entry the most recently used. */
tn_dns_hit tn_dns_cache_get(tn_dns_cache *c, const char *name, uint64_t now_ms, bool allow_stale,
                            tn_dns_answer *out, int *err);

/* Stores an answer (a->n > 0) for ttl_ms, then stale_ms more, replacing
 * what name had. Returns 0, or TN_ENOMEM with the cache unchanged. A ttl_ms
 * of 0 stores nothing. */
int tn_dns_cache_put(tn_dns_cache *c, const char *name, const tn_dns_answer *a, uint64_t ttl_ms,
                     uint64_t stale_ms, uint64_t now_ms);
/* Stores a failure (err < 0) for ttl_ms, replacing what name had: a name
 * that no longer exists has no stale answer either. 0 or TN_ENOMEM. */
int tn_dns_cache_put_negative(tn_dns_cache *c, const char *name, int err, uint64_t ttl_ms,
                              uint64_t now_ms);
/* Names held now (including expired ones not yet dropped). */
size_t tn_dns_cache_count(const tn_dns_cache *c);

#endif
