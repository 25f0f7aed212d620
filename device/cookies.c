/* A minimal cookie jar. See cookies.h. */
#include "device/cookies.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csc1/https_client.h" /* csc1_http_date_parse */

#define COOKIE_MAX 4096    /* one Set-Cookie value */
#define JAR_MAX_COOKIES 64 /* a login needs a handful */

typedef struct cookie {
  char *host, *path, *name, *value;
  int64_t expires; /* unix seconds, or 0: a session cookie */
  bool secure;
} cookie;

struct mcx_cookie_jar {
  cookie c[JAR_MAX_COOKIES];
  size_t n;
};

mcx_cookie_jar *mcx_cookies_new(void) { return calloc(1, sizeof(mcx_cookie_jar)); }

static void cookie_clear(cookie *c) {
  free(c->host);
  free(c->path);
  free(c->name);
  if (c->value) {
    OPENSSL_cleanse(c->value, strlen(c->value));
    free(c->value);
  }
  memset(c, 0, sizeof *c);
}

static void jar_remove(mcx_cookie_jar *j, size_t i) {
  cookie_clear(&j->c[i]);
  j->c[i] = j->c[--j->n];
  memset(&j->c[j->n], 0, sizeof j->c[j->n]);
}

void mcx_cookies_free(mcx_cookie_jar *j) {
  if (!j)
    return;
  while (j->n)
    jar_remove(j, j->n - 1);
  free(j);
}

size_t mcx_cookies_count(const mcx_cookie_jar *j) { return j->n; }

/* s[0..n) without leading and trailing blanks, as a new string. */
static char *trimmed(const char *s, size_t n) {
  while (n && (*s == ' ' || *s == '\t'))
    s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  return strndup(s, n);
}

/* RFC 6265 5.1.4: the default path is the request path up to its last '/'. */
static char *default_path(const char *request_path) {
  const char *last = request_path && request_path[0] == '/' ? strrchr(request_path, '/') : NULL;
  if (!last || last == request_path)
    return strdup("/");
  return strndup(request_path, (size_t)(last - request_path));
}

static bool path_matches(const char *cookie_path, const char *path) {
  size_t n = strlen(cookie_path);
  if (strncmp(cookie_path, path, n) != 0)
    return false;
  return path[n] == '\0' || cookie_path[n - 1] == '/' || path[n] == '/';
}

typedef struct parsed {
  char *name, *value, *path;
  int64_t expires;
  bool secure, remove, bad;
} parsed;

static void parsed_free(parsed *p) {
  free(p->name);
  if (p->value) {
    OPENSSL_cleanse(p->value, strlen(p->value));
    free(p->value);
  }
  free(p->path);
}

/* One attribute "name[=value]" of s[0..n). */
static void attribute(parsed *p, const char *host, const char *a, size_t n, int64_t now) {
  const char *eq = memchr(a, '=', n);
  char *key = trimmed(a, eq ? (size_t)(eq - a) : n);
  char *val = eq ? trimmed(eq + 1, n - (size_t)(eq + 1 - a)) : strdup("");
  if (!key || !val) {
    p->bad = true;
  } else if (strcasecmp(key, "path") == 0) {
    if (val[0] == '/') { /* else: the default path (RFC 6265 5.2.4) */
      free(p->path);
      p->path = val;
      val = NULL;
    }
  } else if (strcasecmp(key, "max-age") == 0) {
    char *end;
    long long s = strtoll(val, &end, 10);
    if (*val && !*end) { /* Max-Age wins over Expires (RFC 6265 5.3 step 3) */
      /* A huge Max-Age (strtoll saturates) means "never": no overflow. */
      p->expires = s <= 0 ? -1 : (now > 0 && s > INT64_MAX - now) ? INT64_MAX : now + s;
      p->remove = s <= 0;
    }
  } else if (strcasecmp(key, "expires") == 0) {
    int64_t t = csc1_http_date_parse(val);
    if (t >= 0 && !p->remove && p->expires == 0) {
      p->expires = t <= now ? -1 : t;
      p->remove = t <= now;
    }
  } else if (strcasecmp(key, "domain") == 0) {
    const char *d = val[0] == '.' ? val + 1 : val;
    if (*d && strcasecmp(d, host) != 0)
      p->bad = true; /* host-only jar: a cookie for other hosts is refused */
  } else if (strcasecmp(key, "secure") == 0) {
    p->secure = true;
  } /* HttpOnly, SameSite and others: nothing to do for a non-browser */
  free(key);
  free(val);
}

static int parse_one(const char *line, size_t len, const char *host, int64_t now, parsed *p) {
  memset(p, 0, sizeof *p);
  if (len == 0 || len > COOKIE_MAX)
    return -1;
  const char *semi = memchr(line, ';', len);
  size_t pair_len = semi ? (size_t)(semi - line) : len;
  const char *eq = memchr(line, '=', pair_len);
  if (!eq)
    return -1; /* RFC 6265 5.2: no '=' - ignore the cookie */
  p->name = trimmed(line, (size_t)(eq - line));
  p->value = trimmed(eq + 1, pair_len - (size_t)(eq + 1 - line));
  if (!p->name || !p->value || !p->name[0])
    return parsed_free(p), -1;
  for (const char *a = semi; a && a < line + len;) {
    const char *start = a + 1;
    const char *next = memchr(start, ';', (size_t)(line + len - start));
    attribute(p, host, start, (size_t)((next ? next : line + len) - start), now);
    a = next;
  }
  if (p->bad)
    return parsed_free(p), -1;
  return 0;
}

static long find(mcx_cookie_jar *j, const char *host, const char *path, const char *name) {
  for (size_t i = 0; i < j->n; i++)
    if (strcasecmp(j->c[i].host, host) == 0 && strcmp(j->c[i].path, path) == 0 &&
        strcmp(j->c[i].name, name) == 0)
      return (long)i;
  return -1;
}

int mcx_cookies_store(mcx_cookie_jar *j, const char *host, const char *request_path,
                      const char *lines, int64_t now) {
  int done = 0;
  for (const char *l = lines; l && *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l) : strlen(l);
    parsed p;
    if (parse_one(l, len, host, now, &p) == 0) {
      if (!p.path && !(p.path = default_path(request_path))) {
        parsed_free(&p);
        return -1;
      }
      long i = find(j, host, p.path, p.name);
      if (i >= 0)
        jar_remove(j, (size_t)i);
      if (!p.remove && j->n < JAR_MAX_COOKIES) {
        cookie *c = &j->c[j->n];
        if (!(c->host = strdup(host)))
          return parsed_free(&p), -1;
        c->path = p.path;
        c->name = p.name;
        c->value = p.value;
        c->expires = p.expires > 0 ? p.expires : 0;
        c->secure = p.secure;
        p.path = p.name = p.value = NULL;
        j->n++;
      }
      parsed_free(&p);
      done++;
    }
    l = nl ? nl + 1 : NULL;
  }
  return done;
}

char *mcx_cookies_header(mcx_cookie_jar *j, const char *host, const char *path, bool https,
                         int64_t now) {
  const cookie *pick[JAR_MAX_COOKIES];
  size_t n = 0, len = 0;
  for (size_t i = 0; i < j->n;) {
    if (j->c[i].expires && j->c[i].expires <= now) {
      jar_remove(j, i);
      continue;
    }
    const cookie *c = &j->c[i++];
    if (strcasecmp(c->host, host) == 0 && path_matches(c->path, path) && (https || !c->secure)) {
      pick[n++] = c;
      len += strlen(c->name) + strlen(c->value) + 3;
    }
  }
  if (n == 0)
    return NULL;
  /* Longer paths first; stable otherwise (insertion sort, n is small). */
  for (size_t i = 1; i < n; i++)
    for (size_t k = i; k > 0 && strlen(pick[k]->path) > strlen(pick[k - 1]->path); k--) {
      const cookie *t = pick[k];
      pick[k] = pick[k - 1];
      pick[k - 1] = t;
    }
  char *out = malloc(len + 1), *w = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++)
    w += sprintf(w, "%s%s=%s", i ? "; " : "", pick[i]->name, pick[i]->value);
  return out;
}
