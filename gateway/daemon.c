/* The daemon's main loop. See daemon.h. */
#include "gateway/daemon.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "gateway/dns_link.h"
#include "gateway/ops/admin.h"
#include "gateway/idm.h"
#include "gateway/log.h"
#include "gateway/ops/idm_admin.h"
#include "gateway/notify.h"
#include "gateway/ops/ops.h"
#include "gateway/privdrop.h"
#include "tunnel/addr.h"
#include "tunnel/error.h"

typedef struct gw_daemon {
  uv_loop_t loop;
  gw_config cfg;
  tn_engine *engine;
  tn_resolver *resolver; /* shared by the engine and identity management */
  gw_dns_link dns_link;  /* identity management's view of it */
  csc1_https_resolver idm_resolver;
  gw_admin *admin;
  gw_idm *idm;      /* NULL without an [idm] section; the admin routes read this slot */
  gw_idm *retiring; /* replaced by a reload, logging out (revocation in flight) */
  gw_ops *ops;
  uv_signal_t sig_term, sig_int, sig_hup;
  int exit_code;
  bool draining;
} gw_daemon;

/* Raises RLIMIT_NOFILE to the hard limit: each tunnel needs two descriptors,
 * and running out mid-incident is worse than asking for them up front. */
static void raise_nofile(const gw_config *cfg) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rl.rlim_cur = before;
  }
  uint64_t reserve = 64; /* listeners, admin, resolver, logs */
  uint64_t possible = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / 2 : 0;
  tn_log_level lvl = possible < cfg->tunnel.max_tunnels ? TN_LOG_WARN : TN_LOG_INFO;
  gw_log(lvl, "nofile_limit", TN_U("soft", rl.rlim_cur), TN_U("hard", rl.rlim_max),
         TN_U("tunnels_possible", possible), TN_U("max_tunnels", cfg->tunnel.max_tunnels),
         TN_U("splice_max", tn_splice_max(rl.rlim_cur)), TN_LOG_END);
}

static void on_signal_closed(uv_handle_t *h) { (void)h; }

/* Closes the ops surface, identity management and the admin listener, in
 * that order (ops and idm hold routes on the admin listener). */
static void close_services(gw_daemon *d) {
  if (d->ops)
    gw_ops_close(d->ops);
  d->ops = NULL;
  if (d->idm)
    gw_idm_close(d->idm);
  d->idm = NULL;
  if (d->retiring)
    gw_idm_close(d->retiring);
  d->retiring = NULL;
  if (d->admin)
    gw_admin_close(d->admin);
  d->admin = NULL;
}

static void close_resolver(gw_daemon *d) {
  if (d->resolver)
    tn_resolver_close(d->resolver);
  d->resolver = NULL;
}

static void on_drained(void *arg) {
  gw_daemon *d = arg;
  d->engine = NULL;
  close_services(d);
  close_resolver(d); /* last: identity management looked names up with it */
  uv_close((uv_handle_t *)&d->sig_term, on_signal_closed);
  uv_close((uv_handle_t *)&d->sig_int, on_signal_closed);
  uv_close((uv_handle_t *)&d->sig_hup, on_signal_closed);
  gw_log(TN_LOG_INFO, "stopped", TN_LOG_END);
}

static void begin_drain(gw_daemon *d) {
  char status[128] = "draining";
  d->draining = true;
  if (d->ops) {
    gw_ops_set_draining(d->ops);
    gw_ops_status_line(d->ops, status, sizeof(status));
  }
  gw_notify_stopping(status);
  tn_engine_drain(d->engine, on_drained, d);
}

static void on_stop_signal(uv_signal_t *s, int signum) {
  gw_daemon *d = s->data;
  if (d->draining) {
    gw_log(TN_LOG_WARN, "already_draining", TN_S("signal", strsignal(signum)), TN_LOG_END);
    return;
  }
  gw_log(TN_LOG_INFO, "signal", TN_S("signal", strsignal(signum)), TN_LOG_END);
  begin_drain(d);
}

static void notify_ready(gw_daemon *d) {
  char status[128] = "ready";
  if (d->ops)
    gw_ops_status_line(d->ops, status, sizeof(status));
  gw_notify_ready(status);
}

/* The login state for the ops surface: from identity management when
 * configured. */
static void idm_view(void *arg, gw_idm_view *out) {
  gw_daemon *d = arg;
  memset(out, 0, sizeof(*out));
  out->state = GW_IDM_UNCONFIGURED;
  if (d->idm)
    gw_idm_view_get(d->idm, out);
}

static void log_reload_errors(const gw_config_errors *errs) {
  for (size_t i = 0; i < errs->n; i++)
    gw_log(TN_LOG_ERROR, "config_error", TN_S("error", errs->msgs[i]), TN_LOG_END);
}

/* Warnings of a valid file (wide rules, public suffixes allowed, rate_exempt
 * = *): at every start and reload, so they are not forgotten. */
static void log_config_warnings(const gw_config *cfg) {
  for (size_t i = 0; i < cfg->warnings.n; i++)
    gw_log(TN_LOG_WARN, "config_warning", TN_S("warning", cfg->warnings.msgs[i]), TN_LOG_END);
}

static bool str_differs(const char *a, const char *b) {
  return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* What a reload changes in the gateway's own login. */
typedef enum {
  IDM_SAME = 0,
  IDM_TIMING,   /* only refresh_before: applied in place, the login kept */
  IDM_RESTART,  /* other [idm] keys: a new instance, the stored login kept */
  IDM_NEW_LOGIN /* issuer, client, user store (state_dir), or [idm] added or removed:
                    the old login logged out (revoked), a new instance */
} idm_change;

/* [idm] egress, or what its [egress NAME] section says, changed. */
static bool idm_egress_differs(const gw_config *old, const gw_config *fresh) {
  uint16_t a = old->idm.egress, b = fresh->idm.egress;
  if (!a || !b)
    return a != b;
  return memcmp(&old->tunnel.egress[a - 1], &fresh->tunnel.egress[b - 1], sizeof(tn_egress)) != 0;
}

static idm_change classify_idm_change(const gw_config *old, const gw_config *fresh) {
  const gw_idm_config *a = &old->idm, *b = &fresh->idm;
  if (!a->enabled && !b->enabled)
    return IDM_SAME;
  if (a->enabled != b->enabled || str_differs(a->issuer, b->issuer) ||
      str_differs(a->client_id, b->client_id) || a->client_auth != b->client_auth ||
      str_differs(a->client_secret_file, b->client_secret_file) ||
      str_differs(a->client_key, b->client_key) || str_differs(old->state_dir, fresh->state_dir))
    return IDM_NEW_LOGIN;
  const char *pa[] = {a->authorization_endpoint,
                      a->token_endpoint,
                      a->jwks_uri,
                      a->device_authorization_endpoint,
                      a->revocation_endpoint,
                      a->redirect_uri,
                      a->scope,
                      a->required_scope,
                      a->acr_values,
                      a->ca_file,
                      a->tls_cert,
                      a->tls_key};
  const char *pb[] = {b->authorization_endpoint,
                      b->token_endpoint,
                      b->jwks_uri,
                      b->device_authorization_endpoint,
                      b->revocation_endpoint,
                      b->redirect_uri,
                      b->scope,
                      b->required_scope,
                      b->acr_values,
                      b->ca_file,
                      b->tls_cert,
                      b->tls_key};
  for (size_t i = 0; i < sizeof pa / sizeof pa[0]; i++)
    if (str_differs(pa[i], pb[i]))
      return IDM_RESTART;
  if (a->login != b->login || idm_egress_differs(old, fresh))
    return IDM_RESTART;
  return a->refresh_before_ms != b->refresh_before_ms ? IDM_TIMING : IDM_SAME;
}

static const char *const idm_change_names[] = {"none", "refresh_before applied in place",
                                               "restarted with the stored login",
                                               "old login logged out; new configuration"};

static int prepare_idm(gw_daemon *d, const gw_config *cfg, bool deferred, gw_idm **out);

/* The instance a reload replaced: once its logout (revocation) is done. */
static void on_retired(int status, json_t *doc, void *arg) {
  gw_daemon *d = arg;
  json_decref(doc);
  gw_idm *old = d->retiring;
  d->retiring = NULL;
  if (old)
    gw_idm_close(old);
}

/* Applies a reload's [idm] change; fresh is the instance prepared for it
 * (NULL for IDM_SAME, IDM_TIMING, or when [idm] was removed). */
static void apply_idm_change(gw_daemon *d, idm_change change, gw_idm *fresh) {
  gw_idm *old = d->idm;
  if (change == IDM_SAME)
    return;
  gw_log(TN_LOG_INFO, "idm_reloaded", TN_S("change", idm_change_names[change]), TN_LOG_END);
  if (change == IDM_TIMING) {
    gw_idm_set_refresh_before(old, d->cfg.idm.refresh_before_ms);
    return;
  }
  d->idm = fresh;
  if (d->engine)
    tn_engine_set_authorized(d->engine, false); /* until the new instance says otherwise */
  if (change == IDM_RESTART) {
    gw_idm_close(old);
  } else if (old) {
    if (d->retiring) /* a reload before the previous one's revocation ended */
      gw_idm_close(d->retiring);
    d->retiring = old;
    gw_idm_logout(old, on_retired, d); /* local logout now; the state file is gone */
  }
  if (fresh)
    gw_idm_begin(fresh);
  else
    gw_log(TN_LOG_WARN, "no_idm", TN_S("warning", GW_NO_IDM_WARNING), TN_LOG_END);
}

static bool dns_differs(const tn_resolver_opts *a, const tn_resolver_opts *b) {
  return str_differs(a->servers, b->servers) || a->timeout_ms != b->timeout_ms ||
         a->tries != b->tries || a->cache_max_ttl_ms != b->cache_max_ttl_ms ||
         a->cache_size != b->cache_size || a->negative_ttl_ms != b->negative_ttl_ms ||
         a->stale_ttl_ms != b->stale_ttl_ms;
}

/* A reload's [dns] (d->cfg; old: the config it replaced): the one resolver
 * the engine and identity management share takes it for the lookups started
 * from now on, those in flight finish as they were (tn_resolver_reconfigure).
 * If it cannot (out of memory), the previous [dns] stays in force and
 * d->cfg says so. */
static void apply_dns_change(gw_daemon *d, gw_config *old) {
  if (!dns_differs(&old->dns, &d->cfg.dns))
    return;
  bool flushed = false;
  int err = tn_resolver_reconfigure(d->resolver, &d->cfg.dns, &flushed);
  if (err) {
    tn_resolver_opts kept = old->dns;
    old->dns = d->cfg.dns; /* freed with old */
    d->cfg.dns = kept;
    gw_log(TN_LOG_ERROR, "dns_reload_failed", TN_S("error", tn_strerror(err)),
           TN_S("action", "previous [dns] stays in force"), TN_LOG_END);
    return;
  }
  const char *servers = tn_resolver_servers(d->resolver);
  gw_log(TN_LOG_INFO, "dns_reloaded", TN_S("servers", servers ? servers : "/etc/resolv.conf"),
         TN_S("cache", flushed ? "flushed" : "kept"), TN_LOG_END);
}

/* SIGHUP: a config that fails validation is rejected whole; a good one
 * applies to tunnels opened from now on. Open tunnels are never touched. */
static void on_reload_signal(uv_signal_t *s, int signum) {
  gw_daemon *d = s->data;
  gw_config fresh;
  gw_config_errors errs = {0};
  if (d->draining)
    return;
  gw_notify_reloading();
  gw_idm *fresh_idm = NULL;
  idm_change change = IDM_SAME;
  int err = gw_config_load(d->cfg.path, &fresh, &errs);
  if (err == 0) {
    change = classify_idm_change(&d->cfg, &fresh);
    if (change >= IDM_RESTART && fresh.idm.enabled)
      err = prepare_idm(d, &fresh, true, &fresh_idm);
  }
  if (err == 0) {
    fresh.tunnel.logger = gw_logger();
    fresh.tunnel.resolver = d->resolver; /* the same one: apply_dns_change reconfigures it */
    err = tn_engine_update(d->engine, &fresh.tunnel);
  }
  if (err != 0) {
    if (fresh_idm)
      gw_idm_close(fresh_idm);
    log_reload_errors(&errs);
    /* A valid file the engine could not apply (a listener that cannot
     * bind, ...) says why; the engine logged the details. */
    gw_log(TN_LOG_ERROR, "reload_failed", TN_S("config", d->cfg.path), TN_U("errors", errs.n),
           TN_S("reason", errs.n ? "invalid configuration" : tn_strerror(err)),
           TN_S("action", "previous configuration stays in force"), TN_LOG_END);
  } else {
    gw_log_setup(fresh.log_level, fresh.log_format);
    gw_log(TN_LOG_INFO, "reloaded", TN_S("config", d->cfg.path),
           TN_U("allow_rules", fresh.tunnel.policy.n_rules), TN_LOG_END);
    log_config_warnings(&fresh);
    gw_config tmp = d->cfg;
    d->cfg = fresh;
    fresh = tmp;
    apply_dns_change(d, &fresh); /* first: a restarted [idm] looks up with the new [dns] */
    apply_idm_change(d, change, fresh_idm);
    if (d->idm) /* the IdMS is raced like any tunnel's target */
      gw_idm_set_attempt_delay(d->idm, d->cfg.tunnel.attempt_delay_ms);
    if (str_differs(d->cfg.user, fresh.user))
      gw_log(TN_LOG_WARN, "restart_needed", TN_S("setting", "[gateway] user"), TN_LOG_END);
    if (memcmp(&d->cfg.admin_listen, &fresh.admin_listen, sizeof(fresh.admin_listen)) != 0 ||
        d->cfg.admin_enabled != fresh.admin_enabled)
      gw_log(TN_LOG_WARN, "restart_needed", TN_S("setting", "[admin] listen"), TN_LOG_END);
  }
  if (d->ops)
    gw_ops_reloaded(d->ops, err == 0);
  gw_config_free(&fresh);
  gw_config_errors_free(&errs);
  notify_ready(d);
}

static void start_signal(gw_daemon *d, uv_signal_t *s, uv_signal_cb cb, int signum) {
  uv_signal_init(&d->loop, s);
  s->data = d;
  uv_signal_start(s, cb, signum);
}

/* The idm module says when the gateway holds a valid access token:
 * allow_when_authorized rules follow it. */
static void on_idm_authorized(bool authorized, void *arg) {
  gw_daemon *d = arg;
  if (d->engine)
    tn_engine_set_authorized(d->engine, authorized);
}

/* redirect_uri: configured, or the admin listener's own /callback. */
static void default_redirect_uri(gw_daemon *d, const gw_config *cfg, char *buf, size_t len) {
  struct sockaddr_storage ss;
  char addr[TN_ADDRSTR_MAX];
  if (cfg->idm.redirect_uri || !d->admin) {
    snprintf(buf, len, "%s", cfg->idm.redirect_uri ? cfg->idm.redirect_uri : "");
    return;
  }
  gw_admin_addr(d->admin, &ss);
  if (ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_addr.s_addr == INADDR_ANY)
    ((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  tn_addr_format((const struct sockaddr *)&ss, addr, sizeof addr);
  snprintf(buf, len, "http://%s/callback", addr);
}

/* A new instance for cfg's [idm]; deferred: prepared, gw_idm_begin later. */
static int prepare_idm(gw_daemon *d, const gw_config *cfg, bool deferred, gw_idm **out) {
  char redirect[512], err[512];
  default_redirect_uri(d, cfg, redirect, sizeof redirect);
  gw_idm_opts o = {.cfg = &cfg->idm,
                   .state_dir = cfg->state_dir,
                   .redirect_uri = redirect,
                   .on_authorized = on_idm_authorized,
                   .arg = d,
                   .deferred = deferred,
                   .resolver = &d->idm_resolver,
                   .egress = cfg->idm.egress ? &cfg->tunnel.egress[cfg->idm.egress - 1] : NULL,
                   .attempt_delay_ms = cfg->tunnel.attempt_delay_ms};
  if (gw_idm_start(&d->loop, &o, out, err, sizeof err) != 0) {
    gw_log(TN_LOG_ERROR, "idm_start_failed", TN_S("error", err), TN_LOG_END);
    return UV_EINVAL;
  }
  return 0;
}

static int start_idm(gw_daemon *d) {
  /* Registered even without [idm]: a reload may add it (they answer 404
   * while there is none). */
  if (d->admin && gw_idm_admin_register(d->admin, &d->idm) != 0)
    return UV_ENOMEM;
  if (!d->cfg.idm.enabled) {
    gw_log(TN_LOG_WARN, "no_idm", TN_S("warning", GW_NO_IDM_WARNING), TN_LOG_END);
    return 0;
  }
  return prepare_idm(d, &d->cfg, false, &d->idm);
}

static int start(gw_daemon *d) {
  d->cfg.tunnel.logger = gw_logger();
  int err = tn_resolver_new(&d->loop, &d->cfg.dns, gw_logger(), &d->resolver);
  if (err) {
    gw_log(TN_LOG_ERROR, "resolver_failed", TN_S("error", tn_strerror(err)), TN_LOG_END);
    return err;
  }
  d->cfg.tunnel.resolver = d->resolver;
  d->dns_link = (gw_dns_link){&d->loop, d->resolver};
  d->idm_resolver = gw_dns_link_resolver(&d->dns_link);
  err = tn_engine_start(&d->loop, &d->cfg.tunnel, &d->engine);
  if (err) {
    close_resolver(d);
    return err;
  }
  if (d->cfg.admin_enabled)
    err = gw_admin_start(&d->loop, &d->cfg.admin_listen, &d->admin);
  if (!err) {
    gw_ops_deps deps = {&d->loop, d->engine, d->admin, &d->cfg, idm_view, d, d->resolver};
    err = gw_ops_start(&deps, &d->ops);
  }
  if (err) {
    if (d->admin)
      gw_admin_close(d->admin);
    d->admin = NULL;
    tn_engine_drain(d->engine, NULL, NULL);
    d->engine = NULL;
    close_resolver(d);
    return err;
  }
  err = start_idm(d);
  if (err) {
    close_services(d);
    tn_engine_drain(d->engine, NULL, NULL);
    d->engine = NULL;
    close_resolver(d);
    return err;
  }
  start_signal(d, &d->sig_term, on_stop_signal, SIGTERM);
  start_signal(d, &d->sig_int, on_stop_signal, SIGINT);
  start_signal(d, &d->sig_hup, on_reload_signal, SIGHUP);
  return 0;
}

int gw_daemon_run(gw_config *cfg) {
  gw_daemon *d = calloc(1, sizeof(*d));
  if (!d) {
    gw_config_free(cfg);
    return 1;
  }
  d->cfg = *cfg;
  memset(cfg, 0, sizeof(*cfg));
  signal(SIGPIPE, SIG_IGN);
  gw_log_setup(d->cfg.log_level, d->cfg.log_format);
  gw_log(TN_LOG_INFO, "starting", TN_S("version", MCGW_VERSION), TN_S("config", d->cfg.path),
         TN_S("splice", tn_splice_mode_name(d->cfg.tunnel.splice)), TN_LOG_END);
  log_config_warnings(&d->cfg);
  char why[512];
  gw_privdrop drop;
  if (gw_privdrop_prepare(d->cfg.user, &drop, why, sizeof(why)) != 0) {
    gw_log(TN_LOG_ERROR, "cannot_start", TN_S("error", why), TN_LOG_END);
    gw_config_free(&d->cfg);
    free(d);
    return 1;
  }
  uv_loop_init(&d->loop);
  raise_nofile(&d->cfg);
  int err = start(d);
  /* Bound (as root if need be); drop root before serving anything. */
  if (err == 0 && gw_privdrop_apply(&drop, why, sizeof(why)) != 0) {
    gw_log(TN_LOG_ERROR, "cannot_start", TN_S("error", why), TN_LOG_END);
    d->exit_code = 1;
    begin_drain(d);
  } else if (err == 0) {
    gw_log(TN_LOG_INFO, "ready", TN_U("listeners", d->cfg.tunnel.n_listen), TN_LOG_END);
    notify_ready(d);
  }
  uv_run(&d->loop, UV_RUN_DEFAULT);
  uv_loop_close(&d->loop);
  gw_config_free(&d->cfg);
  int code = err ? 1 : d->exit_code;
  free(d);
  return code;
}
