/* Unit tests for tunnel/dns_cache.c: TTL, the stale window (served only when
 * asked for), negative entries, LRU eviction at cache_size, names compared
 * without case, replacement, a cache of size 0. The clock is an argument. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "tunnel/dns_cache.h"
#include "tunnel/error.h"

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
  tn_dns_cache_put(c, "x.example", &a, 0, 1000, 0); /* /etc/hosts: no TTL */
  assert_int_equal(tn_dns_cache_count(c), 0);
  tn_dns_cache_free(c);
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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
