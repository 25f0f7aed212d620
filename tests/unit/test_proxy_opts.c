/* Unit tests for device/proxy_opts.c: the proxy options both device tools
 * take, parsed with getopt_long as the tools do, their usage errors and the
 * key file check. Links mcx_proxy_opts alone (no CSC-1), as mcx-media does. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device/proxy_opts.h"

enum { O_OWN = 256 };

/* Parses argv as a tool would: the shared entries plus one of its own.
 * Returns how many of the tool's own options were seen. */
static int parse(int argc, char **argv, mcx_proxy_opts *p) {
  static const struct option longs[] = {
      MCX_PROXY_LONGOPTS, {"own", no_argument, NULL, O_OWN}, {NULL, 0, NULL, 0}};
  int c, own = 0;
  memset(p, 0, sizeof *p);
  optind = 0; /* GNU: a full reset before another argv */
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    if (mcx_proxy_opt(p, c, optarg))
      continue;
    assert_int_equal(c, O_OWN);
    own++;
  }
  return own;
}

static void all_options_parsed(void **state) {
  char *argv[] = {"tool",    "--proxy",        "https://gw:3129", "--own",
                  "--h2",    "--proxy-cacert", "ca.pem",          "--proxy-cert",
                  "dev.pem", "--proxy-key",    "dev.key",         NULL};
  mcx_proxy_opts p;
  assert_int_equal(parse(11, argv, &p), 1);
  assert_string_equal(p.url, "https://gw:3129");
  assert_true(p.h2);
  assert_string_equal(p.cacert, "ca.pem");
  assert_string_equal(p.cert, "dev.pem");
  assert_string_equal(p.key, "dev.key");
  assert_true(mcx_proxy_opts_tls(&p));
  assert_null(mcx_proxy_opts_usage_error(&p));
}

static void usage_errors(void **state) {
  mcx_proxy_opts p = {.url = "ftp://gw:21"};
  assert_string_equal(mcx_proxy_opts_usage_error(&p),
                      "--proxy: expected http://GW:PORT or https://GW:PORT");
  p = (mcx_proxy_opts){.url = "https://gw:3129", .cert = "dev.pem"};
  assert_string_equal(mcx_proxy_opts_usage_error(&p), "--proxy-cert and --proxy-key go together");
  p = (mcx_proxy_opts){.url = "https://gw:3129", .key = "dev.key"};
  assert_string_equal(mcx_proxy_opts_usage_error(&p), "--proxy-cert and --proxy-key go together");
  /* TLS options for a plain proxy would be silently unused. */
  p = (mcx_proxy_opts){.url = "http://gw:3128", .cacert = "ca.pem"};
  assert_non_null(strstr(mcx_proxy_opts_usage_error(&p), "need an https:// proxy"));
  p = (mcx_proxy_opts){.url = "http://gw:3128", .h2 = true};
  assert_false(mcx_proxy_opts_tls(&p));
  assert_null(mcx_proxy_opts_usage_error(&p));
  p = (mcx_proxy_opts){0}; /* no --proxy: the tool's to judge */
  assert_null(mcx_proxy_opts_usage_error(&p));
}

static void key_file_mode(void **state) {
  char path[] = "/tmp/test_proxy_opts_XXXXXX", err[512];
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  mcx_proxy_opts p = {.url = "https://gw:3129", .cert = "dev.pem", .key = path};
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(mcx_proxy_opts_check_key(&p, err, sizeof err), 0);
  assert_int_equal(chmod(path, 0640), 0);
  assert_int_equal(mcx_proxy_opts_check_key(&p, err, sizeof err), -1);
  assert_non_null(strstr(err, "accessible by group or others (mode 0640)"));
  unlink(path);
  assert_int_equal(mcx_proxy_opts_check_key(&p, err, sizeof err), -1);
  assert_non_null(strstr(err, "No such file"));
  p.key = "/tmp";
  assert_int_equal(mcx_proxy_opts_check_key(&p, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
  p.key = NULL; /* no key: nothing to check */
  assert_int_equal(mcx_proxy_opts_check_key(&p, err, sizeof err), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(all_options_parsed),
      cmocka_unit_test(usage_errors),
      cmocka_unit_test(key_file_mode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
