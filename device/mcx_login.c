/* mcx-login: an MC device's identity management client (CSC-1, TS 33.180
 * 5.1.2.1 and Annex B), run through an MC gateway UE's CONNECT proxy.
 *
 * It reuses the gateway's CSC-1 code (url, pkce, oidc, jwt, https_client):
 * the same strict parsers and the same ID token validation, so that what the
 * device proves is what the gateway itself relies on. Every request (
 * discovery, JWKS, each authorization page, the token endpoint) runs in its
 * own tunnel, and the device's TLS ends at the IdMS: the gateway only relays
 * its records.
 *
 * Never printed or logged: the password, the authorization code, the PKCE
 * verifier, state, nonce, cookies and tokens. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "device/cookies.h"
#include "device/forms.h"
#include "device/proxy_opts.h"
#include "csc1/authz.h"
#include "csc1/https_client.h"
#include "csc1/jwt.h"
#include "csc1/oidc.h"
#include "csc1/pkce.h"
#include "csc1/url.h"

#define PROG "mcx-login"
#define REQUEST_TIMEOUT_MS 15000
#define MAX_HOPS 30 /* redirects and form posts in one login */
#define PASSWORD_MAX 1024
#define LEEWAY_S 30

static const char usage_text[] =
    "Usage: " PROG " --proxy URL --issuer URL --client-id ID --scope SCOPES [options]\n"
    "\n"
    "An MC device's CSC-1 login (TS 33.180 5.1.2.1, Annex B) through an MC gateway UE:\n"
    "OpenID Connect authorization code flow with PKCE, every IdMS endpoint reached\n"
    "through its own CONNECT tunnel, TLS end to end with the IdMS. Prints the MC\n"
    "service IDs of the validated ID token.\n"
    "\n"
    "The gateway:\n" MCX_PROXY_HELP(
        "HTTP/1.1 CONNECT",
        "HTTP/2 CONNECT: one stream per endpoint request") "\n"
                                                           "The IdMS:\n"
                                                           "  --issuer URL           the IdMS's "
                                                           "issuer (https); discovery is read from "
                                                           "it\n"
                                                           "  --client-id ID         this device's "
                                                           "OAuth client (a public native client)\n"
                                                           "  --scope SCOPES         e.g. \"openid "
                                                           "3gpp:mc:ptt_service "
                                                           "3gpp:mc:data_service\"\n"
                                                           "  --acr-values VALUES    acr_values to "
                                                           "request (optional)\n"
                                                           "  --cacert FILE          trust anchors "
                                                           "for the IdMS (default: system store)\n"
                                                           "  --redirect-uri URI     loopback "
                                                           "redirect URI (RFC 8252 7.3), default\n"
                                                           "                         "
                                                           "http://127.0.0.1:0/callback; port 0: a "
                                                           "free port is chosen\n"
                                                           "\n"
                                                           "The user:\n"
                                                           "  --user NAME            log in "
                                                           "headless: post NAME and the password "
                                                           "to the IdMS's\n"
                                                           "  --password-file FILE   login form "
                                                           "(file mode 0600 or stricter; first "
                                                           "line used)\n"
                                                           "                         Without "
                                                           "--user: the authorization URL is "
                                                           "printed for a\n"
                                                           "                         browser and "
                                                           "mcx-login waits on the redirect URI.\n"
                                                           "  --wait SECONDS         how long to "
                                                           "wait for the browser (default 300)\n"
                                                           "\n"
                                                           "Output:\n"
                                                           "  --json                 the result as "
                                                           "one JSON object on stdout\n"
                                                           "  -v, --verbose          each step on "
                                                           "stderr (URLs without their query)\n"
                                                           "  -h, --help             this text\n"
                                                           "\n"
                                                           "Exit status: 0 logged in; 1 the login "
                                                           "failed (the reason is on stderr);\n"
                                                           "2 bad usage. Codes, tokens, the "
                                                           "verifier and the password are never "
                                                           "printed.\n";

typedef struct opts {
  mcx_proxy_opts proxy;
  const char *issuer, *client_id, *scope, *acr_values, *cacert, *redirect_uri;
  const char *user, *password_file;
  int wait_s;
  bool json, verbose;
} opts;

typedef struct app {
  opts o;
  uv_loop_t loop;
  csc1_https_ctx *https;
  mcx_cookie_jar *jar;
  char *password;
  csc1_oidc_endpoints ep;
  csc1_jwks *jwks;
  int listen_fd;
  char redirect_uri[128];
  csc1_authz_secrets s; /* state, nonce, verifier of the authorization request */
  int tunnels;          /* requests made, each through its own tunnel */
  uint64_t tls_sent, tls_received;
  json_t *log; /* per tunnel: target and TLS bytes, for --json */
} app;

/* ---- messages -------------------------------------------------------------- */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, PROG ": ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static void say(const app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const app *a, const char *fmt, ...) {
  if (!a->o.verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, PROG ": ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* The URL up to its query: what may be shown. */
static void no_query(const char *url, char *out, size_t cap) {
  size_t n = strcspn(url, "?#");
  snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), url);
}

/* ---- one request ----------------------------------------------------------- */

typedef struct fetched {
  int err;
  char detail[1024];
  int status;
  char *body, *location, *content_type;
  size_t body_len;
} fetched;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void fetched_free(fetched *f) {
  if (f->body) {
    OPENSSL_cleanse(f->body, f->body_len);
    free(f->body);
  }
  if (f->location) {
    OPENSSL_cleanse(f->location, strlen(f->location));
    free(f->location);
  }
  free(f->content_type);
  memset(f, 0, sizeof *f);
}

typedef struct fetch_ctx {
  app *a;
  fetched *out;
  const char *host, *path;
  char authority[300];
  bool done;
} fetch_ctx;

static void on_fetched(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  fetch_ctx *c = arg;
  fetched *f = c->out;
  c->done = true;
  f->err = err;
  if (err) {
    snprintf(f->detail, sizeof f->detail, "%s", detail ? detail : csc1_https_strerror(err));
    return;
  }
  f->status = resp->status;
  f->body = malloc(resp->body_len + 1);
  if (f->body) {
    memcpy(f->body, resp->body, resp->body_len);
    f->body[resp->body_len] = '\0';
    f->body_len = resp->body_len;
  }
  f->location = dup_or_null(resp->location);
  f->content_type = dup_or_null(resp->content_type);
  c->a->tls_sent += resp->tls_bytes_sent;
  c->a->tls_received += resp->tls_bytes_received;
  json_array_append_new(c->a->log,
                        json_pack("{s:s, s:I, s:I}", "target", c->authority, "tls_bytes_sent",
                                  (json_int_t)resp->tls_bytes_sent, "tls_bytes_received",
                                  (json_int_t)resp->tls_bytes_received));
  if (resp->set_cookie &&
      mcx_cookies_store(c->a->jar, c->host, c->path, resp->set_cookie, (int64_t)time(NULL)) < 0)
    f->err = CSC1_HTTPS_ENOMEM;
}

/* One HTTPS request through the gateway, run to completion. Cookies are sent
 * and kept. Returns 0 with out filled (any status), or the error in out. */
static int fetch(app *a, const char *method, const char *url, const csc1_form *body,
                 const char *accept, fetched *out) {
  const char *why;
  csc1_url u;
  char path[2048], shown[512];
  memset(out, 0, sizeof *out);
  if (csc1_url_parse(url, &u, &why) != 0 || !u.https) {
    snprintf(out->detail, sizeof out->detail, "not an https URL (%s)", why ? why : "http");
    return out->err = CSC1_HTTPS_EURL;
  }
  snprintf(path, sizeof path, "%.*s", (int)strcspn(u.target, "?"), u.target);
  char *cookie = mcx_cookies_header(a->jar, u.host, path, true, (int64_t)time(NULL));
  csc1_https_request_opts o = {
      .method = method,
      .url = url,
      .body = body ? body->buf : NULL,
      .body_len = body ? body->len : 0,
      .content_type = body ? "application/x-www-form-urlencoded" : NULL,
      .timeout_ms = REQUEST_TIMEOUT_MS,
      .max_body = 1024 * 1024,
      .accept = accept,
      .cookie = cookie,
      .linger = true,
  };
  no_query(url, shown, sizeof shown);
  say(a, "  %s %s (tunnel %d, to %s:%u)", method, shown, a->tunnels + 1, u.host, u.port);
  fetch_ctx c = {.a = a, .out = out, .host = u.host, .path = path};
  snprintf(c.authority, sizeof c.authority, u.host_is_v6 ? "[%s]:%u" : "%s:%u", u.host, u.port);
  int err = csc1_https_request(&a->loop, a->https, &o, on_fetched, &c, NULL);
  if (cookie) {
    OPENSSL_cleanse(cookie, strlen(cookie));
    free(cookie);
  }
  if (err) {
    snprintf(out->detail, sizeof out->detail, "%s", csc1_https_strerror(err));
    return out->err = err;
  }
  a->tunnels++;
  while (!c.done)
    uv_run(&a->loop, UV_RUN_ONCE);
  if (!out->err && !out->body)
    out->err = CSC1_HTTPS_ENOMEM;
  return out->err;
}

/* "what URL: reason" for a failed request, e.g.
 * "token endpoint https://...: certificate verification failed: ...". */
static void fail_fetch(const char *what, const char *url, const fetched *f)
    __attribute__((noreturn));
static void fail_fetch(const char *what, const char *url, const fetched *f) {
  char shown[512];
  no_query(url, shown, sizeof shown);
  fail("%s %s: %s: %s", what, shown, csc1_https_strerror(f->err), f->detail);
}

/* An error response from the IdMS, shown sanitized (never a token). */
static void fail_status(const char *what, const char *url, const fetched *f)
    __attribute__((noreturn));
static void fail_status(const char *what, const char *url, const fetched *f) {
  char shown[512];
  csc1_oidc_error oe = {0};
  no_query(url, shown, sizeof shown);
  if (csc1_oidc_error_parse(f->body, f->body_len, &oe) == 0)
    fail("%s %s answered %d: %s%s%s", what, shown, f->status, oe.error,
         oe.description[0] ? ": " : "", oe.description);
  fail("%s %s answered status %d", what, shown, f->status);
}

/* ---- discovery and keys ---------------------------------------------------- */

static void discover(app *a) {
  char url[1024], why[256];
  fetched f;
  size_t n = strlen(a->o.issuer);
  snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration",
           (int)(n && a->o.issuer[n - 1] == '/' ? n - 1 : n), a->o.issuer);
  if (fetch(a, "GET", url, NULL, NULL, &f) != 0)
    fail_fetch("discovery", url, &f);
  if (f.status != 200)
    fail_status("discovery", url, &f);
  if (csc1_oidc_discovery_parse(f.body, f.body_len, a->o.issuer, &a->ep, why, sizeof why) != 0)
    fail("discovery %s: %s", url, why);
  fetched_free(&f);
  if (!a->ep.authorization || !a->ep.token || !a->ep.jwks_uri)
    fail("discovery %s: the IdMS publishes no authorization, token or jwks endpoint", url);
}

static void fetch_jwks(app *a) {
  fetched f;
  const char *why = NULL;
  if (fetch(a, "GET", a->ep.jwks_uri, NULL, NULL, &f) != 0)
    fail_fetch("JWKS", a->ep.jwks_uri, &f);
  if (f.status != 200)
    fail_status("JWKS", a->ep.jwks_uri, &f);
  csc1_jwks_free(a->jwks);
  if (!(a->jwks = csc1_jwks_parse(f.body, f.body_len, &why)))
    fail("JWKS %s: %s", a->ep.jwks_uri, why ? why : "not a JWK set");
  fetched_free(&f);
}

/* ---- the loopback redirect URI (RFC 8252 7.3) ------------------------------ */

/* Binds the redirect URI's loopback address (port 0: any free port) and
 * writes the URI to use, with the port actually bound. */
static void bind_redirect(app *a) {
  const char *uri = a->o.redirect_uri;
  const char *rest;
  int family;
  if (strncmp(uri, "http://127.0.0.1:", 17) == 0)
    family = AF_INET, rest = uri + 17;
  else if (strncmp(uri, "http://[::1]:", 13) == 0)
    family = AF_INET6, rest = uri + 13;
  else
    fail("--redirect-uri %s: must be http://127.0.0.1:PORT/PATH or http://[::1]:PORT/PATH "
         "(a loopback IP literal, RFC 8252 7.3 and 8.3)",
         uri);
  char *end;
  long port = strtol(rest, &end, 10);
  if (end == rest || port < 0 || port > 65535 || *end != '/' ||
      strcspn(end, "?# \t") != strlen(end))
    fail("--redirect-uri %s: needs a port (0: any free one) and a path, no query", uri);
  const char *path = end;
  struct sockaddr_storage ss = {0};
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *s4;
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    s6->sin6_addr = in6addr_loopback;
    len = sizeof *s6;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 4) != 0 ||
      getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    fail("--redirect-uri %s: cannot listen there: %s", uri, strerror(errno));
  unsigned bound = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
  a->listen_fd = fd;
  snprintf(a->redirect_uri, sizeof a->redirect_uri, "http://%s:%u%s",
           family == AF_INET ? "127.0.0.1" : "[::1]", bound, path);
}

/* True when url is the redirect URI (with a query or none). */
static bool is_redirect(const app *a, const char *url) {
  size_t n = strlen(a->redirect_uri);
  return strncmp(url, a->redirect_uri, n) == 0 && (url[n] == '\0' || url[n] == '?');
}

/* ---- the authorization request ---------------------------------------------- */

static char *authorization_url(app *a) {
  const char *why = NULL;
  const csc1_authz_params params = {
      .authorization_endpoint = a->ep.authorization,
      .client_id = a->o.client_id,
      .redirect_uri = a->redirect_uri,
      .scope = a->o.scope,
      .acr_values = a->o.acr_values,
  };
  char *url = csc1_authz_url(&params, &a->s, &why);
  if (!url)
    fail("%s", why);
  return url;
}

/* Resolves a Location or form action against the page's URL. */
static char *resolve(const char *base, const char *ref) {
  char *out;
  if (strncmp(ref, "https://", 8) == 0 || strncmp(ref, "http://", 7) == 0)
    return strdup(ref);
  const char *scheme_end = strstr(base, "://");
  if (!scheme_end)
    return NULL;
  const char *host_end = base + (scheme_end - base) + 3;
  host_end += strcspn(host_end, "/?#");
  if (strncmp(ref, "//", 2) == 0) {
    if (asprintf(&out, "%.*s:%s", (int)(scheme_end - base), base, ref) < 0)
      return NULL;
  } else if (ref[0] == '/') {
    if (asprintf(&out, "%.*s%s", (int)(host_end - base), base, ref) < 0)
      return NULL;
  } else if (ref[0] == '\0') {
    out = strdup(base);
  } else {
    size_t path_len = strcspn(host_end, "?#");
    const char *slash = host_end;
    for (const char *p = host_end; p < host_end + path_len; p++)
      if (*p == '/')
        slash = p + 1;
    if (slash == host_end) { /* no path: the root */
      if (asprintf(&out, "%.*s/%s", (int)(host_end - base), base, ref) < 0)
        return NULL;
    } else if (asprintf(&out, "%.*s%s", (int)(slash - base), base, ref) < 0) {
      return NULL;
    }
  }
  return out;
}

/* Fills the page's form for the next step: the login form (login and
 * password inputs) with the user's name and password; any other form (the
 * consent) as the page has it. */
static const mcx_form *pick_form(app *a, const mcx_forms *forms, csc1_form *body, bool *was_login) {
  const mcx_form *form = mcx_forms_with_field(forms, "password");
  *was_login = form != NULL;
  if (!form) {
    for (size_t i = 0; i < forms->n && !form; i++)
      if (strcmp(forms->forms[i].method, "post") == 0)
        form = &forms->forms[i];
  }
  if (!form)
    return NULL;
  for (size_t k = 0; k < form->n_fields; k++) {
    const mcx_form_field *fl = &form->fields[k];
    const char *v = fl->value;
    if (*was_login && strcmp(fl->type, "password") == 0)
      v = a->password;
    else if (*was_login && (strcmp(fl->name, "login") == 0 || strcmp(fl->name, "username") == 0 ||
                            strcmp(fl->name, "user") == 0 || strcmp(fl->name, "email") == 0))
      v = a->o.user;
    csc1_form_add(body, fl->name, v);
  }
  if (body->oom)
    fail("out of memory");
  return form;
}

/* The headless login: the authorization request, then the IdMS's pages
 * (login, consent) as a browser would go through them, until the redirect to
 * our redirect URI. Returns the redirect's query parameters. */
static void headless_login(app *a, const char *authz_url, csc1_authz_callback *cb) {
  char *url = strdup(authz_url);
  const char *method = "GET";
  csc1_form body = {0};
  bool posted_login = false;
  char shown[512];
  for (int hop = 0; hop < MAX_HOPS; hop++) {
    fetched f;
    if (fetch(a, method, url, body.buf ? &body : NULL, "text/html,application/xhtml+xml", &f) != 0)
      fail_fetch("authorization endpoint", url, &f);
    csc1_form_free(&body);
    if (f.status >= 300 && f.status < 400 && f.location) {
      char *next = resolve(url, f.location);
      if (!next)
        fail("authorization endpoint: cannot follow the redirect");
      free(url);
      url = next;
      fetched_free(&f);
      if (is_redirect(a, url)) {
        csc1_authz_callback_parse(
            url + strlen(a->redirect_uri) + (url[strlen(a->redirect_uri)] ? 1 : 0), cb);
        OPENSSL_cleanse(url, strlen(url));
        free(url);
        return;
      }
      method = f.status == 307 || f.status == 308 ? method : "GET";
      continue;
    }
    if (f.status != 200) {
      fail_status("authorization endpoint", url, &f);
    }
    mcx_forms forms;
    bool is_login = false;
    if (mcx_forms_parse(f.body, f.body_len, &forms) != 0)
      fail("out of memory");
    const mcx_form *form = pick_form(a, &forms, &body, &is_login);
    no_query(url, shown, sizeof shown);
    if (!form)
      fail("authorization endpoint %s: the page has no login or consent form that " PROG
           " can fill in; log in with a browser instead (leave out --user)",
           shown);
    if (is_login && !a->o.user)
      fail("authorization endpoint %s: the IdMS asks for a user name and password: give --user "
           "and --password-file",
           shown);
    if (is_login && posted_login)
      fail("the IdMS refused the login of user '%s' (it showed its login form again): wrong user "
           "name or password?",
           a->o.user);
    posted_login = posted_login || is_login;
    say(a, "  the IdMS shows its %s",
        is_login ? "login form: posting the user name and password"
                 : "consent form: confirming it");
    char *next = resolve(url, form->action);
    if (!next)
      fail("out of memory");
    method = strcmp(form->method, "post") == 0 ? "POST" : "GET";
    if (strcmp(method, "GET") == 0) { /* a GET form: the fields become the query */
      char *q;
      if (asprintf(&q, "%.*s?%s", (int)strcspn(next, "?"), next, body.buf ? body.buf : "") < 0)
        fail("out of memory");
      free(next);
      next = q;
      csc1_form_free(&body);
    }
    mcx_forms_free(&forms);
    fetched_free(&f);
    free(url);
    url = next;
  }
  fail("the IdMS sent more than %d redirects and pages without redirecting to %s", MAX_HOPS,
       a->redirect_uri);
}

/* Browser mode: prints the URL and answers the browser's redirect on the
 * loopback listener. */
static void browser_login(app *a, const char *authz_url, csc1_authz_callback *cb) {
  fprintf(stderr,
          PROG ": open this URL in a browser that uses the gateway as its proxy, and log in:\n\n"
               "  %s\n\n" PROG ": waiting up to %d s for the redirect to %s\n",
          authz_url, a->o.wait_s, a->redirect_uri);
  time_t deadline = time(NULL) + a->o.wait_s;
  const char *path = strchr(a->redirect_uri + 7, '/');
  for (;;) {
    long left = (long)(deadline - time(NULL));
    struct pollfd p = {.fd = a->listen_fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)(left * 1000)) <= 0)
      fail("no redirect from the browser within %d s", a->o.wait_s);
    int c = accept(a->listen_fd, NULL, NULL);
    if (c < 0)
      continue;
    struct timeval tv = {5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[8192];
    size_t n = 0;
    while (n < sizeof req - 1 && !memmem(req, n, "\r\n\r\n", 4)) {
      ssize_t got = read(c, req + n, sizeof req - 1 - n);
      if (got <= 0)
        break;
      n += (size_t)got;
    }
    req[n] = '\0';
    size_t plen = strlen(path);
    bool ours = strncmp(req, "GET ", 4) == 0 && strncmp(req + 4, path, plen) == 0 &&
                (req[4 + plen] == '?' || req[4 + plen] == ' ');
    const char *page = ours ? "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                              "\r\n" PROG ": received. You can close this page.\n"
                            : "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n";
    if (write(c, page, strlen(page)) < 0) { /* the browser's problem, not ours */
    }
    close(c);
    if (ours) {
      char *q = req + 4 + plen;
      q[strcspn(q, " ")] = '\0';
      csc1_authz_callback_parse(*q == '?' ? q + 1 : q, cb);
      OPENSSL_cleanse(req, sizeof req);
      return;
    }
  }
}

/* ---- the token request ---------------------------------------------------- */

typedef struct result {
  csc1_id_token id;
  int64_t access_expires_in;
} result;

static void redeem(app *a, const char *code, result *res) {
  csc1_form body = {0};
  csc1_form_add(&body, "grant_type", "authorization_code");
  csc1_form_add(&body, "code", code);
  csc1_form_add(&body, "redirect_uri", a->redirect_uri);
  csc1_form_add(&body, "code_verifier", a->s.verifier);
  csc1_form_add(&body, "client_id", a->o.client_id);
  if (body.oom)
    fail("out of memory");
  fetched f;
  if (fetch(a, "POST", a->ep.token, &body, NULL, &f) != 0)
    fail_fetch("token endpoint", a->ep.token, &f);
  csc1_form_free(&body);
  OPENSSL_cleanse(a->s.verifier, sizeof a->s.verifier);
  if (f.status != 200)
    fail_status("token endpoint", a->ep.token, &f);
  csc1_oidc_tokens t = {0};
  char why[512];
  if (csc1_oidc_tokens_parse(f.body, f.body_len, &t, why, sizeof why) != 0)
    fail("token endpoint %s: %s", a->ep.token, why);
  fetched_free(&f);
  if (!t.id_token)
    fail("token endpoint %s: no ID token (is \"openid\" in --scope?)", a->ep.token);
  csc1_jwt_expect e = {.issuer = a->o.issuer,
                       .client_id = a->o.client_id,
                       .nonce = a->s.nonce,
                       .now = (int64_t)time(NULL),
                       .leeway_s = LEEWAY_S};
  int rc =
      csc1_jwt_validate(t.id_token, strlen(t.id_token), a->jwks, &e, &res->id, why, sizeof why);
  if (rc == CSC1_JWT_EUNKNOWN_KID) { /* the IdMS may have rotated its key: fetch once more */
    fetch_jwks(a);
    rc = csc1_jwt_validate(t.id_token, strlen(t.id_token), a->jwks, &e, &res->id, why, sizeof why);
  }
  if (rc != CSC1_JWT_OK)
    fail("the ID token is not valid: %s: %s", csc1_jwt_strerror(rc), why);
  res->access_expires_in = t.expires_in;
  csc1_oidc_tokens_free(&t);
}

/* ---- options ----------------------------------------------------------------- */

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, PROG ": ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry '" PROG " --help'.\n");
  va_end(ap);
  exit(2);
}

static void parse_opts(int argc, char **argv, opts *o) {
  enum { O_ISS = 256, O_CID, O_SCOPE, O_ACR, O_CA, O_REDIR, O_USER, O_PWF, O_WAIT, O_JSON };
  static const struct option longs[] = {
      MCX_PROXY_LONGOPTS,
      {"issuer", required_argument, NULL, O_ISS},
      {"client-id", required_argument, NULL, O_CID},
      {"scope", required_argument, NULL, O_SCOPE},
      {"acr-values", required_argument, NULL, O_ACR},
      {"cacert", required_argument, NULL, O_CA},
      {"redirect-uri", required_argument, NULL, O_REDIR},
      {"user", required_argument, NULL, O_USER},
      {"password-file", required_argument, NULL, O_PWF},
      {"wait", required_argument, NULL, O_WAIT},
      {"json", no_argument, NULL, O_JSON},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (opts){.redirect_uri = "http://127.0.0.1:0/callback", .wait_s = 300};
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":vh", longs, NULL)) != -1) {
    if (mcx_proxy_opt(&o->proxy, c, optarg))
      continue;
    switch (c) {
    case O_ISS:
      o->issuer = optarg;
      break;
    case O_CID:
      o->client_id = optarg;
      break;
    case O_SCOPE:
      o->scope = optarg;
      break;
    case O_ACR:
      o->acr_values = optarg;
      break;
    case O_CA:
      o->cacert = optarg;
      break;
    case O_REDIR:
      o->redirect_uri = optarg;
      break;
    case O_USER:
      o->user = optarg;
      break;
    case O_PWF:
      o->password_file = optarg;
      break;
    case O_WAIT: {
      char *end;
      long w = strtol(optarg, &end, 10);
      if (*end || w < 1 || w > 86400)
        usage_error("--wait %s: give seconds, 1..86400", optarg);
      o->wait_s = (int)w;
      break;
    }
    case O_JSON:
      o->json = true;
      break;
    case 'v':
      o->verbose = true;
      break;
    case 'h':
      fputs(usage_text, stdout);
      exit(0);
    case ':':
      usage_error("%s needs a value", argv[optind - 1]);
    default:
      usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc)
    usage_error("unexpected argument '%s'", argv[optind]);
  if (!o->proxy.url)
    usage_error("--proxy is required: the gateway, http://GW:PORT or https://GW:PORT");
  if (!o->issuer || !o->client_id || !o->scope)
    usage_error("--issuer, --client-id and --scope are required");
  if ((o->user != NULL) != (o->password_file != NULL))
    usage_error("--user and --password-file go together");
  const char *bad = mcx_proxy_opts_usage_error(&o->proxy);
  if (bad)
    usage_error("%s", bad);
}

/* The first line of the password file, which must be 0600 or stricter (like
 * the gateway's own secret files). */
static char *read_password(const char *path) {
  struct stat st;
  FILE *f = fopen(path, "re");
  if (!f)
    fail("--password-file %s: cannot read it: %s", path, strerror(errno));
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
    fail("--password-file %s: not a regular file", path);
  if (st.st_mode & 077)
    fail("--password-file %s: accessible by group or others (mode %04o); it must be 0600 or "
         "stricter (chmod 600 '%s')",
         path, (unsigned)(st.st_mode & 07777), path);
  char *buf = calloc(1, PASSWORD_MAX + 2);
  if (!buf)
    fail("out of memory");
  size_t n = fread(buf, 1, PASSWORD_MAX + 1, f);
  fclose(f);
  buf[strcspn(buf, "\r\n")] = '\0';
  if (n > PASSWORD_MAX && strlen(buf) >= PASSWORD_MAX)
    fail("--password-file %s: the password is longer than %d bytes", path, PASSWORD_MAX);
  if (!buf[0])
    fail("--password-file %s: empty", path);
  return buf;
}

/* ---- output ------------------------------------------------------------------ */

static void print_result(const app *a, const result *r) {
  const csc1_id_token *t = &r->id;
  if (a->o.json) {
    json_t *o = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:s?, s:I, s:I, s:s, s:s, s:i, s:I, s:I}", "issuer", t->iss,
        "subject", t->sub, "mcptt_id", t->mcptt_id, "mcdata_id", t->mcdata_id, "mcvideo_id",
        t->mcvideo_id, "id_token_expires_at", (json_int_t)t->exp, "access_token_expires_in",
        (json_int_t)r->access_expires_in, "proxy", a->o.proxy.url, "transport",
        a->o.proxy.h2 ? "h2" : "http/1.1", "tunnels", a->tunnels, "tls_bytes_sent",
        (json_int_t)a->tls_sent, "tls_bytes_received", (json_int_t)a->tls_received);
    if (!o)
      fail("out of memory");
    json_object_set(o, "tunnel_log", a->log);
    char *s = json_dumps(o, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(o);
    return;
  }
  char when[64];
  time_t exp = (time_t)t->exp;
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&exp));
  printf("Logged in as %s at %s\n", t->sub, t->iss);
  printf("  MCPTT ID:   %s\n", t->mcptt_id ? t->mcptt_id : "(none)");
  printf("  MCData ID:  %s\n", t->mcdata_id ? t->mcdata_id : "(none)");
  printf("  MCVideo ID: %s\n", t->mcvideo_id ? t->mcvideo_id : "(none)");
  printf("  ID token valid until %s (%s); access token for %lld s\n", when, t->alg,
         (long long)r->access_expires_in);
  printf("  through %s (%s), %d tunnels, TLS end to end with the IdMS\n", a->o.proxy.url,
         a->o.proxy.h2 ? "HTTP/2 CONNECT" : "HTTP/1.1 CONNECT", a->tunnels);
}

int main(int argc, char **argv) {
  app a = {.listen_fd = -1};
  char err[512];
  parse_opts(argc, argv, &a.o);
  const char *why = NULL;
  csc1_url iss;
  if (csc1_url_parse(a.o.issuer, &iss, &why) != 0 || !iss.https)
    fail("--issuer %s: %s", a.o.issuer, why ? why : "must be an https URL");
  if (a.o.password_file)
    a.password = read_password(a.o.password_file);
  if (!(a.https = csc1_https_ctx_new(a.o.cacert, NULL, NULL, err, sizeof err)))
    fail("--cacert: %s", err);
  if (mcx_proxy_opts_check_key(&a.o.proxy, err, sizeof err) != 0)
    fail("%s", err);
  csc1_https_proxy_opts po = {.url = a.o.proxy.url,
                              .h2 = a.o.proxy.h2,
                              .ca_file = a.o.proxy.cacert,
                              .cert = a.o.proxy.cert,
                              .key = a.o.proxy.key};
  if (csc1_https_ctx_set_proxy(a.https, &po, err, sizeof err) != 0)
    fail("--proxy: %s", err);
  if (!(a.jar = mcx_cookies_new()) || !(a.log = json_array()))
    fail("out of memory");
  uv_loop_init(&a.loop);
  bind_redirect(&a);

  say(&a, "1. discovery at %s through %s", a.o.issuer, a.o.proxy.url);
  discover(&a);
  fetch_jwks(&a);
  say(&a, "2. authorization request (PKCE S256), redirect URI %s", a.redirect_uri);
  char *authz = authorization_url(&a);
  csc1_authz_callback cb = {0};
  if (a.o.user)
    headless_login(&a, authz, &cb);
  else
    browser_login(&a, authz, &cb);
  OPENSSL_cleanse(authz, strlen(authz));
  free(authz);
  close(a.listen_fd);
  if (cb.dup)
    fail("the redirect repeats a parameter: refused");
  if (!cb.state || strlen(cb.state) != strlen(a.s.state) ||
      CRYPTO_memcmp(cb.state, a.s.state, strlen(a.s.state)) != 0)
    fail("the redirect's state does not match the request: refused (possible CSRF)");
  if (cb.iss && strcmp(cb.iss, a.o.issuer) != 0)
    fail("the redirect's iss is not the issuer (RFC 9207): refused");
  if (cb.error) {
    char e[64], d[200];
    csc1_oidc_sanitize(cb.error, e, sizeof e);
    csc1_oidc_sanitize(cb.error_description ? cb.error_description : "", d, sizeof d);
    fail("the IdMS refused the login: %s%s%s", e, d[0] ? ": " : "", d);
  }
  if (!cb.code || !*cb.code)
    fail("the redirect carries no authorization code");
  say(&a, "3. code received; redeeming it at the token endpoint");
  result res = {0};
  redeem(&a, cb.code, &res);
  csc1_authz_callback_free(&cb);
  say(&a, "4. ID token valid (signature, iss, aud, azp, exp, iat, nonce)");
  print_result(&a, &res);

  csc1_id_token_free(&res.id);
  csc1_jwks_free(a.jwks);
  csc1_oidc_endpoints_free(&a.ep);
  csc1_https_ctx_free(a.https);
  mcx_cookies_free(a.jar);
  json_decref(a.log);
  if (a.password) {
    OPENSSL_cleanse(a.password, strlen(a.password));
    free(a.password);
  }
  uv_run(&a.loop, UV_RUN_DEFAULT); /* let the last handles close */
  uv_loop_close(&a.loop);
  return 0;
}
