/* Destination policy: allow rules and the two checks of tunnel/policy.h.
 *
 * Rule hosts go through tn_authority_parse() so that a rule and a CONNECT
 * target are normalised by the same code; the rule parser only adds the
 * wildcard and prefix forms and explains each refusal.
 */
#include "tunnel/policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tunnel/error.h"

/* Longest sensible rule: "*." + 253-byte name + "." + ":65535", with room. */
#define RULE_TEXT_MAX 300

static const char W_EMPTY[] = "empty rule";
static const char W_TOO_LONG[] = "rule is too long";
static const char W_CHAR[] = "whitespace, control or non-ASCII character in rule";
static const char W_USERINFO[] = "userinfo ('@') is not allowed in a rule";
static const char W_PERCENT[] = "'%' is not allowed (no percent-encoding, no IPv6 zone ids)";
static const char W_NO_PORT[] = "missing ':port' (use host:* for any port)";
static const char W_PORT_EMPTY[] = "empty port after ':' (use host:* for any port)";
static const char W_PORT_SYNTAX[] = "port must be 1 to 5 decimal digits, or '*'";
static const char W_PORT_ZERO[] = "port 0 is not a valid target port (use host:* for any port)";
static const char W_PORT_RANGE[] = "port out of range (1..65535)";
static const char W_RANGE_ORDER[] = "port range must run from a lower to a higher port";
static const char W_EMPTY_HOST[] = "empty host";
static const char W_OPEN_PROXY[] = "a bare '*' host would make the gateway an open proxy";
static const char W_STAR[] = "'*' is only allowed as a whole first label, as in '*.example.org'";
static const char W_SUFFIX_EMPTY[] = "missing domain after '*.'";
static const char W_SUFFIX_IP[] = "a '*.' wildcard needs a DNS name, not an IP address";
static const char W_SUFFIX_LONG[] = "wildcard domain longer than 252 characters";
static const char W_V6_BRACKETS[] = "IPv6 addresses must be in brackets, as in '[::1]:443'";
static const char W_BRACKET_OPEN[] = "unterminated '[' (expected '[v6]:port')";
static const char W_BRACKET_JUNK[] = "unexpected text after ']' (expected ':port')";
static const char W_BRACKET_V4[] = "brackets are only for IPv6 addresses";
static const char W_NO_ADDR[] = "missing IP address";
static const char W_BAD_V6[] = "invalid IPv6 address";
static const char W_PREFIX_NOT_IP[] = "a '/' prefix needs an IP address, not a name";
static const char W_NO_OUT[] = "no rule to fill in (internal error)";
static const char W_NOT_CANON_V4[] =
    "not a canonical IPv4 address (use four decimal octets 0-255 without leading zeros)";
static const char W_PREFIX_SYNTAX[] =
    "prefix length must be decimal digits after '/', without leading zeros";
static const char W_PREFIX_RANGE[] = "prefix length out of range (0..32 for IPv4, 0..128 for IPv6)";
static const char W_PREFIX_ZERO[] =
    "a /0 prefix matches every address and would make the gateway an open proxy";
static const char W_HOST_BITS[] =
    "address has bits set below the prefix length (use the network address)";
static const char W_NAME_CHAR[] = "host names may only contain letters, digits, '-', '_' and '.'";
static const char W_LABEL_EMPTY[] = "empty label in host name (leading or doubled '.')";
static const char W_LABEL_LONG[] = "host name label longer than 63 characters";
static const char W_NAME_LONG[] = "host name longer than 253 characters";
static const char W_BAD_HOST[] = "invalid host";

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '_' ||
         c == '.';
}

static bool label_is_numeric(const char *l, size_t n) {
  if (n >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X'))
    return true;
  for (size_t i = 0; i < n; i++)
    if (!is_digit(l[i]))
      return false;
  return n > 0;
}

/* Explains why h (n bytes) is not a valid host; called only after
 * tn_authority_parse() refused it, which remains the judge. */
static const char *name_problem(const char *h, size_t n) {
  size_t label = 0, last = 0;
  if (n > 0 && h[n - 1] == '.')
    n--;
  if (n == 0)
    return W_EMPTY_HOST;
  for (size_t i = 0; i < n; i++)
    if (!is_name_char(h[i]))
      return W_NAME_CHAR;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && h[i] != '.') {
      if (++label > 63)
        return W_LABEL_LONG;
      continue;
    }
    if (label == 0)
      return W_LABEL_EMPTY;
    if (i < n)
      last = i + 1; /* start of the next label */
    label = 0;
  }
  if (n > TN_HOST_MAX)
    return W_NAME_LONG;
  if (label_is_numeric(h + last, n - last))
    return W_NOT_CANON_V4;
  return W_BAD_HOST;
}

/* Parses a bare host (no port) as a CONNECT target would be parsed. */
static int host_authority(const char *h, size_t n, tn_authority *a) {
  char buf[TN_HOST_MAX + 8];
  if (n == 0 || n > TN_HOST_MAX + 1)
    return TN_EINVAL;
  memcpy(buf, h, n);
  memcpy(buf + n, ":1", 2);
  return tn_authority_parse(buf, n + 2, a);
}

/* A decimal port 1..65535 of at most 5 digits, s[0..n). */
static const char *parse_one_port(const char *s, size_t n, uint16_t *out) {
  unsigned long v = 0;
  if (n == 0)
    return W_PORT_EMPTY;
  if (n > 5)
    return W_PORT_SYNTAX;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit(s[i]))
      return W_PORT_SYNTAX;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  if (v == 0)
    return W_PORT_ZERO;
  if (v > 65535)
    return W_PORT_RANGE;
  *out = (uint16_t)v;
  return NULL;
}

/* "*", a port, or with ranges "first-last". */
static const char *parse_rule_port(const char *s, bool ranges, tn_rule *r) {
  size_t n = strlen(s);
  const char *dash = ranges ? strchr(s, '-') : NULL, *why;
  if (n == 1 && s[0] == '*') {
    r->port = 0;
    return NULL;
  }
  if (!dash)
    return parse_one_port(s, n, &r->port);
  if ((why = parse_one_port(s, (size_t)(dash - s), &r->port)) ||
      (why = parse_one_port(dash + 1, n - (size_t)(dash - s) - 1, &r->port_last)))
    return why;
  return r->port_last < r->port ? W_RANGE_ORDER : NULL;
}

/* An address with an optional "/len", of the given family. */
static const char *parse_rule_cidr(const char *h, size_t n, int family, tn_cidr *c) {
  const char *slash = memchr(h, '/', n);
  size_t alen = slash ? (size_t)(slash - h) : n;
  tn_cidr bare;

  if (alen == 0)
    return W_NO_ADDR;
  if (tn_cidr_parse(h, alen, &bare) != 0) {
    if (family == AF_INET6)
      return W_BAD_V6;
    return strspn(h, "0123456789.") >= alen ? W_NOT_CANON_V4 : W_PREFIX_NOT_IP;
  }
  if (bare.family != family)
    return family == AF_INET6 ? W_BRACKET_V4 : W_V6_BRACKETS;
  if (slash) {
    const char *p = slash + 1;
    size_t plen = n - alen - 1;
    unsigned v = 0;
    if (plen == 0 || plen > 3 || (plen > 1 && p[0] == '0'))
      return W_PREFIX_SYNTAX;
    for (size_t i = 0; i < plen; i++) {
      if (!is_digit(p[i]))
        return W_PREFIX_SYNTAX;
      v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > (family == AF_INET6 ? 128u : 32u))
      return W_PREFIX_RANGE;
  }
  return tn_cidr_parse(h, n, c) == 0 ? NULL : W_HOST_BITS;
}

/* "*.domain": stored as ".domain" so matching is a plain suffix compare. */
static const char *parse_rule_suffix(const char *h, size_t n, tn_rule *r) {
  tn_authority a;
  size_t len;

  if (n == 0 || (n == 1 && h[0] == '.'))
    return W_SUFFIX_EMPTY;
  if (memchr(h, '*', n))
    return W_STAR;
  if (host_authority(h, n, &a) != 0) {
    const char *why = name_problem(h, n);
    return why == W_NOT_CANON_V4 ? W_SUFFIX_IP : why;
  }
  if (a.kind != TN_HOST_NAME)
    return W_SUFFIX_IP;
  len = strlen(a.host);
  if (len + 1 > TN_HOST_MAX)
    return W_SUFFIX_LONG;
  r->kind = TN_RULE_SUFFIX;
  r->host[0] = '.';
  memcpy(r->host + 1, a.host, len + 1);
  return NULL;
}

/* A DNS name (HOST rule) or an IPv4 literal (full-length CIDR rule). */
static const char *parse_rule_name(const char *h, size_t n, tn_rule *r) {
  tn_authority a;
  if (host_authority(h, n, &a) != 0)
    return name_problem(h, n);
  if (a.kind == TN_HOST_NAME) {
    r->kind = TN_RULE_HOST;
    memcpy(r->host, a.host, sizeof(r->host));
    return NULL;
  }
  r->kind = TN_RULE_CIDR;
  return parse_rule_cidr(a.host, strlen(a.host), a.kind == TN_HOST_IPV6 ? AF_INET6 : AF_INET,
                         &r->cidr);
}

static const char *parse_rule_host(const char *h, size_t n, bool bracketed, tn_rule *r) {
  if (n == 0)
    return bracketed ? W_NO_ADDR : W_EMPTY_HOST;
  if (bracketed) {
    r->kind = TN_RULE_CIDR;
    return parse_rule_cidr(h, n, AF_INET6, &r->cidr);
  }
  if (n == 1 && h[0] == '*')
    return W_OPEN_PROXY;
  if (n >= 2 && h[0] == '*' && h[1] == '.')
    return parse_rule_suffix(h + 2, n - 2, r);
  if (memchr(h, '*', n))
    return W_STAR;
  if (memchr(h, '/', n)) {
    r->kind = TN_RULE_CIDR;
    return parse_rule_cidr(h, n, AF_INET, &r->cidr);
  }
  return parse_rule_name(h, n, r);
}

static const char *check_rule_chars(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c >= 0x7f)
      return W_CHAR;
    if (c == '@')
      return W_USERINFO;
    if (c == '%')
      return W_PERCENT;
  }
  return NULL;
}

static const char *parse_rule(const char *s, bool ranges, tn_rule *r) {
  size_t n, hlen;
  const char *host, *port, *why;
  bool bracketed = false;

  if (!s || !*s)
    return W_EMPTY;
  n = strnlen(s, RULE_TEXT_MAX + 1);
  if (n > RULE_TEXT_MAX)
    return W_TOO_LONG;
  if ((why = check_rule_chars(s, n)))
    return why;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close)
      return W_BRACKET_OPEN;
    if (close[1] == '\0')
      return W_NO_PORT;
    if (close[1] != ':')
      return W_BRACKET_JUNK;
    host = s + 1;
    hlen = (size_t)(close - host);
    port = close + 2;
    bracketed = true;
  } else {
    const char *colon = strrchr(s, ':');
    if (!colon)
      return W_NO_PORT;
    host = s;
    hlen = (size_t)(colon - s);
    if (memchr(host, ':', hlen))
      return W_V6_BRACKETS;
    port = colon + 1;
  }
  if ((why = parse_rule_host(host, hlen, bracketed, r)))
    return why;
  if (r->kind == TN_RULE_CIDR && r->cidr.prefix == 0)
    return W_PREFIX_ZERO;
  return parse_rule_port(port, ranges, r);
}

/* On success also sets *why (when given) to NULL. */
static int rule_parse(const char *s, bool udp, tn_rule *out, const char **why) {
  tn_rule r;
  const char *err;

  memset(&r, 0, sizeof(r));
  r.udp = udp;
  err = out ? parse_rule(s, udp, &r) : W_NO_OUT;
  if (why)
    *why = err;
  if (err)
    return TN_EINVAL;
  *out = r;
  return 0;
}

int tn_rule_parse(const char *s, tn_rule *out, const char **why) {
  return rule_parse(s, false, out, why);
}

int tn_rule_parse_udp(const char *s, tn_rule *out, const char **why) {
  return rule_parse(s, true, out, why);
}

/* Returns snprintf's result, or TN_EINVAL for a malformed rule. */
int tn_rule_format(const tn_rule *r, char *buf, size_t len) {
  char port[16], ip[INET6_ADDRSTRLEN];

  if (!r || (!buf && len > 0))
    return TN_EINVAL;
  if (r->port == 0)
    memcpy(port, "*", 2);
  else if (r->port_last > r->port)
    snprintf(port, sizeof(port), "%u-%u", (unsigned)r->port, (unsigned)r->port_last);
  else
    snprintf(port, sizeof(port), "%u", (unsigned)r->port);

  switch (r->kind) {
  case TN_RULE_HOST:
    return snprintf(buf, len, "%s:%s", r->host, port);
  case TN_RULE_SUFFIX:
    return snprintf(buf, len, "*%s:%s", r->host, port);
  case TN_RULE_CIDR:
    break;
  default:
    return TN_EINVAL;
  }
  if (r->cidr.family == AF_INET && inet_ntop(AF_INET, r->cidr.addr, ip, sizeof(ip))) {
    if (r->cidr.prefix == 32)
      return snprintf(buf, len, "%s:%s", ip, port);
    return snprintf(buf, len, "%s/%u:%s", ip, (unsigned)r->cidr.prefix, port);
  }
  if (r->cidr.family == AF_INET6 && inet_ntop(AF_INET6, r->cidr.addr, ip, sizeof(ip))) {
    if (r->cidr.prefix == 128)
      return snprintf(buf, len, "[%s]:%s", ip, port);
    return snprintf(buf, len, "[%s/%u]:%s", ip, (unsigned)r->cidr.prefix, port);
  }
  return TN_EINVAL;
}

/* A CIDR rule sees an IP-literal authority as the socket address it names. */
static bool cidr_matches(const tn_cidr *c, const tn_authority *a) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (a->kind == TN_HOST_IPV4) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_addr = a->ip.v4;
  } else if (a->kind == TN_HOST_IPV6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = a->ip.v6;
  } else {
    return false;
  }
  return tn_cidr_contains(c, (const struct sockaddr *)&ss);
}

/* DNS names compare case-insensitively; a SUFFIX rule (".example.org") needs
 * at least one more label, so the apex never matches. */
bool tn_rule_matches(const tn_rule *r, const tn_authority *a) {
  size_t alen, slen;

  if (!r || !a)
    return false;
  if (r->port != 0 &&
      (a->port < r->port || a->port > (r->port_last > r->port ? r->port_last : r->port)))
    return false;
  switch (r->kind) {
  case TN_RULE_HOST:
    return a->kind == TN_HOST_NAME && strcasecmp(r->host, a->host) == 0;
  case TN_RULE_SUFFIX:
    if (a->kind != TN_HOST_NAME || r->host[0] != '.')
      return false;
    alen = strnlen(a->host, sizeof(a->host));
    slen = strnlen(r->host, sizeof(r->host));
    return alen > slen && strcasecmp(a->host + (alen - slen), r->host) == 0;
  case TN_RULE_CIDR:
    return cidr_matches(&r->cidr, a);
  }
  return false;
}

int tn_policy_add(tn_policy *p, const tn_rule *r) {
  if (!p || !r)
    return TN_EINVAL;
  if (p->n_rules == p->cap_rules) {
    size_t cap = p->cap_rules ? p->cap_rules * 2 : 8;
    tn_rule *rules;
    if (cap < p->cap_rules || cap > SIZE_MAX / sizeof(*rules))
      return TN_ENOMEM;
    rules = realloc(p->rules, cap * sizeof(*rules));
    if (!rules)
      return TN_ENOMEM;
    p->rules = rules;
    p->cap_rules = cap;
  }
  p->rules[p->n_rules++] = *r;
  return 0;
}

/* On failure dst is left untouched. */
int tn_policy_copy(tn_policy *dst, const tn_policy *src) {
  tn_policy p = {0};
  if (!dst || !src)
    return TN_EINVAL;
  if (src->n_rules > 0) {
    if (src->n_rules > SIZE_MAX / sizeof(*p.rules))
      return TN_ENOMEM;
    p.rules = malloc(src->n_rules * sizeof(*p.rules));
    if (!p.rules)
      return TN_ENOMEM;
    memcpy(p.rules, src->rules, src->n_rules * sizeof(*p.rules));
  }
  p.n_rules = p.cap_rules = src->n_rules;
  p.allow_private = src->allow_private;
  *dst = p;
  return 0;
}

/* Leaves p empty with allow_private off: the safe default. */
void tn_policy_free(tn_policy *p) {
  if (!p)
    return;
  free(p->rules);
  memset(p, 0, sizeof(*p));
}

/* The first rule of the kind udp says that allows a, or NULL. */
static const tn_rule *match(const tn_policy *p, const tn_authority *a, bool authorized, bool udp) {
  if (!p || !a)
    return NULL;
  for (size_t i = 0; i < p->n_rules; i++) {
    const tn_rule *r = &p->rules[i];
    if (r->udp == udp && (!r->when_authorized || authorized) && tn_rule_matches(r, a))
      return r;
  }
  return NULL;
}

static bool needs_authorization(const tn_policy *p, const tn_authority *a, bool udp) {
  if (!p || !a)
    return false;
  for (size_t i = 0; i < p->n_rules; i++) {
    const tn_rule *r = &p->rules[i];
    if (r->udp == udp && r->when_authorized && tn_rule_matches(r, a))
      return true;
  }
  return false;
}

const tn_rule *tn_policy_match(const tn_policy *p, const tn_authority *a, bool authorized) {
  return match(p, a, authorized, false);
}

const tn_rule *tn_policy_match_udp(const tn_policy *p, const tn_authority *a, bool authorized) {
  return match(p, a, authorized, true);
}

bool tn_policy_allows_target(const tn_policy *p, const tn_authority *a, bool authorized) {
  return tn_policy_match(p, a, authorized) != NULL;
}

bool tn_policy_allows_udp_target(const tn_policy *p, const tn_authority *a, bool authorized) {
  return tn_policy_match_udp(p, a, authorized) != NULL;
}

bool tn_policy_needs_authorization(const tn_policy *p, const tn_authority *a) {
  return needs_authorization(p, a, false);
}

bool tn_policy_needs_udp_authorization(const tn_policy *p, const tn_authority *a) {
  return needs_authorization(p, a, true);
}

static bool never_a_target(tn_addr_class c) {
  return c == TN_ADDR_UNSPECIFIED || c == TN_ADDR_MULTICAST;
}

/* For the ::ffff:0:0/96, ::/96 and 64:ff9b::/96 forms: the class of the IPv4
 * address in the last 32 bits, which is where the packets end up. */
static tn_addr_class embedded_v4_class(const struct sockaddr_in6 *in6) {
  struct sockaddr_in in;
  memset(&in, 0, sizeof(in));
  in.sin_family = AF_INET;
  memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
  return tn_addr_classify((const struct sockaddr *)&in);
}

/* Public addresses only, unless allow_private; even then the unspecified and
 * multicast addresses (also when embedded in a v4-mapped address) and
 * non-IP families are refused. */
bool tn_policy_allows_addr(const tn_policy *p, const struct sockaddr *sa) {
  tn_addr_class c;

  if (!p || !sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
    return false;
  c = tn_addr_classify(sa);
  if (c == TN_ADDR_PUBLIC)
    return true;
  if (!p->allow_private || never_a_target(c))
    return false;
  if (c == TN_ADDR_V4MAPPED)
    return !never_a_target(embedded_v4_class((const struct sockaddr_in6 *)sa));
  return true;
}
