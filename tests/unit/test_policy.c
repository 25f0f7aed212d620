/* Unit tests for tunnel/policy.c (allow rules, the destination checks) and
 * tunnel/error.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <uv.h>

#include "tunnel/error.h"
#include "tunnel/policy.h"

#include "sockaddr_helpers.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define SENTINEL 0xA5


static tn_rule rule_of(const char *s) {
  tn_rule r;
  const char *why = NULL;
  if (tn_rule_parse(s, &r, &why) != 0)
    fail_msg("rule \"%s\" refused: %s", s, why);
  return r;
}

static tn_authority auth_of(const char *s) {
  tn_authority a;
  if (tn_authority_parse(s, strlen(s), &a) != 0)
    fail_msg("authority \"%s\" refused", s);
  return a;
}

static bool rules_equal(const tn_rule *a, const tn_rule *b) {
  if (a->kind != b->kind || a->port != b->port)
    return false;
  if (a->kind != TN_RULE_CIDR)
    return strcmp(a->host, b->host) == 0;
  return a->cidr.family == b->cidr.family && a->cidr.prefix == b->cidr.prefix &&
         memcmp(a->cidr.addr, b->cidr.addr, sizeof(a->cidr.addr)) == 0;
}

/* --- tn_rule_parse: accepted ------------------------------------------------ */

typedef struct {
  const char *in;
  tn_rule_kind kind;
  uint16_t port;
  const char *host; /* HOST/SUFFIX: stored name; CIDR: address text */
  uint8_t prefix;   /* CIDR only */
  const char *canon;
} rule_case;

static const rule_case rule_accepts[] = {
    {"idms.example.org:443", TN_RULE_HOST, 443, "idms.example.org", 0, "idms.example.org:443"},
    {"IDMS.Example.ORG.:443", TN_RULE_HOST, 443, "idms.example.org", 0, "idms.example.org:443"},
    {"a_b.example:80", TN_RULE_HOST, 80, "a_b.example", 0, "a_b.example:80"},
    {"localhost.:443", TN_RULE_HOST, 443, "localhost", 0, "localhost:443"},
    {"host:*", TN_RULE_HOST, 0, "host", 0, "host:*"},
    {"example.org:08080", TN_RULE_HOST, 8080, "example.org", 0, "example.org:8080"},
    {"example.org:65535", TN_RULE_HOST, 65535, "example.org", 0, "example.org:65535"},
    {"*.example.org:443", TN_RULE_SUFFIX, 443, ".example.org", 0, "*.example.org:443"},
    {"*.Example.ORG.:8443", TN_RULE_SUFFIX, 8443, ".example.org", 0, "*.example.org:8443"},
    {"*.example.org:*", TN_RULE_SUFFIX, 0, ".example.org", 0, "*.example.org:*"},
    {"*.com:443", TN_RULE_SUFFIX, 443, ".com", 0, "*.com:443"},
    {"1.2.3.4:443", TN_RULE_CIDR, 443, "1.2.3.4", 32, "1.2.3.4:443"},
    {"192.0.2.1/32:80", TN_RULE_CIDR, 80, "192.0.2.1", 32, "192.0.2.1:80"},
    {"10.0.0.0/8:443", TN_RULE_CIDR, 443, "10.0.0.0", 8, "10.0.0.0/8:443"},
    {"10.0.0.0/8:*", TN_RULE_CIDR, 0, "10.0.0.0", 8, "10.0.0.0/8:*"},
    {"[fd00::/8]:443", TN_RULE_CIDR, 443, "fd00::", 8, "[fd00::/8]:443"},
    {"[::1]:443", TN_RULE_CIDR, 443, "::1", 128, "[::1]:443"},
    {"[2001:DB8:0:0::1]:443", TN_RULE_CIDR, 443, "2001:db8::1", 128, "[2001:db8::1]:443"},
    {"[::ffff:10.0.0.0/104]:443", TN_RULE_CIDR, 443, "::ffff:10.0.0.0", 104,
     "[::ffff:10.0.0.0/104]:443"},
    {"[2001:db8::/32]:*", TN_RULE_CIDR, 0, "2001:db8::", 32, "[2001:db8::/32]:*"},
};

static void test_rule_accepts(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(rule_accepts); i++) {
    const rule_case *c = &rule_accepts[i];
    tn_rule r = rule_of(c->in);
    char buf[TN_HOST_MAX + 64];
    if (r.kind != c->kind || r.port != c->port)
      fail_msg("\"%s\": kind %d port %u", c->in, (int)r.kind, (unsigned)r.port);
    if (c->kind == TN_RULE_CIDR) {
      uint8_t want[16] = {0};
      int family = strchr(c->host, ':') ? AF_INET6 : AF_INET;
      assert_int_equal(inet_pton(family, c->host, want), 1);
      assert_int_equal(r.cidr.family, family);
      assert_int_equal(r.cidr.prefix, c->prefix);
      assert_memory_equal(r.cidr.addr, want, sizeof(want));
    } else {
      assert_string_equal(r.host, c->host);
    }
    assert_int_equal(tn_rule_format(&r, buf, sizeof(buf)), (int)strlen(c->canon));
    assert_string_equal(buf, c->canon);
  }
}

/* The canonical form parses back to the same rule. */
static void test_rule_round_trip(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(rule_accepts); i++) {
    tn_rule r = rule_of(rule_accepts[i].in), again;
    char buf[TN_HOST_MAX + 64];
    assert_true(tn_rule_format(&r, buf, sizeof(buf)) > 0);
    again = rule_of(buf);
    if (!rules_equal(&r, &again))
      fail_msg("\"%s\" -> \"%s\" does not round-trip", rule_accepts[i].in, buf);
  }
}

static void test_rule_why_null_on_success(void **state) {
  tn_rule r;
  const char *why = "stale";
  (void)state;
  assert_int_equal(tn_rule_parse("example.org:443", &r, &why), 0);
  assert_null(why);
  assert_int_equal(tn_rule_parse("example.org:443", &r, NULL), 0);
  assert_int_equal(tn_rule_parse("*:443", &r, NULL), TN_EINVAL);
}

static void test_rule_format_errors(void **state) {
  tn_rule r = rule_of("*.example.org:443");
  char buf[8];
  (void)state;
  assert_int_equal(tn_rule_format(&r, buf, sizeof(buf)), 17); /* snprintf semantics */
  assert_string_equal(buf, "*.examp");
  assert_int_equal(tn_rule_format(&r, NULL, 0), 17);
  r.kind = (tn_rule_kind)42;
  assert_int_equal(tn_rule_format(&r, buf, sizeof(buf)), TN_EINVAL);
  r = rule_of("10.0.0.0/8:1");
  r.cidr.family = AF_UNIX;
  assert_int_equal(tn_rule_format(&r, buf, sizeof(buf)), TN_EINVAL);
}

/* --- tn_rule_parse: refused, with the reason -------------------------------- */

#define W_OPEN_PROXY "a bare '*' host would make the gateway an open proxy"
#define W_NO_PORT "missing ':port' (use host:* for any port)"
#define W_STAR "'*' is only allowed as a whole first label, as in '*.example.org'"
#define W_PORT_SYNTAX "port must be 1 to 5 decimal digits, or '*'"
#define W_PORT_ZERO "port 0 is not a valid target port (use host:* for any port)"
#define W_PORT_RANGE "port out of range (1..65535)"
#define W_CHAR "whitespace, control or non-ASCII character in rule"
#define W_V6_BRACKETS "IPv6 addresses must be in brackets, as in '[::1]:443'"
#define W_NOT_CANON_V4 \
  "not a canonical IPv4 address (use four decimal octets 0-255 without leading zeros)"
#define W_HOST_BITS "address has bits set below the prefix length (use the network address)"
#define W_PREFIX_ZERO "a /0 prefix matches every address and would make the gateway an open proxy"
#define W_PREFIX_SYNTAX "prefix length must be decimal digits after '/', without leading zeros"
#define W_PREFIX_RANGE "prefix length out of range (0..32 for IPv4, 0..128 for IPv6)"
#define W_LABEL_EMPTY "empty label in host name (leading or doubled '.')"
#define W_NAME_CHAR "host names may only contain letters, digits, '-', '_' and '.'"
#define W_SUFFIX_IP "a '*.' wildcard needs a DNS name, not an IP address"
#define W_SUFFIX_EMPTY "missing domain after '*.'"
#define W_BRACKET_V4 "brackets are only for IPv6 addresses"
#define W_PERCENT "'%' is not allowed (no percent-encoding, no IPv6 zone ids)"

typedef struct {
  const char *in;
  const char *why;
} refuse_case;

static const refuse_case rule_refuses[] = {
    {"", "empty rule"},
    {"*:443", W_OPEN_PROXY},
    {"*:*", W_OPEN_PROXY},
    {"*.:443", W_SUFFIX_EMPTY},
    {"*.:*", W_SUFFIX_EMPTY},
    {"*.", W_NO_PORT},
    {"*foo.example:443", W_STAR},
    {"foo.*.example:443", W_STAR},
    {"*.*.example:443", W_STAR},
    {"**:443", W_STAR},
    {"example.*:443", W_STAR},
    {"example.org", W_NO_PORT},
    {"*", W_NO_PORT},
    {"example.org:", "empty port after ':' (use host:* for any port)"},
    {"example.org:0", W_PORT_ZERO},
    {"example.org:00000", W_PORT_ZERO},
    {"[::1]:0", W_PORT_ZERO},
    {"example.org:65536", W_PORT_RANGE},
    {"example.org:99999", W_PORT_RANGE},
    {"example.org:000443", W_PORT_SYNTAX},
    {"example.org:+80", W_PORT_SYNTAX},
    {"example.org:-1", W_PORT_SYNTAX},
    {"example.org:https", W_PORT_SYNTAX},
    {"example.org:**", W_PORT_SYNTAX},
    {":443", "empty host"},
    {" example.org:443", W_CHAR},
    {"example.org:443\n", W_CHAR},
    {"exa\tmple.org:443", W_CHAR},
    {"\xc3\xa9.example:443", W_CHAR},
    {"del\x7f.example:443", W_CHAR},
    {"a@b:443", "userinfo ('@') is not allowed in a rule"},
    {"%31.2.3.4:443", W_PERCENT},
    {"[fe80::1%eth0]:443", W_PERCENT},
    {"fd00::1:443", W_V6_BRACKETS},
    {"fd00::/8:443", W_V6_BRACKETS},
    {"::1:443", W_V6_BRACKETS},
    {"[::1]", W_NO_PORT},
    {"[::1]443", "unexpected text after ']' (expected ':port')"},
    {"[::1:443", "unterminated '[' (expected '[v6]:port')"},
    {"[]:443", "missing IP address"},
    {"[/8]:443", "missing IP address"},
    {"/8:443", "missing IP address"},
    {"[10.0.0.1]:443", W_BRACKET_V4},
    {"[10.0.0.0/8]:443", W_BRACKET_V4},
    {"[zz::1]:443", "invalid IPv6 address"},
    {"[example.org]:443", "invalid IPv6 address"},
    {"[fd00::1/8]:443", W_HOST_BITS},
    {"10.0.0.1/8:443", W_HOST_BITS},
    {"0.0.0.1/0:443", W_HOST_BITS},
    {"0.0.0.0/0:443", W_PREFIX_ZERO},
    {"[::/0]:443", W_PREFIX_ZERO},
    {"0.0.0.0/0:*", W_PREFIX_ZERO},
    {"[fd00::/129]:443", W_PREFIX_RANGE},
    {"10.0.0.0/33:443", W_PREFIX_RANGE},
    {"10.0.0.0/:443", W_PREFIX_SYNTAX},
    {"10.0.0.0/08:443", W_PREFIX_SYNTAX},
    {"10.0.0.0/x:443", W_PREFIX_SYNTAX},
    {"10.0.0.0/1000:443", W_PREFIX_SYNTAX},
    {"example.org/8:443", "a '/' prefix needs an IP address, not a name"},
    {"127.1/8:443", W_NOT_CANON_V4},
    {"127.1:443", W_NOT_CANON_V4},
    {"0x7f000001:443", W_NOT_CANON_V4},
    {"2130706433:443", W_NOT_CANON_V4},
    {"017700000001:443", W_NOT_CANON_V4},
    {"127.0.0.01:443", W_NOT_CANON_V4},
    {"0x7f.0.0.1:443", W_NOT_CANON_V4},
    {"256.0.0.1:443", W_NOT_CANON_V4},
    {"example.123:443", W_NOT_CANON_V4},
    {"1.2.3.4.:443", W_NOT_CANON_V4},
    {"*.1.2.3.4:443", W_SUFFIX_IP},
    {"*.10.0:443", W_SUFFIX_IP},
    {"*..example.org:443", W_LABEL_EMPTY},
    {".example.org:443", W_LABEL_EMPTY},
    {"example..org:443", W_LABEL_EMPTY},
    {"..:443", W_LABEL_EMPTY},
    {".:443", "empty host"},
    {"exa$mple.org:443", W_NAME_CHAR},
    {"exa[mple.org:443", W_NAME_CHAR},
    {"exa]mple.org:443", W_NAME_CHAR},
};

static void check_refused(const char *in, const char *want_why) {
  tn_rule r, saved;
  const char *why = NULL;
  memset(&r, SENTINEL, sizeof(r));
  memcpy(&saved, &r, sizeof(r));
  if (tn_rule_parse(in, &r, &why) != TN_EINVAL)
    fail_msg("accepted \"%s\"", in);
  if (!why || strcmp(why, want_why) != 0)
    fail_msg("\"%s\": why \"%s\", want \"%s\"", in, why ? why : "(null)", want_why);
  if (memcmp(&r, &saved, sizeof(r)) != 0)
    fail_msg("\"%s\": out modified on failure", in);
}

static void test_rule_refuses(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(rule_refuses); i++)
    check_refused(rule_refuses[i].in, rule_refuses[i].why);
}

static void fill(char *buf, size_t n, size_t label_len) {
  for (size_t i = 0; i < n; i++)
    buf[i] = (i % (label_len + 1) == label_len) ? '.' : 'a';
  buf[n] = '\0';
}

static void test_rule_refuses_long(void **state) {
  char name[320], in[400];
  tn_rule r;
  (void)state;

  fill(name, 64, 64);
  snprintf(in, sizeof(in), "%s.example:443", name);
  check_refused(in, "host name label longer than 63 characters");

  fill(name, 254, 63); /* ends in 'a': index 253 is not a dot */
  snprintf(in, sizeof(in), "%s:443", name);
  check_refused(in, "host name longer than 253 characters");

  fill(name, 253, 63);
  snprintf(in, sizeof(in), "%s.:443", name);
  assert_int_equal(tn_rule_parse(in, &r, NULL), 0); /* longest name, trailing dot */
  assert_string_equal(r.host, name);
  snprintf(in, sizeof(in), "*.%s:443", name);
  check_refused(in, "wildcard domain longer than 252 characters");

  fill(name, 252, 63);
  snprintf(in, sizeof(in), "*.%s:443", name);
  assert_int_equal(tn_rule_parse(in, &r, NULL), 0);
  assert_int_equal(strlen(r.host), 253);

  fill(name, 301, 63);
  check_refused(name, "rule is too long");
}

static void test_rule_parse_null(void **state) {
  tn_rule r;
  const char *why = NULL;
  (void)state;
  assert_int_equal(tn_rule_parse(NULL, &r, &why), TN_EINVAL);
  assert_string_equal(why, "empty rule");
  assert_int_equal(tn_rule_parse("example.org:443", NULL, &why), TN_EINVAL);
  assert_non_null(why);
}

/* --- tn_rule_matches ---------------------------------------------------------- */

static const struct {
  const char *rule, *target;
  bool match;
} matches[] = {
    {"example.org:443", "example.org:443", true},
    {"example.org:443", "EXAMPLE.Org:443", true},
    {"EXAMPLE.ORG.:443", "example.org.:443", true},
    {"example.org:443", "example.org:444", false},
    {"example.org:443", "www.example.org:443", false},
    {"example.org:443", "xexample.org:443", false},
    {"example.org:443", "example.org.evil:443", false},
    {"example.org:443", "[::1]:443", false},
    {"example.org:*", "example.org:1", true},
    {"example.org:*", "example.org:65535", true},
    {"localhost:443", "localhost.:443", true},
    {"*.example.org:443", "a.example.org:443", true},
    {"*.example.org:443", "a.b.example.org:443", true},
    {"*.example.org:443", "A.EXAMPLE.ORG.:443", true},
    {"*.example.org:443", "example.org:443", false}, /* the apex */
    {"*.example.org:443", "aexample.org:443", false},
    {"*.example.org:443", "a.example.org:80", false},
    {"*.example.org:443", "example.org.evil.com:443", false},
    {"*.example.org:443", "a.example.org.evil:443", false},
    {"*.example.org:443", "a.example.orgx:443", false},
    {"*.Example.Org:*", "x.example.org:8443", true},
    {"*.com:443", "example.com:443", true},
    {"*.com:443", "com:443", false},
    {"1.2.3.4:443", "1.2.3.4:443", true},
    {"1.2.3.4:443", "1.2.3.5:443", false},
    {"1.2.3.4:443", "1.2.3.4:80", false},
    {"1.2.3.4:443", "[::ffff:1.2.3.4]:443", false},
    {"10.0.0.0/8:*", "10.1.2.3:22", true},
    {"10.0.0.0/8:*", "10.255.255.255:1", true},
    {"10.0.0.0/8:*", "11.0.0.0:22", false},
    {"10.0.0.0/8:*", "[::ffff:10.1.2.3]:22", false},
    {"10.0.0.0/8:*", "10.example:22", false}, /* names never match CIDR rules */
    {"[fd00::/8]:443", "[fd00::1]:443", true},
    {"[fd00::/8]:443", "[FDFF:ffff::1]:443", true},
    {"[fd00::/8]:443", "[fe00::1]:443", false},
    {"[fd00::/8]:443", "[fc00::1]:443", false},
    {"[fd00::/8]:443", "[fd00::1]:444", false},
    {"[::1]:443", "[::1]:443", true},
    {"[::1]:443", "[0:0:0:0:0:0:0:1]:443", true},
    {"[::1]:443", "[::2]:443", false},
    {"[::ffff:0:0/96]:443", "[::ffff:10.0.0.1]:443", true},
    {"[::ffff:0:0/96]:443", "10.0.0.1:443", false},
};

static void test_rule_matches(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(matches); i++) {
    tn_rule r = rule_of(matches[i].rule);
    tn_authority a = auth_of(matches[i].target);
    if (tn_rule_matches(&r, &a) != matches[i].match)
      fail_msg("rule \"%s\" target \"%s\": want %d", matches[i].rule, matches[i].target,
               (int)matches[i].match);
  }
}

static void test_rule_matches_odd_inputs(void **state) {
  tn_rule r = rule_of("example.org:443");
  tn_authority a = auth_of("example.org:443");
  (void)state;
  assert_true(tn_rule_matches(&r, &a));
  assert_false(tn_rule_matches(NULL, &a));
  assert_false(tn_rule_matches(&r, NULL));
  r.kind = (tn_rule_kind)42;
  assert_false(tn_rule_matches(&r, &a));
  /* A suffix rule built by hand without its leading dot must not match
   * "notexample.org". */
  r = rule_of("*.example.org:443");
  memmove(r.host, r.host + 1, strlen(r.host));
  a = auth_of("notexample.org:443");
  assert_false(tn_rule_matches(&r, &a));
  /* Nor may a suffix rule match a (hand-built) host that is the suffix itself. */
  r = rule_of("*.example.org:443");
  a = auth_of("example.org:443");
  memcpy(a.host, ".example.org", sizeof(".example.org"));
  assert_false(tn_rule_matches(&r, &a));
}

/* --- policies ------------------------------------------------------------------ */

static void test_policy_default_denies(void **state) {
  tn_policy p = {0};
  tn_authority a = auth_of("example.org:443");
  struct sockaddr_storage ss = sa_of("10.0.0.1", 443);
  (void)state;
  assert_false(tn_policy_allows_target(&p, &a, false));
  assert_false(tn_policy_allows_addr(&p, (const struct sockaddr *)&ss));
  assert_false(tn_policy_allows_target(NULL, &a, false));
  assert_false(tn_policy_allows_target(&p, NULL, false));
}

static void test_policy_add_and_match(void **state) {
  tn_policy p = {0};
  (void)state;
  {
    tn_rule r = rule_of("idms.example.org:443");
    assert_int_equal(tn_policy_add(&p, &r), 0);
    r = rule_of("*.kms.example.org:*");
    assert_int_equal(tn_policy_add(&p, &r), 0);
    r = rule_of("[fd00::/8]:8443");
    assert_int_equal(tn_policy_add(&p, &r), 0);
  }
  assert_int_equal(p.n_rules, 3);
  assert_true(p.cap_rules >= 3);
  assert_true(tn_policy_allows_target(&p, &(tn_authority){0}, false) == false);
  {
    tn_authority a = auth_of("IDMS.example.org:443");
    assert_true(tn_policy_allows_target(&p, &a, false));
    a = auth_of("idms.example.org:80");
    assert_false(tn_policy_allows_target(&p, &a, false));
    a = auth_of("a.kms.example.org:9999");
    assert_true(tn_policy_allows_target(&p, &a, false));
    a = auth_of("kms.example.org:443");
    assert_false(tn_policy_allows_target(&p, &a, false));
    a = auth_of("[fd00::5]:8443");
    assert_true(tn_policy_allows_target(&p, &a, false));
    a = auth_of("evil.example:443");
    assert_false(tn_policy_allows_target(&p, &a, false));
  }
  tn_policy_free(&p);
  assert_null(p.rules);
  assert_int_equal(p.n_rules, 0);
  assert_int_equal(p.cap_rules, 0);
}

/* Many rules: growth keeps every rule, in order. */
static void test_policy_growth(void **state) {
  tn_policy p = {0};
  char text[64];
  (void)state;
  for (unsigned i = 1; i <= 100; i++) {
    tn_rule r;
    snprintf(text, sizeof(text), "h%u.example:%u", i, i);
    r = rule_of(text);
    assert_int_equal(tn_policy_add(&p, &r), 0);
  }
  assert_int_equal(p.n_rules, 100);
  for (unsigned i = 1; i <= 100; i++) {
    snprintf(text, sizeof(text), "h%u.example", i);
    assert_string_equal(p.rules[i - 1].host, text);
    assert_int_equal(p.rules[i - 1].port, i);
  }
  {
    tn_authority a = auth_of("h100.example:100");
    assert_true(tn_policy_allows_target(&p, &a, false));
    a = auth_of("h100.example:99");
    assert_false(tn_policy_allows_target(&p, &a, false));
  }
  assert_int_equal(tn_policy_add(NULL, &p.rules[0]), TN_EINVAL);
  assert_int_equal(tn_policy_add(&p, NULL), TN_EINVAL);
  tn_policy_free(&p);
}

static void test_policy_copy(void **state) {
  tn_policy src = {0}, dst;
  tn_rule r = rule_of("example.org:443");
  tn_authority a = auth_of("example.org:443");
  (void)state;
  assert_int_equal(tn_policy_add(&src, &r), 0);
  src.allow_private = true;

  memset(&dst, SENTINEL, sizeof(dst)); /* dst is overwritten, not freed */
  assert_int_equal(tn_policy_copy(&dst, &src), 0);
  assert_int_equal(dst.n_rules, 1);
  assert_true(dst.cap_rules >= 1);
  assert_true(dst.allow_private);
  assert_ptr_not_equal(dst.rules, src.rules);
  assert_true(rules_equal(&dst.rules[0], &src.rules[0]));

  tn_policy_free(&src); /* deep: dst survives */
  assert_true(tn_policy_allows_target(&dst, &a, false));
  tn_policy_free(&dst);

  /* An empty source gives an empty copy. */
  memset(&dst, SENTINEL, sizeof(dst));
  assert_int_equal(tn_policy_copy(&dst, &src), 0);
  assert_null(dst.rules);
  assert_int_equal(dst.n_rules, 0);
  assert_false(dst.allow_private);
  tn_policy_free(&dst);

  assert_int_equal(tn_policy_copy(NULL, &src), TN_EINVAL);
  assert_int_equal(tn_policy_copy(&dst, NULL), TN_EINVAL);
}

static void test_policy_free_resets(void **state) {
  tn_policy p = {0};
  tn_rule r = rule_of("example.org:443");
  (void)state;
  assert_int_equal(tn_policy_add(&p, &r), 0);
  p.allow_private = true;
  tn_policy_free(&p);
  assert_null(p.rules);
  assert_int_equal(p.n_rules, 0);
  assert_false(p.allow_private); /* back to the safe default */
  tn_policy_free(&p);            /* twice is harmless */
  tn_policy_free(NULL);
}

/* --- tn_policy_allows_addr -------------------------------------------------------- */

static const struct {
  const char *ip;
  bool strict;        /* allow_private off */
  bool with_private;  /* allow_private on */
} addr_cases[] = {
    {"8.8.8.8", true, true},
    {"1.0.0.0", true, true},
    {"2606:4700::1111", true, true},
    {"10.0.0.1", false, true},
    {"172.16.0.1", false, true},
    {"192.168.1.1", false, true},
    {"100.64.0.1", false, true},
    {"127.0.0.1", false, true},
    {"169.254.169.254", false, true},
    {"192.0.2.1", false, true},
    {"255.255.255.255", false, true},
    {"240.0.0.1", false, true},
    {"0.0.0.0", false, false},
    {"0.1.2.3", false, false},
    {"224.0.0.1", false, false},
    {"239.255.255.250", false, false},
    {"::", false, false},
    {"::1", false, true},
    {"ff02::1", false, false},
    {"ff05::2", false, false},
    {"fe80::1", false, true},
    {"fd00::1", false, true},
    {"fec0::1", false, true},
    {"2001:db8::1", false, true},
    {"2002:7f00:1::", false, true},
    {"100::1", false, true},
    {"::ffff:8.8.8.8", false, true},
    {"::ffff:127.0.0.1", false, true},
    {"::ffff:0.0.0.0", false, false},   /* embedded unspecified */
    {"::ffff:224.0.0.1", false, false}, /* embedded multicast */
    {"64:ff9b::e000:1", false, false},
    {"64:ff9b::808:808", false, true},
    {"::e000:1", false, false},
    {"::0.0.0.2", false, false},
};

static void test_policy_allows_addr(void **state) {
  tn_policy strict = {0}, priv = {.allow_private = true};
  (void)state;
  for (size_t i = 0; i < N_ELEMS(addr_cases); i++) {
    struct sockaddr_storage ss = sa_of(addr_cases[i].ip, 443);
    const struct sockaddr *s = (const struct sockaddr *)&ss;
    if (tn_policy_allows_addr(&strict, s) != addr_cases[i].strict)
      fail_msg("%s strict: want %d", addr_cases[i].ip, (int)addr_cases[i].strict);
    if (tn_policy_allows_addr(&priv, s) != addr_cases[i].with_private)
      fail_msg("%s allow_private: want %d", addr_cases[i].ip, (int)addr_cases[i].with_private);
  }
}

static void test_policy_allows_addr_other_families(void **state) {
  tn_policy priv = {.allow_private = true};
  struct sockaddr_un un;
  struct sockaddr_storage unspec;
  (void)state;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  memset(&unspec, 0, sizeof(unspec));
  assert_false(tn_policy_allows_addr(&priv, (const struct sockaddr *)&un));
  assert_false(tn_policy_allows_addr(&priv, (const struct sockaddr *)&unspec));
  assert_false(tn_policy_allows_addr(&priv, NULL));
  assert_false(tn_policy_allows_addr(NULL, (const struct sockaddr *)&un));
}

/* --- tn_strerror ---------------------------------------------------------------- */

static void test_strerror(void **state) {
  (void)state;
  assert_string_equal(tn_strerror(0), "success");
  assert_string_equal(tn_strerror(TN_EINVAL), "invalid argument");
  assert_string_equal(tn_strerror(TN_ENOMEM), "out of memory");
  assert_string_equal(tn_strerror(TN_ERANGE), "value out of range");
  assert_string_equal(tn_strerror(TN_EEXIST), "already exists");
  assert_string_equal(tn_strerror(UV_ECONNREFUSED), uv_strerror(UV_ECONNREFUSED));
  assert_string_equal(tn_strerror(UV_EOF), "end of file");
  assert_string_equal(tn_strerror(UV_ETIMEDOUT), uv_strerror(UV_ETIMEDOUT));
  assert_string_equal(tn_strerror(-99999), "unknown error");
  assert_string_equal(tn_strerror(5), "unknown error");
}

/* allow_when_authorized rules open only while the gateway is authorized;
 * plain allow rules work whatever its state. */
static void test_policy_when_authorized(void **state) {
  tn_policy p = {0};
  (void)state;
  tn_rule idms = rule_of("idms.example.org:443");
  tn_rule mc = rule_of("*.mc.example:443");
  mc.when_authorized = true;
  assert_int_equal(tn_policy_add(&p, &idms), 0);
  assert_int_equal(tn_policy_add(&p, &mc), 0);
  tn_authority a = auth_of("kms.mc.example:443");
  assert_false(tn_policy_allows_target(&p, &a, false));
  assert_true(tn_policy_needs_authorization(&p, &a));
  assert_true(tn_policy_allows_target(&p, &a, true));
  a = auth_of("idms.example.org:443");
  assert_true(tn_policy_allows_target(&p, &a, false));
  assert_true(tn_policy_allows_target(&p, &a, true));
  assert_false(tn_policy_needs_authorization(&p, &a));
  a = auth_of("other.example:443");
  assert_false(tn_policy_allows_target(&p, &a, true));
  assert_false(tn_policy_needs_authorization(&p, &a));
  tn_policy p2 = {0};
  assert_int_equal(tn_policy_copy(&p2, &p), 0);
  a = auth_of("kms.mc.example:443");
  assert_false(tn_policy_allows_target(&p2, &a, false));
  tn_policy_free(&p2);
  tn_policy_free(&p);
}

static tn_rule udp_rule_of(const char *s) {
  tn_rule r;
  const char *why = NULL;
  if (tn_rule_parse_udp(s, &r, &why) != 0)
    fail_msg("allow_udp rule \"%s\" refused: %s", s, why);
  assert_true(r.udp);
  return r;
}

/* allow_udp: the allow syntax plus port ranges, which TCP rules refuse. */
static void test_udp_rule_ranges(void **state) {
  (void)state;
  static const struct {
    const char *in, *canon;
    uint16_t first, last;
  } accepts[] = {
      {"media.mc.example:10000-20000", "media.mc.example:10000-20000", 10000, 20000},
      {"10.20.0.0/16:5000-5999", "10.20.0.0/16:5000-5999", 5000, 5999},
      {"[fd00::/8]:1-65535", "[fd00::/8]:1-65535", 1, 65535},
      {"*.mc.example:5004", "*.mc.example:5004", 5004, 0},
      {"rtp.example:7-7", "rtp.example:7", 7, 7},
      {"rtp.example:*", "rtp.example:*", 0, 0},
  };
  for (size_t i = 0; i < N_ELEMS(accepts); i++) {
    tn_rule r = udp_rule_of(accepts[i].in), again;
    char text[300];
    const char *why;
    assert_int_equal(r.port, accepts[i].first);
    assert_int_equal(r.port_last, accepts[i].last);
    assert_true(tn_rule_format(&r, text, sizeof(text)) > 0);
    assert_string_equal(text, accepts[i].canon);
    assert_int_equal(tn_rule_parse_udp(text, &again, &why), 0);
    assert_true(rules_equal(&r, &again));
  }
  static const struct {
    const char *in, *why;
  } refuses[] = {
      {"media.example:2000-1000", "port range must run from a lower to a higher port"},
      {"media.example:0-10", "port 0 is not a valid target port (use host:* for any port)"},
      {"media.example:10-", "empty port after ':' (use host:* for any port)"},
      {"media.example:-10", "empty port after ':' (use host:* for any port)"},
      {"media.example:10-70000", "port out of range (1..65535)"},
      {"media.example:1-2-3", "port must be 1 to 5 decimal digits, or '*'"},
      {"*:5000-6000", NULL},
  };
  for (size_t i = 0; i < N_ELEMS(refuses); i++) {
    tn_rule r;
    const char *why = NULL;
    memset(&r, SENTINEL, sizeof(r));
    assert_int_equal(tn_rule_parse_udp(refuses[i].in, &r, &why), TN_EINVAL);
    assert_non_null(why);
    if (refuses[i].why)
      assert_string_equal(why, refuses[i].why);
    assert_int_equal(r.port, SENTINEL * 257);
  }
  /* a TCP rule takes no range */
  tn_rule r;
  const char *why;
  assert_int_equal(tn_rule_parse("media.mc.example:10000-20000", &r, &why), TN_EINVAL);
  assert_int_equal(tn_rule_parse("media.mc.example:10000", &r, &why), 0);
  assert_false(r.udp);
}

/* A range matches its ends and what lies between, nothing else; a TCP rule
 * never permits UDP and an allow_udp rule never permits TCP. */
static void test_policy_udp_separate_from_tcp(void **state) {
  (void)state;
  tn_policy p = {0};
  tn_rule media = udp_rule_of("media.mc.example:10000-20000");
  tn_rule idms = rule_of("idms.example.org:443");
  tn_rule kms = udp_rule_of("*.kms.example:5000-5001");
  kms.when_authorized = true;
  assert_int_equal(tn_policy_add(&p, &media), 0);
  assert_int_equal(tn_policy_add(&p, &idms), 0);
  assert_int_equal(tn_policy_add(&p, &kms), 0);
  static const struct {
    const char *target;
    bool udp, tcp;
  } cases[] = {
      {"media.mc.example:10000", true, false}, {"media.mc.example:20000", true, false},
      {"media.mc.example:15004", true, false}, {"media.mc.example:9999", false, false},
      {"media.mc.example:20001", false, false}, {"idms.example.org:443", false, true},
  };
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_authority a = auth_of(cases[i].target);
    assert_int_equal(tn_policy_allows_udp_target(&p, &a, true), cases[i].udp);
    assert_int_equal(tn_policy_allows_target(&p, &a, true), cases[i].tcp);
  }
  tn_authority a = auth_of("a.kms.example:5001");
  assert_false(tn_policy_allows_udp_target(&p, &a, false));
  assert_true(tn_policy_allows_udp_target(&p, &a, true));
  assert_true(tn_policy_needs_udp_authorization(&p, &a));
  assert_false(tn_policy_needs_authorization(&p, &a));
  assert_false(tn_policy_allows_target(&p, &a, true));
  tn_policy copy = {0};
  assert_int_equal(tn_policy_copy(&copy, &p), 0);
  a = auth_of("media.mc.example:12345");
  assert_true(tn_policy_allows_udp_target(&copy, &a, false));
  tn_policy_free(&copy);
  tn_policy_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rule_accepts),
      cmocka_unit_test(test_rule_round_trip),
      cmocka_unit_test(test_rule_why_null_on_success),
      cmocka_unit_test(test_rule_format_errors),
      cmocka_unit_test(test_rule_refuses),
      cmocka_unit_test(test_rule_refuses_long),
      cmocka_unit_test(test_rule_parse_null),
      cmocka_unit_test(test_rule_matches),
      cmocka_unit_test(test_rule_matches_odd_inputs),
      cmocka_unit_test(test_policy_default_denies),
      cmocka_unit_test(test_policy_add_and_match),
      cmocka_unit_test(test_policy_growth),
      cmocka_unit_test(test_policy_copy),
      cmocka_unit_test(test_policy_free_resets),
      cmocka_unit_test(test_policy_allows_addr),
      cmocka_unit_test(test_policy_allows_addr_other_families),
      cmocka_unit_test(test_policy_when_authorized),
      cmocka_unit_test(test_udp_rule_ranges),
      cmocka_unit_test(test_policy_udp_separate_from_tcp),
      cmocka_unit_test(test_strerror),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
