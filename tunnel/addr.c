/* CONNECT targets and socket addresses: parsing, classification, formatting.
 *
 * This is the first half of the SSRF barrier, so the parsers accept exactly
 * one spelling of each target: anything a resolver or inet_aton() might read
 * differently from us is refused. Every parser builds its result in a local
 * and copies it to *out only on success.
 */
#include "tunnel/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "base/hostport.h"
#include "tunnel/error.h"

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static const char *last_of(const char *s, size_t len, char c) {
  for (size_t i = len; i > 0; i--)
    if (s[i - 1] == c)
      return s + i - 1;
  return NULL;
}

int tn_authority_parse(const char *s, size_t len, tn_authority *out) {
  base_hostport hp;
  if (!out || base_hostport_parse(s, len, 0, &hp, NULL) != 0)
    return TN_EINVAL;
  out->kind = hp.kind == BASE_HOST_IPV6   ? TN_HOST_IPV6
              : hp.kind == BASE_HOST_IPV4 ? TN_HOST_IPV4
                                          : TN_HOST_NAME;
  memcpy(out->host, hp.host, strlen(hp.host) + 1); /* at most TN_HOST_MAX in strict mode */
  out->port = hp.port;
  memcpy(&out->ip, &hp.ip, sizeof(out->ip));
  return 0;
}

int tn_authority_format(const tn_authority *a, char *buf, size_t len) {
  if (!a || (!buf && len > 0))
    return TN_EINVAL;
  if (a->kind == TN_HOST_IPV6)
    return snprintf(buf, len, "[%s]:%u", a->host, (unsigned)a->port);
  return snprintf(buf, len, "%s:%u", a->host, (unsigned)a->port);
}

/* --- classification ----------------------------------------------------- */

bool tn_addr_is_broadcast(const struct sockaddr *sa) {
  static const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 255, 255, 255, 255};
  if (!sa)
    return false;
  if (sa->sa_family == AF_INET)
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == INADDR_BROADCAST;
  if (sa->sa_family == AF_INET6)
    return memcmp(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, mapped, 16) == 0;
  return false;
}

/* True when the first `bits` bits of a and b are equal. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits) {
  size_t whole = bits / 8;
  unsigned rest = bits % 8;
  uint8_t mask;
  if (memcmp(a, b, whole) != 0)
    return false;
  if (rest == 0)
    return true;
  mask = (uint8_t)(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

typedef struct {
  uint8_t net[16];
  uint8_t bits;
  tn_addr_class cls;
} addr_range;

/* First match wins, so more specific ranges come first. */
static const addr_range v4_ranges[] = {
    {{0}, 8, TN_ADDR_UNSPECIFIED},          {{10}, 8, TN_ADDR_PRIVATE},
    {{100, 64}, 10, TN_ADDR_PRIVATE},       {{127}, 8, TN_ADDR_LOOPBACK},
    {{169, 254}, 16, TN_ADDR_LINK_LOCAL},   {{172, 16}, 12, TN_ADDR_PRIVATE},
    {{192, 0, 0}, 24, TN_ADDR_RESERVED},    {{192, 0, 2}, 24, TN_ADDR_RESERVED},
    {{192, 88, 99}, 24, TN_ADDR_RESERVED}, /* 6to4 relay anycast, deprecated */
    {{192, 168}, 16, TN_ADDR_PRIVATE},      {{198, 18}, 15, TN_ADDR_RESERVED},
    {{198, 51, 100}, 24, TN_ADDR_RESERVED}, {{203, 0, 113}, 24, TN_ADDR_RESERVED},
    {{224}, 4, TN_ADDR_MULTICAST},          {{240}, 4, TN_ADDR_RESERVED},
};

static const addr_range v6_ranges[] = {
    {{0}, 128, TN_ADDR_UNSPECIFIED},
    {{[15] = 1}, 128, TN_ADDR_LOOPBACK},
    {{[10] = 0xff, [11] = 0xff}, 96, TN_ADDR_V4MAPPED},
    {{0}, 96, TN_ADDR_V4MAPPED},                                 /* IPv4-compatible, deprecated */
    {{0x00, 0x64, 0xff, 0x9b}, 96, TN_ADDR_V4MAPPED},            /* NAT64 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, TN_ADDR_PRIVATE}, /* local-use NAT64 */
    {{0}, 8, TN_ADDR_RESERVED},                                  /* rest of ::/8 */
    {{0x01, 0x00}, 64, TN_ADDR_RESERVED},                        /* discard-only */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, TN_ADDR_RESERVED},            /* documentation */
    {{0x20, 0x01}, 23, TN_ADDR_RESERVED}, /* IETF protocol assignments, Teredo */
    {{0x20, 0x02}, 16, TN_ADDR_RESERVED}, /* 6to4: embeds an IPv4 address */
    {{0x3f, 0xff}, 20, TN_ADDR_RESERVED}, /* documentation (RFC 9637) */
    {{0xfc}, 7, TN_ADDR_PRIVATE},
    {{0xfe, 0x80}, 10, TN_ADDR_LINK_LOCAL},
    {{0xfe, 0xc0}, 10, TN_ADDR_RESERVED}, /* site-local, deprecated */
    {{0xff}, 8, TN_ADDR_MULTICAST},
};

static tn_addr_class classify_bytes(const uint8_t *a, const addr_range *r, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (prefix_equal(a, r[i].net, r[i].bits))
      return r[i].cls;
  return TN_ADDR_PUBLIC;
}

tn_addr_class tn_addr_classify(const struct sockaddr *sa) {
  if (!sa)
    return TN_ADDR_RESERVED;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    return classify_bytes((const uint8_t *)&in->sin_addr, v4_ranges,
                          sizeof(v4_ranges) / sizeof(v4_ranges[0]));
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    return classify_bytes(in6->sin6_addr.s6_addr, v6_ranges,
                          sizeof(v6_ranges) / sizeof(v6_ranges[0]));
  }
  return TN_ADDR_RESERVED;
}

const char *tn_addr_class_name(tn_addr_class c) {
  switch (c) {
  case TN_ADDR_PUBLIC:
    return "public";
  case TN_ADDR_UNSPECIFIED:
    return "unspecified";
  case TN_ADDR_LOOPBACK:
    return "loopback";
  case TN_ADDR_PRIVATE:
    return "private";
  case TN_ADDR_LINK_LOCAL:
    return "link_local";
  case TN_ADDR_MULTICAST:
    return "multicast";
  case TN_ADDR_V4MAPPED:
    return "v4mapped";
  case TN_ADDR_RESERVED:
    return "reserved";
  }
  return "unknown";
}

/* --- socket addresses --------------------------------------------------- */

/* Returns 0, TN_EINVAL for an unsupported family, or TN_ERANGE when buf is too
 * small (buf then holds a truncated, NUL-terminated string). */
int tn_addr_format(const struct sockaddr *sa, char *buf, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  int n;
  if (!sa || !buf || len == 0)
    return TN_EINVAL;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    if (!inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip)))
      return TN_EINVAL;
    n = snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (!inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip)))
      return TN_EINVAL;
    n = snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  } else {
    return TN_EINVAL;
  }
  return (n < 0 || (size_t)n >= len) ? TN_ERANGE : 0;
}

int tn_addr_parse_listen(const char *s, struct sockaddr_storage *out) {
  struct sockaddr_storage ss;
  const char *colon;
  size_t len, hlen;
  uint16_t port;

  if (!s || !out)
    return TN_EINVAL;
  len = strnlen(s, TN_ADDRSTR_MAX);
  if (len == 0 || len >= TN_ADDRSTR_MAX)
    return TN_EINVAL;
  colon = last_of(s, len, ':');
  if (!colon)
    return TN_EINVAL;
  hlen = (size_t)(colon - s);
  if (base_port_parse(colon + 1, len - hlen - 1, true, &port, NULL) != 0)
    return TN_EINVAL;

  memset(&ss, 0, sizeof(ss));
  if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (base_ipv6_parse(s + 1, hlen - 2, &in6->sin6_addr) != 0)
      return TN_EINVAL;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    if (hlen == 1 && s[0] == '*')
      in->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (base_ipv4_parse(s, hlen, &in->sin_addr) != 0)
      return TN_EINVAL;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
  }
  *out = ss;
  return 0;
}

/* --- prefixes ----------------------------------------------------------- */

/* Prefix length: 1..3 decimal digits, no leading zero except "0" itself. */
static int parse_prefix_len(const char *s, size_t len, unsigned max, uint8_t *out) {
  unsigned v = 0;
  if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
    return TN_EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return TN_EINVAL;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > max)
    return TN_EINVAL;
  *out = (uint8_t)v;
  return 0;
}

static bool host_bits_set(const uint8_t *addr, unsigned max, unsigned prefix) {
  for (unsigned i = 0; i < max / 8; i++) {
    unsigned lo = i * 8;
    uint8_t keep;
    if (prefix >= lo + 8)
      continue;
    keep = prefix <= lo ? 0 : (uint8_t)(0xff << (8 - (prefix - lo)));
    if (addr[i] & (uint8_t)~keep)
      return true;
  }
  return false;
}

int tn_cidr_parse(const char *s, size_t len, tn_cidr *out) {
  tn_cidr c;
  const char *slash;
  size_t alen;
  unsigned max;

  if (!s || !out || len == 0)
    return TN_EINVAL;
  slash = memchr(s, '/', len);
  alen = slash ? (size_t)(slash - s) : len;
  memset(&c, 0, sizeof(c));
  if (memchr(s, ':', alen)) {
    struct in6_addr a6;
    if (base_ipv6_parse(s, alen, &a6) != 0)
      return TN_EINVAL;
    memcpy(c.addr, &a6, 16);
    c.family = AF_INET6;
    max = 128;
  } else {
    struct in_addr a4;
    if (base_ipv4_parse(s, alen, &a4) != 0)
      return TN_EINVAL;
    memcpy(c.addr, &a4, 4);
    c.family = AF_INET;
    max = 32;
  }
  c.prefix = (uint8_t)max;
  if (slash && parse_prefix_len(slash + 1, len - alen - 1, max, &c.prefix) != 0)
    return TN_EINVAL;
  if (host_bits_set(c.addr, max, c.prefix))
    return TN_EINVAL;
  *out = c;
  return 0;
}

/* Families must match: a v4-mapped IPv6 address is not inside an IPv4 prefix
 * (it is classified, and refused, as TN_ADDR_V4MAPPED instead). */
bool tn_cidr_contains(const tn_cidr *c, const struct sockaddr *sa) {
  if (!c || !sa || sa->sa_family != c->family)
    return false;
  if (c->family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    return c->prefix <= 32 && prefix_equal((const uint8_t *)&in->sin_addr, c->addr, c->prefix);
  }
  if (c->family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    return c->prefix <= 128 && prefix_equal(in6->sin6_addr.s6_addr, c->addr, c->prefix);
  }
  return false;
}
