/* Unit tests for tunnel/udp_target.c: RFC 9298's default URI template, what
 * is not the template (404) and what is but holds a bad value (400). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tunnel/error.h"
#include "tunnel/udp_target.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define P TN_UDP_PATH_PREFIX

static void test_accepted(void **state) {
  (void)state;
  static const struct {
    const char *path;
    tn_host_kind kind;
    const char *host;
    uint16_t port;
  } cases[] = {
      {P "media.mc.example/10000/", TN_HOST_NAME, "media.mc.example", 10000},
      {P "Media.MC.Example./5004/", TN_HOST_NAME, "media.mc.example", 5004},
      {P "192.0.2.7/443/", TN_HOST_IPV4, "192.0.2.7", 443},
      {P "2001%3Adb8%3A%3A1/5004/", TN_HOST_IPV6, "2001:db8::1", 5004},
      {P "2001%3adb8%3a%3a1/5004/", TN_HOST_IPV6, "2001:db8::1", 5004},
      {P "%3A%3A1/1/", TN_HOST_IPV6, "::1", 1},
      {P "2001:db8::1/65535/", TN_HOST_IPV6, "2001:db8::1", 65535},
      {P "%6Dedia.example/80/", TN_HOST_NAME, "media.example", 80},
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_authority a;
    assert_int_equal(tn_udp_target_parse(cases[i].path, strlen(cases[i].path), &a), 0);
    assert_int_equal(a.kind, cases[i].kind);
    assert_string_equal(a.host, cases[i].host);
    assert_int_equal(a.port, cases[i].port);
  }
}

/* The path is not the template: 404. */
static void test_not_the_template(void **state) {
  (void)state;
  static const char *const cases[] = {
      "/",
      "/.well-known/masque/udp/",
      "/.well-known/masque/udp",
      "/.well-known/masque/ip/h/443/",
      "/.well-known/masque/UDP/h/443/",
      "/well-known/masque/udp/h/443/",
      P "h/443",       /* no final '/' */
      P "h/443/x",     /* more after it */
      P "h/443/?a=b",  /* a query */
      P "h/443//",
      P "h/",
      P "h//",
      P "/443/",
      P "h/4/4/",
      "x" P "h/443/",
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_authority a;
    memset(&a, 0xa5, sizeof(a));
    assert_int_equal(tn_udp_target_parse(cases[i], strlen(cases[i]), &a), TN_ENOENT);
    assert_int_equal(a.port, 0xa5a5); /* untouched */
  }
}

/* The template, with a bad value: 400. */
static void test_bad_values(void **state) {
  (void)state;
  static const char *const cases[] = {
      P "h/0/",
      P "h/65536/",
      P "h/443x/",
      P "h/-1/",
      P "h/%34%34%33/",     /* an encoded port is not decimal digits */
      P "exa%00mple/443/",  /* NUL once decoded */
      P "exa%2Fmple/443/",  /* '/' once decoded */
      P "a%40b/443/",       /* '@' */
      P "h%/443/",
      P "h%4/443/",
      P "h%zz/443/",
      P "%5B%3A%3A1%5D/443/", /* brackets */
      P "fe80%3A%3A1%25eth0/443/", /* a zone id */
      P "127.1/443/",
      P "2130706433/443/",
      P "a%20b/443/",
      P "a:b/443/",
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_authority a;
    memset(&a, 0xa5, sizeof(a));
    assert_int_equal(tn_udp_target_parse(cases[i], strlen(cases[i]), &a), TN_EINVAL);
    assert_int_equal(a.port, 0xa5a5);
  }
}

static void test_long_host(void **state) {
  (void)state;
  char path[1024];
  char name[300];
  for (size_t len = 250; len <= 260; len++) {
    for (size_t i = 0; i < len; i++)
      name[i] = (i % 50 == 49) ? '.' : 'a';
    name[len] = '\0';
    snprintf(path, sizeof(path), P "%s/443/", name);
    tn_authority a;
    assert_int_equal(tn_udp_target_parse(path, strlen(path), &a), len <= 253 ? 0 : TN_EINVAL);
  }
  /* the whole path need not be NUL-terminated: only len bytes are read */
  const char *p = P "h/443/trailing";
  tn_authority a;
  assert_int_equal(tn_udp_target_parse(p, strlen(P "h/443/"), &a), 0);
  assert_string_equal(a.host, "h");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accepted),
      cmocka_unit_test(test_not_the_template),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_long_host),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
