/* Unit tests for the [idm] section, state_dir and allow_when_authorized in
 * gateway/config.c: every bad value is a FILE:LINE error. */
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
#include "tunnel/error.h"

#define TUNNEL "[tunnel]\nlisten = 127.0.0.1:3128\n"                      /* lines 1-2 */
#define IDM "[idm]\nissuer = https://idms.mc.test\nclient_id = mcgw-17\n" /* lines 3-5 */

typedef struct fixture {
  char dir[64];
  char secret[128];
  char loose[128];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/mcgw-cfg-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->secret, sizeof f->secret, "%s/secret", f->dir);
  snprintf(f->loose, sizeof f->loose, "%s/loose", f->dir);
  const char *paths[] = {f->secret, f->loose};
  for (int i = 0; i < 2; i++) {
    FILE *fp = fopen(paths[i], "w");
    fputs("s3cr3t\n", fp);
    fclose(fp);
  }
  assert_int_equal(chmod(f->secret, 0600), 0);
  assert_int_equal(chmod(f->loose, 0640), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  unlink(f->secret);
  unlink(f->loose);
  rmdir(f->dir);
  free(f);
  return 0;
}

typedef struct loaded {
  int rc;
  gw_config cfg;
  gw_config_errors errs;
} loaded;

static void load(loaded *l, const char *text) {
  memset(l, 0, sizeof *l);
  l->rc = gw_config_load_string("t.ini", text, &l->cfg, &l->errs);
}

static void unload(loaded *l) {
  gw_config_free(&l->cfg);
  gw_config_errors_free(&l->errs);
}

static void expect_errors(const char *text, const char *const *want, size_t n) {
  loaded l;
  load(&l, text);
  if (l.errs.n != n)
    for (size_t i = 0; i < l.errs.n; i++)
      print_message("  got: %s\n", l.errs.msgs[i]);
  assert_int_equal(l.rc, TN_EINVAL);
  assert_int_equal(l.errs.n, n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(l.errs.msgs[i], want[i]);
  unload(&l);
}

static void no_idm_section_is_a_plain_relay(void **state) {
  loaded l;
  load(&l, TUNNEL);
  assert_int_equal(l.rc, 0);
  assert_false(l.cfg.idm.enabled);
  assert_string_equal(l.cfg.state_dir, "/var/lib/mcgw");
  unload(&l);
}

static void full_idm_section(void **state) {
  fixture *f = *state;
  char text[2048];
  snprintf(text, sizeof text,
           "[gateway]\nstate_dir = /tmp/mcgw-state\n" TUNNEL
           "allow = idms.mc.test:443\nallow_when_authorized = *.mc.test:443\n"
           "allow_when_authorized = kms.mc.test:8443\n"
           "[idm]\nissuer = https://idms.mc.test\n"
           "authorization_endpoint = https://authz.idms.mc.test/auth\n"
           "token_endpoint = https://token.idms.mc.test:8443/token\n"
           "jwks_uri = https://idms.mc.test/jwks\n"
           "device_authorization_endpoint = https://token.idms.mc.test/device\n"
           "client_id = mcgw-vehicle-17\nclient_auth = client_secret_basic\n"
           "client_secret_file = %s\nredirect_uri = http://127.0.0.1:9090/callback\n"
           "scope = openid 3gpp:mc:ptt_service\nacr_values =\nca_file = /dev/null\n"
           "refresh_before = 90s\nlogin = device\n",
           f->secret);
  loaded l;
  load(&l, text);
  for (size_t i = 0; i < l.errs.n; i++)
    print_message("  got: %s\n", l.errs.msgs[i]);
  assert_int_equal(l.rc, 0);
  const gw_idm_config *m = &l.cfg.idm;
  assert_true(m->enabled);
  assert_string_equal(l.cfg.state_dir, "/tmp/mcgw-state");
  assert_string_equal(m->issuer, "https://idms.mc.test");
  assert_string_equal(m->token_endpoint, "https://token.idms.mc.test:8443/token");
  assert_int_equal(m->client_auth, CSC1_AUTH_SECRET_BASIC);
  assert_string_equal(m->client_secret_file, f->secret);
  assert_string_equal(m->acr_values, "");
  assert_int_equal(m->refresh_before_ms, 90000);
  assert_int_equal(m->login, GW_IDM_LOGIN_DEVICE);
  const tn_policy *p = &l.cfg.tunnel.policy;
  assert_int_equal(p->n_rules, 3);
  assert_false(p->rules[0].when_authorized);
  assert_true(p->rules[1].when_authorized);
  assert_true(p->rules[2].when_authorized);
  unload(&l);
}

static void defaults(void **state) {
  loaded l;
  load(&l, TUNNEL IDM);
  assert_int_equal(l.rc, 0);
  assert_string_equal(l.cfg.idm.scope, "openid");
  assert_int_equal(l.cfg.idm.client_auth, CSC1_AUTH_NONE);
  assert_int_equal(l.cfg.idm.login, GW_IDM_LOGIN_BROWSER);
  assert_int_equal(l.cfg.idm.refresh_before_ms, 60000);
  assert_null(l.cfg.idm.redirect_uri);
  assert_null(l.cfg.idm.ca_file);
  assert_null(l.cfg.idm.revocation_endpoint); /* from discovery */
  assert_null(l.cfg.idm.required_scope);      /* the 3gpp:mc:* scopes of scope */
  unload(&l);
  load(&l, TUNNEL IDM "revocation_endpoint = https://idms.mc.test/revoke\n"
                      "required_scope = 3gpp:mc:ptt_service\n");
  assert_int_equal(l.rc, 0);
  assert_string_equal(l.cfg.idm.revocation_endpoint, "https://idms.mc.test/revoke");
  assert_string_equal(l.cfg.idm.required_scope, "3gpp:mc:ptt_service");
  unload(&l);
  load(&l, TUNNEL IDM "revocation_endpoint = http://idms.mc.test/revoke\n");
  assert_int_not_equal(l.rc, 0);
  unload(&l);
}

static void bad_values_have_lines(void **state) {
  static const char *const want[] = {
      "t.ini:5: issuer: must be an https:// URL (CSC-1 is always TLS), got 'http://idms.mc.test'",
      "t.ini:6: token_endpoint: URL must not contain user info (user@host), got "
      "'https://u@idms.mc.test/token'",
      "t.ini:7: client_auth: expected none, client_secret_basic, client_secret_post or "
      "private_key_jwt, got 'magic'",
      "t.ini:8: scope: must contain openid (CSC-1 is OpenID Connect), got '3gpp:mc:ptt_service'",
      "t.ini:9: login: expected browser or device, got 'phone'",
      "t.ini:10: refresh_before: expected a duration like 500ms, 10s, 5m or 1h, got '60'",
      "t.ini:11: ca_file: cannot read '/nonexistent/ca.pem': No such file or directory",
      "t.ini:12: jwks_uri: URL must not have a #fragment, got 'https://idms.mc.test/jwks#x'",
      "t.ini:13: unknown key 'client_secret' in [idm]",
      "t.ini:14: duplicate key 'client_id' (first set on line 4)",
  };
  expect_errors(TUNNEL "[idm]\nclient_id = x\nissuer = http://idms.mc.test\n"
                       "token_endpoint = https://u@idms.mc.test/token\n"
                       "client_auth = magic\nscope = 3gpp:mc:ptt_service\nlogin = phone\n"
                       "refresh_before = 60\nca_file = /nonexistent/ca.pem\n"
                       "jwks_uri = https://idms.mc.test/jwks#x\nclient_secret = hunter2\n"
                       "client_id = y\n",
                want, sizeof want / sizeof want[0]);
}

static void missing_issuer_and_client_id(void **state) {
  static const char *const want[] = {"t.ini:3: [idm] has no issuer",
                                     "t.ini:3: [idm] has no client_id"};
  expect_errors(TUNNEL "[idm]\nscope = openid\n", want, 2);
}

/* A client secret readable by others is an error that says how to fix it. */
static void secret_file_modes(void **state) {
  fixture *f = *state;
  char text[1024], want0[512];
  snprintf(text, sizeof text,
           TUNNEL IDM "client_auth = client_secret_post\n"
                      "client_secret_file = %s\n",
           f->loose);
  snprintf(want0, sizeof want0,
           "t.ini:7: client_secret_file: '%s' is accessible by group or others (mode 0640); it "
           "must be 0600 or stricter (chmod 600 '%s')",
           f->loose, f->loose);
  const char *want[] = {want0};
  expect_errors(text, want, 1);
  assert_int_equal(chmod(f->loose, 0400), 0);
  loaded l;
  load(&l, text);
  assert_int_equal(l.rc, 0);
  unload(&l);
  snprintf(text, sizeof text,
           TUNNEL IDM "client_auth = client_secret_basic\n"
                      "client_secret_file = %s/none\n",
           f->dir);
  snprintf(want0, sizeof want0,
           "t.ini:7: client_secret_file: cannot read '%s/none': No such file or directory", f->dir);
  expect_errors(text, want, 1);
}

static void combinations(void **state) {
  fixture *f = *state;
  char text[1024];
  static const char *const basic[] = {"t.ini:6: client_auth = client_secret_basic needs "
                                      "client_secret_file"};
  expect_errors(TUNNEL IDM "client_auth = client_secret_basic\n", basic, 1);
  static const char *const pkjwt[] = {"t.ini:6: client_auth = private_key_jwt needs client_key"};
  expect_errors(TUNNEL IDM "client_auth = private_key_jwt\n", pkjwt, 1);
  snprintf(text, sizeof text, TUNNEL IDM "client_secret_file = %s\n", f->secret);
  static const char *const unused[] = {"t.ini:6: client_secret_file is set but client_auth is "
                                       "not client_secret_basic or client_secret_post"};
  expect_errors(text, unused, 1);
  snprintf(text, sizeof text, TUNNEL IDM "tls_key = %s\n", f->secret);
  static const char *const mtls[] = {"t.ini:6: tls_cert and tls_key go together (mutual TLS "
                                     "to the IdMS needs both)"};
  expect_errors(text, mtls, 1);
  static const char *const noidm[] = {"t.ini:3: allow_when_authorized needs an [idm] section "
                                      "(without one the gateway is never authorized, so the rule "
                                      "could never match)"};
  expect_errors(TUNNEL "allow_when_authorized = *.mc.test:443\n", noidm, 1);
  loaded l; /* a bad rule is reported like an allow rule, on its line */
  load(&l, TUNNEL "allow_when_authorized = *:443\n" IDM);
  assert_int_equal(l.rc, TN_EINVAL);
  assert_int_equal(l.errs.n, 1);
  assert_non_null(strstr(l.errs.msgs[0], "t.ini:3: allow_when_authorized: "));
  unload(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(no_idm_section_is_a_plain_relay),
      cmocka_unit_test_setup_teardown(full_idm_section, setup, teardown),
      cmocka_unit_test(defaults),
      cmocka_unit_test(bad_values_have_lines),
      cmocka_unit_test(missing_issuer_and_client_id),
      cmocka_unit_test_setup_teardown(secret_file_modes, setup, teardown),
      cmocka_unit_test_setup_teardown(combinations, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
