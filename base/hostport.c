/* The one host:port parser. See hostport.h.
 *
 * This is the first half of the SSRF barrier for CONNECT targets, so the
 * strict grammar accepts exactly one spelling of each target: anything a
 * resolver or inet_aton() might read differently from us is refused. The
 * result is built in a local and copied to *out only on success. */
#include "base/hostport.h"

#include <arpa/inet.h>
#include <string.h>

#define LABEL_MAX 63
#define PORT_DIGITS_MAX 5

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Bytes allowed in a DNS label: letters, digits, '-' and '_'. */
static bool is_label_char(char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '_'; }

static char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* The only bytes that can appear anywhere in a strict authority. Refusing the
 * rest up front rules out '@', '%', whitespace, control and non-ASCII bytes. */
static bool is_authority_char(char c) {
  return is_label_char(c) || c == '.' || c == ':' || c == '[' || c == ']';
}

static int fail(const char **why, const char *reason) {
  if (why)
    *why = reason;
  return -1;
}

static const char *last_of(const char *s, size_t len, char c) {
  for (size_t i = len; i > 0; i--)
    if (s[i - 1] == c)
      return s + i - 1;
  return NULL;
}

int base_port_parse(const char *s, size_t len, bool allow_zero, uint16_t *out, const char **why) {
  uint32_t v = 0;
  if (len == 0)
    return fail(why, "empty port");
  if (len > PORT_DIGITS_MAX)
    return fail(why, "bad port");
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return fail(why, "bad port");
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if ((v == 0 && !allow_zero) || v > 65535)
    return fail(why, allow_zero ? "port out of range 0..65535" : "port out of range 1..65535");
  *out = (uint16_t)v;
  return 0;
}

int base_ipv4_parse(const char *s, size_t len, struct in_addr *out) {
  char buf[INET_ADDRSTRLEN];
  size_t digits = 0;
  int octets = 0;
  if (len == 0 || len >= sizeof(buf))
    return -1;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == '.') {
      if (digits == 0 || digits > 3 || (digits > 1 && s[i - digits] == '0'))
        return -1;
      octets++;
      digits = 0;
    } else if (is_digit(s[i])) {
      digits++;
    } else {
      return -1;
    }
  }
  if (octets != 4)
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  return inet_pton(AF_INET, buf, out) == 1 ? 0 : -1;
}

int base_ipv6_parse(const char *s, size_t len, struct in6_addr *out) {
  char buf[INET6_ADDRSTRLEN];
  if (len == 0 || len >= sizeof(buf))
    return -1;
  for (size_t i = 0; i < len; i++)
    if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
      return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

/* True for a label inet_aton() or a resolver could read as a number: all
 * digits, or a "0x" prefix. */
static bool label_is_numeric(const char *l, size_t n) {
  if (n == 0)
    return false;
  if (n >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X'))
    return true;
  for (size_t i = 0; i < n; i++)
    if (!is_digit(l[i]))
      return false;
  return true;
}

/* Validates a DNS name (trailing dot already removed) and writes it lowercased
 * and NUL-terminated into out, which holds BASE_HOST_MAX + 1 bytes. */
static int parse_name(const char *s, size_t len, char *out, const char **why) {
  size_t label = 0;
  if (len == 0)
    return fail(why, "missing host");
  if (len > BASE_NAME_MAX)
    return fail(why, "host name too long");
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '.') {
      if (label == 0)
        return fail(why, "empty label in host name");
      label = 0;
    } else if (!is_label_char(s[i])) {
      return fail(why, "bad character in host");
    } else if (++label > LABEL_MAX) {
      return fail(why, "host name label longer than 63 bytes");
    }
    out[i] = to_lower(s[i]);
  }
  if (label == 0)
    return fail(why, "empty label in host name");
  out[len] = '\0';
  return 0;
}

/* A strict unbracketed host: a DNS name, or an IPv4 literal when the last
 * label is numeric-looking (then it must be a strict dotted quad, without
 * trailing dot). */
static int strict_host(const char *s, size_t len, base_hostport *a, const char **why) {
  bool trailing_dot = len > 0 && s[len - 1] == '.';
  size_t n = trailing_dot ? len - 1 : len;
  const char *dot = last_of(s, n, '.');
  const char *last = dot ? dot + 1 : s;

  if (label_is_numeric(last, (size_t)(s + n - last))) {
    if (trailing_dot || base_ipv4_parse(s, n, &a->ip.v4) != 0)
      return fail(why, "numeric host that is not a dotted-quad IPv4 address");
    a->kind = BASE_HOST_IPV4;
    return inet_ntop(AF_INET, &a->ip.v4, a->host, sizeof(a->host)) ? 0 : fail(why, "bad IPv4");
  }
  a->kind = BASE_HOST_NAME;
  return parse_name(s, n, a->host, why);
}

/* An http(s) URL host: [A-Za-z0-9._-]{1,255}, lowercased, kept as written. */
static int url_host(const char *s, size_t len, base_hostport *a, const char **why) {
  if (len == 0)
    return fail(why, "missing host");
  if (len > BASE_HOST_MAX)
    return fail(why, "host name too long");
  for (size_t i = 0; i < len; i++) {
    if (!is_label_char(s[i]) && s[i] != '.')
      return fail(why, "bad character in host");
    a->host[i] = to_lower(s[i]);
  }
  a->host[len] = '\0';
  a->kind = inet_pton(AF_INET, a->host, &a->ip.v4) == 1 ? BASE_HOST_IPV4 : BASE_HOST_NAME;
  return 0;
}

/* The inside of "[v6]". Strict mode keeps the canonical text, URL mode the
 * text as written. */
static int bracketed_host(const char *s, size_t len, unsigned flags, base_hostport *a,
                          const char **why) {
  if (base_ipv6_parse(s, len, &a->ip.v6) != 0)
    return fail(why, "bad [IPv6] host");
  a->kind = BASE_HOST_IPV6;
  if (flags & BASE_HP_URL_HOST) {
    memcpy(a->host, s, len);
    a->host[len] = '\0';
    return 0;
  }
  return inet_ntop(AF_INET6, &a->ip.v6, a->host, sizeof(a->host)) ? 0
                                                                  : fail(why, "bad [IPv6] host");
}

int base_hostport_parse(const char *s, size_t len, unsigned flags, base_hostport *out,
                        const char **why) {
  base_hostport a;
  const char *end, *port = NULL;
  int rc;

  if (!s || !out)
    return fail(why, "missing host");
  end = s + len;
  if (!(flags & BASE_HP_URL_HOST))
    for (size_t i = 0; i < len; i++)
      if (!is_authority_char(s[i]))
        return fail(why, "bad character in host");
  memset(&a, 0, sizeof(a));
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (!close)
      return fail(why, "unterminated [IPv6] host");
    if (close + 1 < end) {
      if (close[1] != ':')
        return fail(why, "unexpected text after ]");
      port = close + 2;
    }
    rc = bracketed_host(s + 1, (size_t)(close - s - 1), flags, &a, why);
  } else {
    const char *colon = memchr(s, ':', len);
    size_t hlen = colon ? (size_t)(colon - s) : len;
    if (colon)
      port = colon + 1;
    rc = (flags & BASE_HP_URL_HOST) ? url_host(s, hlen, &a, why) : strict_host(s, hlen, &a, why);
  }
  if (rc != 0)
    return -1;
  if (port && base_port_parse(port, (size_t)(end - port), false, &a.port, why) != 0)
    return -1;
  if (!port && !(flags & BASE_HP_PORT_OPTIONAL))
    return fail(why, "missing :port");
  *out = a;
  return 0;
}
