/* Unit tests for the engine's internal pieces: the TLS record header check
 * behind require_tls, and the per-client tunnel table behind
 * max_tunnels_per_client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tunnel/clients.h"
#include "tunnel/lifecycle.h"

static bool check(const char *bytes, size_t n) {
  tn_tunnel t;
  memset(&t, 0, sizeof(t));
  return tn__tls_check(&t, bytes, n);
}

static void tls_check_accepts_handshake_records(void **state) {
  (void)state;
  assert_true(check("\x16\x03\x01\x02\x00", 5)); /* typical ClientHello */
  assert_true(check("\x16\x03\x03\x00\x01", 5));
  assert_true(check("\x16\x03\x00\x40\x00", 5)); /* 2^14: the maximum */
  assert_true(check("\x16\x03\x04\x01\x00", 5));
  assert_true(check("\x16\x03", 2)); /* a valid prefix so far */
}

static void tls_check_refuses_everything_else(void **state) {
  (void)state;
  assert_false(check("GET / HTTP/1.1\r\n", 16));
  assert_false(check("\x17\x03\x03\x00\x10", 5)); /* application data first */
  assert_false(check("\x15\x03\x03\x00\x02", 5)); /* alert */
  assert_false(check("\x16\x02\x00\x00\x10", 5)); /* SSLv2-ish major */
  assert_false(check("\x16\x03\x05\x00\x10", 5)); /* unknown minor */
  assert_false(check("\x16\x03\x01\x00\x00", 5)); /* empty record */
  assert_false(check("\x16\x03\x01\x40\x01", 5)); /* 2^14 + 1 */
  assert_false(check("\x16\x03\x01\x41\x00", 5));
  assert_false(check("PRI * HTTP/2.0", 14));
}

static void tls_check_is_incremental(void **state) {
  (void)state;
  const char good[] = "\x16\x03\x01\x02\x00";
  tn_tunnel t;
  memset(&t, 0, sizeof(t));
  for (size_t i = 0; i < 5; i++)
    assert_true(tn__tls_check(&t, good + i, 1));
  assert_int_equal(t.tls_checked, 5);
  /* After the header, payload bytes are not looked at. */
  assert_true(tn__tls_check(&t, "anything", 8));

  const char bad[] = "\x16\x03\x01\x40\x01";
  memset(&t, 0, sizeof(t));
  for (size_t i = 0; i < 4; i++)
    assert_true(tn__tls_check(&t, bad + i, 1));
  assert_false(tn__tls_check(&t, bad + 4, 1));
}

static struct sockaddr_in v4(const char *ip, uint16_t port) {
  struct sockaddr_in sa;
  uv_ip4_addr(ip, port, &sa);
  return sa;
}

static void clients_count_per_address_not_port(void **state) {
  (void)state;
  tn_clients *c = tn__clients_new();
  assert_non_null(c);
  struct sockaddr_in a1 = v4("192.168.50.10", 1000), a2 = v4("192.168.50.10", 2000),
                     b = v4("192.168.50.11", 1000);
  struct sockaddr_in6 v6;
  uv_ip6_addr("fd00::10", 1000, &v6);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&a1, NULL), 1);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&a2, NULL), 2);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&b, NULL), 1);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&v6, NULL), 1);
  assert_int_equal(tn__clients_active(c), 3);
  assert_int_equal(tn__clients_get(c, (struct sockaddr *)&a2, NULL), 2);
  tn__clients_remove(c, (struct sockaddr *)&a1, NULL);
  assert_int_equal(tn__clients_get(c, (struct sockaddr *)&a1, NULL), 1);
  assert_int_equal(tn__clients_active(c), 3);
  tn__clients_remove(c, (struct sockaddr *)&a2, NULL);
  assert_int_equal(tn__clients_get(c, (struct sockaddr *)&a1, NULL), 0);
  assert_int_equal(tn__clients_active(c), 2);
  /* Removing an unknown client is harmless. */
  tn__clients_remove(c, (struct sockaddr *)&a1, NULL);
  assert_int_equal(tn__clients_active(c), 2);
  tn__clients_free(c);
}

static void clients_by_subject_share_no_address(void **state) {
  (void)state;
  tn_clients *c = tn__clients_new();
  struct sockaddr_in nat = v4("192.168.50.1", 1000);
  const char *dev1 = "CN=radio-17,O=Fire", *dev2 = "CN=radio-18,O=Fire";
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&nat, dev1), 1);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&nat, dev2), 1);
  assert_int_equal(tn__clients_add(c, (struct sockaddr *)&nat, dev1), 2);
  assert_int_equal(tn__clients_get(c, (struct sockaddr *)&nat, NULL), 0);
  assert_int_equal(tn__clients_active(c), 2);
  tn__clients_remove(c, (struct sockaddr *)&nat, dev1);
  tn__clients_remove(c, (struct sockaddr *)&nat, dev1);
  assert_int_equal(tn__clients_active(c), 1);
  tn__clients_free(c);
}

static void clients_survive_many_addresses(void **state) {
  (void)state;
  tn_clients *c = tn__clients_new();
  char ip[32];
  for (int i = 0; i < 20000; i++) {
    snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    struct sockaddr_in sa = v4(ip, 1);
    assert_int_equal(tn__clients_add(c, (struct sockaddr *)&sa, NULL), 1);
  }
  assert_int_equal(tn__clients_active(c), 20000);
  for (int i = 0; i < 20000; i += 2) {
    snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    struct sockaddr_in sa = v4(ip, 1);
    tn__clients_remove(c, (struct sockaddr *)&sa, NULL);
  }
  assert_int_equal(tn__clients_active(c), 10000);
  tn__clients_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tls_check_accepts_handshake_records),
      cmocka_unit_test(tls_check_refuses_everything_else),
      cmocka_unit_test(tls_check_is_incremental),
      cmocka_unit_test(clients_count_per_address_not_port),
      cmocka_unit_test(clients_by_subject_share_no_address),
      cmocka_unit_test(clients_survive_many_addresses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
