/* Fuzzes the allow-rule parser (tn_rule_parse), the CIDR parser
 * (tn_cidr_parse) and rule matching. The input is split at the first '\n':
 * the rule before it, a CONNECT target after it.
 * Oracles beyond the sanitizers:
 * - a refused rule gives a reason and leaves its out-parameter untouched;
 * - an accepted rule formats back to text that parses to the same rule;
 * - no accepted rule is an open proxy: it never matches a target with a
 *   different TLD, and a CIDR rule never has prefix 0;
 * - a CIDR that parses contains its own network address;
 * - the same for allow_udp rules (tn_rule_parse_udp, port ranges): a range
 *   runs upwards and round-trips, and a rule in range matches its ends. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/policy.h"

static void fail(const char *why, const char *rule) {
  fprintf(stderr, "fuzz_rule: %s for rule '%s'\n", why, rule);
  abort();
}

static void check_cidr(const uint8_t *data, size_t size) {
  tn_cidr c;
  if (tn_cidr_parse((const char *)data, size, &c) != 0)
    return;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (c.family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, c.addr, 4);
  } else if (c.family == AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, c.addr, 16);
  } else {
    fail("cidr with an unknown family", "(cidr)");
  }
  if (!tn_cidr_contains(&c, (struct sockaddr *)&ss))
    fail("cidr does not contain its own address", "(cidr)");
}

typedef int (*rule_parser)(const char *s, tn_rule *out, const char **why);

static void check_rule(const char *text, const tn_authority *target, bool have_target,
                       rule_parser parse) {
  tn_rule r, again, untouched;
  const char *why = NULL;
  memset(&r, 0x5a, sizeof(r));
  memcpy(&untouched, &r, sizeof(r));
  if (parse(text, &r, &why) != 0) {
    if (!why)
      fail("refused without a reason", text);
    if (memcmp(&r, &untouched, sizeof(r)) != 0)
      fail("out-parameter modified on failure", text);
    return;
  }
  if (r.kind == TN_RULE_CIDR && r.cidr.prefix == 0)
    fail("accepted a /0 prefix: an open proxy", text);
  char buf[TN_HOST_MAX + 64];
  int n = tn_rule_format(&r, buf, sizeof(buf));
  if (n <= 0 || (size_t)n >= sizeof(buf))
    fail("format failed", text);
  if (parse(buf, &again, &why) != 0)
    fail("formatted rule does not parse again", text);
  if (r.port_last && r.port_last < r.port)
    fail("a port range that runs downwards", text);
  if ((r.port_last > r.port) != (again.port_last > again.port) ||
      (r.port_last > r.port && again.port_last != r.port_last) || again.udp != r.udp)
    fail("formatted rule has another range or kind", text);
  if (again.kind != r.kind || again.port != r.port || strcmp(again.host, r.host) != 0 ||
      (r.kind == TN_RULE_CIDR && memcmp(&again.cidr, &r.cidr, sizeof(r.cidr)) != 0))
    fail("formatted rule parses to something else", text);
  /* Open-proxy check: a target in a TLD that appears nowhere in the rule. */
  tn_authority probe;
  const char *other = "mcgw-fuzz-probe.invalid-tld-zz:443";
  if (tn_authority_parse(other, strlen(other), &probe) == 0 && strstr(r.host, "zz") == NULL &&
      tn_rule_matches(&r, &probe))
    fail("rule matches an unrelated name: open proxy", text);
  if (have_target)
    (void)tn_rule_matches(&r, target);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nl = memchr(data, '\n', size);
  size_t rule_len = nl ? (size_t)(nl - data) : size;
  char *text = malloc(rule_len + 1);
  if (!text)
    return 0;
  memcpy(text, data, rule_len);
  text[rule_len] = '\0';
  tn_authority target;
  bool have_target =
      nl && tn_authority_parse((const char *)nl + 1, size - rule_len - 1, &target) == 0;
  check_rule(text, &target, have_target, tn_rule_parse);
  check_rule(text, &target, have_target, tn_rule_parse_udp);
  check_cidr(data, rule_len);
  free(text);
  return 0;
}
