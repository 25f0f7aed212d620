/* Destination policy: which CONNECT targets a device may reach.
 *
 * Two checks, in order:
 *  1. tn_policy_allows_target(): the requested authority must match an allow
 *     rule (before any DNS lookup, so refused names are never resolved);
 *  2. tn_policy_allows_addr(): each address the name resolves to (or the
 *     literal) must be public unless allow_private is set. This is checked on
 *     the address actually connected to, which defeats DNS rebinding.
 *
 * Default: nothing is allowed.
 */
#ifndef TN_POLICY_H
#define TN_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tunnel/addr.h"

typedef enum {
  TN_RULE_HOST = 0, /* exact name: "idms.example.org:443" */
  TN_RULE_SUFFIX,   /* "*.example.org:443": any subdomain, not the apex */
  TN_RULE_CIDR      /* "10.1.2.3:443", "10.0.0.0/8:443", "[fd00::/8]:443" */
} tn_rule_kind;

typedef struct tn_rule {
  tn_rule_kind kind;
  uint16_t port;              /* 0 means any port ("host:*") */
  uint16_t port_last;         /* a range's last port ("host:10000-20000"); 0 or
                                    port: the one port */
  char host[TN_HOST_MAX + 1]; /* HOST: the name; SUFFIX: ".example.org" */
  tn_cidr cidr;               /* CIDR rules: matches IP-literal targets only */
  bool when_authorized;       /* allow_when_authorized: only while the gateway
                                    holds a valid access token (set by the caller) */
  bool udp;                   /* allow_udp: a UDP destination (CONNECT-UDP); a
                                    TCP rule never permits UDP, and the reverse */
  uint16_t egress;            /* the engine's opts.egress[egress - 1]; 0: the default
                                    (set by the caller: an egress never widens a rule) */
} tn_rule;

/* Parses one allow rule. Names are normalised like tn_authority_parse (lower
 * case, trailing dot dropped). A bare "*" host is refused: it would make the
 * gateway an open proxy, and so is a /0 prefix. On failure returns TN_EINVAL, sets *why to a static
 * human-readable reason and leaves out untouched. */
int tn_rule_parse(const char *s, tn_rule *out, const char **why);
/* The same for an allow_udp rule: the same syntax plus port ranges
 * ("media.mc.example:10000-20000", "10.20.0.0/16:5000-5999"; first <= last,
 * both 1..65535); the rule has udp set. */
int tn_rule_parse_udp(const char *s, tn_rule *out, const char **why);

/* Formats a rule back into its config form into buf (NUL-terminated,
 * truncated to len); returns snprintf's result. */
int tn_rule_format(const tn_rule *r, char *buf, size_t len);

/* Whether r allows the parsed target a (host and port; when_authorized is
 * not looked at here: see tn_policy_allows_target). */
bool tn_rule_matches(const tn_rule *r, const tn_authority *a);

typedef struct tn_policy {
  tn_rule *rules;
  size_t n_rules;
  size_t cap_rules;
  bool allow_private;
} tn_policy;

/* Appends a copy of r. Returns 0 or TN_ENOMEM. */
int tn_policy_add(tn_policy *p, const tn_rule *r);
/* Deep copy; dst is overwritten. Returns 0 or TN_ENOMEM. */
int tn_policy_copy(tn_policy *dst, const tn_policy *src);
/* Frees p's rules and leaves p empty with allow_private off (the safe
 * default); p itself is the caller's. NULL is ignored. */
void tn_policy_free(tn_policy *p);

/* authorized: whether the gateway currently holds a valid access token;
 * rules marked when_authorized match only then. udp: whether the target is
 * a CONNECT-UDP one; only rules of that kind are looked at. */
bool tn_policy_allows_target(const tn_policy *p, const tn_authority *a, bool authorized);
bool tn_policy_allows_udp_target(const tn_policy *p, const tn_authority *a, bool authorized);
/* The first TCP (UDP) rule that allows a (as tn_policy_allows_target, resp.
 * tn_policy_allows_udp_target), or NULL. */
const tn_rule *tn_policy_match(const tn_policy *p, const tn_authority *a, bool authorized);
const tn_rule *tn_policy_match_udp(const tn_policy *p, const tn_authority *a, bool authorized);
/* True when a when_authorized rule (of the kind udp says) would match: used
 * to say "limited service" instead of a plain "not allowed" in the log. */
bool tn_policy_needs_authorization(const tn_policy *p, const tn_authority *a);
bool tn_policy_needs_udp_authorization(const tn_policy *p, const tn_authority *a);
/* Whether a resolved address may be connected to: a public address always;
 * the other classes only with allow_private, and never the unspecified or a
 * multicast address (also embedded in a v4-mapped one) or a non-IP family. */
bool tn_policy_allows_addr(const tn_policy *p, const struct sockaddr *sa);

#endif
