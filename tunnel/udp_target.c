/* RFC 9298 section 2: the default URI template of CONNECT-UDP. */
#include "tunnel/udp_target.h"

#include <stdbool.h>
#include <string.h>

#include "tunnel/error.h"

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..len) into out (room for cap bytes). Returns the
 * decoded length, or TN_EINVAL for a bad escape or no room. */
static int percent_decode(const char *s, size_t len, char *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '%') {
      int hi, lo;
      if (i + 2 >= len)
        return TN_EINVAL;
      hi = hex_value(s[i + 1]);
      lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0)
        return TN_EINVAL;
      c = (char)(hi * 16 + lo);
      i += 2;
    }
    if (n == cap)
      return TN_EINVAL;
    out[n++] = c;
  }
  return (int)n;
}

int tn_udp_target_parse(const char *path, size_t len, tn_authority *out) {
  static const char prefix[] = TN_UDP_PATH_PREFIX;
  const size_t plen = sizeof(prefix) - 1;
  const char *host, *port, *end;
  char host_buf[TN_HOST_MAX + 1], target[TN_HOST_MAX + 16];
  size_t n, plen_port;
  bool bracket;
  int hlen;

  if (!path || !out || len <= plen || memcmp(path, prefix, plen) != 0)
    return TN_ENOENT;
  host = path + plen;
  end = path + len;
  port = memchr(host, '/', (size_t)(end - host));
  if (!port || port == host || port + 1 >= end)
    return TN_ENOENT;
  port++;
  if (end[-1] != '/' || memchr(port, '/', (size_t)(end - 1 - port)) || end - 1 == port)
    return TN_ENOENT;
  hlen = percent_decode(host, (size_t)(port - 1 - host), host_buf, sizeof(host_buf));
  if (hlen <= 0)
    return TN_EINVAL;
  /* An IPv6 literal is the one host with ':'; it takes brackets in an
   * authority. tn_authority_parse refuses whatever else decoding let in
   * (NUL, '%', '@', '/', brackets, spaces...). */
  bracket = memchr(host_buf, ':', (size_t)hlen) != NULL;
  plen_port = (size_t)(end - 1 - port);
  n = (size_t)hlen + plen_port + (bracket ? 3 : 1);
  if (n > sizeof(target))
    return TN_EINVAL;
  n = 0;
  if (bracket)
    target[n++] = '[';
  memcpy(target + n, host_buf, (size_t)hlen);
  n += (size_t)hlen;
  if (bracket)
    target[n++] = ']';
  target[n++] = ':';
  memcpy(target + n, port, plen_port);
  n += plen_port;
  return tn_authority_parse(target, n, out);
}
