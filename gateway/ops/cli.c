/* mcgw status / mcgw tunnels. See cli.h. */
#include "gateway/ops/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway/config.h"
#include "gateway/ops/admin_client.h"

#define CLI_TIMEOUT_MS 5000

typedef struct cli_opts {
  const char *config;
  const char *admin_url;
  const char *token_file;
  bool json, watch;
  double interval_s;
  gw_admin_target target;
  char *token; /* owned; wiped on exit */
} cli_opts;

/* ---- formatting ---- */

void gw_cli_fmt_bytes(uint64_t n, char *buf, size_t len) {
  static const char units[] = "KMGTPE";
  if (n < 1024) {
    snprintf(buf, len, "%llu", (unsigned long long)n);
    return;
  }
  double v = (double)n;
  int u = -1;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
}

void gw_cli_fmt_duration(uint64_t s, char *buf, size_t len) {
  uint64_t d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
  if (d)
    snprintf(buf, len, "%llud %lluh", (unsigned long long)d, (unsigned long long)h);
  else if (h)
    snprintf(buf, len, "%lluh %llum", (unsigned long long)h, (unsigned long long)m);
  else if (m)
    snprintf(buf, len, "%llum %llus", (unsigned long long)m, (unsigned long long)sec);
  else
    snprintf(buf, len, "%llus", (unsigned long long)sec);
}

/* ---- where to ask ---- */

static int read_token_file(const char *path, char **out) {
  FILE *f = fopen(path, "re");
  char buf[1024];
  if (!f) {
    fprintf(stderr, "mcgw: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n > 0 && isspace((unsigned char)buf[n - 1]))
    buf[--n] = '\0';
  *out = strdup(buf);
  explicit_bzero(buf, sizeof(buf));
  return *out ? 0 : -1;
}

/* -c: [admin] listen and the token. A config with errors is not used: the
 * running gateway would not have loaded it either. */
static int target_from_config(cli_opts *o) {
  gw_config cfg;
  gw_config_errors errs = {0};
  int rc = gw_config_load(o->config, &cfg, &errs);
  int ret = 0;
  if (rc != 0) {
    for (size_t i = 0; i < errs.n; i++)
      fprintf(stderr, "%s\n", errs.msgs[i]);
    fprintf(stderr, "mcgw: %s has errors; fix them or use --admin URL\n", o->config);
    ret = -1;
  } else if (!cfg.admin_enabled) {
    fprintf(stderr, "mcgw: %s: [admin] listen = off, there is no admin API to ask\n", o->config);
    ret = -1;
  } else {
    gw_admin_target_from_listen(&cfg.admin_listen, &o->target);
    if (cfg.admin_token && !(o->token = strdup(cfg.admin_token)))
      ret = -1;
  }
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  return ret;
}

/* ---- HTTP ---- */

/* GET path as JSON. Returns the document, or NULL with the message in err. */
static json_t *fetch_json(const cli_opts *o, const char *path, char *err, size_t errlen) {
  gw_admin_response r;
  char why[256] = "";
  if (gw_admin_request(&o->target, o->token, "GET", path, CLI_TIMEOUT_MS, &r, why, sizeof(why)) !=
      0) {
    snprintf(err, errlen, "mcgw: no answer from %s: %s", o->target.url, why);
    return NULL;
  }
  json_t *doc = NULL;
  if (r.status == 401) {
    snprintf(err, errlen,
             "mcgw: %s answered 401: the admin API needs its token (use -c with the config that "
             "names admin_token_file, or --token-file FILE)",
             o->target.url);
  } else if (r.status != 200) {
    snprintf(err, errlen, "mcgw: %s%s answered HTTP %d", o->target.url, path, r.status);
  } else {
    json_error_t je;
    doc = json_loadb(r.body ? r.body : "", r.len, 0, &je);
    if (!doc)
      snprintf(err, errlen, "mcgw: %s%s: not JSON: %s", o->target.url, path, je.text);
  }
  gw_admin_response_free(&r);
  return doc;
}

/* ---- rendering ---- */

typedef struct buf {
  char *s;
  size_t len, cap;
} buf;

__attribute__((format(printf, 2, 3))) static void bput(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if (b->len + (size_t)n + 1 > b->cap) {
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *g = realloc(b->s, cap);
    if (!g) {
      free(s);
      return;
    }
    b->s = g;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, (size_t)n + 1);
  b->len += (size_t)n;
  free(s);
}

static json_int_t jint(const json_t *o, const char *path) {
  /* path: "a.b.c" */
  char key[64];
  const json_t *cur = o;
  while (cur && *path) {
    size_t n = strcspn(path, ".");
    snprintf(key, sizeof(key), "%.*s", (int)n, path);
    cur = json_object_get(cur, key);
    path += n + (path[n] == '.');
  }
  return json_is_integer(cur) ? json_integer_value(cur) : 0;
}

static const char *jstr(const json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : NULL;
}

static void render_login(buf *b, const json_t *idm, json_int_t now) {
  const char *state = jstr(idm, "state");
  if (!state || strcmp(state, "unconfigured") == 0) {
    bput(b, "%-14s not configured (plain relay)\n", "gateway login");
    return;
  }
  bput(b, "%-14s %s", "gateway login", state);
  if (jstr(idm, "subject"))
    bput(b, " as %s", jstr(idm, "subject"));
  json_int_t exp = jint(idm, "access_token_expires_at");
  if (exp > 0) {
    char left[32], at[32];
    time_t t = (time_t)exp;
    struct tm tm;
    strftime(at, sizeof(at), "%Y-%m-%d %H:%M:%SZ", gmtime_r(&t, &tm));
    gw_cli_fmt_duration((uint64_t)(exp > now ? exp - now : 0), left, sizeof(left));
    bput(b, exp > now ? ", token expires in %s (%s)" : ", token expired%s (%s)",
         exp > now ? left : "", at);
  }
  const char *mcptt = jstr(json_object_get(idm, "mc_service_ids"), "mcptt_id");
  if (mcptt)
    bput(b, "\n%-14s MCPTT ID %s", "", mcptt);
  bput(b, "\n%-14s refreshes %lld ok, %lld failed, %lld invalid_grant\n", "",
       (long long)jint(idm, "refreshes.ok"), (long long)jint(idm, "refreshes.failed"),
       (long long)jint(idm, "refreshes.invalid_grant"));
  if (jstr(idm, "last_error"))
    bput(b, "%-14s last error: %s\n", "", jstr(idm, "last_error"));
  const json_t *sk = json_object_get(idm, "clock_skew");
  if (json_is_object(sk)) /* skew_s > 0: the gateway is ahead */
    bput(b, "%-14s clock skew %+.1f s against the IdMS (+-%.1f s)%s\n", "",
         json_number_value(json_object_get(sk, "skew_s")),
         json_number_value(json_object_get(sk, "uncertainty_s")),
         json_is_true(json_object_get(sk, "large"))
             ? ": too large, check NTP/GNSS time on the gateway"
             : "");
}

static void render_results(buf *b, const json_t *tunnels) {
  const json_t *protos = json_object_get(tunnels, "by_proto");
  const json_t *all = json_object_get(tunnels, "by_result");
  const char *name;
  const json_t *v;
  bput(b, "\n%-17s", "closed tunnels");
  json_object_foreach((json_t *)protos, name, v) bput(b, " %9s", name);
  bput(b, " %9s\n", "total");
  json_object_foreach((json_t *)all, name, v) {
    bput(b, "  %-15s", name);
    const char *p;
    const json_t *pv;
    json_object_foreach((json_t *)protos, p, pv) {
      bput(b, " %9lld",
           (long long)json_integer_value(json_object_get(json_object_get(pv, "by_result"), name)));
    }
    bput(b, " %9lld\n", (long long)json_integer_value(v));
  }
}

static void render_top(buf *b, const json_t *list, const char *title, const char *key) {
  size_t i;
  const json_t *e;
  if (!json_array_size(list))
    return;
  bput(b, "\n%-40s %7s\n", title, "tunnels");
  json_array_foreach((json_t *)list, i, e) {
    bput(b, "  %-38s %7lld\n", jstr(e, key) ? jstr(e, key) : "-", (long long)jint(e, "tunnels"));
  }
}

/* Devices refused by max_new_tunnels_per_client in the last 10 s. */
static void render_limited(buf *b, const json_t *list) {
  size_t i;
  const json_t *e;
  if (!json_array_size(list))
    return;
  bput(b, "\n%-40s %7s %9s\n", "rate limited now", "refused", "for");
  json_array_foreach((json_t *)list, i, e) {
    char d[32];
    gw_cli_fmt_duration((uint64_t)jint(e, "since_s"), d, sizeof(d));
    bput(b, "  %-38s %7lld %9s\n", jstr(e, "client") ? jstr(e, "client") : "-",
         (long long)jint(e, "refused"), d);
  }
}

static void render_status(buf *b, const cli_opts *o, const json_t *s) {
  const json_t *t = json_object_get(s, "tunnels");
  char up[32], bu[16], bd[16];
  gw_cli_fmt_duration((uint64_t)jint(s, "uptime_s"), up, sizeof(up));
  bput(b, "mcgw %s at %s: %s, up %s\n", jstr(s, "version") ? jstr(s, "version") : "?",
       o->target.url, jstr(s, "state") ? jstr(s, "state") : "?", up);
  render_login(b, json_object_get(s, "idm"), jint(s, "time"));
  bput(b, "%-14s %lld open", "tunnels", (long long)jint(t, "active"));
  if (jint(t, "limit"))
    bput(b, " of %lld", (long long)jint(t, "limit"));
  const char *name;
  const json_t *v;
  bput(b, " (");
  bool first = true;
  json_object_foreach(json_object_get(t, "by_proto"), name, v) {
    bput(b, "%s%s %lld", first ? "" : ", ", name, (long long)jint(v, "active"));
    first = false;
  }
  bput(b, "), %lld udp, %lld connections\n", (long long)jint(t, "by_type.udp.active"),
       (long long)jint(t, "connections_active"));
  bput(b, "%-14s %lld active, busiest has %lld tunnels (limit %lld)\n", "clients",
       (long long)jint(s, "clients.active"), (long long)jint(s, "clients.max_tunnels"),
       (long long)jint(t, "limit_per_client"));
  bput(b, "%-14s clients %lld of %lld, targets %lld of %lld\n", "rate tables",
       (long long)jint(s, "clients.rate_tracked"), (long long)jint(s, "clients.rate_tracked_max"),
       (long long)jint(s, "targets.rate_tracked"), (long long)jint(s, "targets.rate_tracked_max"));
  gw_cli_fmt_bytes((uint64_t)jint(s, "bytes.upstream"), bu, sizeof(bu));
  gw_cli_fmt_bytes((uint64_t)jint(s, "bytes.downstream"), bd, sizeof(bd));
  bput(b, "%-14s up %s, down %s\n", "bytes", bu, bd);
  size_t i;
  const json_t *l;
  json_array_foreach(json_object_get(s, "listeners"), i, l) {
    bput(b, "%-14s %s: %lld connections\n", i ? "" : "listeners", jstr(l, "addr"),
         (long long)jint(l, "connections_active"));
  }
  bput(b, "%-14s %lld ok, %lld failed%s\n", "reloads", (long long)jint(s, "reloads.ok"),
       (long long)jint(s, "reloads.failed"),
       json_is_false(json_object_get(json_object_get(s, "reloads"), "last_ok"))
           ? " (the last one was rejected: the running config is older than the file)"
           : "");
  render_results(b, t);
  render_top(b, json_object_get(json_object_get(s, "clients"), "top"), "top clients", "address");
  render_limited(b, json_object_get(json_object_get(s, "clients"), "rate_limited"));
  render_top(b, json_object_get(s, "destinations"), "top destinations", "target");
}

static const char *str_or_dash(const json_t *o, const char *key) {
  const char *s = jstr(o, key);
  return s ? s : "-";
}

static void render_tunnels(buf *b, const json_t *list) {
  size_t i;
  const json_t *e;
  bool subjects = false;
  json_array_foreach((json_t *)list, i, e) subjects |= jstr(e, "subject") != NULL;
  bput(b, "%-6s %-5s %-23s %-32s %-23s %-11s %7s %6s %6s %-4s%s\n", "ID", "PROTO", "CLIENT",
       "TARGET", "CONNECTED", "STATE", "AGE", "UP", "DOWN", "TYPE", subjects ? "  SUBJECT" : "");
  json_array_foreach((json_t *)list, i, e) {
    char age[32], up[16], down[16];
    gw_cli_fmt_duration((uint64_t)jint(e, "age_ms") / 1000, age, sizeof(age));
    gw_cli_fmt_bytes((uint64_t)jint(e, "bytes_up"), up, sizeof(up));
    gw_cli_fmt_bytes((uint64_t)jint(e, "bytes_down"), down, sizeof(down));
    bput(b, "%-6lld %-5s %-23s %-32s %-23s %-11s %7s %6s %6s %-4s%s%s\n", (long long)jint(e, "id"),
         str_or_dash(e, "proto"), str_or_dash(e, "client"), str_or_dash(e, "target"),
         str_or_dash(e, "connected"), str_or_dash(e, "state"), age, up, down,
         str_or_dash(e, "type"), subjects ? "  " : "", subjects ? str_or_dash(e, "subject") : "");
  }
  bput(b, "%zu tunnel%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
}

/* One fetch and render. Returns 0 if the gateway answered. */
static int once(const cli_opts *o, bool status, buf *b) {
  char err[512];
  json_t *doc = fetch_json(o, status ? "/status" : "/tunnels", err, sizeof(err));
  if (!doc) {
    bput(b, "%s\n", err);
    return 1;
  }
  if (o->json) {
    char *text = json_dumps(doc, JSON_INDENT(2));
    bput(b, "%s\n", text ? text : "");
    free(text);
  } else if (status) {
    render_status(b, o, doc);
  } else {
    render_tunnels(b, doc);
  }
  json_decref(doc);
  return 0;
}

/* ---- logout ---- */

/* POST /logout. Exit 0: logged out and the refresh token revoked (or none
 * held); 1: no answer, or logged out locally but not revoked. */
static int logout(const cli_opts *o) {
  gw_admin_response r;
  char why[256] = "";
  if (gw_admin_request(&o->target, o->token, "POST", "/logout", CLI_TIMEOUT_MS, &r, why,
                       sizeof(why)) != 0) {
    fprintf(stderr, "mcgw: no answer from %s: %s (nothing was logged out)\n", o->target.url, why);
    return 1;
  }
  bool answered = r.status == 200 || r.status == 502; /* 502: logged out, not revoked */
  json_t *doc = answered ? json_loadb(r.body ? r.body : "", r.len, 0, NULL) : NULL;
  int rc = 1;
  if (r.status == 401)
    fprintf(stderr,
            "mcgw: %s answered 401: the admin API needs its token (use -c with the config "
            "that names admin_token_file, or --token-file FILE)\n",
            o->target.url);
  else if (!doc)
    fprintf(stderr, "mcgw: %s/logout answered HTTP %d: %s", o->target.url, r.status,
            r.body ? r.body : "\n");
  else if (o->json) {
    char *text = json_dumps(doc, JSON_INDENT(2));
    printf("%s\n", text ? text : "");
    free(text);
    rc = r.status == 200 ? 0 : 1;
  } else {
    printf("Logged out: the gateway holds no login now (state %s).\n", jstr(doc, "state"));
    if (r.status == 200)
      printf("%s\n", json_is_true(json_object_get(doc, "revoked"))
                         ? "The refresh token was revoked at the IdMS."
                         : "There was no refresh token to revoke.");
    else
      fprintf(stderr, "mcgw: the refresh token was NOT revoked at the IdMS: %s\n",
              jstr(doc, "error") ? jstr(doc, "error") : "unknown error");
    if (jstr(doc, "end_session_endpoint"))
      printf("To end the operator's session at the IdMS in the browser too, open\n  %s\n",
             jstr(doc, "end_session_endpoint"));
    rc = r.status == 200 ? 0 : 1;
  }
  json_decref(doc);
  gw_admin_response_free(&r);
  return rc;
}

/* ---- command line ---- */

static volatile sig_atomic_t stop_watch;
static void on_sigint(int sig) { stop_watch = 1; }

static int watch(const cli_opts *o, bool status) {
  struct sigaction sa = {.sa_handler = on_sigint};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  bool tty = isatty(STDOUT_FILENO);
  int rc = 1;
  while (!stop_watch) {
    buf b = {0};
    char now[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(now, sizeof(now), "%H:%M:%S", localtime_r(&t, &tm));
    bput(&b, "Every %.1fs: mcgw %s %s    %s\n\n", o->interval_s, status ? "status" : "tunnels",
         o->target.url, now);
    rc = once(o, status, &b);
    /* In place on a terminal (home, clear to end), one frame after another
     * otherwise. */
    printf("%s%s%s", tty ? "\033[H\033[2J" : "", b.s ? b.s : "", tty ? "" : "\n");
    fflush(stdout);
    free(b.s);
    struct timespec ts = {(time_t)o->interval_s,
                          (long)((o->interval_s - (double)(time_t)o->interval_s) * 1e9)};
    while (!stop_watch && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  return rc;
}

static void usage(FILE *f, const char *cmd) {
  if (strcmp(cmd, "logout") == 0) {
    fprintf(f, "Usage: mcgw logout [-c FILE | --admin URL [--token-file FILE]] [--json]\n"
               "\n"
               "Logs the running gateway out (POST /logout): its login is dropped at once and\n"
               "its refresh token revoked at the IdMS. Prints the IdMS's end-session link.\n"
               "\n"
               "Exit status: 0 logged out and revoked (or no login held), 1 the revocation\n"
               "failed (logged out locally all the same) or the gateway did not answer,\n"
               "2 usage error.\n");
    return;
  }
  fprintf(
      f,
      "Usage: mcgw %s [-c FILE | --admin URL [--token-file FILE]] [--json] [--watch [-n SECS]]\n"
      "\n"
      "  -c, --config FILE   ask the admin listener of this config ([admin] listen, and\n"
      "                      admin_token_file when set)\n"
      "  --admin URL         ask http://HOST:PORT instead\n"
      "  --token-file FILE   the admin token, for --admin\n"
      "  --json              print the JSON document as the gateway sent it\n"
      "  -w, --watch         refresh in place until Ctrl-C\n"
      "  -n, --interval SECS refresh period for --watch (default 2)\n"
      "\n"
      "Exit status: 0 the gateway answered, 1 it did not, 2 usage error.\n",
      cmd);
}

static int parse_args(cli_opts *o, const char *cmd, int argc, char **argv) {
  static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                           {"admin", required_argument, NULL, 'a'},
                                           {"token-file", required_argument, NULL, 't'},
                                           {"json", no_argument, NULL, 'j'},
                                           {"watch", no_argument, NULL, 'w'},
                                           {"interval", required_argument, NULL, 'n'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "c:wn:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      o->config = optarg;
      break;
    case 'a':
      o->admin_url = optarg;
      break;
    case 't':
      o->token_file = optarg;
      break;
    case 'j':
      o->json = true;
      break;
    case 'w':
      o->watch = true;
      break;
    case 'n':
      o->interval_s = strtod(optarg, NULL);
      if (o->interval_s < 0.1 || o->interval_s > 3600) {
        fprintf(stderr, "mcgw: --interval: expected seconds from 0.1 to 3600, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout, cmd);
      return 0;
    default:
      usage(stderr, cmd);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mcgw: unexpected argument '%s' (try mcgw %s --help)\n", argv[optind], cmd);
    return 2;
  }
  if (o->config && o->admin_url) {
    fprintf(stderr, "mcgw: give -c FILE or --admin URL, not both\n");
    return 2;
  }
  return -1;
}

static int resolve_target(cli_opts *o, const char *default_config) {
  char err[512];
  if (o->admin_url) {
    if (gw_admin_target_parse(o->admin_url, &o->target, err, sizeof(err)) != 0) {
      fprintf(stderr, "mcgw: --admin %s\n", err);
      return 2;
    }
  } else {
    struct stat st;
    if (!o->config && default_config && stat(default_config, &st) == 0)
      o->config = default_config;
    if (o->config && target_from_config(o) != 0)
      return 2;
    if (!o->config)
      gw_admin_target_parse("http://127.0.0.1:9090", &o->target, err, sizeof(err));
  }
  if (o->token_file) {
    free(o->token);
    o->token = NULL;
    if (read_token_file(o->token_file, &o->token) != 0)
      return 2;
  }
  return -1;
}

int gw_cli_main(const char *cmd, int argc, char **argv, const char *default_config) {
  cli_opts o = {.interval_s = 2};
  bool status = strcmp(cmd, "status") == 0;
  int rc = parse_args(&o, cmd, argc, argv);
  if (rc < 0 && o.watch && strcmp(cmd, "logout") == 0) {
    fprintf(stderr, "mcgw: logout has no --watch\n");
    rc = 2;
  }
  if (rc < 0)
    rc = resolve_target(&o, default_config);
  if (rc < 0 && strcmp(cmd, "logout") == 0) {
    rc = logout(&o);
  } else if (rc < 0) {
    if (o.watch) {
      rc = watch(&o, status);
    } else {
      buf b = {0};
      rc = once(&o, status, &b);
      fputs(b.s ? b.s : "", rc ? stderr : stdout);
      free(b.s);
    }
  }
  if (o.token) {
    explicit_bzero(o.token, strlen(o.token));
    free(o.token);
  }
  return rc;
}
