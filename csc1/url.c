/* URL parsing and form encoding. See url.h. */
#include "csc1/url.h"

#include "base/hostport.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(const char **why, const char *reason) {
  if (why)
    *why = reason;
  return -1;
}

/* "host", "host:port", "[v6]" or "[v6]:port" of length n, by the one
 * host:port parser (base/hostport.h) with the URL's host rules. */
_Static_assert(CSC1_URL_HOST_MAX == BASE_HOST_MAX, "csc1_url.host holds any base_hostport.host");

static int parse_authority(const char *a, size_t n, csc1_url *u, const char **why) {
  base_hostport hp;
  if (base_hostport_parse(a, n, BASE_HP_PORT_OPTIONAL | BASE_HP_URL_HOST, &hp, why) != 0)
    return -1;
  memcpy(u->host, hp.host, sizeof(u->host));
  u->host_is_ip = hp.kind != BASE_HOST_NAME;
  u->host_is_v6 = hp.kind == BASE_HOST_IPV6;
  if (hp.port)
    u->port = hp.port;
  return 0;
}

int csc1_url_parse(const char *s, csc1_url *out, const char **why) {
  csc1_url u;
  memset(&u, 0, sizeof u);
  if (!s)
    return fail(why, "missing URL");
  for (const char *p = s; *p; p++) {
    if ((unsigned char)*p <= 0x20 || *p == 0x7f)
      return fail(why, "URL contains a space or control character");
    if (*p == '#')
      return fail(why, "URL must not have a #fragment");
  }
  const char *rest;
  if (strncasecmp(s, "https://", 8) == 0) {
    u.https = true;
    u.port = 443;
    rest = s + 8;
  } else if (strncasecmp(s, "http://", 7) == 0) {
    u.port = 80;
    rest = s + 7;
  } else {
    return fail(why, "expected an http:// or https:// URL");
  }
  size_t alen = strcspn(rest, "/?");
  if (memchr(rest, '@', alen))
    return fail(why, "URL must not contain user info (user@host)");
  if (parse_authority(rest, alen, &u, why) != 0)
    return -1;
  u.target = rest[alen] ? rest + alen : "/";
  if (*u.target == '?')
    return fail(why, "URL path must start with /");
  *out = u;
  return 0;
}

static bool unreserved(unsigned char ch) {
  return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

size_t csc1_url_encode(char *buf, size_t len, size_t cap, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    size_t need = unreserved(ch) ? 1 : 3;
    if (len + need + 1 > cap)
      return (size_t)-1;
    if (need == 1) {
      buf[len++] = (char)ch;
    } else {
      buf[len++] = '%';
      buf[len++] = hex[ch >> 4];
      buf[len++] = hex[ch & 15];
    }
  }
  buf[len] = '\0';
  return len;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

char *csc1_url_decode(const char *s, size_t n) {
  char *out = malloc(n + 1);
  size_t o = 0;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '+') {
      ch = ' ';
    } else if (ch == '%') {
      int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
      int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
        free(out);
        return NULL;
      }
      ch = (char)(hi * 16 + lo);
      i += 2;
    } else if (ch == '\0') {
      free(out);
      return NULL;
    }
    out[o++] = ch;
  }
  out[o] = '\0';
  return out;
}

char *csc1_url_query_param(const char *query, const char *name, bool *dup) {
  size_t nlen = strlen(name);
  char *found = NULL;
  if (dup)
    *dup = false;
  const char *p = query;
  while (p && *p) {
    size_t plen = strcspn(p, "&");
    if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
      if (found) {
        if (dup)
          *dup = true;
        free(found);
        return NULL;
      }
      found = csc1_url_decode(p + nlen + 1, plen - nlen - 1);
      if (!found)
        return NULL;
    } else if (plen == nlen && strncmp(p, name, nlen) == 0) {
      if (found) {
        if (dup)
          *dup = true;
        free(found);
        return NULL;
      }
      found = strdup("");
    }
    p += plen;
    if (*p == '&')
      p++;
  }
  return found;
}
