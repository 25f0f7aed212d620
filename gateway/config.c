/* The daemon's configuration file: see gateway/config.h.
 *
 * inih does the name/value splitting; our own line reader feeds it one whole
 * line at a time so that we know exact line numbers (the Debian build has no
 * INI_HANDLER_LINENO), can refuse over-long lines instead of letting inih split
 * them, and can report every malformed line and every unknown section header
 * (inih reports only the first syntax error and never shows us headers). A line
 * that the reader has already reported is handed to inih as a blank line.
 *
 * Known keys live in one table per section: name, repeatable flag, setter, and
 * for the generic setters the field offset and range.
 */
#include "gateway/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <libpsl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csc1/url.h"
#include "tunnel/error.h"
#include "tunnel/policy.h"
#include "tunnel/tls.h"

#define GW_RAW_MAX 1024  /* reader buffer; must exceed inih's line limit + 1 */
#define GW_SHOW_MAX 1024 /* an echoed value with escapes (4 bytes per input byte) */
#define GW_EDIT_MAX 64   /* longest key name we compute a suggestion for */
#define GW_DEFAULT_ADMIN_PORT 9090
#define GW_DEFAULT_STATE_DIR "/var/lib/mcgw"
#define GW_DEFAULT_REFRESH_BEFORE_MS 60000
#define GW_TOKEN_MIN 16  /* shortest admin token accepted */
#define GW_TOKEN_MAX 512 /* longest; the admin listener keeps 1024-byte header values */

enum key_id {
  K_LOG_LEVEL,
  K_LOG_FORMAT,
  K_ADMIN_LISTEN,
  K_ADMIN_TOKEN_FILE,
  K_USER,
  K_LISTEN,
  K_ALLOW,
  K_ALLOW_PRIVATE,
  K_REQUIRE_TLS,
  K_MAX_TUNNELS,
  K_MAX_PER_CLIENT,
  K_HEADER_TIMEOUT,
  K_CONNECT_TIMEOUT,
  K_IDLE_TIMEOUT,
  K_DRAIN_TIMEOUT,
  K_LISTEN_TLS,
  K_TLS_CERT,
  K_TLS_KEY,
  K_CLIENT_CA,
  K_CLIENTS,
  K_H2_STREAMS,
  K_H2_WINDOW,
  K_SPLICE,
  K_STATE_DIR,
  K_ALLOW_WHEN_AUTHORIZED,
  K_NEW_PER_CLIENT,
  K_NEW_BURST,
  K_NEW_PER_TARGET,
  K_H2_MAX_REFUSED,
  K_RATE_EXEMPT,
  K_ALLOW_PUBLIC_SUFFIX,
  K_ALLOW_UDP,
  K_ALLOW_UDP_WHEN_AUTHORIZED,
  K_UDP_IDLE_TIMEOUT,
  K_UDP_MAX_PAYLOAD,
  K_IDM_ISSUER,
  K_IDM_AUTHORIZATION_EP,
  K_IDM_TOKEN_EP,
  K_IDM_JWKS_URI,
  K_IDM_DEVICE_EP,
  K_IDM_CLIENT_ID,
  K_IDM_CLIENT_AUTH,
  K_IDM_SECRET_FILE,
  K_IDM_CLIENT_KEY,
  K_IDM_REDIRECT_URI,
  K_IDM_SCOPE,
  K_IDM_ACR_VALUES,
  K_IDM_CA_FILE,
  K_IDM_TLS_CERT,
  K_IDM_TLS_KEY,
  K_IDM_REFRESH_BEFORE,
  K_IDM_LOGIN,
  K_IDM_REVOCATION_EP,
  K_IDM_REQUIRED_SCOPE,
  K_ATTEMPT_DELAY,
  K_UP_KEEPALIVE,
  K_UP_USER_TIMEOUT,
  K_DOWN_KEEPALIVE,
  K_EGRESS_INTERFACE,
  K_EGRESS_SOURCE,
  K_EGRESS_DSCP,
  K_EGRESS_MARK,
  K_TUNNEL_EGRESS,
  K_IDM_EGRESS,
  K_DNS_SERVERS,
  K_DNS_TIMEOUT,
  K_DNS_TRIES,
  K_DNS_CACHE_MAX_TTL,
  K_DNS_CACHE_SIZE,
  K_DNS_NEGATIVE_TTL,
  K_DNS_STALE_TTL,
  K_COUNT_
};

struct parse_ctx;
struct key_def;
typedef void (*setter_fn)(struct parse_ctx *c, const struct key_def *k, const char *v);

typedef struct key_def {
  const char *name;
  enum key_id id;
  bool repeatable;
  setter_fn set;
  size_t off;        /* field in gw_config, for the generic setters */
  uint64_t min, max; /* integer range; minimum for durations */
} key_def;

typedef struct section_def {
  const char *name;
  const key_def *keys;
  size_t n_keys;
} section_def;

typedef struct line_src {
  FILE *fp;      /* a file, or */
  const char *s; /* a NUL-terminated string */
  int read_errno;
} line_src;

typedef struct raw_line {
  char buf[GW_RAW_MAX];
  size_t len;   /* bytes kept in buf */
  size_t total; /* bytes on the line, without the line terminator */
  bool nul;     /* the line holds a NUL byte */
} raw_line;

/* A use of an egress by name (a rule's egress=NAME, [tunnel] egress),
 * resolved once every [egress NAME] section is known. rule: the policy's
 * rule index, or EGRESS_REF_TUNNEL / EGRESS_REF_IDM for [tunnel] / [idm] egress. */
typedef struct egress_ref {
  int line;
  size_t rule;
  char name[TN_EGRESS_NAME_MAX + 1];
} egress_ref;

/* A wildcard rule on a public suffix, decided once allow_public_suffix is known. */
typedef struct psl_rule {
  int line;
  const char *key;
  char rule[TN_HOST_MAX + 16];
} psl_rule;

typedef struct parse_ctx {
  const char *name; /* file name for messages */
  gw_config *cfg;
  gw_config_errors *errs;
  line_src src;
  int lineno;
  bool in_section;         /* a [section] header has been seen */
  const section_def *sect; /* the current section; NULL when unknown or bad */
  int first_line[K_COUNT_];
  bool bad[K_COUNT_]; /* the key had an invalid value */
  int idm_line;       /* the first [idm] header */
  size_t n_err;
  bool oom;
  psl_rule *psl; /* freed by parse() */
  size_t n_psl;
  egress_ref *egress_refs; /* names of egresses used, resolved at the end; freed by parse() */
  size_t n_egress_refs;
} parse_ctx;

/* ---- messages ---------------------------------------------------------- */

__attribute__((format(printf, 1, 0))) static char *vformat(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s)
    vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

__attribute__((format(printf, 1, 2))) static char *aformat(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

static bool errs_push(gw_config_errors *e, char *msg) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 8;
    char **m = realloc(e->msgs, cap * sizeof *m);
    if (!m)
      return false;
    e->msgs = m;
    e->cap = cap;
  }
  e->msgs[e->n++] = msg;
  return true;
}

/* Appends "NAME:LINE: TAGmessage", or "NAME: TAGmessage" when line is 0. */
__attribute__((format(printf, 5, 0))) static void
vpush(parse_ctx *c, gw_config_errors *to, int line, const char *tag, const char *fmt, va_list ap) {
  char *msg = vformat(fmt, ap);
  char *full = NULL;
  if (msg)
    full = line > 0 ? aformat("%s:%d: %s%s", c->name, line, tag, msg)
                    : aformat("%s: %s%s", c->name, tag, msg);
  free(msg);
  if (!full || !errs_push(to, full)) {
    free(full);
    c->oom = true;
  }
}

/* Records an error. */
__attribute__((format(printf, 3, 4))) static void report(parse_ctx *c, int line, const char *fmt,
                                                         ...) {
  c->n_err++;
  if (!c->errs)
    return;
  va_list ap;
  va_start(ap, fmt);
  vpush(c, c->errs, line, "", fmt, ap);
  va_end(ap);
}

/* Records a warning: the file is valid but opens more than it seems to. */
__attribute__((format(printf, 3, 4))) static void warn(parse_ctx *c, int line, const char *fmt,
                                                       ...) {
  va_list ap;
  va_start(ap, fmt);
  vpush(c, &c->cfg->warnings, line, "warning: ", fmt, ap);
  va_end(ap);
}

/* Copies s into buf with non-printable bytes as \xNN. */
static const char *escape(const char *s, char *buf, size_t len) {
  size_t o = 0;
  for (; *s && o + 5 < len; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch >= 0x20 && ch < 0x7f)
      buf[o++] = (char)ch;
    else
      o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
  }
  buf[o] = '\0';
  return buf;
}

/* Whether word (lower case) occurs in name, ignoring case. */
static bool contains_word(const char *name, const char *word) {
  size_t n = strlen(word);
  for (; *name; name++)
    if (strncasecmp(name, word, n) == 0)
      return true;
  return false;
}

/* Keys whose values must never be echoed. */
static bool is_secret_key(const char *name) {
  static const char *const words[] = {"secret", "token", "password"};
  if (strstr(name, "_endpoint")) /* token_endpoint is a URL, not a token */
    return false;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (contains_word(name, words[i]))
      return true;
  return false;
}

/* The value as it may appear in a message. */
static const char *shown(const key_def *k, const char *v, char *buf, size_t len) {
  return is_secret_key(k->name) ? "<redacted>" : escape(v, buf, len);
}

/* "KEY: WHAT, got 'VALUE'" on the current line; marks the key bad. */
static void value_error(parse_ctx *c, const key_def *k, const char *v, const char *what) {
  char buf[GW_SHOW_MAX];
  c->bad[k->id] = true;
  report(c, c->lineno, "%s: %s, got '%s'", k->name, what, shown(k, v, buf, sizeof buf));
}

static void syntax_error(parse_ctx *c, int line) {
  report(c, line, "syntax error (expected 'key = value' or '[section]')");
}

/* ---- value parsers ----------------------------------------------------- */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Decimal digits only, at most max. */
static int parse_uint(const char *s, uint64_t max, uint64_t *out) {
  uint64_t n = 0;
  if (!is_digit(*s))
    return -1;
  for (; is_digit(*s); s++) {
    uint64_t d = (uint64_t)(*s - '0');
    if (d > max || n > (max - d) / 10)
      return -1;
    n = n * 10 + d;
  }
  if (*s)
    return -1;
  *out = n;
  return 0;
}

int gw_duration_parse(const char *s, uint64_t *out_ms) {
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  uint64_t n = 0;
  if (!s || !is_digit(*s))
    return -1;
  for (; is_digit(*s); s++) {
    uint64_t d = (uint64_t)(*s - '0');
    if (n > (UINT64_MAX - d) / 10)
      return -1;
    n = n * 10 + d;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(s, units[i].unit) != 0)
      continue;
    if (n > UINT64_MAX / units[i].ms)
      return -1;
    *out_ms = n * units[i].ms;
    return 0;
  }
  return -1;
}

/* 1 for yes, 0 for no, -1 otherwise. */
static int parse_bool(const char *s) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return 1;
    if (strcasecmp(s, no[i]) == 0)
      return 0;
  }
  return -1;
}

/* ---- setters ----------------------------------------------------------- */

static void *field(parse_ctx *c, const key_def *k) { return (char *)c->cfg + k->off; }

static void set_log_level(parse_ctx *c, const key_def *k, const char *v) {
  int r = tn_log_level_parse(v);
  if (r < 0)
    value_error(c, k, v, "expected error, warn, info or debug");
  else
    c->cfg->log_level = (tn_log_level)r;
}

static void set_log_format(parse_ctx *c, const key_def *k, const char *v) {
  int r = tn_log_format_parse(v);
  if (r < 0)
    value_error(c, k, v, "expected text or json");
  else
    c->cfg->log_format = (tn_log_format)r;
}

static void set_admin_listen(parse_ctx *c, const key_def *k, const char *v) {
  struct sockaddr_storage ss;
  if (strcmp(v, "off") == 0) {
    c->cfg->admin_enabled = false;
    return;
  }
  if (tn_addr_parse_listen(v, &ss) != 0) {
    value_error(c, k, v, "expected a numeric address like 127.0.0.1:9090 or [::1]:9090, or off");
    return;
  }
  c->cfg->admin_listen = ss;
  c->cfg->admin_enabled = true;
}

/* Relative paths are taken from the config file's directory, so that a
 * service started from any working directory finds the same file. */
static char *resolve_path(const char *config_name, const char *v) {
  const char *slash = strrchr(config_name, '/');
  if (v[0] == '/' || !slash)
    return strdup(v);
  return aformat("%.*s/%s", (int)(slash - config_name), config_name, v);
}

static void set_admin_token_file(parse_ctx *c, const key_def *k, const char *v) {
  free(c->cfg->admin_token_file);
  if (!(c->cfg->admin_token_file = resolve_path(c->name, v)))
    c->oom = true;
}

/* POSIX portable user names: [a-z_][a-z0-9_-]*, at most 32 bytes. */
static void set_user(parse_ctx *c, const key_def *k, const char *v) {
  size_t n = strlen(v);
  bool ok = n <= 32 && ((*v >= 'a' && *v <= 'z') || *v == '_');
  for (size_t i = 1; ok && i < n; i++)
    ok = (v[i] >= 'a' && v[i] <= 'z') || is_digit(v[i]) || v[i] == '_' || v[i] == '-';
  if (!ok) {
    value_error(c, k, v, "expected a user name like mcgw");
    return;
  }
  free(c->cfg->user);
  if (!(c->cfg->user = strdup(v)))
    c->oom = true;
}

/* Appends to a listener array: listen (plain) or listen_tls. */
static void add_listen(parse_ctx *c, const key_def *k, const char *v, struct sockaddr_storage **arr,
                       size_t *n) {
  struct sockaddr_storage ss;
  if (tn_addr_parse_listen(v, &ss) != 0) {
    value_error(c, k, v, "expected a numeric address like 127.0.0.1:3128 or [::1]:3128");
    return;
  }
  struct sockaddr_storage *l = realloc(*arr, (*n + 1) * sizeof *l);
  if (!l) {
    c->oom = true;
    return;
  }
  l[(*n)++] = ss;
  *arr = l;
}

static void set_listen(parse_ctx *c, const key_def *k, const char *v) {
  add_listen(c, k, v, &c->cfg->tunnel.listen, &c->cfg->tunnel.n_listen);
}

static void set_listen_tls(parse_ctx *c, const key_def *k, const char *v) {
  add_listen(c, k, v, &c->cfg->tunnel.listen_tls, &c->cfg->tunnel.n_listen_tls);
}

/* A file path; a relative one is taken relative to the config file's
 * directory, so a config and its certificates can move together. */
static void set_path(parse_ctx *c, const key_def *k, const char *v) {
  char **dst = (char **)field(c, k);
  const char *slash = strrchr(c->name, '/');
  char *path = NULL;
  if (v[0] == '/' || !slash)
    path = strdup(v);
  else
    path = aformat("%.*s/%s", (int)(slash - c->name), c->name, v);
  if (!path) {
    c->oom = true;
    return;
  }
  free(*dst);
  *dst = path;
}

static void set_clients(parse_ctx *c, const key_def *k, const char *v) {
  tn_engine_opts *o = &c->cfg->tunnel;
  tn_cidr cidr;
  if (tn_cidr_parse(v, strlen(v), &cidr) != 0) {
    value_error(c, k, v,
                "expected an address or prefix like 192.168.50.0/24 or fd00::/8 "
                "(network address, no host bits)");
    return;
  }
  tn_cidr *grown = realloc(o->clients, (o->n_clients + 1) * sizeof *grown);
  if (!grown) {
    c->oom = true;
    return;
  }
  grown[o->n_clients++] = cidr;
  o->clients = grown;
}

/* A size in bytes: a whole number with an optional unit B, KiB or MiB. */
static int parse_size(const char *s, uint64_t *out) {
  static const struct {
    const char *unit;
    uint64_t mult;
  } units[] = {{"", 1}, {"B", 1}, {"KiB", 1024}, {"MiB", 1024 * 1024}};
  size_t digits = strspn(s, "0123456789");
  if (digits == 0 || digits > 10)
    return -1;
  uint64_t n = strtoull(s, NULL, 10);
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(s + digits, units[i].unit) == 0) {
      *out = n * units[i].mult;
      return 0;
    }
  return -1;
}

static void set_size(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t n;
  if (parse_size(v, &n) != 0 || n < k->min || n > k->max) {
    char what[128];
    snprintf(what, sizeof what, "expected a size from %lluKiB to %lluMiB, like 256KiB",
             (unsigned long long)(k->min / 1024), (unsigned long long)(k->max / (1024 * 1024)));
    value_error(c, k, v, what);
    return;
  }
  *(uint32_t *)field(c, k) = (uint32_t)n;
}

/* The Public Suffix List (libpsl: the newest of its built-in copy and
 * Debian's publicsuffix file), loaded once. Private-section suffixes
 * (github.io, s3.amazonaws.com) count too; the implicit "*" rule does not,
 * so an internal TLD (*.corp) is not refused for being unknown. */
static bool is_public_suffix(const char *domain) {
  static const psl_ctx_t *psl;
  if (!psl && !(psl = psl_latest(NULL)))
    psl = psl_builtin();
  return psl && psl_is_public_suffix2(psl, domain, PSL_TYPE_ANY | PSL_TYPE_NO_STAR_RULE);
}

/* Rules that open far more than they seem to: any port on a wildcard or a
 * prefix, prefixes wider than /16 (IPv4) or /48 (IPv6). Public suffixes are
 * decided in cross_checks, once allow_public_suffix is known. */
static void check_rule_width(parse_ctx *c, const key_def *k, const tn_rule *r, const char *text) {
  bool wide_cidr =
      r->kind == TN_RULE_CIDR && r->cidr.prefix < (r->cidr.family == AF_INET ? 16 : 48);
  bool many = r->kind == TN_RULE_SUFFIX ||
              (r->kind == TN_RULE_CIDR && r->cidr.prefix < (r->cidr.family == AF_INET ? 32 : 128));
  if (r->kind == TN_RULE_SUFFIX && is_public_suffix(r->host + 1)) {
    psl_rule *grown = realloc(c->psl, (c->n_psl + 1) * sizeof *grown);
    if (!grown) {
      c->oom = true;
      return;
    }
    c->psl = grown;
    grown[c->n_psl] = (psl_rule){.line = c->lineno, .key = k->name};
    snprintf(grown[c->n_psl++].rule, sizeof grown->rule, "%s", text);
  }
  if (many && r->port == 0)
    warn(c, c->lineno,
         "%s: '%s' opens every port (1-65535, SMTP 25, SSH 22 and RDP 3389 included) on every "
         "%s it covers; name the port, e.g. ':443'",
         k->name, text, r->kind == TN_RULE_SUFFIX ? "name" : "address");
  if (wide_cidr)
    warn(c, c->lineno, "%s: '%s' is wider than /%d: it opens %s addresses", k->name, text,
         r->cidr.family == AF_INET ? 16 : 48,
         r->cidr.family == AF_INET ? "more than 65536" : "more than a site's /48 of");
}

/* Records a use of egress name on this line, for resolve_egress_refs. */
static bool egress_ref_add(parse_ctx *c, const key_def *k, const char *name, size_t rule) {
  if (!*name || strlen(name) > TN_EGRESS_NAME_MAX) {
    value_error(c, k, name, "expected the name of an [egress NAME] section");
    return false;
  }
  egress_ref *refs = realloc(c->egress_refs, (c->n_egress_refs + 1) * sizeof(*refs));
  if (!refs) {
    c->oom = true;
    return false;
  }
  c->egress_refs = refs;
  egress_ref *r = &refs[c->n_egress_refs++];
  r->line = c->lineno;
  r->rule = rule;
  snprintf(r->name, sizeof r->name, "%s", name);
  return true;
}

/* "RULE" or "RULE egress=NAME": v is cut after RULE, *egress is NAME or
 * NULL. False when something else follows RULE. */
static bool split_egress(char *v, const char **egress) {
  *egress = NULL;
  char *sp = strpbrk(v, " \t");
  if (!sp)
    return true;
  *sp++ = '\0';
  sp += strspn(sp, " \t");
  if (strncmp(sp, "egress=", 7) != 0)
    return false;
  *egress = sp + 7;
  return true;
}

/* An allow rule; when_authorized: it matches only while the gateway holds a
 * valid access token (limited service otherwise); udp: an allow_udp rule
 * (port ranges allowed), else a TCP one. Either takes "RULE egress=NAME". */
static void add_rule(parse_ctx *c, const key_def *k, const char *value, bool when_authorized,
                     bool udp) {
  tn_rule rule;
  const char *why = NULL;
  char v[GW_RAW_MAX];
  snprintf(v, sizeof v, "%s", value);
  const char *egress;
  if (!split_egress(v, &egress)) {
    char buf[GW_SHOW_MAX];
    c->bad[k->id] = true;
    report(c, c->lineno, "%s: expected 'RULE' or 'RULE egress=NAME' in '%s'", k->name,
           shown(k, value, buf, sizeof buf));
    return;
  }
  if ((udp ? tn_rule_parse_udp(v, &rule, &why) : tn_rule_parse(v, &rule, &why)) != 0) {
    char buf[GW_SHOW_MAX];
    c->bad[k->id] = true;
    report(c, c->lineno, "%s: %s in '%s'", k->name, why ? why : "invalid rule",
           shown(k, v, buf, sizeof buf));
    return;
  }
  char text[TN_HOST_MAX + 16];
  tn_rule_format(&rule, text, sizeof text);
  check_rule_width(c, k, &rule, text);
  rule.when_authorized = when_authorized;
  rule.egress = 0;
  if (egress && !egress_ref_add(c, k, egress, c->cfg->tunnel.policy.n_rules))
    return;
  if (tn_policy_add(&c->cfg->tunnel.policy, &rule) != 0)
    c->oom = true;
}

static void set_allow(parse_ctx *c, const key_def *k, const char *v) {
  add_rule(c, k, v, false, false);
}

static void set_allow_udp(parse_ctx *c, const key_def *k, const char *v) {
  add_rule(c, k, v, false, true);
}

static void set_allow_udp_when_authorized(parse_ctx *c, const key_def *k, const char *v) {
  add_rule(c, k, v, true, true);
}

/* udp_max_payload: bytes, 1B to 65527B (the largest UDP payload over IPv4). */
static void set_udp_payload(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t n;
  if (parse_size(v, &n) != 0 || n < 1 || n > 65527)
    value_error(c, k, v, "expected a size from 1B to 65527B, like 1500B");
  else
    *(uint32_t *)field(c, k) = (uint32_t)n;
}

#define EGRESS_REF_TUNNEL SIZE_MAX    /* [tunnel] egress */
#define EGRESS_REF_IDM (SIZE_MAX - 1) /* [idm] egress */

static void set_tunnel_egress(parse_ctx *c, const key_def *k, const char *v) {
  egress_ref_add(c, k, v, EGRESS_REF_TUNNEL);
}

static void set_idm_egress(parse_ctx *c, const key_def *k, const char *v) {
  egress_ref_add(c, k, v, EGRESS_REF_IDM);
}

/* ---- [egress NAME] ---- */

/* The section being read: the last of cfg->tunnel.egress. */
static tn_egress *cur_egress(parse_ctx *c) {
  return &c->cfg->tunnel.egress[c->cfg->tunnel.n_egress - 1];
}

/* An interface name the kernel could have. One missing now is only a
 * warning: a vehicle's LTE modem may bring its interface up after mcgw has
 * started (and `mcgw check` runs as ExecStartPre: an error would stop the
 * gateway from booting). Until it exists, the egress's tunnels fail with
 * 502 egress_down (tn_egress_up is asked on every connection), then
 * SO_BINDTODEVICE takes it without a reload. */
static void set_egress_interface(parse_ctx *c, const key_def *k, const char *v) {
  size_t len = strlen(v);
  char buf[64];
  if (len == 0 || len >= sizeof(cur_egress(c)->interface) || strpbrk(v, "/: \t") ||
      strcmp(v, ".") == 0 || strcmp(v, "..") == 0) { /* the kernel's dev_valid_name() */
    value_error(c, k, v, "expected a network interface name of 1 to 15 characters");
    return;
  }
  if (if_nametoindex(v) == 0)
    warn(c, c->lineno,
         "interface: no network interface '%s' on this host (yet): connections through [egress %s] "
         "fail until it appears (tunnels: 502 egress_down)",
         escape(v, buf, sizeof buf), cur_egress(c)->name);
  snprintf(cur_egress(c)->interface, sizeof(cur_egress(c)->interface), "%s", v);
}

/* A numeric address. One this host does not have (no socket can bind to it)
 * is only a warning, for the reason an interface is (set_egress_interface):
 * a modem's address may come after mcgw; until then the egress is down. */
static void set_egress_source(parse_ctx *c, const key_def *k, const char *v) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, v, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, v, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
  } else {
    value_error(c, k, v, "expected an IP address");
    return;
  }
  if (!tn_egress_source_here(&ss))
    warn(c, c->lineno,
         "source: %s is not an address of this host (yet): connections through [egress %s] fail "
         "until it is (tunnels: 502 egress_down)",
         v, cur_egress(c)->name);
  cur_egress(c)->source = ss;
}

static void set_egress_dscp(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t n;
  if (parse_uint(v, 63, &n) != 0)
    value_error(c, k, v, "expected a DSCP value from 0 to 63");
  else
    cur_egress(c)->dscp = (int)n;
}

static void set_egress_mark(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t n;
  if (parse_uint(v, UINT32_MAX, &n) != 0) {
    value_error(c, k, v, "expected a firewall mark from 0 to 4294967295");
    return;
  }
  cur_egress(c)->mark = (uint32_t)n;
  cur_egress(c)->has_mark = true;
}

/* "[egress NAME]": a new egress; false (reported) for a bad or repeated name. */
static bool egress_section(parse_ctx *c, const char *name, size_t len) {
  tn_engine_opts *o = &c->cfg->tunnel;
  if (len == 0 || len > TN_EGRESS_NAME_MAX || memchr(name, ' ', len)) {
    report(c, c->lineno, "[egress NAME]: a name of 1 to %d characters without spaces",
           TN_EGRESS_NAME_MAX);
    return false;
  }
  for (size_t i = 0; i < o->n_egress; i++)
    if (strlen(o->egress[i].name) == len && memcmp(o->egress[i].name, name, len) == 0) {
      report(c, c->lineno, "[egress %.*s] is defined twice", (int)len, name);
      return false;
    }
  tn_egress *eg = realloc(o->egress, (o->n_egress + 1) * sizeof(*eg));
  if (!eg) {
    c->oom = true;
    return false;
  }
  o->egress = eg;
  eg = &o->egress[o->n_egress++];
  memset(eg, 0, sizeof(*eg));
  memcpy(eg->name, name, len);
  eg->dscp = -1;
  return true;
}

/* Every egress=NAME and [tunnel] egress names a section. */
static void resolve_egress_refs(parse_ctx *c) {
  tn_engine_opts *o = &c->cfg->tunnel;
  for (size_t i = 0; i < c->n_egress_refs; i++) {
    const egress_ref *r = &c->egress_refs[i];
    size_t j = 0;
    while (j < o->n_egress && strcmp(o->egress[j].name, r->name) != 0)
      j++;
    if (j == o->n_egress) {
      report(c, r->line, "unknown egress '%s' (no [egress %s] section)", r->name, r->name);
      continue;
    }
    if (r->rule == EGRESS_REF_TUNNEL)
      o->default_egress = (uint16_t)(j + 1);
    else if (r->rule == EGRESS_REF_IDM)
      c->cfg->idm.egress = (uint16_t)(j + 1);
    else if (r->rule < o->policy.n_rules)
      o->policy.rules[r->rule].egress = (uint16_t)(j + 1);
  }
}

static void set_bool(parse_ctx *c, const key_def *k, const char *v) {
  int b = parse_bool(v);
  if (b < 0)
    value_error(c, k, v, "expected yes or no");
  else
    *(bool *)field(c, k) = b;
}

static void set_u32(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t n;
  if (parse_uint(v, k->max, &n) != 0 || n < k->min) {
    char what[96];
    snprintf(what, sizeof what, "expected a whole number from %llu to %llu",
             (unsigned long long)k->min, (unsigned long long)k->max);
    value_error(c, k, v, what);
    return;
  }
  *(uint32_t *)field(c, k) = (uint32_t)n;
}

static void set_duration(parse_ctx *c, const key_def *k, const char *v) {
  uint64_t ms;
  if (gw_duration_parse(v, &ms) != 0)
    value_error(c, k, v, "expected a duration like 500ms, 10s, 5m or 1h");
  else if (ms < k->min)
    value_error(c, k, v, "must be greater than 0s");
  else
    *(uint64_t *)field(c, k) = ms;
}

/* One DNS server: "ADDR" (port 53), "a.b.c.d:PORT" or "[v6]:PORT", as
 * "ADDR:PORT" in out (TN_ADDRSTR_MAX). */
static bool dns_server(const char *s, char *out) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(53);
  } else if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(53);
  } else if (strchr(s, '*') || tn_addr_parse_listen(s, &ss) != 0 || in->sin_port == 0) {
    return false;
  }
  return tn_addr_format((struct sockaddr *)&ss, out, TN_ADDRSTR_MAX) == 0;
}

/* servers: addresses separated by commas or spaces, tried in order. */
static void set_dns_servers(parse_ctx *c, const key_def *k, const char *v) {
  char *copy = strdup(v), *save = NULL, *csv = NULL;
  size_t len = 0;
  if (!copy) {
    c->oom = true;
    return;
  }
  for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
    char one[TN_ADDRSTR_MAX];
    if (!dns_server(tok, one)) {
      value_error(c, k, v,
                  "expected IP addresses, each with an optional port "
                  "(10.0.0.1, 10.0.0.1:5353, [fd00::1]:53), separated by commas");
      goto done;
    }
    char *grown = realloc(csv, len + strlen(one) + 2);
    if (!grown) {
      c->oom = true;
      goto done;
    }
    csv = grown;
    len += (size_t)sprintf(csv + len, "%s%s", len ? "," : "", one);
  }
  free(c->cfg->dns.servers);
  c->cfg->dns.servers = csv; /* NULL for an empty value: /etc/resolv.conf */
  csv = NULL;
done:
  free(csv);
  free(copy);
}

static void set_allow_when_authorized(parse_ctx *c, const key_def *k, const char *v) {
  add_rule(c, k, v, true, false);
}

/* A rate: "N/s", N from 0 (no limit) to 1000000. */
static bool parse_rate(parse_ctx *c, const key_def *k, const char *v, uint32_t *out) {
  const char *slash = strchr(v, '/');
  char num[16];
  uint64_t n;
  size_t len = slash ? (size_t)(slash - v) : 0;
  if (!slash || strcmp(slash, "/s") != 0 || len == 0 || len >= sizeof num) {
    value_error(c, k, v, "expected a rate like 20/s (0/s: no limit)");
    return false;
  }
  memcpy(num, v, len);
  num[len] = '\0';
  if (parse_uint(num, 1000000, &n) != 0) {
    value_error(c, k, v, "expected a rate from 0/s (no limit) to 1000000/s");
    return false;
  }
  *out = (uint32_t)n;
  return true;
}

static void set_client_rate(parse_ctx *c, const key_def *k, const char *v) {
  parse_rate(c, k, v, &c->cfg->tunnel.new_tunnels_per_client.per_s);
}

/* The target's burst is one second's worth. */
static void set_target_rate(parse_ctx *c, const key_def *k, const char *v) {
  tn_rate *r = &c->cfg->tunnel.new_upstream_per_target;
  if (parse_rate(c, k, v, &r->per_s))
    r->burst = r->per_s;
}

static bool has_ctl(const char *v) {
  for (; *v; v++)
    if ((unsigned char)*v < 0x20 || *v == 0x7f)
      return true;
  return false;
}

/* rate_exempt: "*", an address or prefix, else a certificate subject as the
 * access log shows it (RFC 2253, e.g. CN=cam-7,O=Fire). */
static void set_rate_exempt(parse_ctx *c, const key_def *k, const char *v) {
  tn_engine_opts *o = &c->cfg->tunnel;
  tn_exempt x = {0};
  if (strcmp(v, "*") == 0) {
    x.all = true;
    warn(c, c->lineno,
         "rate_exempt = *: no device is held to max_new_tunnels_per_client; "
         "name the bursty device (its subject or address) instead");
  } else if (tn_cidr_parse(v, strlen(v), &x.cidr) == 0) {
    if (x.cidr.prefix == 0)
      warn(c, c->lineno,
           "rate_exempt = %s: every address, as with *: no device is held to "
           "max_new_tunnels_per_client",
           v);
  } else if (!*v || strlen(v) > TN_SUBJECT_MAX || has_ctl(v)) {
    value_error(c, k, v, "expected a certificate subject (CN=...), an address or a prefix");
    return;
  } else {
    x.is_subject = true;
    snprintf(x.subject, sizeof x.subject, "%s", v);
    if (strchr(v, '*'))
      warn(c, c->lineno,
           "rate_exempt = %s: '*' in a subject is matched literally, not as "
           "a wildcard",
           v);
  }
  tn_exempt *grown = realloc(o->rate_exempt, (o->n_rate_exempt + 1) * sizeof *grown);
  if (!grown) {
    c->oom = true;
    return;
  }
  grown[o->n_rate_exempt++] = x;
  o->rate_exempt = grown;
}

static void store_string(parse_ctx *c, const key_def *k, const char *v) {
  char **f = field(c, k);
  free(*f);
  if (!(*f = strdup(v)))
    c->oom = true;
}

/* A string that may be empty ("acr_values =" omits the parameter). */
static void set_opt_string(parse_ctx *c, const key_def *k, const char *v) { store_string(c, k, v); }

static bool has_space_or_ctl(const char *v) {
  for (; *v; v++)
    if ((unsigned char)*v <= 0x20 || *v == 0x7f)
      return true;
  return false;
}

static void set_string(parse_ctx *c, const key_def *k, const char *v) {
  if (has_space_or_ctl(v) && k->id == K_IDM_CLIENT_ID)
    value_error(c, k, v, "must not contain spaces or control characters");
  else
    store_string(c, k, v);
}

/* A URL with a host; no fragment, no user info. Every CSC-1 endpoint must
 * be https://; redirect_uri may be http:// (the browser, not mcgw, follows
 * it, typically to the admin listener on loopback). */
static void set_url(parse_ctx *c, const key_def *k, const char *v) {
  csc1_url u;
  const char *why = NULL;
  if (csc1_url_parse(v, &u, &why) != 0)
    value_error(c, k, v, why);
  else if (!u.https && k->id != K_IDM_REDIRECT_URI)
    value_error(c, k, v, "must be an https:// URL (CSC-1 is always TLS)");
  else
    store_string(c, k, v);
}

static void set_scope(parse_ctx *c, const key_def *k, const char *v) {
  bool openid = false;
  const char *p = v;
  while (*p) {
    size_t n = strcspn(p, " ");
    if (n == 6 && strncmp(p, "openid", 6) == 0)
      openid = true;
    p += n;
    p += strspn(p, " ");
  }
  if (!openid)
    value_error(c, k, v, "must contain openid (CSC-1 is OpenID Connect)");
  else
    store_string(c, k, v);
}

/* A file mcgw must be able to read (trust anchors, certificate). */
static void set_readable_file(parse_ctx *c, const key_def *k, const char *v) {
  char buf[GW_SHOW_MAX];
  if (access(v, R_OK) != 0) {
    c->bad[k->id] = true;
    report(c, c->lineno, "%s: cannot read '%s': %s", k->name, escape(v, buf, sizeof buf),
           strerror(errno));
    return;
  }
  store_string(c, k, v);
}

/* A file holding a secret or a private key: readable by mcgw, by nobody else.
 * The path is shown in messages; the contents never are. */
static void set_secret_file(parse_ctx *c, const key_def *k, const char *v) {
  char buf[GW_SHOW_MAX];
  struct stat st;
  const char *path = escape(v, buf, sizeof buf);
  c->bad[k->id] = true;
  if (stat(v, &st) != 0 || access(v, R_OK) != 0)
    report(c, c->lineno, "%s: cannot read '%s': %s", k->name, path, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    report(c, c->lineno, "%s: '%s' is not a regular file", k->name, path);
  else if (st.st_mode & 077)
    report(c, c->lineno,
           "%s: '%s' is accessible by group or others (mode %04o); it must be 0600 or "
           "stricter (chmod 600 '%s')",
           k->name, path, (unsigned)(st.st_mode & 07777), path);
  else {
    c->bad[k->id] = false;
    store_string(c, k, v);
  }
}

static void set_client_auth(parse_ctx *c, const key_def *k, const char *v) {
  static const char *const names[] = {"none", "client_secret_basic", "client_secret_post",
                                      "private_key_jwt"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(v, names[i]) == 0) {
      c->cfg->idm.client_auth = (csc1_auth_method)i;
      return;
    }
  value_error(c, k, v, "expected none, client_secret_basic, client_secret_post or private_key_jwt");
}

static void set_splice(parse_ctx *c, const key_def *k, const char *v) {
  int m = tn_splice_mode_parse(v);
  if (m < 0)
    value_error(c, k, v, "expected auto, always or off");
  else
    c->cfg->tunnel.splice = (tn_splice_mode)m;
}

static void set_login(parse_ctx *c, const key_def *k, const char *v) {
  if (strcmp(v, "browser") == 0)
    c->cfg->idm.login = GW_IDM_LOGIN_BROWSER;
  else if (strcmp(v, "device") == 0)
    c->cfg->idm.login = GW_IDM_LOGIN_DEVICE;
  else
    value_error(c, k, v, "expected browser or device");
}

/* ---- tables ------------------------------------------------------------ */

#define TUN(f) offsetof(gw_config, tunnel.f)
#define IDM(f) offsetof(gw_config, idm.f)

static const key_def gateway_keys[] = {
    {"log_level", K_LOG_LEVEL, false, set_log_level, 0, 0, 0},
    {"log_format", K_LOG_FORMAT, false, set_log_format, 0, 0, 0},
    {"state_dir", K_STATE_DIR, false, set_string, offsetof(gw_config, state_dir), 0, 0},
    {"user", K_USER, false, set_user, 0, 0, 0},
};

static const key_def admin_keys[] = {
    {"listen", K_ADMIN_LISTEN, false, set_admin_listen, 0, 0, 0},
    {"admin_token_file", K_ADMIN_TOKEN_FILE, false, set_admin_token_file, 0, 0, 0},
};

static const key_def tunnel_keys[] = {
    {"listen", K_LISTEN, true, set_listen, 0, 0, 0},
    {"allow", K_ALLOW, true, set_allow, 0, 0, 0},
    {"allow_when_authorized", K_ALLOW_WHEN_AUTHORIZED, true, set_allow_when_authorized, 0, 0, 0},
    {"allow_private", K_ALLOW_PRIVATE, false, set_bool, TUN(policy.allow_private), 0, 0},
    {"require_tls", K_REQUIRE_TLS, false, set_bool, TUN(require_tls), 0, 0},
    {"max_tunnels", K_MAX_TUNNELS, false, set_u32, TUN(max_tunnels), 1, 1000000},
    {"max_tunnels_per_client", K_MAX_PER_CLIENT, false, set_u32, TUN(max_tunnels_per_client), 1,
     1000000},
    {"header_timeout", K_HEADER_TIMEOUT, false, set_duration, TUN(header_timeout_ms), 1, 0},
    {"connect_timeout", K_CONNECT_TIMEOUT, false, set_duration, TUN(connect_timeout_ms), 1, 0},
    {"idle_timeout", K_IDLE_TIMEOUT, false, set_duration, TUN(idle_timeout_ms), 0, 0},
    {"drain_timeout", K_DRAIN_TIMEOUT, false, set_duration, TUN(drain_timeout_ms), 0, 0},
    {"attempt_delay", K_ATTEMPT_DELAY, false, set_duration, TUN(attempt_delay_ms), 1, 0},
    {"upstream_keepalive", K_UP_KEEPALIVE, false, set_duration, TUN(upstream_keepalive_ms), 0, 0},
    {"upstream_user_timeout", K_UP_USER_TIMEOUT, false, set_duration, TUN(upstream_user_timeout_ms),
     0, 0},
    {"downstream_keepalive", K_DOWN_KEEPALIVE, false, set_duration, TUN(downstream_keepalive_ms), 0,
     0},
    {"egress", K_TUNNEL_EGRESS, false, set_tunnel_egress, 0, 0, 0},
    {"listen_tls", K_LISTEN_TLS, true, set_listen_tls, 0, 0, 0},
    {"tls_cert", K_TLS_CERT, false, set_path, TUN(tls_cert), 0, 0},
    {"tls_key", K_TLS_KEY, false, set_path, TUN(tls_key), 0, 0},
    {"client_ca", K_CLIENT_CA, false, set_path, TUN(client_ca), 0, 0},
    {"clients", K_CLIENTS, true, set_clients, 0, 0, 0},
    {"h2_max_concurrent_streams", K_H2_STREAMS, false, set_u32, TUN(h2_max_concurrent_streams), 1,
     10000},
    {"h2_stream_window", K_H2_WINDOW, false, set_size, TUN(h2_stream_window), 16 * 1024,
     16 * 1024 * 1024},
    {"splice", K_SPLICE, false, set_splice, 0, 0, 0},
    {"max_new_tunnels_per_client", K_NEW_PER_CLIENT, false, set_client_rate, 0, 0, 0},
    {"new_tunnels_burst", K_NEW_BURST, false, set_u32, TUN(new_tunnels_per_client.burst), 1,
     1000000},
    {"max_new_upstream_per_target", K_NEW_PER_TARGET, false, set_target_rate, 0, 0, 0},
    {"h2_max_refused_per_connection", K_H2_MAX_REFUSED, false, set_u32,
     TUN(h2_max_refused_per_connection), 0, 1000000},
    {"rate_exempt", K_RATE_EXEMPT, true, set_rate_exempt, 0, 0, 0},
    {"allow_public_suffix", K_ALLOW_PUBLIC_SUFFIX, false, set_bool,
     offsetof(gw_config, allow_public_suffix), 0, 0},
    {"allow_udp", K_ALLOW_UDP, true, set_allow_udp, 0, 0, 0},
    {"allow_udp_when_authorized", K_ALLOW_UDP_WHEN_AUTHORIZED, true, set_allow_udp_when_authorized,
     0, 0, 0},
    {"udp_idle_timeout", K_UDP_IDLE_TIMEOUT, false, set_duration, TUN(udp_idle_timeout_ms), 1, 0},
    {"udp_max_payload", K_UDP_MAX_PAYLOAD, false, set_udp_payload, TUN(udp_max_payload), 0, 0},
};

static const key_def idm_keys[] = {
    {"issuer", K_IDM_ISSUER, false, set_url, IDM(issuer), 0, 0},
    {"authorization_endpoint", K_IDM_AUTHORIZATION_EP, false, set_url, IDM(authorization_endpoint),
     0, 0},
    {"token_endpoint", K_IDM_TOKEN_EP, false, set_url, IDM(token_endpoint), 0, 0},
    {"jwks_uri", K_IDM_JWKS_URI, false, set_url, IDM(jwks_uri), 0, 0},
    {"device_authorization_endpoint", K_IDM_DEVICE_EP, false, set_url,
     IDM(device_authorization_endpoint), 0, 0},
    {"client_id", K_IDM_CLIENT_ID, false, set_string, IDM(client_id), 0, 0},
    {"client_auth", K_IDM_CLIENT_AUTH, false, set_client_auth, 0, 0, 0},
    {"client_secret_file", K_IDM_SECRET_FILE, false, set_secret_file, IDM(client_secret_file), 0,
     0},
    {"client_key", K_IDM_CLIENT_KEY, false, set_secret_file, IDM(client_key), 0, 0},
    {"redirect_uri", K_IDM_REDIRECT_URI, false, set_url, IDM(redirect_uri), 0, 0},
    {"scope", K_IDM_SCOPE, false, set_scope, IDM(scope), 0, 0},
    {"acr_values", K_IDM_ACR_VALUES, false, set_opt_string, IDM(acr_values), 0, 0},
    {"ca_file", K_IDM_CA_FILE, false, set_readable_file, IDM(ca_file), 0, 0},
    {"tls_cert", K_IDM_TLS_CERT, false, set_readable_file, IDM(tls_cert), 0, 0},
    {"tls_key", K_IDM_TLS_KEY, false, set_secret_file, IDM(tls_key), 0, 0},
    {"refresh_before", K_IDM_REFRESH_BEFORE, false, set_duration, IDM(refresh_before_ms), 1, 0},
    {"login", K_IDM_LOGIN, false, set_login, 0, 0, 0},
    {"revocation_endpoint", K_IDM_REVOCATION_EP, false, set_url, IDM(revocation_endpoint), 0, 0},
    {"required_scope", K_IDM_REQUIRED_SCOPE, false, set_opt_string, IDM(required_scope), 0, 0},
    {"egress", K_IDM_EGRESS, false, set_idm_egress, 0, 0, 0},
};

/* Repeatable: every [egress NAME] section has them (last one wins). */
static const key_def egress_keys[] = {
    {"interface", K_EGRESS_INTERFACE, true, set_egress_interface, 0, 0, 0},
    {"source", K_EGRESS_SOURCE, true, set_egress_source, 0, 0, 0},
    {"dscp", K_EGRESS_DSCP, true, set_egress_dscp, 0, 0, 0},
    {"mark", K_EGRESS_MARK, true, set_egress_mark, 0, 0, 0},
};

#define DNS(f) offsetof(gw_config, dns.f)

static const key_def dns_keys[] = {
    {"servers", K_DNS_SERVERS, false, set_dns_servers, 0, 0, 0},
    {"timeout", K_DNS_TIMEOUT, false, set_duration, DNS(timeout_ms), 1, 0},
    {"tries", K_DNS_TRIES, false, set_u32, DNS(tries), 1, 10},
    {"cache_max_ttl", K_DNS_CACHE_MAX_TTL, false, set_duration, DNS(cache_max_ttl_ms), 0, 0},
    {"cache_size", K_DNS_CACHE_SIZE, false, set_u32, DNS(cache_size), 0, 1000000},
    {"negative_ttl", K_DNS_NEGATIVE_TTL, false, set_duration, DNS(negative_ttl_ms), 0, 0},
    {"stale_ttl", K_DNS_STALE_TTL, false, set_duration, DNS(stale_ttl_ms), 0, 0},
};

#define SECTION(n, t)                                                                              \
  { n, t, sizeof t / sizeof t[0] }
static const section_def sections[] = {
    SECTION("gateway", gateway_keys), SECTION("admin", admin_keys), SECTION("tunnel", tunnel_keys),
    SECTION("idm", idm_keys),         SECTION("dns", dns_keys),
};

static const section_def *find_section(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
    if (strlen(sections[i].name) == len && memcmp(sections[i].name, name, len) == 0)
      return &sections[i];
  return NULL;
}

static const key_def *find_key(const section_def *s, const char *name) {
  for (size_t i = 0; i < s->n_keys; i++)
    if (strcmp(s->keys[i].name, name) == 0)
      return &s->keys[i];
  return NULL;
}

/* ---- the handler ------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t row[GW_EDIT_MAX + 1];
  if (la > GW_EDIT_MAX || lb > GW_EDIT_MAX)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* The known key of s nearest to name, within an edit distance of 2. */
static const char *suggest_key(const section_def *s, const char *name) {
  const char *best = NULL;
  size_t best_d = 3;
  for (size_t i = 0; i < s->n_keys; i++) {
    size_t d = edit_distance(name, s->keys[i].name);
    if (d < best_d) {
      best_d = d;
      best = s->keys[i].name;
    }
  }
  return best;
}

static void unknown_key(parse_ctx *c, const char *name) {
  char buf[GW_SHOW_MAX];
  const char *hint = suggest_key(c->sect, name);
  if (hint)
    report(c, c->lineno, "unknown key '%s' in [%s] (did you mean '%s'?)",
           escape(name, buf, sizeof buf), c->sect->name, hint);
  else
    report(c, c->lineno, "unknown key '%s' in [%s]", escape(name, buf, sizeof buf), c->sect->name);
}

static void apply(parse_ctx *c, const key_def *k, const char *v) {
  int first = c->first_line[k->id];
  if (first && !k->repeatable) {
    report(c, c->lineno, "duplicate key '%s' (first set on line %d)", k->name, first);
    return;
  }
  if (!first)
    c->first_line[k->id] = c->lineno;
  if (*v == '\0' && k->set != set_opt_string) {
    c->bad[k->id] = true;
    report(c, c->lineno, "%s: value must not be empty", k->name);
    return;
  }
  k->set(c, k, v);
}

/* inih's callback for each name = value pair; the section comes from the
 * reader's own tracking, which sees every header. Always returns 1: problems
 * are recorded in the context, so a nonzero ini_parse_stream() result can only
 * mean a syntax error. */
static int on_pair(void *user, const char *section, const char *name, const char *value) {
  parse_ctx *c = user;
  (void)section;
  if (!c->in_section) {
    char buf[GW_SHOW_MAX];
    report(c, c->lineno, "key '%s' is outside any section", escape(name, buf, sizeof buf));
    return 1;
  }
  if (!c->sect) /* unknown or malformed section: its header was reported */
    return 1;
  const key_def *k = find_key(c->sect, name);
  if (!k)
    unknown_key(c, name);
  else
    apply(c, k, value ? value : "");
  return 1;
}

/* ---- the reader -------------------------------------------------------- */

static int src_getc(line_src *s) {
  if (s->fp) {
    int ch = getc(s->fp);
    if (ch == EOF && ferror(s->fp) && !s->read_errno)
      s->read_errno = errno ? errno : EIO;
    return ch;
  }
  if (*s->s == '\0')
    return EOF;
  return (unsigned char)*s->s++;
}

/* Reads one line, keeping at most keep bytes. False at the end of input. */
static bool read_raw_line(line_src *s, raw_line *l, size_t keep) {
  int ch = src_getc(s);
  if (ch == EOF)
    return false;
  l->len = l->total = 0;
  l->nul = false;
  for (; ch != EOF && ch != '\n'; ch = src_getc(s)) {
    if (ch == '\0')
      l->nul = true;
    if (l->len < keep)
      l->buf[l->len++] = (char)ch;
    l->total++;
  }
  if (l->total > 0 && l->total == l->len && l->buf[l->len - 1] == '\r') {
    l->len--;
    l->total--;
  }
  l->buf[l->len] = '\0';
  return true;
}

static void strip_bom(raw_line *l) {
  if (l->len >= 3 && memcmp(l->buf, "\xEF\xBB\xBF", 3) == 0) {
    memmove(l->buf, l->buf + 3, l->len - 3 + 1);
    l->len -= 3;
    l->total -= 3;
  }
}

static bool is_space(char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r'); }

static char *skip_space(char *s) {
  while (is_space(*s))
    s++;
  return s;
}

/* Like inih's find_chars_or_comment: the first of chars, or the start of an
 * inline comment (';' after whitespace), or the end of s. */
static char *find_or_comment(char *s, const char *chars) {
  bool was_space = false;
  while (*s && !strchr(chars, *s) && !(was_space && *s == ';')) {
    was_space = is_space(*s);
    s++;
  }
  return s;
}

static const section_def egress_section_def = {"egress", egress_keys,
                                               sizeof egress_keys / sizeof egress_keys[0]};

static void enter_section(parse_ctx *c, const char *name, size_t len) {
  char buf[GW_SHOW_MAX];
  char raw[GW_RAW_MAX];
  c->in_section = true;
  if (len > 7 && memcmp(name, "egress ", 7) == 0) {
    c->sect = egress_section(c, name + 7, len - 7) ? &egress_section_def : NULL;
    return;
  }
  c->sect = find_section(name, len);
  if (c->sect && c->sect->keys == idm_keys && !c->cfg->idm.enabled) {
    c->cfg->idm.enabled = true;
    c->idm_line = c->lineno;
  }
  if (c->sect)
    return;
  memcpy(raw, name, len);
  raw[len] = '\0';
  report(c, c->lineno, "unknown section [%s]", escape(raw, buf, sizeof buf));
}

/* A "[section]" line: ']' is required, only a comment may follow it. */
static bool section_line(parse_ctx *c, char *start) {
  char *end = find_or_comment(start + 1, "]");
  char *rest = *end == ']' ? skip_space(end + 1) : end;
  if (*end != ']' || (*rest && *rest != ';')) {
    syntax_error(c, c->lineno);
    c->in_section = true; /* skip its keys rather than misfile them */
    c->sect = NULL;
    return false;
  }
  char *name = skip_space(start + 1);
  while (end > name && is_space(end[-1]))
    end--;
  enter_section(c, name, (size_t)(end - name));
  return true;
}

/* Decides whether inih may see the (left-trimmed) line; reports it if not. */
static bool check_line(parse_ctx *c, char *start) {
  if (*start == '\0' || *start == ';' || *start == '#')
    return true;
  if (*start == '[')
    return section_line(c, start);
  char *sep = find_or_comment(start, "=:");
  if (*sep != '=' || sep == start) { /* ':' before '=' or no '=' at all */
    syntax_error(c, c->lineno);
    return false;
  }
  return true;
}

static char *reader(char *str, int num, void *stream) {
  parse_ctx *c = stream;
  raw_line l;
  if (num < 2)
    return NULL;
  size_t limit = (size_t)num - 1;
  if (limit > GW_RAW_MAX - 2)
    limit = GW_RAW_MAX - 2;
  if (!read_raw_line(&c->src, &l, limit + 1))
    return NULL;
  c->lineno++;
  if (c->lineno == 1)
    strip_bom(&l);
  str[0] = '\0';
  if (l.total > limit) {
    report(c, c->lineno, "line too long (max %zu bytes)", limit);
  } else if (l.nul) {
    report(c, c->lineno, "line contains a NUL byte");
  } else {
    /* Left-trimmed, so that inih never takes it for a continuation line. */
    char *start = skip_space(l.buf);
    if (check_line(c, start))
      memcpy(str, start, l.len - (size_t)(start - l.buf) + 1);
  }
  return str;
}

/* ---- loading ----------------------------------------------------------- */

static void set_default_admin(gw_config *cfg) {
  struct sockaddr_in *sin = (struct sockaddr_in *)&cfg->admin_listen;
  memset(&cfg->admin_listen, 0, sizeof cfg->admin_listen);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(GW_DEFAULT_ADMIN_PORT);
  sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cfg->admin_enabled = true;
}

static int ctx_init(parse_ctx *c, const char *name, gw_config *cfg, gw_config_errors *errs) {
  memset(c, 0, sizeof *c);
  c->name = name;
  c->cfg = cfg;
  c->errs = errs;
  memset(cfg, 0, sizeof *cfg);
  cfg->log_level = TN_LOG_INFO;
  cfg->log_format = TN_LOG_TEXT;
  set_default_admin(cfg);
  tn_engine_opts_init(&cfg->tunnel);
  tn_resolver_opts_init(&cfg->dns);
  cfg->idm.refresh_before_ms = GW_DEFAULT_REFRESH_BEFORE_MS;
  cfg->path = strdup(name);
  cfg->state_dir = strdup(GW_DEFAULT_STATE_DIR);
  cfg->idm.scope = strdup("openid");
  return cfg->path && cfg->state_dir && cfg->idm.scope ? 0 : TN_ENOMEM;
}

static bool already_reported(const parse_ctx *c, int line) {
  char prefix[64];
  if (!c->errs)
    return false;
  size_t n = (size_t)snprintf(prefix, sizeof prefix, ":%d: ", line);
  size_t name_len = strlen(c->name);
  for (size_t i = 0; i < c->errs->n; i++) {
    const char *m = c->errs->msgs[i];
    if (strncmp(m, c->name, name_len) == 0 && strncmp(m + name_len, prefix, n) == 0)
      return true;
  }
  return false;
}

/* The TLS files must load and belong together; the error names the line of
 * the file it is about. */
static void check_tls(parse_ctx *c) {
  const tn_engine_opts *o = &c->cfg->tunnel;
  if (!c->first_line[K_LISTEN_TLS]) {
    if (c->first_line[K_CLIENT_CA])
      report(c, c->first_line[K_CLIENT_CA],
             "client_ca only applies to listen_tls listeners, and there is none: "
             "devices would not be authenticated");
    return;
  }
  if (!o->tls_cert || !o->tls_key) {
    report(c, c->first_line[K_LISTEN_TLS], "listen_tls needs tls_cert and tls_key");
    return;
  }
  char why[512];
  tn_tls_file file;
  SSL_CTX *ctx = tn_tls_server_ctx(o->tls_cert, o->tls_key, o->client_ca, why, sizeof why, &file);
  if (ctx) {
    SSL_CTX_free(ctx);
    return;
  }
  static const enum key_id line_of[] = {K_TLS_CERT, K_TLS_KEY, K_CLIENT_CA};
  static const char *const name_of[] = {"tls_cert", "tls_key", "client_ca"};
  report(c, c->first_line[line_of[file]], "%s: %s", name_of[file], why);
}

/* Line of a key for a cross-check message: where it was set, else the
 * [idm] header's line. */
static int idm_line_of(const parse_ctx *c, enum key_id id) {
  return c->first_line[id] ? c->first_line[id] : c->idm_line;
}

/* Mutual TLS to the IdMS: the client certificate and key must load and
 * belong together, checked as the listener's are (check_tls); the error
 * names the line of the file it is about. */
static void check_idm_tls(parse_ctx *c) {
  const gw_idm_config *m = &c->cfg->idm;
  if (!m->tls_cert || !m->tls_key)
    return; /* unset, or already reported */
  char why[512];
  tn_tls_file file;
  SSL_CTX *ctx = tn_tls_server_ctx(m->tls_cert, m->tls_key, NULL, why, sizeof why, &file);
  if (ctx) {
    SSL_CTX_free(ctx);
    return;
  }
  bool cert = file == TN_TLS_FILE_CERT;
  report(c, idm_line_of(c, cert ? K_IDM_TLS_CERT : K_IDM_TLS_KEY), "%s: %s",
         cert ? "tls_cert" : "tls_key", why);
}

static void idm_cross_checks(parse_ctx *c) {
  const gw_idm_config *m = &c->cfg->idm;
  if (!m->enabled) {
    if (c->first_line[K_ALLOW_WHEN_AUTHORIZED])
      report(c, idm_line_of(c, K_ALLOW_WHEN_AUTHORIZED),
             "allow_when_authorized needs an [idm] section (without one the gateway is never "
             "authorized, so the rule could never match)");
    if (c->first_line[K_ALLOW_UDP_WHEN_AUTHORIZED])
      report(c, idm_line_of(c, K_ALLOW_UDP_WHEN_AUTHORIZED),
             "allow_udp_when_authorized needs an [idm] section (without one the gateway is never "
             "authorized, so the rule could never match)");
    return;
  }
  if (!c->first_line[K_IDM_ISSUER])
    report(c, c->idm_line, "[idm] has no issuer");
  if (!c->first_line[K_IDM_CLIENT_ID])
    report(c, c->idm_line, "[idm] has no client_id");
  bool secret = m->client_auth == CSC1_AUTH_SECRET_BASIC || m->client_auth == CSC1_AUTH_SECRET_POST;
  if (secret && !c->first_line[K_IDM_SECRET_FILE])
    report(c, idm_line_of(c, K_IDM_CLIENT_AUTH), "client_auth = %s needs client_secret_file",
           m->client_auth == CSC1_AUTH_SECRET_BASIC ? "client_secret_basic" : "client_secret_post");
  if (!secret && c->first_line[K_IDM_SECRET_FILE])
    report(c, idm_line_of(c, K_IDM_SECRET_FILE),
           "client_secret_file is set but client_auth is not client_secret_basic or "
           "client_secret_post");
  if (m->client_auth == CSC1_AUTH_PRIVATE_KEY_JWT && !c->first_line[K_IDM_CLIENT_KEY])
    report(c, idm_line_of(c, K_IDM_CLIENT_AUTH), "client_auth = private_key_jwt needs client_key");
  if (m->client_auth != CSC1_AUTH_PRIVATE_KEY_JWT && c->first_line[K_IDM_CLIENT_KEY])
    report(c, idm_line_of(c, K_IDM_CLIENT_KEY),
           "client_key is set but client_auth is not "
           "private_key_jwt");
  if (!c->first_line[K_IDM_TLS_CERT] != !c->first_line[K_IDM_TLS_KEY])
    report(c,
           c->first_line[K_IDM_TLS_CERT] ? idm_line_of(c, K_IDM_TLS_CERT)
                                         : idm_line_of(c, K_IDM_TLS_KEY),
           "tls_cert and tls_key go together (mutual TLS to the IdMS needs both)");
  check_idm_tls(c);
  if (m->login == GW_IDM_LOGIN_BROWSER && !c->first_line[K_IDM_REDIRECT_URI] &&
      !c->cfg->admin_enabled)
    report(c, idm_line_of(c, K_IDM_LOGIN),
           "login = browser needs the admin listener (for /login and /callback)");
}

bool gw_config_admin_is_loopback(const struct sockaddr_storage *addr) {
  return tn_addr_classify((const struct sockaddr *)addr) == TN_ADDR_LOOPBACK;
}

/* token68 (RFC 7235): the characters a Bearer credential may use. */
static bool is_token68(const char *s) {
  size_t i = 0;
  for (; s[i] && s[i] != '='; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || is_digit(s[i]) ||
          strchr("-._~+/", s[i])))
      return false;
  while (s[i] == '=')
    i++;
  return i > 0 && s[i] == '\0';
}

/* Reads the token into *out (owned), or reports why not. The file holds a
 * secret: it must be a regular file that only its owner can read or write. */
static void read_admin_token(parse_ctx *c, const char *path, int line) {
  char buf[GW_TOKEN_MAX + 2];
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    report(c, line, "admin_token_file: cannot open %s: %s", path, strerror(errno));
    return;
  }
  ssize_t n = -1;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    report(c, line, "admin_token_file: %s is not a regular file", path);
  else if (st.st_mode & 077)
    report(c, line,
           "admin_token_file: %s is accessible by group or others (mode %04o): chmod 600 %s", path,
           (unsigned)(st.st_mode & 07777), path);
  else if ((n = read(fd, buf, sizeof buf - 1)) < 0)
    report(c, line, "admin_token_file: cannot read %s: %s", path, strerror(errno));
  close(fd);
  if (n < 0)
    return;
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  if ((size_t)n > GW_TOKEN_MAX)
    report(c, line, "admin_token_file: %s: token longer than %d characters", path, GW_TOKEN_MAX);
  else if (!is_token68(buf))
    report(c, line,
           "admin_token_file: %s must hold one line of A-Z a-z 0-9 - . _ ~ + / "
           "(e.g. from: openssl rand -hex 32)",
           path);
  else if ((size_t)n < GW_TOKEN_MIN)
    report(c, line,
           "admin_token_file: %s: token shorter than %d characters "
           "(e.g. from: openssl rand -hex 32)",
           path, GW_TOKEN_MIN);
  else if (!(c->cfg->admin_token = strdup(buf)))
    c->oom = true;
  explicit_bzero(buf, sizeof buf);
}

/* The admin API shows every client and destination: off loopback it needs a
 * token. */
static void admin_checks(parse_ctx *c) {
  gw_config *cfg = c->cfg;
  if (cfg->admin_token_file && !c->bad[K_ADMIN_TOKEN_FILE])
    read_admin_token(c, cfg->admin_token_file, c->first_line[K_ADMIN_TOKEN_FILE]);
  if (!cfg->admin_enabled || c->bad[K_ADMIN_LISTEN] || cfg->admin_token_file ||
      gw_config_admin_is_loopback(&cfg->admin_listen))
    return;
  char text[TN_ADDRSTR_MAX];
  tn_addr_format((const struct sockaddr *)&cfg->admin_listen, text, sizeof text);
  report(c, c->first_line[K_ADMIN_LISTEN],
         "listen: %s is not a loopback address, so the admin API needs a token: set "
         "admin_token_file = FILE (mode 0600, one line, e.g. from openssl rand -hex 32) "
         "or listen on 127.0.0.1",
         text);
}

/* MCGW_SPLICE in the environment overrides [tunnel] splice, so a whole test
 * suite can run with either relay path (.ci/run does both). */
static void splice_override(parse_ctx *c) {
  const char *v = getenv("MCGW_SPLICE");
  if (!v || !*v)
    return;
  int m = tn_splice_mode_parse(v);
  char buf[GW_SHOW_MAX];
  if (m < 0)
    report(c, 0, "environment MCGW_SPLICE='%s': expected auto, always or off",
           escape(v, buf, sizeof buf));
  else
    c->cfg->tunnel.splice = (tn_splice_mode)m;
}

/* Wildcards on public suffixes: refused, or with allow_public_suffix = yes
 * accepted with a warning (logged at every start). */
static void public_suffix_checks(parse_ctx *c) {
  for (size_t i = 0; i < c->n_psl; i++) {
    const psl_rule *p = &c->psl[i];
    const char *suffix = strchr(p->rule, '.') + 1;
    size_t len = strcspn(suffix, ":");
    if (c->cfg->allow_public_suffix)
      warn(c, p->line,
           "%s: '%s' allows every site under the public suffix '%.*s' "
           "(allow_public_suffix = yes)",
           p->key, p->rule, (int)len, suffix);
    else
      report(c, p->line,
             "%s: '%s': '%.*s' is a public suffix (Public Suffix List), so this "
             "allows every site registered under it, an open proxy in all but "
             "name; name the domain (*.example.%.*s) or set allow_public_suffix = yes",
             p->key, p->rule, (int)len, suffix, (int)len, suffix);
  }
}

static void cross_checks(parse_ctx *c) {
  resolve_egress_refs(c);
  idm_cross_checks(c);
  public_suffix_checks(c);
  splice_override(c);
  const tn_engine_opts *o = &c->cfg->tunnel;
  admin_checks(c);
  if (!c->first_line[K_LISTEN] && !c->first_line[K_LISTEN_TLS])
    report(c, 0, "[tunnel] has no listen or listen_tls address");
  check_tls(c);
  if (!c->bad[K_MAX_TUNNELS] && !c->bad[K_MAX_PER_CLIENT] && o->max_tunnels &&
      o->max_tunnels_per_client > o->max_tunnels) {
    int line = c->first_line[K_MAX_PER_CLIENT] ? c->first_line[K_MAX_PER_CLIENT]
                                               : c->first_line[K_MAX_TUNNELS];
    report(c, line, "max_tunnels_per_client (%lu) is greater than max_tunnels (%lu)",
           (unsigned long)o->max_tunnels_per_client, (unsigned long)o->max_tunnels);
  }
}

static int parse(parse_ctx *c) {
  int r = ini_parse_stream(reader, c, on_pair, c);
  if (r == -2)
    c->oom = true;
  else if (r > 0 && !already_reported(c, r))
    syntax_error(c, r);
  if (c->src.read_errno)
    report(c, 0, "cannot read: %s", strerror(c->src.read_errno));
  else
    cross_checks(c);
  free(c->egress_refs);
  free(c->psl);
  c->psl = NULL;
  if (c->oom)
    return TN_ENOMEM;
  return c->n_err ? TN_EINVAL : 0;
}

int gw_config_load(const char *path, gw_config *cfg, gw_config_errors *errs) {
  parse_ctx c;
  if (!path || !cfg)
    return TN_EINVAL;
  if (ctx_init(&c, path, cfg, errs) != 0)
    return TN_ENOMEM;
  FILE *fp = fopen(path, "re");
  if (!fp) {
    int e = errno;
    report(&c, 0, "cannot open: %s", strerror(e));
    return c.oom ? TN_ENOMEM : -e;
  }
  c.src.fp = fp;
  int rc = parse(&c);
  fclose(fp);
  return rc;
}

int gw_config_load_string(const char *name, const char *text, gw_config *cfg,
                          gw_config_errors *errs) {
  parse_ctx c;
  if (!name || !text || !cfg)
    return TN_EINVAL;
  if (ctx_init(&c, name, cfg, errs) != 0)
    return TN_ENOMEM;
  c.src.s = text;
  return parse(&c);
}

void gw_config_free(gw_config *cfg) {
  if (!cfg)
    return;
  free(cfg->path);
  free(cfg->state_dir);
  free(cfg->dns.servers);
  gw_idm_config *m = &cfg->idm;
  char **strs[] = {&m->issuer,
                   &m->authorization_endpoint,
                   &m->token_endpoint,
                   &m->jwks_uri,
                   &m->device_authorization_endpoint,
                   &m->client_id,
                   &m->client_secret_file,
                   &m->client_key,
                   &m->redirect_uri,
                   &m->scope,
                   &m->acr_values,
                   &m->ca_file,
                   &m->tls_cert,
                   &m->tls_key,
                   &m->revocation_endpoint,
                   &m->required_scope};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    free(*strs[i]);
  if (cfg->admin_token)
    explicit_bzero(cfg->admin_token, strlen(cfg->admin_token));
  free(cfg->admin_token);
  free(cfg->admin_token_file);
  free(cfg->user);
  tn_engine_opts_free(&cfg->tunnel);
  gw_config_errors_free(&cfg->warnings);
  memset(cfg, 0, sizeof *cfg);
}

void gw_config_errors_free(gw_config_errors *errs) {
  if (!errs)
    return;
  for (size_t i = 0; i < errs->n; i++)
    free(errs->msgs[i]);
  free(errs->msgs);
  memset(errs, 0, sizeof *errs);
}
