/* Unit tests for the ops keys of gateway/config.c: [admin] admin_token_file
 * (a 0600 file, required off loopback) and [gateway] user. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/config.h"

#define TUNNEL "[tunnel]\nlisten = 127.0.0.1:3128\n"
#define TOKEN "0123456789abcdef0123456789abcdef"

static char dir[] = "/tmp/mcgw-test-ops-config-XXXXXX";

static int setup(void **state) { return mkdtemp(dir) ? 0 : -1; }

static int teardown(void **state) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *name, const char *content, mode_t mode) {
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(content, f);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
}

/* Loads text as DIR/mcgw.ini (relative token paths resolve against DIR). */
static int load(const char *text, gw_config *cfg, gw_config_errors *errs) {
  write_file("mcgw.ini", text, 0644);
  char path[256];
  snprintf(path, sizeof(path), "%s/mcgw.ini", dir);
  memset(errs, 0, sizeof(*errs));
  return gw_config_load(path, cfg, errs);
}

static void assert_one_error(const gw_config_errors *e, const char *fragment) {
  if (e->n != 1 || !strstr(e->msgs[0], fragment))
    for (size_t i = 0; i < e->n; i++)
      print_error("got: %s\n", e->msgs[i]);
  assert_int_equal(e->n, 1);
  assert_non_null(strstr(e->msgs[0], fragment));
  assert_null(strstr(e->msgs[0], TOKEN)); /* a token never appears in a message */
}

static void test_loopback_needs_no_token(void **state) {
  gw_config cfg;
  gw_config_errors errs;
  assert_int_equal(load("[admin]\nlisten = [::1]:9090\n" TUNNEL, &cfg, &errs), 0);
  assert_null(cfg.admin_token);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_wildcard_needs_token(void **state) {
  gw_config cfg;
  gw_config_errors errs;
  assert_int_not_equal(load("[admin]\nlisten = 0.0.0.0:9090\n" TUNNEL, &cfg, &errs), 0);
  assert_one_error(&errs, "/mcgw.ini:2: listen: 0.0.0.0:9090 is not a loopback address");
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  assert_int_not_equal(load("[admin]\nlisten = 192.0.2.1:9090\n" TUNNEL, &cfg, &errs), 0);
  assert_one_error(&errs, "needs a token");
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_token_file_read(void **state) {
  gw_config cfg;
  gw_config_errors errs;
  write_file("token", TOKEN "\n", 0600);
  assert_int_equal(load("[admin]\nlisten = 0.0.0.0:9090\nadmin_token_file = token\n" TUNNEL, &cfg,
                        &errs), 0);
  assert_string_equal(cfg.admin_token, TOKEN);
  assert_non_null(strstr(cfg.admin_token_file, dir)); /* resolved against the config's dir */
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_token_file_problems(void **state) {
  static const struct {
    const char *content;
    mode_t mode;
    const char *error;
  } cases[] = {
      {TOKEN, 0640, "is accessible by group or others (mode 0640): chmod 600"},
      {TOKEN, 0604, "is accessible by group or others (mode 0604)"},
      {"short\n", 0600, "token shorter than 16 characters"},
      {"", 0600, "must hold one line"},
      {TOKEN "\n" TOKEN "\n", 0600, "must hold one line"},
      {"has spaces in the token itself", 0600, "must hold one line"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    gw_config cfg;
    gw_config_errors errs;
    write_file("bad.token", cases[i].content, cases[i].mode);
    assert_int_not_equal(
        load("[admin]\nlisten = 0.0.0.0:9090\nadmin_token_file = bad.token\n" TUNNEL, &cfg, &errs), 0);
    assert_one_error(&errs, cases[i].error);
    assert_non_null(strstr(errs.msgs[0], "/mcgw.ini:3: admin_token_file: "));
    assert_null(cfg.admin_token);
    gw_config_free(&cfg);
    gw_config_errors_free(&errs);
  }
  gw_config cfg;
  gw_config_errors errs;
  assert_int_not_equal(
      load("[admin]\nadmin_token_file = /nonexistent/mcgw.token\n" TUNNEL, &cfg, &errs), 0);
  assert_one_error(&errs, "cannot open /nonexistent/mcgw.token: No such file or directory");
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_user(void **state) {
  gw_config cfg;
  gw_config_errors errs;
  assert_int_equal(load("[gateway]\nuser = mcgw\n" TUNNEL, &cfg, &errs), 0);
  assert_string_equal(cfg.user, "mcgw");
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  assert_int_not_equal(load("[gateway]\nuser = Root;rm\n" TUNNEL, &cfg, &errs), 0);
  assert_one_error(&errs, ":2: user: expected a user name like mcgw, got 'Root;rm'");
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_is_loopback(void **state) {
  gw_config cfg;
  gw_config_errors errs;
  assert_int_equal(load(TUNNEL, &cfg, &errs), 0);
  assert_true(gw_config_admin_is_loopback(&cfg.admin_listen)); /* default 127.0.0.1:9090 */
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loopback_needs_no_token), cmocka_unit_test(test_wildcard_needs_token),
      cmocka_unit_test(test_token_file_read),         cmocka_unit_test(test_token_file_problems),
      cmocka_unit_test(test_user),                    cmocka_unit_test(test_is_loopback),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
