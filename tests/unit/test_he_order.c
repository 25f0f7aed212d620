/* Unit tests for base/he_order.c: the order of Happy Eyeballs connection
 * attempts (RFC 8305 4) the tunnel engine and the CSC-1 client both use. */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/he_order.h"

#define SIX AF_INET6
#define FOUR AF_INET

/* Orders families[0..n) and checks the result against want[0..n). */
static void check(const sa_family_t *families, size_t n, const size_t *want) {
  size_t order[16];
  memset(order, 0xff, sizeof(order));
  base_he_order(families, n, order);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(order[i], want[i]);
  assert_int_equal(order[n], (size_t)-1); /* nothing written past n */
}

static void alternates_from_the_first_family(void **state) {
  /* AAAA first (RFC 6724 preferred it): v6, v4, v6, v4, ... */
  const sa_family_t a[] = {SIX, SIX, SIX, FOUR, FOUR};
  check(a, 5, (const size_t[]){0, 3, 1, 4, 2});
  /* A first: the IPv4 address leads. */
  const sa_family_t b[] = {FOUR, FOUR, SIX};
  check(b, 3, (const size_t[]){0, 2, 1});
}

static void keeps_the_resolver_order_within_a_family(void **state) {
  const sa_family_t a[] = {SIX, FOUR, FOUR, SIX, FOUR, SIX};
  check(a, 6, (const size_t[]){0, 1, 3, 2, 5, 4});
}

static void one_family_runs_out(void **state) {
  const sa_family_t a[] = {FOUR, SIX, FOUR, FOUR, FOUR};
  check(a, 5, (const size_t[]){0, 1, 2, 3, 4});
  const sa_family_t b[] = {SIX, SIX, SIX};
  check(b, 3, (const size_t[]){0, 1, 2});
}

static void edge_sizes(void **state) {
  size_t order[2] = {7, 7};
  base_he_order(NULL, 0, order); /* nothing to order: nothing read or written */
  assert_int_equal(order[0], 7);
  const sa_family_t one[] = {SIX};
  check(one, 1, (const size_t[]){0});
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(alternates_from_the_first_family),
      cmocka_unit_test(keeps_the_resolver_order_within_a_family),
      cmocka_unit_test(one_family_runs_out),
      cmocka_unit_test(edge_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
