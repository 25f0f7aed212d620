/* Unit tests for gateway/config.c: the INI config loader. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "gateway/config.h"
#include "tunnel/error.h"
#include "tunnel/policy.h"

#define BASE "[tunnel]\nlisten = 127.0.0.1:3128\n" /* the smallest valid config */

typedef struct loaded {
  int rc;
  gw_config cfg;
  gw_config_errors errs;
} loaded;

static loaded *load(const char *text) {
  loaded *l = calloc(1, sizeof *l);
  assert_non_null(l);
  l->rc = gw_config_load_string("t.ini", text, &l->cfg, &l->errs);
  return l;
}

static void unload(loaded *l) {
  gw_config_free(&l->cfg);
  gw_config_errors_free(&l->errs);
  free(l);
}

static void dump_errors(const gw_config_errors *e) {
  for (size_t i = 0; i < e->n; i++)
    print_message("  got: %s\n", e->msgs[i]);
}

/* The errors are exactly want[0..n), in order. */
static void assert_errors(const gw_config_errors *e, const char *const *want, size_t n) {
  if (e->n != n)
    dump_errors(e);
  assert_int_equal(e->n, n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(e->msgs[i], want[i]);
}

static void assert_valid(const loaded *l) {
  if (l->rc != 0)
    dump_errors(&l->errs);
  assert_int_equal(l->rc, 0);
  assert_int_equal(l->errs.n, 0);
}

/* Loading text fails with exactly one message, want. */
static void expect_one_error(const char *text, const char *want) {
  loaded *l = load(text);
  assert_int_equal(l->rc, TN_EINVAL);
  assert_errors(&l->errs, &want, 1);
  unload(l);
}

static void assert_sin(const struct sockaddr_storage *ss, const char *ip, uint16_t port) {
  const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
  struct in_addr want;
  assert_int_equal(sin->sin_family, AF_INET);
  assert_int_equal(ntohs(sin->sin_port), port);
  assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
  assert_memory_equal(&sin->sin_addr, &want, sizeof want);
}

static void assert_sin6(const struct sockaddr_storage *ss, const char *ip, uint16_t port) {
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
  struct in6_addr want;
  assert_int_equal(sin6->sin6_family, AF_INET6);
  assert_int_equal(ntohs(sin6->sin6_port), port);
  assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
  assert_memory_equal(&sin6->sin6_addr, &want, sizeof want);
}

static char *repeat(char ch, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, ch, n);
  s[n] = '\0';
  return s;
}

/* ---- valid files ------------------------------------------------------- */

static void test_full_config(void **state) {
  (void)state;
  loaded *l = load("; full example\n"
                   "# hash comment\n"
                   "[gateway]\n"
                   "log_level = debug          ; inline comment\n"
                   "log_format = json\n"
                   "\n"
                   "[admin]\n"
                   "listen = 127.0.0.2:9191\n"
                   "[tunnel]\n"
                   "listen = 127.0.0.1:3128\n"
                   "allow = idms.example.org:443\n"
                   "allow_private = yes\n"
                   "require_tls = no\n"
                   "max_tunnels = 500\n"
                   "max_tunnels_per_client = 20\n"
                   "header_timeout = 1500ms\n"
                   "connect_timeout = 3s\n"
                   "idle_timeout = 5m\n"
                   "drain_timeout = 1h\n");
  assert_valid(l);
  assert_string_equal(l->cfg.path, "t.ini");
  assert_int_equal(l->cfg.log_level, TN_LOG_DEBUG);
  assert_int_equal(l->cfg.log_format, TN_LOG_JSON);
  assert_true(l->cfg.admin_enabled);
  assert_sin(&l->cfg.admin_listen, "127.0.0.2", 9191);
  const tn_engine_opts *o = &l->cfg.tunnel;
  assert_int_equal(o->n_listen, 1);
  assert_sin(&o->listen[0], "127.0.0.1", 3128);
  assert_int_equal(o->policy.n_rules, 1);
  assert_int_equal(o->policy.rules[0].kind, TN_RULE_HOST);
  assert_string_equal(o->policy.rules[0].host, "idms.example.org");
  assert_int_equal(o->policy.rules[0].port, 443);
  assert_true(o->policy.allow_private);
  assert_false(o->require_tls);
  assert_int_equal(o->max_tunnels, 500);
  assert_int_equal(o->max_tunnels_per_client, 20);
  assert_int_equal(o->header_timeout_ms, 1500);
  assert_int_equal(o->connect_timeout_ms, 3000);
  assert_int_equal(o->idle_timeout_ms, 300000);
  assert_int_equal(o->drain_timeout_ms, 3600000);
  unload(l);
}

/* [tunnel] splice, and MCGW_SPLICE over it. */
static void test_splice_mode(void **state) {
  (void)state;
  unsetenv("MCGW_SPLICE");
  const char *names[] = {"auto", "off", "always"};
  const tn_splice_mode modes[] = {TN_SPLICE_AUTO, TN_SPLICE_OFF, TN_SPLICE_ALWAYS};
  for (size_t i = 0; i < 3; i++) {
    char text[256];
    snprintf(text, sizeof text, BASE "splice = %s\n", names[i]);
    loaded *l = load(text);
    assert_valid(l);
    assert_int_equal(l->cfg.tunnel.splice, modes[i]);
    assert_string_equal(tn_splice_mode_name(modes[i]), names[i]);
    unload(l);
  }
  setenv("MCGW_SPLICE", "off", 1);
  loaded *l = load(BASE "splice = always\n");
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.splice, TN_SPLICE_OFF);
  unload(l);
  setenv("MCGW_SPLICE", "sometimes", 1);
  l = load(BASE);
  assert_int_equal(l->errs.n, 1);
  assert_string_equal(l->errs.msgs[0],
                      "t.ini: environment MCGW_SPLICE='sometimes': expected auto, always or off");
  unload(l);
  unsetenv("MCGW_SPLICE");
}

static void test_defaults(void **state) {
  (void)state;
  unsetenv("MCGW_SPLICE"); /* CI sets it for the integration tests */
  loaded *l = load(BASE);
  tn_engine_opts def;
  tn_engine_opts_init(&def);
  assert_valid(l);
  assert_int_equal(l->cfg.log_level, TN_LOG_INFO);
  assert_int_equal(l->cfg.log_format, TN_LOG_TEXT);
  assert_true(l->cfg.admin_enabled);
  assert_sin(&l->cfg.admin_listen, "127.0.0.1", 9090);
  const tn_engine_opts *o = &l->cfg.tunnel;
  assert_int_equal(o->policy.n_rules, 0);
  assert_false(o->policy.allow_private);
  assert_int_equal(o->require_tls, def.require_tls);
  assert_int_equal(o->max_tunnels, def.max_tunnels);
  assert_int_equal(o->max_tunnels_per_client, def.max_tunnels_per_client);
  assert_int_equal(o->header_timeout_ms, def.header_timeout_ms);
  assert_int_equal(o->connect_timeout_ms, def.connect_timeout_ms);
  assert_int_equal(o->idle_timeout_ms, def.idle_timeout_ms);
  assert_int_equal(o->drain_timeout_ms, def.drain_timeout_ms);
  /* and the documented values of those defaults */
  assert_true(o->require_tls);
  assert_int_equal(o->max_tunnels, 10000);
  assert_int_equal(o->max_tunnels_per_client, 256);
  assert_int_equal(o->header_timeout_ms, 10000);
  assert_int_equal(o->idle_timeout_ms, 30 * 60 * 1000);
  assert_int_equal(o->splice, TN_SPLICE_AUTO);
  assert_int_equal(o->new_tunnels_per_client.per_s, 20);
  assert_int_equal(o->new_tunnels_per_client.burst, 50);
  assert_int_equal(o->new_upstream_per_target.per_s, 200);
  assert_int_equal(o->h2_max_refused_per_connection, 100);
  assert_int_equal(o->n_rate_exempt, 0);
  assert_false(l->cfg.allow_public_suffix);
  assert_int_equal(l->cfg.warnings.n, 0);
  tn_engine_opts_free(&def);
  unload(l);
}

/* The new-tunnel rates and rate_exempt (issue 18). */
static void test_rate_keys(void **state) {
  (void)state;
  loaded *l = load(BASE "max_new_tunnels_per_client = 5/s\n"
                        "new_tunnels_burst = 7\n"
                        "max_new_upstream_per_target = 0/s\n"
                        "h2_max_refused_per_connection = 0\n"
                        "rate_exempt = 192.168.50.0/28\n"
                        "rate_exempt = CN=cam 7,O=Fire\n");
  assert_valid(l);
  const tn_engine_opts *o = &l->cfg.tunnel;
  assert_int_equal(o->new_tunnels_per_client.per_s, 5);
  assert_int_equal(o->new_tunnels_per_client.burst, 7);
  assert_int_equal(o->new_upstream_per_target.per_s, 0);
  assert_int_equal(o->h2_max_refused_per_connection, 0);
  assert_int_equal(o->n_rate_exempt, 2);
  assert_false(o->rate_exempt[0].is_subject);
  assert_int_equal(o->rate_exempt[0].cidr.prefix, 28);
  assert_true(o->rate_exempt[1].is_subject);
  assert_string_equal(o->rate_exempt[1].subject, "CN=cam 7,O=Fire");
  assert_int_equal(l->cfg.warnings.n, 0);
  tn_engine_opts copy;
  assert_int_equal(tn_engine_opts_copy(&copy, o), 0); /* deep copy of the exemptions */
  assert_string_equal(copy.rate_exempt[1].subject, "CN=cam 7,O=Fire");
  tn_engine_opts_free(&copy);
  unload(l);
  l = load(BASE "max_new_upstream_per_target = 300/s\nrate_exempt = *\n");
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.new_upstream_per_target.burst, 300);
  assert_true(l->cfg.tunnel.rate_exempt[0].all);
  assert_int_equal(l->cfg.warnings.n, 1);
  assert_non_null(strstr(l->cfg.warnings.msgs[0], "t.ini:4: warning: rate_exempt = *"));
  unload(l);
  expect_one_error(BASE "max_new_tunnels_per_client = 20/m\n",
                   "t.ini:3: max_new_tunnels_per_client: expected a rate like 20/s (0/s: no "
                   "limit), got '20/m'");
  expect_one_error(BASE "max_new_upstream_per_target = 2000000/s\n",
                   "t.ini:3: max_new_upstream_per_target: expected a rate from 0/s (no limit) "
                   "to 1000000/s, got '2000000/s'");
}

static void test_repeated_listen_and_allow(void **state) {
  (void)state;
  loaded *l = load("[tunnel]\n"
                   "listen = 127.0.0.1:3128\n"
                   "allow = a.example.org:443\n"
                   "listen = [::1]:3129\n"
                   "allow = *.example.net:8443\n"
                   "allow = b.example.org:*\n"
                   "[tunnel]\n" /* a section may be reopened */
                   "listen = 0.0.0.0:0\n");
  assert_valid(l);
  const tn_engine_opts *o = &l->cfg.tunnel;
  assert_int_equal(o->n_listen, 3);
  assert_sin(&o->listen[0], "127.0.0.1", 3128);
  assert_sin6(&o->listen[1], "::1", 3129);
  assert_sin(&o->listen[2], "0.0.0.0", 0);
  assert_int_equal(o->policy.n_rules, 3);
  assert_string_equal(o->policy.rules[0].host, "a.example.org");
  assert_int_equal(o->policy.rules[1].kind, TN_RULE_SUFFIX);
  assert_int_equal(o->policy.rules[1].port, 8443);
  assert_int_equal(o->policy.rules[2].port, 0);
  unload(l);
}

static void test_booleans(void **state) {
  (void)state;
  static const struct {
    const char *v;
    bool want;
  } cases[] = {{"yes", true},  {"true", true},   {"on", true},  {"1", true},  {"YES", true},
               {"no", false},  {"false", false}, {"off", false}, {"0", false}, {"Off", false}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[128];
    snprintf(text, sizeof text, BASE "allow_private = %s\nrequire_tls = %s\n", cases[i].v,
             cases[i].v);
    loaded *l = load(text);
    assert_valid(l);
    assert_int_equal(l->cfg.tunnel.policy.allow_private, cases[i].want);
    assert_int_equal(l->cfg.tunnel.require_tls, cases[i].want);
    unload(l);
  }
}

static void test_idle_zero_disables(void **state) {
  (void)state;
  loaded *l = load(BASE "idle_timeout = 0s\ndrain_timeout = 0ms\n");
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.idle_timeout_ms, 0);
  assert_int_equal(l->cfg.tunnel.drain_timeout_ms, 0);
  unload(l);
}

static void test_admin_off_and_v6(void **state) {
  (void)state;
  loaded *l = load("[admin]\nlisten = off\n" BASE);
  assert_valid(l);
  assert_false(l->cfg.admin_enabled);
  unload(l);
  l = load("[admin]\nlisten = [::1]:9000\n" BASE);
  assert_valid(l);
  assert_true(l->cfg.admin_enabled);
  assert_sin6(&l->cfg.admin_listen, "::1", 9000);
  unload(l);
}

/* Indented lines are ordinary lines, never continuations of the previous
 * value; CRLF line ends and a UTF-8 BOM are accepted. */
static void test_layout(void **state) {
  (void)state;
  loaded *l = load("\xEF\xBB\xBF[tunnel]\r\n"
                   "  listen = 127.0.0.1:3128\r\n"
                   "    allow = a.example.org:443\r\n"
                   "\t max_tunnels=700 ; comment\r\n"
                   "  ; indented comment\r\n"
                   "   \r\n"
                   "require_tls = no"); /* no final newline */
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.n_listen, 1);
  assert_int_equal(l->cfg.tunnel.policy.n_rules, 1);
  assert_int_equal(l->cfg.tunnel.max_tunnels, 700);
  assert_false(l->cfg.tunnel.require_tls);
  unload(l);
}

static void test_longest_line_ok(void **state) {
  (void)state;
  char *pad = repeat('x', 198);
  char text[512];
  snprintf(text, sizeof text, BASE ";%s\n;%s\r\n", pad, pad); /* 199 bytes each */
  loaded *l = load(text);
  assert_valid(l);
  unload(l);
  free(pad);
}

/* ---- errors ------------------------------------------------------------ */

static void test_bad_values(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      {"[gateway]\nlog_level = loud\n" BASE,
       "t.ini:2: log_level: expected error, warn, info or debug, got 'loud'"},
      {"[gateway]\nlog_format = xml\n" BASE, "t.ini:2: log_format: expected text or json, got 'xml'"},
      {"[admin]\nlisten = localhost:9090\n" BASE,
       "t.ini:2: listen: expected a numeric address like 127.0.0.1:9090 or [::1]:9090, or off, "
       "got 'localhost:9090'"},
      {BASE "listen = 127.0.0.1\n",
       "t.ini:3: listen: expected a numeric address like 127.0.0.1:3128 or [::1]:3128, got "
       "'127.0.0.1'"},
      {BASE "require_tls = maybe\n", "t.ini:3: require_tls: expected yes or no, got 'maybe'"},
      {BASE "splice = on\n", "t.ini:3: splice: expected auto, always or off, got 'on'"},
      {BASE "allow_private = 2\n", "t.ini:3: allow_private: expected yes or no, got '2'"},
      {BASE "max_tunnels = 0\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got '0'"},
      {BASE "max_tunnels = 1000001\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got '1000001'"},
      {BASE "max_tunnels = 0x10\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got '0x10'"},
      {BASE "max_tunnels = -5\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got '-5'"},
      {BASE "max_tunnels = +5\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got '+5'"},
      {BASE "max_tunnels = 99999999999999999999999\n",
       "t.ini:3: max_tunnels: expected a whole number from 1 to 1000000, got "
       "'99999999999999999999999'"},
      {BASE "max_tunnels_per_client = 1 0\n",
       "t.ini:3: max_tunnels_per_client: expected a whole number from 1 to 1000000, got '1 0'"},
      {BASE "header_timeout = 10\n",
       "t.ini:3: header_timeout: expected a duration like 500ms, 10s, 5m or 1h, got '10'"},
      {BASE "header_timeout = 0s\n", "t.ini:3: header_timeout: must be greater than 0s, got '0s'"},
      {BASE "connect_timeout = 0ms\n",
       "t.ini:3: connect_timeout: must be greater than 0s, got '0ms'"},
      {BASE "idle_timeout = off\n",
       "t.ini:3: idle_timeout: expected a duration like 500ms, 10s, 5m or 1h, got 'off'"},
      {BASE "drain_timeout = 1d\n",
       "t.ini:3: drain_timeout: expected a duration like 500ms, 10s, 5m or 1h, got '1d'"},
      {BASE "require_tls =\n", "t.ini:3: require_tls: value must not be empty"},
      {BASE "allow = ; nothing\n", "t.ini:3: allow: value must not be empty"},
      {BASE "require_tls = \x01\xff\n",
       "t.ini:3: require_tls: expected yes or no, got '\\x01\\xff'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    expect_one_error(cases[i].text, cases[i].want);
  }
}

/* [tunnel]'s CONNECT-UDP keys: allow_udp rules (port ranges) kept apart from
 * TCP ones, the two UDP durations and sizes, and their errors. */
static void test_udp_keys(void **state) {
  (void)state;
  loaded *l = load(BASE "allow_udp = media.mc.example:10000-20000\n"
                        "allow = idms.example.org:443\n"
                        "allow_udp = 10.20.0.0/16:5000-5999\n"
                        "udp_idle_timeout = 15s\n"
                        "udp_max_payload = 1200B\n");
  assert_valid(l);
  const tn_engine_opts *o = &l->cfg.tunnel;
  assert_int_equal(o->policy.n_rules, 3);
  assert_true(o->policy.rules[0].udp);
  assert_int_equal(o->policy.rules[0].port, 10000);
  assert_int_equal(o->policy.rules[0].port_last, 20000);
  assert_false(o->policy.rules[1].udp);
  assert_true(o->policy.rules[2].udp);
  assert_int_equal(o->udp_idle_timeout_ms, 15000);
  assert_int_equal(o->udp_max_payload, 1200);
  unload(l);
  l = load(BASE);
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.udp_idle_timeout_ms, 60000);
  assert_int_equal(l->cfg.tunnel.udp_max_payload, 1500);
  unload(l);
  expect_one_error(BASE "udp_max_payload = 65528B\n",
                   "t.ini:3: udp_max_payload: expected a size from 1B to 65527B, like 1500B, "
                   "got '65528B'");
  expect_one_error(BASE "allow = media.example:10000-20000\n",
                   "t.ini:3: allow: port must be 1 to 5 decimal digits, or '*' in "
                   "'media.example:10000-20000'");
  expect_one_error(BASE "allow_udp = media.example:20000-10000\n",
                   "t.ini:3: allow_udp: port range must run from a lower to a higher port in "
                   "'media.example:20000-10000'");
  expect_one_error(BASE "allow_udp_when_authorized = media.example:5004\n",
                   "t.ini:3: allow_udp_when_authorized needs an [idm] section (without one the "
                   "gateway is never authorized, so the rule could never match)");
}

static void test_bad_allow_rule(void **state) {
  (void)state;
  tn_rule r;
  const char *why = NULL;
  assert_int_equal(tn_rule_parse("*:443", &r, &why), TN_EINVAL);
  assert_non_null(why);
  char want[512];
  snprintf(want, sizeof want, "t.ini:3: allow: %s in '*:443'", why);
  expect_one_error(BASE "allow = *:443\n", want);
}

/* A value that failed does not leave a partial entry behind. */
static void test_bad_values_not_applied(void **state) {
  (void)state;
  loaded *l = load(BASE "listen = nope\nallow = *:443\nmax_tunnels = 0\nheader_timeout = 5\n");
  assert_int_equal(l->rc, TN_EINVAL);
  assert_int_equal(l->errs.n, 4);
  assert_int_equal(l->cfg.tunnel.n_listen, 1);
  assert_int_equal(l->cfg.tunnel.policy.n_rules, 0);
  assert_int_equal(l->cfg.tunnel.max_tunnels, 10000);
  assert_int_equal(l->cfg.tunnel.header_timeout_ms, 10000);
  unload(l);
}

static void test_no_listen(void **state) {
  (void)state;
  expect_one_error("[tunnel]\nallow = a.example.org:443\n", "t.ini: [tunnel] has no listen or listen_tls address");
  expect_one_error("", "t.ini: [tunnel] has no listen or listen_tls address");
}

static void test_per_client_above_max(void **state) {
  (void)state;
  expect_one_error(BASE "max_tunnels = 100\nmax_tunnels_per_client = 101\n",
                   "t.ini:4: max_tunnels_per_client (101) is greater than max_tunnels (100)");
  /* per-client left at its default of 256 */
  expect_one_error(BASE "max_tunnels = 100\n",
                   "t.ini:3: max_tunnels_per_client (256) is greater than max_tunnels (100)");
  /* no extra complaint when one of them is already wrong */
  expect_one_error(BASE "max_tunnels = 100\nmax_tunnels_per_client = lots\n",
                   "t.ini:4: max_tunnels_per_client: expected a whole number from 1 to 1000000, "
                   "got 'lots'");
  loaded *l = load(BASE "max_tunnels = 100\nmax_tunnels_per_client = 100\n");
  assert_valid(l);
  unload(l);
}

static void test_unknown_section(void **state) {
  (void)state;
  /* without keys: inih alone would never tell */
  expect_one_error("[tunel]\n" BASE, "t.ini:1: unknown section [tunel]");
  /* with keys: reported once, at the header; its keys are not reported */
  expect_one_error(BASE "\n[admn]\nlisten = 1.2.3.4:5\nfoo = bar\n",
                   "t.ini:4: unknown section [admn]");
  /* keys after it do not land in the previous section */
  loaded *l = load(BASE "[tunnels]\nlisten = 127.0.0.1:4000\n");
  assert_int_equal(l->rc, TN_EINVAL);
  assert_int_equal(l->cfg.tunnel.n_listen, 1);
  unload(l);
}

static void test_unknown_key(void **state) {
  (void)state;
  expect_one_error(BASE "alow = a.example.org:443\n",
                   "t.ini:3: unknown key 'alow' in [tunnel] (did you mean 'allow'?)");
  expect_one_error(BASE "max_tunnel_per_clients = 3\n",
                   "t.ini:3: unknown key 'max_tunnel_per_clients' in [tunnel] (did you mean "
                   "'max_tunnels_per_client'?)");
  expect_one_error("[gateway]\nloglevel = info\n" BASE,
                   "t.ini:2: unknown key 'loglevel' in [gateway] (did you mean 'log_level'?)");
  expect_one_error(BASE "frobnicate = 1\n", "t.ini:3: unknown key 'frobnicate' in [tunnel]");
  /* a key that belongs to another section is unknown here */
  expect_one_error("[gateway]\nallow = a.example.org:443\n" BASE,
                   "t.ini:2: unknown key 'allow' in [gateway]");
}

static void test_key_outside_section(void **state) {
  (void)state;
  expect_one_error("listen = 127.0.0.1:1\n" BASE, "t.ini:1: key 'listen' is outside any section");
}

static void test_duplicate_key(void **state) {
  (void)state;
  expect_one_error(BASE "max_tunnels = 1000\nrequire_tls = yes\n\nmax_tunnels = 2000\n",
                   "t.ini:6: duplicate key 'max_tunnels' (first set on line 3)");
  /* across reopened sections too; the first value stays */
  loaded *l = load("[gateway]\nlog_level = warn\n" BASE "[gateway]\nlog_level = debug\n");
  static const char *const want[] = {"t.ini:6: duplicate key 'log_level' (first set on line 2)"};
  assert_errors(&l->errs, want, 1);
  assert_int_equal(l->cfg.log_level, TN_LOG_WARN);
  unload(l);
  /* the same name in two sections is not a duplicate */
  l = load("[admin]\nlisten = 127.0.0.1:1\n" BASE);
  assert_valid(l);
  unload(l);
}

static void test_line_too_long(void **state) {
  (void)state;
  char *pad = repeat('x', 200 - (sizeof "allow = " - 1) - (sizeof ":443" - 1));
  char text[512];
  snprintf(text, sizeof text, BASE "allow = %s:443\nrequire_tls = maybe\n", pad);
  loaded *l = load(text);
  static const char *const want[] = {
      "t.ini:3: line too long (max 199 bytes)",
      "t.ini:4: require_tls: expected yes or no, got 'maybe'", /* the line count is right */
  };
  assert_int_equal(l->rc, TN_EINVAL);
  assert_errors(&l->errs, want, 2);
  assert_int_equal(l->cfg.tunnel.policy.n_rules, 0); /* neither whole nor split */
  unload(l);
  free(pad);
}

static void test_syntax_errors(void **state) {
  (void)state;
  loaded *l = load("[tunnel\n"                /* 1: no ']' */
                   "listen = 127.0.0.1:1\n"   /* 2: skipped: no valid section */
                   "[tunnel] junk\n"          /* 3 */
                   "[tunnel] ; fine\n"        /* 4 */
                   "listen 127.0.0.1:3128\n"  /* 5: no '=' */
                   "listen = 127.0.0.1:3128\n"
                   "= value\n"                /* 7: no key */
                   "allow: a.example.org:1\n" /* 8: ':' is not a separator */
                   "require_tls ;= yes\n"     /* 9: '=' inside the comment */
                   "max_tunnels = 5\n");
  static const char *const want[] = {
      "t.ini:1: syntax error (expected 'key = value' or '[section]')",
      "t.ini:3: syntax error (expected 'key = value' or '[section]')",
      "t.ini:5: syntax error (expected 'key = value' or '[section]')",
      "t.ini:7: syntax error (expected 'key = value' or '[section]')",
      "t.ini:8: syntax error (expected 'key = value' or '[section]')",
      "t.ini:9: syntax error (expected 'key = value' or '[section]')",
      "t.ini:10: max_tunnels_per_client (256) is greater than max_tunnels (5)",
  };
  assert_int_equal(l->rc, TN_EINVAL);
  assert_errors(&l->errs, want, sizeof want / sizeof want[0]);
  assert_int_equal(l->cfg.tunnel.n_listen, 1);
  assert_int_equal(l->cfg.tunnel.policy.n_rules, 0);
  unload(l);
}

static void test_many_errors(void **state) {
  (void)state;
  loaded *l = load("[gateway]\n"
                   "log_level = chatty\n"
                   "[tunel]\n"
                   "[tunnel]\n"
                   "alow = x.example.org:443\n"
                   "require_tls = maybe\n"
                   "require_tls = yes\n"
                   "oops\n"
                   "header_timeout = 10\n");
  static const char *const want[] = {
      "t.ini:2: log_level: expected error, warn, info or debug, got 'chatty'",
      "t.ini:3: unknown section [tunel]",
      "t.ini:5: unknown key 'alow' in [tunnel] (did you mean 'allow'?)",
      "t.ini:6: require_tls: expected yes or no, got 'maybe'",
      "t.ini:7: duplicate key 'require_tls' (first set on line 6)",
      "t.ini:8: syntax error (expected 'key = value' or '[section]')",
      "t.ini:9: header_timeout: expected a duration like 500ms, 10s, 5m or 1h, got '10'",
      "t.ini: [tunnel] has no listen or listen_tls address",
  };
  assert_int_equal(l->rc, TN_EINVAL);
  assert_errors(&l->errs, want, sizeof want / sizeof want[0]);
  unload(l);
}

static void test_secret_not_echoed(void **state) {
  (void)state;
  loaded *l = load(BASE "api_token = hunter2\n"
                        "client_secret: hunter3\n"
                        "[password]\n"
                        "password = hunter4\n");
  static const char *const want[] = {
      "t.ini:3: unknown key 'api_token' in [tunnel]",
      "t.ini:4: syntax error (expected 'key = value' or '[section]')",
      "t.ini:5: unknown section [password]",
  };
  assert_errors(&l->errs, want, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < l->errs.n; i++)
    assert_null(strstr(l->errs.msgs[i], "hunter"));
  unload(l);
}

static void test_errors_appended(void **state) {
  (void)state;
  gw_config cfg;
  gw_config_errors errs = {0};
  assert_int_equal(gw_config_load_string("a.ini", "[x]\n" BASE, &cfg, &errs), TN_EINVAL);
  gw_config_free(&cfg);
  assert_int_equal(gw_config_load_string("b.ini", "[y]\n" BASE, &cfg, &errs), TN_EINVAL);
  gw_config_free(&cfg);
  static const char *const want[] = {"a.ini:1: unknown section [x]", "b.ini:1: unknown section [y]"};
  assert_errors(&errs, want, 2);
  gw_config_errors_free(&errs);
  assert_int_equal(errs.n, 0);
  assert_null(errs.msgs);
  /* errs may be NULL: still refused */
  assert_int_equal(gw_config_load_string("c.ini", "[z]\n", &cfg, NULL), TN_EINVAL);
  gw_config_free(&cfg);
  assert_int_equal(gw_config_load_string("c.ini", BASE, &cfg, NULL), 0);
  gw_config_free(&cfg);
}

/* ---- files ------------------------------------------------------------- */

static char *write_temp(const char *text) {
  char *path = strdup("/tmp/test_config_XXXXXX");
  assert_non_null(path);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t n = strlen(text);
  assert_int_equal(write(fd, text, n), (ssize_t)n);
  close(fd);
  return path;
}

static void test_missing_file(void **state) {
  (void)state;
  gw_config cfg;
  gw_config_errors errs = {0};
  const char *path = "/nonexistent/mcgw-test/mcgw.ini";
  int rc = gw_config_load(path, &cfg, &errs);
  assert_true(rc < 0);
  char want[256];
  snprintf(want, sizeof want, "%s: cannot open: %s", path, strerror(ENOENT));
  const char *w = want;
  assert_errors(&errs, &w, 1);
  assert_string_equal(cfg.path, path);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_directory(void **state) {
  (void)state;
  gw_config cfg;
  gw_config_errors errs = {0};
  int rc = gw_config_load("/", &cfg, &errs);
  assert_true(rc < 0);
  assert_int_equal(errs.n, 1);
  assert_true(strncmp(errs.msgs[0], "/: cannot ", strlen("/: cannot ")) == 0);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

static void test_file(void **state) {
  (void)state;
  char *pad = repeat('y', 200);
  char text[1024];
  snprintf(text, sizeof text,
           "[gateway]\nlog_format = json\n" BASE "; %s\nallow = a.example.org:443\nrequre_tls = yes\n", pad);
  char *path = write_temp(text);
  gw_config cfg;
  gw_config_errors errs = {0};
  assert_int_equal(gw_config_load(path, &cfg, &errs), TN_EINVAL);
  char want0[256], want1[256];
  snprintf(want0, sizeof want0, "%s:5: line too long (max 199 bytes)", path);
  snprintf(want1, sizeof want1, "%s:7: unknown key 'requre_tls' in [tunnel] (did you mean 'require_tls'?)", path);
  const char *const want[] = {want0, want1};
  assert_errors(&errs, want, 2);
  assert_int_equal(cfg.log_format, TN_LOG_JSON);
  assert_int_equal(cfg.tunnel.n_listen, 1);
  assert_int_equal(cfg.tunnel.policy.n_rules, 1);
  assert_string_equal(cfg.path, path);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  unlink(path);
  free(path);

  path = write_temp(BASE);
  assert_int_equal(gw_config_load(path, &cfg, &errs), 0);
  assert_int_equal(errs.n, 0);
  assert_int_equal(cfg.tunnel.n_listen, 1);
  gw_config_free(&cfg);
  unlink(path);
  free(path);
  free(pad);
}

static void test_nul_byte_in_file(void **state) {
  (void)state;
  char *path = write_temp("");
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  static const char text[] = BASE "require_tls = y\0es\n";
  assert_int_equal(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
  fclose(f);
  gw_config cfg;
  gw_config_errors errs = {0};
  assert_int_equal(gw_config_load(path, &cfg, &errs), TN_EINVAL);
  char want[256];
  snprintf(want, sizeof want, "%s:3: line contains a NUL byte", path);
  const char *w = want;
  assert_errors(&errs, &w, 1);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  unlink(path);
  free(path);
}

/* ---- durations --------------------------------------------------------- */

static void test_duration_valid(void **state) {
  (void)state;
  static const struct {
    const char *s;
    uint64_t ms;
  } cases[] = {
      {"500ms", 500},
      {"10s", 10000},
      {"5m", 300000},
      {"1h", 3600000},
      {"0s", 0},
      {"0ms", 0},
      {"007s", 7000},
      {"18446744073709551615ms", UINT64_MAX},
      {"5124095576030h", 5124095576030ULL * 3600000ULL},
      {"307445734561825m", 307445734561825ULL * 60000ULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t ms = 12345;
    int rc = gw_duration_parse(cases[i].s, &ms);
    if (rc != 0 || ms != cases[i].ms)
      print_message("'%s' -> %d, %llu\n", cases[i].s, rc, (unsigned long long)ms);
    assert_int_equal(rc, 0);
    assert_true(ms == cases[i].ms);
  }
}

static void test_duration_invalid(void **state) {
  (void)state;
  static const char *const cases[] = {
      "",       "10",    "-1s",  "+1s",        " 1s",    "1s ",    "1 s",  "1.5s",
      "s",      "ms",    "1d",   "1S",         "1sec",   "1msx",   "1hm",  "0x10s",
      "1e3ms",  "abc",   "1\ns", "18446744073709551616ms", "18446744073709552s",
      "5124095576031h", "307445734561826m",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t ms = 12345;
    int rc = gw_duration_parse(cases[i], &ms);
    if (rc != -1)
      print_message("'%s' was accepted\n", cases[i]);
    assert_int_equal(rc, -1);
    assert_int_equal(ms, 12345); /* untouched */
  }
  uint64_t ms = 1;
  assert_int_equal(gw_duration_parse(NULL, &ms), -1);
}

/* Issue 3 keys: TLS listener, device admission, HTTP/2 settings. */
static void test_tls_and_h2_keys(void **state) {
  (void)state;
  loaded *l = load("[tunnel]\n"
                   "listen = 127.0.0.1:3128\n"
                   "clients = 192.168.50.0/24\n"
                   "clients = fd00::/8\n"
                   "h2_max_concurrent_streams = 50\n"
                   "h2_stream_window = 1MiB\n");
  assert_valid(l);
  assert_int_equal(l->cfg.tunnel.n_clients, 2);
  assert_int_equal(l->cfg.tunnel.clients[0].prefix, 24);
  assert_int_equal(l->cfg.tunnel.clients[1].family, AF_INET6);
  assert_int_equal(l->cfg.tunnel.h2_max_concurrent_streams, 50);
  assert_int_equal(l->cfg.tunnel.h2_stream_window, 1024 * 1024);
  unload(l);
  l = load("[tunnel]\nlisten = 127.0.0.1:1\n");
  assert_int_equal(l->cfg.tunnel.h2_max_concurrent_streams, 100);
  assert_int_equal(l->cfg.tunnel.h2_stream_window, 256 * 1024);
  unload(l);
}

static void test_tls_key_errors(void **state) {
  (void)state;
  expect_one_error("[tunnel]\nlisten = 127.0.0.1:1\nclients = 10.0.0.1/8\n",
                   "t.ini:3: clients: expected an address or prefix like 192.168.50.0/24 or "
                   "fd00::/8 (network address, no host bits), got '10.0.0.1/8'");
  expect_one_error("[tunnel]\nlisten = 127.0.0.1:1\nh2_stream_window = 1GiB\n",
                   "t.ini:3: h2_stream_window: expected a size from 16KiB to 16MiB, like "
                   "256KiB, got '1GiB'");
  expect_one_error("[tunnel]\nlisten = 127.0.0.1:1\nh2_stream_window = 1KiB\n",
                   "t.ini:3: h2_stream_window: expected a size from 16KiB to 16MiB, like "
                   "256KiB, got '1KiB'");
  expect_one_error("[tunnel]\nlisten_tls = 127.0.0.1:1\n",
                   "t.ini:2: listen_tls needs tls_cert and tls_key");
  expect_one_error("[tunnel]\nlisten = 127.0.0.1:1\nclient_ca = /x/ca.pem\n",
                   "t.ini:3: client_ca only applies to listen_tls listeners, and there is none: "
                   "devices would not be authenticated");
  expect_one_error("[tunnel]\nlisten_tls = 127.0.0.1:1\n"
                   "tls_cert = /nonexistent/proxy.crt\ntls_key = /nonexistent/proxy.key\n",
                   "t.ini:3: tls_cert: cannot read /nonexistent/proxy.crt: No such file or "
                   "directory");
}

/* Relative certificate paths are resolved against the config file's
 * directory, so the error names the resolved path. */
static void test_tls_relative_paths(void **state) {
  (void)state;
  gw_config cfg;
  gw_config_errors errs = {0};
  int rc = gw_config_load_string("/etc/mcgw/mcgw.ini",
                                 "[tunnel]\nlisten_tls = 127.0.0.1:1\n"
                                 "tls_cert = certs/proxy.crt\ntls_key = /abs/proxy.key\n",
                                 &cfg, &errs);
  assert_int_equal(rc, TN_EINVAL);
  assert_string_equal(cfg.tunnel.tls_cert, "/etc/mcgw/certs/proxy.crt");
  assert_string_equal(cfg.tunnel.tls_key, "/abs/proxy.key");
  assert_int_equal(errs.n, 1);
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_config),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_rate_keys),
      cmocka_unit_test(test_splice_mode),
      cmocka_unit_test(test_repeated_listen_and_allow),
      cmocka_unit_test(test_booleans),
      cmocka_unit_test(test_idle_zero_disables),
      cmocka_unit_test(test_admin_off_and_v6),
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_longest_line_ok),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_bad_allow_rule),
      cmocka_unit_test(test_udp_keys),
      cmocka_unit_test(test_bad_values_not_applied),
      cmocka_unit_test(test_no_listen),
      cmocka_unit_test(test_per_client_above_max),
      cmocka_unit_test(test_unknown_section),
      cmocka_unit_test(test_unknown_key),
      cmocka_unit_test(test_key_outside_section),
      cmocka_unit_test(test_duplicate_key),
      cmocka_unit_test(test_line_too_long),
      cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_many_errors),
      cmocka_unit_test(test_secret_not_echoed),
      cmocka_unit_test(test_errors_appended),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_directory),
      cmocka_unit_test(test_file),
      cmocka_unit_test(test_nul_byte_in_file),
      cmocka_unit_test(test_duration_valid),
      cmocka_unit_test(test_duration_invalid),
      cmocka_unit_test(test_tls_and_h2_keys),
      cmocka_unit_test(test_tls_key_errors),
      cmocka_unit_test(test_tls_relative_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
