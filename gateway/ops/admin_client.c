/* The admin API client. See admin_client.h. */
#include "gateway/ops/admin_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <llhttp.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/hostport.h"

/* ---- where to ask ---- */

int gw_admin_target_parse(const char *s, gw_admin_target *t, char *err, size_t errlen) {
  base_hostport hp;
  const char *why = NULL;
  memset(t, 0, sizeof(*t));
  if (strncmp(s, "https://", 8) == 0) {
    snprintf(err, errlen, "%s: https is not supported (the admin API is plain HTTP)", s);
    return -1;
  }
  const char *p = strncmp(s, "http://", 7) == 0 ? s + 7 : s;
  size_t alen = strcspn(p, "/");
  if (p[alen] && strcmp(p + alen, "/") != 0) {
    snprintf(err, errlen, "%s: expected http://HOST[:PORT] without a path", s);
    return -1;
  }
  if (base_hostport_parse(p, alen, BASE_HP_PORT_OPTIONAL | BASE_HP_URL_HOST, &hp, &why) != 0) {
    snprintf(err, errlen, "%s: %s (expected http://HOST[:PORT])", s, why);
    return -1;
  }
  snprintf(t->host, sizeof(t->host), "%s", hp.host);
  snprintf(t->port, sizeof(t->port), "%u", hp.port ? (unsigned)hp.port : 80u);
  bool v6 = hp.kind == BASE_HOST_IPV6;
  snprintf(t->url, sizeof(t->url), "http://%s%s%s:%s", v6 ? "[" : "", t->host, v6 ? "]" : "",
           t->port);
  return 0;
}

/* A wildcard listen address is reached through loopback. */
void gw_admin_target_from_listen(const struct sockaddr_storage *ss, gw_admin_target *t) {
  struct sockaddr_storage a = *ss;
  if (a.ss_family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&a;
    if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
      sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    inet_ntop(AF_INET, &sin->sin_addr, t->host, sizeof(t->host));
    snprintf(t->port, sizeof(t->port), "%u", ntohs(sin->sin_port));
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a;
    if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
      sin6->sin6_addr = in6addr_loopback;
    inet_ntop(AF_INET6, &sin6->sin6_addr, t->host, sizeof(t->host));
    snprintf(t->port, sizeof(t->port), "%u", ntohs(sin6->sin6_port));
  }
  bool v6 = a.ss_family == AF_INET6;
  snprintf(t->url, sizeof(t->url), "http://%s%s%s:%s", v6 ? "[" : "", t->host, v6 ? "]" : "",
           t->port);
}

/* ---- HTTP ---- */

/* What the parser callbacks fill. */
typedef struct reading {
  gw_admin_response *r;
  size_t cap; /* allocated for r->body */
  bool complete, too_big;
} reading;

/* The body grows by doubling (an exact-size realloc per read would copy a
 * large /tunnels over and over), up to GW_ADMIN_BODY_MAX. */
static int on_body(llhttp_t *p, const char *at, size_t len) {
  reading *rd = p->data;
  gw_admin_response *r = rd->r;
  if (r->len + len > GW_ADMIN_BODY_MAX) {
    rd->too_big = true;
    return -1;
  }
  if (r->len + len + 1 > rd->cap) {
    size_t cap = rd->cap ? rd->cap * 2 : 16384;
    while (cap < r->len + len + 1)
      cap *= 2;
    if (cap > (size_t)GW_ADMIN_BODY_MAX + 1)
      cap = (size_t)GW_ADMIN_BODY_MAX + 1;
    char *grown = realloc(r->body, cap);
    if (!grown)
      return -1;
    r->body = grown;
    rd->cap = cap;
  }
  memcpy(r->body + r->len, at, len);
  r->len += len;
  r->body[r->len] = '\0';
  return 0;
}

static int on_complete(llhttp_t *p) {
  ((reading *)p->data)->complete = true;
  return 0;
}

static void lower_first(char *s) { s[0] = (char)tolower((unsigned char)s[0]); }

/* Connects with a deadline. Returns the socket or -1 with the reason. */
static int dial(const gw_admin_target *t, int timeout_ms, char *err, size_t errlen) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  int g = getaddrinfo(t->host, t->port, &hints, &res);
  if (g != 0) {
    snprintf(err, errlen, "%s", gai_strerror(g));
    lower_first(err);
    return -1;
  }
  int fd = -1, e = ECONNREFUSED;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      e = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      e = errno;
    } else {
      struct pollfd pfd = {fd, POLLOUT, 0};
      socklen_t sl = sizeof(e);
      int pr = poll(&pfd, 1, timeout_ms);
      if (pr == 0)
        e = ETIMEDOUT;
      else if (pr > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) == 0 && e == 0)
        break;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(e));
    lower_first(err);
  }
  return fd;
}

static bool send_all(int fd, const char *p, size_t n, int timeout_ms) {
  while (n) {
    struct pollfd pfd = {fd, POLLOUT, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0)
      return false;
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
      return false;
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    }
  }
  return true;
}

int gw_admin_request(const gw_admin_target *t, const char *token, const char *method,
                     const char *path, int timeout_ms, gw_admin_response *out, char *err,
                     size_t errlen) {
  gw_admin_response r = {0};
  reading rd = {.r = &r};
  bool post = strcmp(method, "POST") == 0;
  if (errlen)
    err[0] = '\0';
  int fd = dial(t, timeout_ms, err, errlen);
  if (fd < 0)
    return -1;
  char req[2048];
  bool v6 = strchr(t->host, ':') != NULL;
  int n = snprintf(req, sizeof(req),
                   "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: mcgw/%s\r\n"
                   "Accept: application/json\r\n%s%s%s%sConnection: close\r\n\r\n%s",
                   method, path, v6 ? "[" : "", t->host, v6 ? "]" : "", t->port, MCGW_VERSION,
                   token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
                   post ? "Content-Type: application/json\r\nContent-Length: 2\r\n" : "",
                   post ? "{}" : "");
  bool ok = n > 0 && (size_t)n < sizeof(req) && send_all(fd, req, (size_t)n, timeout_ms);
  explicit_bzero(req, sizeof(req)); /* it held the admin token */
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_body = on_body;
  settings.on_message_complete = on_complete;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &settings);
  parser.data = &rd;
  char buf[16384];
  while (ok && !rd.complete) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) {
      snprintf(err, errlen, "no response within %d s", timeout_ms / 1000);
      ok = false;
      break;
    }
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    llhttp_errno_t pe = got > 0 ? llhttp_execute(&parser, buf, (size_t)got) : llhttp_finish(&parser);
    if (pe != HPE_OK || got <= 0) {
      if (!rd.complete) {
        if (rd.too_big)
          snprintf(err, errlen, "response larger than %u MiB", GW_ADMIN_BODY_MAX >> 20);
        else
          snprintf(err, errlen, "%s", got < 0    ? strerror(errno)
                                      : got == 0 ? "connection closed before a full response"
                                                 : "malformed HTTP response");
        lower_first(err);
        ok = false;
      }
      break;
    }
  }
  if (!ok && errlen && !err[0])
    snprintf(err, errlen, "cannot send the request");
  close(fd);
  if (!ok) {
    free(r.body);
    return -1;
  }
  r.status = parser.status_code;
  *out = r;
  return 0;
}

void gw_admin_response_free(gw_admin_response *r) {
  free(r->body);
  r->body = NULL;
  r->len = 0;
}
