/* Unit tests for tunnel/dns_cache.c: TTL, the stale window (served only when
 * asked for), negative entries, LRU eviction at cache_size, names compared
 * without case, replacement, a cache of size 0. The clock is an argument.
 *
 * And the hot path of tunnel/resolver.c: a cache hit, of a name from a
 * server or from /etc/hosts, allocates nothing. Counted by wrapping the
 * allocator at link time (tests/CMakeLists.txt: every allocation of the
 * engine library and this file) and through ares_library_init_mem (c-ares's
 * own); a reconfigure keeps or empties the cache as resolver.h says. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <ares.h>
#include <stdlib.h>
#include <uv.h>

#include "tunnel/dns_cache.h"
#include "tunnel/error.h"
#include "tunnel/resolver.h"

/* ---- allocation counting ---- */

static bool counting;
static unsigned long allocations;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static void count(void) {
  if (counting)
    allocations++;
}
void *__wrap_malloc(size_t n) {
  count();
  return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m) {
  count();
  return __real_calloc(n, m);
}
void *__wrap_realloc(void *p, size_t n) {
  count();
  return __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
  count();
  return __real_strdup(s);
}
/* c-ares's allocator (ares_library_init_mem): counted the same way. */
static void *ares_counting_malloc(size_t n) { return __wrap_malloc(n); }
static void *ares_counting_realloc(void *p, size_t n) { return __wrap_realloc(p, n); }

/* An answer of one IPv4 address 10.0.0.<last>. */
static tn_dns_answer v4(int last) {
  tn_dns_answer a;
  memset(&a, 0, sizeof(a));
  a.n = 1;
  a.addrs[0].in.sin_family = AF_INET;
  a.addrs[0].in.sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)last);
  return a;
}

static int last_octet(const tn_dns_answer *a) {
  return (int)(ntohl(a->addrs[0].in.sin_addr.s_addr) & 0xff);
}

static tn_dns_hit get(tn_dns_cache *c, const char *name, uint64_t now, bool stale, int *octet) {
  tn_dns_answer out;
  int err = 0;
  memset(&out, 0, sizeof(out));
  tn_dns_hit h = tn_dns_cache_get(c, name, now, stale, &out, &err);
  if (octet)
    *octet = h == TN_DNS_NEGATIVE ? err : (h == TN_DNS_MISS ? -1 : last_octet(&out));
  return h;
}

static void fresh_until_ttl(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(8);
  tn_dns_answer a = v4(7);
  assert_int_equal(tn_dns_cache_put(c, "idms.example", &a, 1000, 0, 100), 0);
  int o;
  assert_int_equal(get(c, "idms.example", 100, false, &o), TN_DNS_FRESH);
  assert_int_equal(o, 7);
  assert_int_equal(get(c, "idms.example", 1099, false, NULL), TN_DNS_FRESH);
  assert_int_equal(get(c, "idms.example", 1100, false, NULL), TN_DNS_MISS);
  assert_int_equal(get(c, "other.example", 100, false, NULL), TN_DNS_MISS);
  tn_dns_cache_free(c);
}

static void stale_only_when_asked_and_within_window(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(8);
  tn_dns_answer a = v4(9);
  tn_dns_cache_put(c, "a.example", &a, 1000, 5000, 0);
  int o;
  assert_int_equal(get(c, "a.example", 2000, false, NULL), TN_DNS_MISS);
  assert_int_equal(get(c, "a.example", 2000, true, &o), TN_DNS_STALE);
  assert_int_equal(o, 9);
  assert_int_equal(get(c, "a.example", 5999, true, NULL), TN_DNS_STALE);
  /* Past TTL + stale window: dropped. */
  assert_int_equal(get(c, "a.example", 6000, true, NULL), TN_DNS_MISS);
  assert_int_equal(tn_dns_cache_count(c), 0);
  tn_dns_cache_free(c);
}

static void negative_for_its_ttl_never_stale(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(8);
  tn_dns_answer a = v4(1);
  tn_dns_cache_put(c, "gone.example", &a, 1000, 60000, 0);
  /* NXDOMAIN replaces the answer, stale copy included. */
  assert_int_equal(tn_dns_cache_put_negative(c, "gone.example", TN_EDNS_NXDOMAIN, 10000, 10), 0);
  int o;
  assert_int_equal(get(c, "gone.example", 20, false, &o), TN_DNS_NEGATIVE);
  assert_int_equal(o, TN_EDNS_NXDOMAIN);
  assert_int_equal(get(c, "gone.example", 10009, true, NULL), TN_DNS_NEGATIVE);
  assert_int_equal(get(c, "gone.example", 10010, true, NULL), TN_DNS_MISS);
  tn_dns_cache_free(c);
}

static void lru_evicts_least_recently_used(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(3);
  char name[32];
  for (int i = 0; i < 3; i++) {
    tn_dns_answer a = v4(i);
    snprintf(name, sizeof name, "n%d.example", i);
    tn_dns_cache_put(c, name, &a, 60000, 0, 0);
  }
  /* n0 used: n1 is now the least recently used. */
  assert_int_equal(get(c, "n0.example", 1, false, NULL), TN_DNS_FRESH);
  tn_dns_answer a = v4(3);
  tn_dns_cache_put(c, "n3.example", &a, 60000, 0, 2);
  assert_int_equal(tn_dns_cache_count(c), 3);
  assert_int_equal(get(c, "n1.example", 3, false, NULL), TN_DNS_MISS);
  assert_int_equal(get(c, "n0.example", 3, false, NULL), TN_DNS_FRESH);
  assert_int_equal(get(c, "n2.example", 3, false, NULL), TN_DNS_FRESH);
  assert_int_equal(get(c, "n3.example", 3, false, NULL), TN_DNS_FRESH);
  tn_dns_cache_free(c);
}

static void names_without_case_and_replaced(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(4);
  tn_dns_answer a = v4(1), b = v4(2);
  tn_dns_cache_put(c, "IdMS.Example", &a, 1000, 0, 0);
  tn_dns_cache_put(c, "idms.example", &b, 1000, 0, 0);
  assert_int_equal(tn_dns_cache_count(c), 1);
  int o;
  assert_int_equal(get(c, "IDMS.EXAMPLE", 1, false, &o), TN_DNS_FRESH);
  assert_int_equal(o, 2);
  tn_dns_cache_free(c);
}

static void many_addresses_kept(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(4);
  tn_dns_answer a;
  memset(&a, 0, sizeof(a));
  a.n = TN_DNS_ADDRS_MAX;
  for (int i = 0; i < TN_DNS_ADDRS_MAX; i++) {
    a.addrs[i].in6.sin6_family = AF_INET6;
    a.addrs[i].in6.sin6_addr.s6_addr[15] = (uint8_t)i;
  }
  tn_dns_cache_put(c, "many.example", &a, 1000, 0, 0);
  tn_dns_answer out;
  int err;
  assert_int_equal(tn_dns_cache_get(c, "many.example", 1, false, &out, &err), TN_DNS_FRESH);
  assert_int_equal(out.n, TN_DNS_ADDRS_MAX);
  assert_memory_equal(out.addrs, a.addrs, sizeof(a.addrs));
  tn_dns_cache_free(c);
}

static void size_zero_and_ttl_zero_keep_nothing(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(0);
  tn_dns_answer a = v4(1);
  assert_int_equal(tn_dns_cache_put(c, "x.example", &a, 1000, 0, 0), 0);
  assert_int_equal(get(c, "x.example", 1, true, NULL), TN_DNS_MISS);
  tn_dns_cache_free(c);
  c = tn_dns_cache_new(4);
  tn_dns_cache_put(c, "x.example", &a, 0, 1000, 0); /* a TTL of 0 */
  assert_int_equal(tn_dns_cache_count(c), 0);
  tn_dns_cache_free(c);
}

static void cache_get_allocates_nothing(void **state) {
  tn_dns_cache *c = tn_dns_cache_new(8);
  tn_dns_answer a = v4(3);
  tn_dns_cache_put(c, "a.example", &a, 1000, 5000, 0);
  tn_dns_cache_put_negative(c, "no.example", TN_EDNS_NXDOMAIN, 1000, 0);
  allocations = 0;
  counting = true;
  tn_dns_hit h1 = get(c, "a.example", 10, false, NULL);
  tn_dns_hit h2 = get(c, "a.example", 2000, true, NULL);
  tn_dns_hit h3 = get(c, "no.example", 10, false, NULL);
  tn_dns_hit h4 = get(c, "other.example", 10, true, NULL);
  counting = false;
  assert_int_equal(h1, TN_DNS_FRESH);
  assert_int_equal(h2, TN_DNS_STALE);
  assert_int_equal(h3, TN_DNS_NEGATIVE);
  assert_int_equal(h4, TN_DNS_MISS);
  assert_int_equal(allocations, 0);
  tn_dns_cache_free(c);
}

/* Closes r and runs the loop until its handles are gone. */
static void close_resolver(uv_loop_t *loop, tn_resolver *r) {
  tn_resolver_close(r);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(loop), 0);
}

/* localhost from /etc/hosts: the first lookup reads the file (c-ares
 * allocates); the next is a cache hit: answered at once, counted as fresh,
 * and not one allocation, ours or c-ares's. A reconfigure with other servers
 * empties the cache; one with another timeout only keeps it. */
static void resolver_hit_allocates_nothing(void **state) {
  assert_int_equal(
      ares_library_init_mem(ARES_LIB_INIT_ALL, ares_counting_malloc, free, ares_counting_realloc),
      ARES_SUCCESS);
  uv_loop_t loop;
  uv_loop_init(&loop);
  tn_resolver_opts o;
  tn_resolver_opts_init(&o);
  o.servers = (char *)"127.0.0.1:9"; /* never asked: localhost is in /etc/hosts */
  tn_resolver *r;
  assert_int_equal(tn_resolver_new(&loop, &o, NULL, &r), 0);
  tn_dns_req req;
  memset(&req, 0, sizeof(req));
  if (tn_resolver_lookup(r, &req, "localhost", NULL) != 1 || req.status != 0) {
    tn_resolver_cancel(&req);
    close_resolver(&loop, r);
    ares_library_cleanup();
    skip(); /* no localhost in this host's /etc/hosts */
  }
  allocations = 0;
  counting = true;
  int rc = tn_resolver_lookup(r, &req, "localhost", NULL);
  counting = false;
  assert_int_equal(rc, 1);
  assert_int_equal(req.status, 0);
  assert_true(req.answer.n >= 1);
  assert_int_equal(allocations, 0);
  tn_resolver_stats st;
  tn_resolver_stats_get(r, &st);
  assert_int_equal(st.hits_fresh, 1);
  assert_int_equal(st.cache_entries, 1);
  assert_int_equal(st.duration_count, 0); /* no server was asked */

  bool flushed = true;
  o.timeout_ms = 1000;
  assert_int_equal(tn_resolver_reconfigure(r, &o, &flushed), 0);
  assert_false(flushed);
  tn_resolver_stats_get(r, &st);
  assert_int_equal(st.cache_entries, 1);
  o.servers = (char *)"127.0.0.1:10";
  assert_int_equal(tn_resolver_reconfigure(r, &o, &flushed), 0);
  assert_true(flushed);
  tn_resolver_stats_get(r, &st);
  assert_int_equal(st.cache_entries, 0);
  assert_string_equal(tn_resolver_servers(r), "127.0.0.1:10");
  o.servers = (char *)"not an address";
  assert_int_equal(tn_resolver_reconfigure(r, &o, &flushed), TN_EINVAL);
  assert_string_equal(tn_resolver_servers(r), "127.0.0.1:10"); /* nothing changed */
  close_resolver(&loop, r);
  ares_library_cleanup();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fresh_until_ttl),
      cmocka_unit_test(stale_only_when_asked_and_within_window),
      cmocka_unit_test(negative_for_its_ttl_never_stale),
      cmocka_unit_test(lru_evicts_least_recently_used),
      cmocka_unit_test(names_without_case_and_replaced),
      cmocka_unit_test(many_addresses_kept),
      cmocka_unit_test(size_zero_and_ttl_zero_keep_nothing),
      cmocka_unit_test(cache_get_allocates_nothing),
      cmocka_unit_test(resolver_hit_allocates_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
