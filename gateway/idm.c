/* The gateway's own CSC-1 login. See idm.h.
 *
 * One libuv loop, no threads. Four timers: `timer` runs the next step
 * (discovery retry, refresh when due, refresh retry after backoff),
 * `expiry_timer` ends limited-service-free operation when the access token
 * expires, `device_timer` polls the token endpoint during a device login,
 * `jwks_timer` delays a throttled JWKS refetch. At most one request of each
 * kind is in flight: discovery, JWKS, refresh (exactly one refresh: rotating
 * refresh tokens die when spent twice), login (code exchange or device). */
#include "gateway/idm.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "csc1/authz.h"
#include "csc1/client_auth.h"
#include "csc1/clock_skew.h"
#include "csc1/https_client.h"
#include "csc1/jwt.h"
#include "csc1/oidc.h"
#include "csc1/pkce.h"
#include "csc1/token_store.h"
#include "csc1/url.h"
#include "gateway/log.h"

#define IDM_STATE_TTL_MS (5 * 60 * 1000) /* authorization request state lifetime */
#define IDM_MAX_PENDING 8                /* browser logins started, not yet back */
#define IDM_JWKS_REFETCH_MS 10000        /* at most one JWKS refetch per 10 s */
#define IDM_BACKOFF_BASE_MS 1000
#define IDM_BACKOFF_MAX_MS 60000
#define IDM_RETRY_AFTER_MAX_S 600
#define IDM_HTTP_TIMEOUT_MS 10000
/* Clock skew allowed when checking an ID token's iat and exp (Annex B caps
 * it at CSC1_JWT_MAX_LEEWAY_S). Also the threshold for the clock skew warning:
 * within it nothing breaks (an unsynchronised clock is off by a few seconds
 * at once); beyond it a fresh ID token is "issued in the future" when the
 * gateway is behind, and tokens look expired early when it is ahead. */
#define IDM_LEEWAY_S 30
#define IDM_SLOW_DOWN_MS 5000 /* RFC 8628 3.5 */
#define IDM_TOKEN_LEN 43      /* state, nonce, verifier: 32 random bytes */

typedef enum { OP_REFRESH = 0, OP_CODE, OP_DEVICE } token_op;

typedef struct pending_login {
  bool used;
  csc1_authz_secrets s; /* state, nonce, verifier */
  uint64_t created_ms;
} pending_login;

/* A token response on its way to being adopted (it may wait for the JWKS). */
typedef struct token_job {
  token_op op;
  csc1_oidc_tokens tokens;
  char nonce[IDM_TOKEN_LEN + 1]; /* "" when none was sent */
  bool jwks_refetched;
} token_job;

typedef enum {
  DEV_NONE = 0,
  DEV_STARTING,
  DEV_PENDING,
  DEV_AUTHORIZED,
  DEV_EXPIRED,
  DEV_DENIED,
  DEV_ERROR
} dev_status;
static const char *const dev_status_names[] = {"none",    "starting", "pending", "authorized",
                                               "expired", "denied",   "error"};

struct gw_idm {
  uv_loop_t *loop;
  tn_egress egress; /* [idm] egress: how its connections leave; unnamed: none */
  /* configuration */
  char *issuer, *redirect_uri, *scope, *acr_values, *state_dir;
  char *ov_authz, *ov_token, *ov_jwks, *ov_device, *ov_revocation;
  char *required_scope; /* space-separated; "" requires none */
  gw_idm_login login;
  uint64_t refresh_before_ms;
  csc1_client_auth auth;
  csc1_https_ctx *https;
  gw_idm_authorized_cb on_authorized;
  void *cb_arg;
  /* discovery and keys */
  csc1_oidc_endpoints ep;
  bool discovered;
  unsigned discovery_attempt;
  csc1_jwks *jwks;
  uint64_t jwks_fetched_ms;
  bool jwks_ever;
  /* requests in flight */
  csc1_https_req *discovery_req, *jwks_req, *refresh_req, *login_req, *logout_req;
  csc1_https_req *discard_req; /* revoking a login refused for MC service */
  token_job *parked[3];        /* by op: waiting for a JWKS refetch */
  /* the login */
  char *access_token;
  /* Loop (monotonic) time the access token expires at: a jump of the wall
   * clock neither extends nor cuts its life; /status shows it as wall time. */
  uint64_t access_expiry_ms;
  char *refresh_token;
  csc1_id_token principal;  /* iss, sub, aud, MC service IDs; sub NULL when none */
  unsigned refresh_attempt; /* > 0: retrying after a failure */
  bool authorized;          /* as last told to on_authorized */
  char *granted_scope;      /* of the login held: the token response's, or the requested */
  bool refused;             /* the last login or refresh was not for MC service: state error */
  /* logout: the revocation in flight and the operator waiting for it */
  gw_idm_json_cb logout_cb;
  void *logout_arg;
  /* status */
  gw_idm_state state;
  char last_error[512];
  uint64_t refresh_ok, refresh_failed, refresh_invalid_grant, refresh_id_token_invalid;
  uint64_t refresh_not_for_mc_service;
  uint64_t logout_revoked, logout_not_revoked, logout_nothing_held;
  csc1_clock_skew skew; /* from the IdMS responses' Date; threshold IDM_LEEWAY_S */
  int64_t skew_at;      /* unix seconds of the latest measurement */
  /* browser logins */
  pending_login pending[IDM_MAX_PENDING];
  gw_idm_done_cb done_cb; /* the operator's /callback request, waiting */
  void *done_arg;
  char *pending_nonce; /* the nonce of the code being exchanged */
  /* device login */
  dev_status dev;
  csc1_oidc_device_auth dev_auth;
  uint64_t dev_deadline_ms, dev_interval_ms;
  char dev_error[256];
  gw_idm_json_cb dev_cb;
  void *dev_arg;
  /* timers */
  uv_timer_t timer, expiry_timer, device_timer, jwks_timer;
  int handles;
  bool closing;
};

static void settle_state(gw_idm *idm);
static void finish_logout(gw_idm *idm, int status, const char *error);
static void cancel_refresh(gw_idm *idm);
static void fetch_jwks(gw_idm *idm);
static void process_job(gw_idm *idm, token_job *job);
static const char *granted_scope(const gw_idm *idm, const struct token_job *job);

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_unix(void) { return (int64_t)time(NULL); }

static void wipe_str(char **s) {
  if (*s) {
    OPENSSL_cleanse(*s, strlen(*s));
    free(*s);
    *s = NULL;
  }
}

__attribute__((format(printf, 2, 3))) static void set_error(gw_idm *idm, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(idm->last_error, sizeof idm->last_error, fmt, ap);
  va_end(ap);
}

static bool has_access(const gw_idm *idm) {
  return idm->access_token && uv_now(idm->loop) < idm->access_expiry_ms;
}

static const char *endpoint_token(const gw_idm *idm) {
  return idm->ov_token ? idm->ov_token : idm->ep.token;
}

static void set_authorized(gw_idm *idm, bool on, const char *reason) {
  if (idm->authorized == on)
    return;
  idm->authorized = on;
  gw_log(on ? TN_LOG_INFO : TN_LOG_WARN, "idm_limited_service", TN_S("active", on ? "no" : "yes"),
         TN_S("reason", reason), TN_LOG_END);
  if (idm->on_authorized)
    idm->on_authorized(on, idm->cb_arg);
}

/* The state follows from what the gateway holds and what is going on. */
static void settle_state(gw_idm *idm) {
  gw_idm_state s;
  bool login_busy = idm->login_req || idm->dev == DEV_STARTING || idm->dev == DEV_PENDING ||
                    idm->parked[OP_CODE] || idm->parked[OP_DEVICE];
  if (has_access(idm))
    s = idm->refresh_req || idm->refresh_attempt ? GW_IDM_REFRESHING : GW_IDM_AUTHORIZED;
  else if (login_busy)
    s = GW_IDM_AUTHORIZING;
  else if (idm->refused)
    s = GW_IDM_ERROR;
  else if (idm->refresh_token)
    s = idm->refresh_attempt || idm->discovery_attempt ? GW_IDM_ERROR : GW_IDM_AUTHORIZING;
  else
    s = idm->discovery_attempt ? GW_IDM_ERROR : GW_IDM_UNAUTHORIZED;
  if (s != idm->state)
    gw_log(TN_LOG_DEBUG, "idm_state", TN_S("from", gw_idm_state_name(idm->state)),
           TN_S("to", gw_idm_state_name(s)), TN_LOG_END);
  idm->state = s;
}

/* Exponential backoff with jitter in [d/2, d], at least Retry-After. */
static uint64_t backoff_ms(unsigned attempt, int64_t retry_after_s) {
  uint64_t d = IDM_BACKOFF_BASE_MS;
  for (unsigned i = 1; i < attempt && d < IDM_BACKOFF_MAX_MS; i++)
    d *= 2;
  if (d > IDM_BACKOFF_MAX_MS)
    d = IDM_BACKOFF_MAX_MS;
  uint32_t rnd = 0;
  if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
    rnd = (uint32_t)time(NULL);
  d = d / 2 + rnd % (d / 2 + 1);
  if (retry_after_s > IDM_RETRY_AFTER_MAX_S)
    retry_after_s = IDM_RETRY_AFTER_MAX_S;
  if (retry_after_s > 0 && (uint64_t)retry_after_s * 1000 > d)
    d = (uint64_t)retry_after_s * 1000;
  return d;
}

/* ---- the stored login --------------------------------------------------- */

static void save_login(gw_idm *idm) {
  char err[512];
  csc1_stored_login l = {.issuer = idm->issuer,
                         .client_id = idm->auth.client_id,
                         .refresh_token = idm->refresh_token,
                         .subject = idm->principal.sub,
                         .aud = idm->principal.aud,
                         .n_aud = idm->principal.n_aud,
                         .mcptt_id = idm->principal.mcptt_id,
                         .mcdata_id = idm->principal.mcdata_id,
                         .mcvideo_id = idm->principal.mcvideo_id};
  if (csc1_token_store_save(idm->state_dir, &l, err, sizeof err) != CSC1_TS_OK) {
    set_error(idm, "cannot save the login in state_dir: %s", err);
    gw_log(TN_LOG_ERROR, "idm_state_save_failed", TN_S("error", err), TN_LOG_END);
  }
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void load_login(gw_idm *idm) {
  char err[512];
  csc1_stored_login l;
  int r = csc1_token_store_load(idm->state_dir, &l, err, sizeof err);
  if (r == CSC1_TS_NONE)
    return;
  if (r != CSC1_TS_OK) {
    set_error(idm, "stored login unusable: %s", err);
    gw_log(TN_LOG_ERROR, "idm_state_corrupt", TN_S("error", err),
           TN_S("action", "kept aside; a new login is needed"), TN_LOG_END);
    return;
  }
  if (strcmp(l.issuer, idm->issuer) != 0 || strcmp(l.client_id, idm->auth.client_id) != 0) {
    gw_log(TN_LOG_WARN, "idm_state_ignored",
           TN_S("reason", "stored login is for another issuer or client_id"), TN_LOG_END);
  } else if (l.refresh_token) {
    idm->refresh_token = l.refresh_token;
    l.refresh_token = NULL;
    idm->principal.iss = dup_or_null(l.issuer);
    idm->principal.sub = dup_or_null(l.subject);
    idm->principal.mcptt_id = dup_or_null(l.mcptt_id);
    idm->principal.mcdata_id = dup_or_null(l.mcdata_id);
    idm->principal.mcvideo_id = dup_or_null(l.mcvideo_id);
    idm->principal.aud = l.aud;
    idm->principal.n_aud = l.n_aud;
    l.aud = NULL;
    l.n_aud = 0;
    gw_log(TN_LOG_INFO, "idm_state_loaded", TN_S("subject", l.subject ? l.subject : ""),
           TN_S("action", "refreshing the stored login"), TN_LOG_END);
  }
  csc1_stored_login_free(&l);
}

/* ---- HTTP ---------------------------------------------------------------- */

static int http(gw_idm *idm, const char *method, const char *url, csc1_form *form,
                const char *authorization, csc1_https_cb cb, csc1_https_req **slot) {
  csc1_https_request_opts o = {.method = method,
                               .url = url,
                               .timeout_ms = IDM_HTTP_TIMEOUT_MS,
                               .authorization = authorization};
  if (form) {
    o.body = form->buf ? form->buf : "";
    o.body_len = form->len;
    o.content_type = "application/x-www-form-urlencoded";
  }
  gw_log(TN_LOG_DEBUG, "idm_http", TN_S("method", method), TN_S("url", url), TN_LOG_END);
  int err = csc1_https_request(idm->loop, idm->https, &o, cb, idm, slot);
  if (err)
    gw_log(TN_LOG_ERROR, "idm_http_failed", TN_S("url", url),
           TN_S("error", csc1_https_strerror(err)), TN_LOG_END);
  return err;
}

/* POSTs form plus client authentication to the token endpoint. */
static int token_post(gw_idm *idm, csc1_form *form, csc1_https_cb cb, csc1_https_req **slot) {
  char *authz = NULL;
  const char *url = endpoint_token(idm);
  int err = csc1_client_auth_apply(&idm->auth, url, now_unix(), form, &authz);
  if (err == 0)
    err = http(idm, "POST", url, form, authz, cb, slot);
  wipe_str(&authz);
  csc1_form_free(form);
  return err;
}

/* Describes a failed exchange for logs and last_error: transport error, or
 * status with the OAuth error code. */
static void describe(int err, const char *detail, const csc1_https_response *resp,
                     const csc1_oidc_error *oe, char *buf, size_t len) {
  if (err == CSC1_HTTPS_ECLIENTCERT) /* the gateway's own: say which keys */
    snprintf(buf, len, "%s: %s; see [idm] tls_cert and tls_key", csc1_https_strerror(err),
             detail ? detail : "");
  else if (err)
    snprintf(buf, len, "%s: %s", csc1_https_strerror(err), detail ? detail : "");
  else if (oe && oe->error[0])
    snprintf(buf, len, "HTTP %d %s%s%s", resp->status, oe->error, oe->description[0] ? ": " : "",
             oe->description);
  else
    snprintf(buf, len, "HTTP %d", resp->status);
}

/* ---- the clock ------------------------------------------------------------ */

/* Measures the clock skew on every IdMS response with a Date (any status:
 * an error page is dated too) and logs once when it becomes large, again
 * only when it changes by more than the threshold, and once (info) when it
 * is back to normal. Called first in each response callback, so that a
 * token response's ID token is judged with the skew it came with. */
static void check_clock(gw_idm *idm, int err, const csc1_https_response *resp) {
  csc1_clock_skew_sample s;
  char what[96];
  if (err || !resp ||
      csc1_clock_skew_measure(resp->sent_at_ms, resp->received_at_ms, resp->date, &s) != 0)
    return;
  idm->skew_at = now_unix();
  csc1_clock_skew_event ev = csc1_clock_skew_update(&idm->skew, &s);
  if (ev == CSC1_CLOCK_SKEW_QUIET)
    return;
  csc1_clock_skew_describe(s.skew_ms, what, sizeof what);
  double skew_s = (double)s.skew_ms / 1000, unc_s = (double)s.uncertainty_ms / 1000;
  if (ev == CSC1_CLOCK_SKEW_NORMAL)
    gw_log(TN_LOG_INFO, "idm_clock_skew", TN_S("clock", "normal"), TN_D("skew_s", skew_s),
           TN_D("uncertainty_s", unc_s), TN_U("threshold_s", IDM_LEEWAY_S), TN_S("detail", what),
           TN_LOG_END);
  else
    gw_log(TN_LOG_WARN, "idm_clock_skew",
           TN_S("clock", ev == CSC1_CLOCK_SKEW_LARGE ? "skewed" : "changed"),
           TN_D("skew_s", skew_s), TN_D("uncertainty_s", unc_s), TN_U("threshold_s", IDM_LEEWAY_S),
           TN_S("detail", what),
           TN_S("hint", "check NTP/GNSS time on the gateway: ID tokens are checked against the "
                        "local clock"),
           TN_LOG_END);
}

/* ---- discovery ---------------------------------------------------------- */

static void start_discovery(gw_idm *idm);
static void do_refresh(gw_idm *idm);

/* The next step, whatever it is: discovery, or a refresh. */
static void on_step_timer(uv_timer_t *t) {
  gw_idm *idm = t->data;
  if (!idm->discovered)
    start_discovery(idm);
  else if (idm->refresh_token)
    do_refresh(idm);
}

static void schedule_step(gw_idm *idm, uint64_t ms) {
  if (!idm->closing)
    uv_timer_start(&idm->timer, on_step_timer, ms, 0);
}

static void discovery_failed(gw_idm *idm, const char *why, int64_t retry_after_s) {
  idm->discovery_attempt++;
  uint64_t delay = backoff_ms(idm->discovery_attempt, retry_after_s);
  set_error(idm, "discovery failed: %s", why);
  gw_log(TN_LOG_ERROR, "idm_discovery_failed", TN_S("issuer", idm->issuer), TN_S("error", why),
         TN_U("attempt", idm->discovery_attempt), TN_U("retry_in_ms", delay), TN_LOG_END);
  schedule_step(idm, delay);
  settle_state(idm);
}

static char *override_or(const char *ov, char **from_doc) {
  if (!ov)
    return *from_doc;
  free(*from_doc);
  *from_doc = strdup(ov);
  return *from_doc;
}

/* Overrides from the configuration win over the document. */
static const char *apply_overrides(gw_idm *idm) {
  override_or(idm->ov_authz, &idm->ep.authorization);
  override_or(idm->ov_token, &idm->ep.token);
  override_or(idm->ov_jwks, &idm->ep.jwks_uri);
  override_or(idm->ov_device, &idm->ep.device_authorization);
  override_or(idm->ov_revocation, &idm->ep.revocation);
  if (!idm->ep.token)
    return "no token_endpoint (in the discovery document or the configuration)";
  if (!idm->ep.jwks_uri)
    return "no jwks_uri (in the discovery document or the configuration)";
  if (idm->login == GW_IDM_LOGIN_BROWSER && !idm->ep.authorization)
    return "no authorization_endpoint (in the discovery document or the configuration)";
  if (idm->login == GW_IDM_LOGIN_DEVICE && !idm->ep.device_authorization)
    return "login = device but no device_authorization_endpoint";
  return NULL;
}

static void on_discovery(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  gw_idm *idm = arg;
  char why[512];
  idm->discovery_req = NULL;
  check_clock(idm, err, resp);
  if (err || resp->status != 200) {
    describe(err, detail, resp, NULL, why, sizeof why);
    discovery_failed(idm, why, err ? -1 : resp->retry_after_s);
    return;
  }
  csc1_oidc_endpoints_free(&idm->ep);
  if (csc1_oidc_discovery_parse(resp->body, resp->body_len, idm->issuer, &idm->ep, why,
                                sizeof why) != 0) {
    discovery_failed(idm, why, -1);
    return;
  }
  const char *missing = apply_overrides(idm);
  if (missing) {
    discovery_failed(idm, missing, -1);
    return;
  }
  idm->discovered = true;
  idm->discovery_attempt = 0;
  if (strncmp(idm->last_error, "discovery failed", 16) == 0)
    idm->last_error[0] = '\0'; /* other errors (a corrupt state file) stay shown */
  gw_log(TN_LOG_INFO, "idm_discovered", TN_S("issuer", idm->issuer),
         TN_S("authorization_endpoint", idm->ep.authorization ? idm->ep.authorization : ""),
         TN_S("token_endpoint", idm->ep.token), TN_S("jwks_uri", idm->ep.jwks_uri),
         TN_S("device_authorization_endpoint",
              idm->ep.device_authorization ? idm->ep.device_authorization : ""),
         TN_S("revocation_endpoint", idm->ep.revocation ? idm->ep.revocation : ""),
         TN_S("end_session_endpoint", idm->ep.end_session ? idm->ep.end_session : ""), TN_LOG_END);
  fetch_jwks(idm);
  if (idm->refresh_token && !idm->access_token)
    do_refresh(idm);
  settle_state(idm);
}

static void start_discovery(gw_idm *idm) {
  char url[2048];
  size_t n = strlen(idm->issuer);
  while (n && idm->issuer[n - 1] == '/')
    n--;
  snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration", (int)n, idm->issuer);
  if (!idm->discovery_req &&
      http(idm, "GET", url, NULL, NULL, on_discovery, &idm->discovery_req) != 0)
    discovery_failed(idm, "cannot start the request", -1);
}

/* ---- JWKS --------------------------------------------------------------- */

/* Runs the jobs that waited for the JWKS, whatever the fetch's outcome. */
static void resume_parked(gw_idm *idm) {
  for (int op = 0; op < 3; op++) {
    token_job *job = idm->parked[op];
    idm->parked[op] = NULL;
    if (job)
      process_job(idm, job);
  }
}

static void on_jwks(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  gw_idm *idm = arg;
  char why[512];
  idm->jwks_req = NULL;
  check_clock(idm, err, resp);
  idm->jwks_fetched_ms = uv_now(idm->loop);
  idm->jwks_ever = true;
  const char *bad = NULL;
  csc1_jwks *k = NULL;
  if (err || resp->status != 200)
    describe(err, detail, resp, NULL, why, sizeof why);
  else if (!(k = csc1_jwks_parse(resp->body, resp->body_len, &bad)))
    snprintf(why, sizeof why, "%s", bad);
  if (k) {
    csc1_jwks_free(idm->jwks);
    idm->jwks = k;
    gw_log(TN_LOG_INFO, "idm_jwks_loaded", TN_S("jwks_uri", idm->ep.jwks_uri),
           TN_U("keys", csc1_jwks_count(k)), TN_LOG_END);
  } else {
    set_error(idm, "JWKS fetch failed: %s", why);
    gw_log(TN_LOG_ERROR, "idm_jwks_failed", TN_S("jwks_uri", idm->ep.jwks_uri), TN_S("error", why),
           TN_LOG_END);
  }
  resume_parked(idm);
}

static void fetch_jwks(gw_idm *idm) {
  if (idm->jwks_req || !idm->discovered)
    return;
  if (http(idm, "GET", idm->ep.jwks_uri, NULL, NULL, on_jwks, &idm->jwks_req) != 0)
    resume_parked(idm);
}

static void on_jwks_timer(uv_timer_t *t) { fetch_jwks(t->data); }

/* One refetch for an unknown kid, at most one per IDM_JWKS_REFETCH_MS: a
 * refetch asked for too early is delayed, not dropped. */
static void refetch_jwks(gw_idm *idm) {
  uint64_t since = uv_now(idm->loop) - idm->jwks_fetched_ms;
  if (idm->jwks_req || uv_is_active((uv_handle_t *)&idm->jwks_timer))
    return;
  if (idm->jwks_ever && since < IDM_JWKS_REFETCH_MS)
    uv_timer_start(&idm->jwks_timer, on_jwks_timer, IDM_JWKS_REFETCH_MS - since, 0);
  else
    fetch_jwks(idm);
}

/* ---- adopting tokens ---------------------------------------------------- */

static void on_expiry(uv_timer_t *t) {
  gw_idm *idm = t->data;
  wipe_str(&idm->access_token);
  gw_log(TN_LOG_WARN, "idm_access_token_expired",
         TN_S("reason", idm->last_error[0] ? idm->last_error : "not refreshed in time"),
         TN_LOG_END);
  set_authorized(idm, false, "access token expired");
  settle_state(idm);
}

/* Time to the refresh: refresh_before ahead of expiry, or half the lifetime
 * when that is shorter than refresh_before. */
static uint64_t refresh_delay_ms(const gw_idm *idm, int64_t expires_in) {
  uint64_t life = (uint64_t)expires_in * 1000;
  uint64_t d = life > idm->refresh_before_ms * 2 ? life - idm->refresh_before_ms : life / 2;
  return d < 500 ? 500 : d;
}

static void log_ids(const gw_idm *idm, const char *msg, const char *via, int64_t expires_in) {
  const csc1_id_token *p = &idm->principal;
  gw_log(TN_LOG_INFO, msg, TN_S("via", via), TN_S("subject", p->sub ? p->sub : ""),
         TN_S("mcptt_id", p->mcptt_id ? p->mcptt_id : ""),
         TN_S("mcdata_id", p->mcdata_id ? p->mcdata_id : ""),
         TN_S("mcvideo_id", p->mcvideo_id ? p->mcvideo_id : ""),
         TN_I("access_token_expires_in_s", expires_in), TN_LOG_END);
}

/* Takes the tokens of job (and the validated ID token, if any). */
static void adopt(gw_idm *idm, token_job *job, csc1_id_token *id) {
  int64_t expires_in = job->tokens.expires_in;
  wipe_str(&idm->access_token);
  idm->access_token = job->tokens.access_token;
  job->tokens.access_token = NULL;
  idm->access_expiry_ms = uv_now(idm->loop) + (uint64_t)(expires_in > 0 ? expires_in : 0) * 1000;
  if (job->tokens.refresh_token) { /* for a refresh it was taken (and saved) on receipt */
    wipe_str(&idm->refresh_token);
    idm->refresh_token = job->tokens.refresh_token;
    job->tokens.refresh_token = NULL;
  }
  if (id) {
    csc1_id_token_free(&idm->principal);
    idm->principal = *id;
    memset(id, 0, sizeof *id);
  }
  char *granted = strdup(granted_scope(idm, job));
  if (granted) {
    free(idm->granted_scope);
    idm->granted_scope = granted;
  }
  idm->refused = false;
  /* A good response clears the last error; a failed save (read-only or full
   * state_dir) then sets it again, so /status says the login would not
   * survive a restart. */
  idm->last_error[0] = '\0';
  save_login(idm);
  idm->refresh_attempt = 0;
  uv_timer_start(&idm->expiry_timer, on_expiry, (uint64_t)expires_in * 1000, 0);
  schedule_step(idm, refresh_delay_ms(idm, expires_in));
  if (job->op == OP_REFRESH) {
    idm->refresh_ok++;
    log_ids(idm, "idm_refreshed", "refresh", expires_in);
  } else {
    log_ids(idm, "idm_authorized", job->op == OP_CODE ? "browser" : "device", expires_in);
  }
  set_authorized(idm, true, "holds a valid access token");
}

/* ---- refresh ------------------------------------------------------------ */

static void refresh_transient(gw_idm *idm, const char *why, int64_t retry_after_s) {
  idm->refresh_failed++;
  idm->refresh_attempt++;
  uint64_t delay = backoff_ms(idm->refresh_attempt, retry_after_s);
  set_error(idm, "refresh failed: %s", why);
  gw_log(TN_LOG_WARN, "idm_refresh_failed", TN_S("error", why),
         TN_U("attempt", idm->refresh_attempt), TN_U("retry_in_ms", delay),
         TN_S("access_token", has_access(idm) ? "still valid" : "none"), TN_LOG_END);
  schedule_step(idm, delay);
  settle_state(idm);
}

/* Drops the login's tokens and stores it without the refresh token, so that
 * a restart does not try it again. */
static void end_login(gw_idm *idm) {
  wipe_str(&idm->refresh_token);
  wipe_str(&idm->access_token);
  uv_timer_stop(&idm->expiry_timer);
  uv_timer_stop(&idm->timer);
  idm->refresh_attempt = 0;
  save_login(idm);
}

/* The login can no longer be refreshed (the IdMS refused the refresh token,
 * or the refreshed ID token failed validation): a new login is needed. The
 * caller counts the refresh under its own result. */
static void login_gone(gw_idm *idm, const char *why) {
  end_login(idm);
  set_error(idm, "login gone (%s): a new login is needed", why);
  gw_log(TN_LOG_ERROR, "idm_login_needed", TN_S("reason", why),
         TN_S("action", "log in again: GET /login on the admin listener, or mcgw login"),
         TN_LOG_END);
  set_authorized(idm, false, "login gone; a new login is needed");
  settle_state(idm);
}

static void job_free(token_job *job) {
  csc1_oidc_tokens_free(&job->tokens);
  OPENSSL_cleanse(job->nonce, sizeof job->nonce);
  free(job);
}

static void on_refresh(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  gw_idm *idm = arg;
  char why[512];
  csc1_oidc_error oe = {0};
  idm->refresh_req = NULL;
  check_clock(idm, err, resp);
  if (err) {
    describe(err, detail, resp, NULL, why, sizeof why);
    refresh_transient(idm, why, -1);
    return;
  }
  if (resp->status != 200) {
    csc1_oidc_error_parse(resp->body, resp->body_len, &oe);
    describe(0, NULL, resp, &oe, why, sizeof why);
    if (strcmp(oe.error, "invalid_grant") == 0) {
      idm->refresh_invalid_grant++;
      login_gone(idm, "the IdMS refused the refresh token: invalid_grant");
      return;
    }
    refresh_transient(idm, why, resp->retry_after_s);
    return;
  }
  token_job *job = calloc(1, sizeof *job);
  if (!job) {
    refresh_transient(idm, "out of memory", -1);
    return;
  }
  job->op = OP_REFRESH;
  if (csc1_oidc_tokens_parse(resp->body, resp->body_len, &job->tokens, why, sizeof why) != 0) {
    job_free(job);
    refresh_transient(idm, why, -1);
    return;
  }
  if (job->tokens.refresh_token) { /* rotated: on disk before anything else */
    wipe_str(&idm->refresh_token);
    idm->refresh_token = job->tokens.refresh_token;
    job->tokens.refresh_token = NULL;
    save_login(idm);
  }
  process_job(idm, job);
}

static void do_refresh(gw_idm *idm) {
  csc1_form form = {0};
  if (idm->refresh_req || !idm->discovered || !idm->refresh_token || idm->closing)
    return;
  uv_timer_stop(&idm->timer);
  csc1_form_add(&form, "grant_type", "refresh_token");
  csc1_form_add(&form, "refresh_token", idm->refresh_token);
  if (token_post(idm, &form, on_refresh, &idm->refresh_req) != 0) {
    refresh_transient(idm, "cannot start the request", -1);
    return;
  }
  settle_state(idm);
}

/* ---- browser and device login completion -------------------------------- */

static void finish_browser(gw_idm *idm, int status, const char *message) {
  gw_idm_done_cb cb = idm->done_cb;
  idm->done_cb = NULL;
  if (cb)
    cb(status, message, idm->done_arg);
}

static void finish_device(gw_idm *idm, dev_status st, const char *why) {
  idm->dev = st;
  snprintf(idm->dev_error, sizeof idm->dev_error, "%s", why ? why : "");
  uv_timer_stop(&idm->device_timer);
  wipe_str(&idm->dev_auth.device_code);
  if (st != DEV_AUTHORIZED)
    gw_log(TN_LOG_WARN, "idm_device_login_ended", TN_S("status", dev_status_names[st]),
           TN_S("reason", why ? why : ""), TN_LOG_END);
}

static void login_failed(gw_idm *idm, token_op op, int status, const char *why) {
  set_error(idm, "login failed: %s", why);
  gw_log(TN_LOG_ERROR, "idm_login_failed", TN_S("via", op == OP_CODE ? "browser" : "device"),
         TN_S("error", why), TN_LOG_END);
  if (op == OP_CODE) {
    char msg[700];
    snprintf(msg, sizeof msg, "Login failed: %s\n", why);
    finish_browser(idm, status, msg);
  } else {
    finish_device(idm, DEV_ERROR, why);
  }
  settle_state(idm);
}

static void login_succeeded(gw_idm *idm, token_op op) {
  const csc1_id_token *p = &idm->principal;
  if (op == OP_DEVICE) {
    finish_device(idm, DEV_AUTHORIZED, NULL);
    return;
  }
  char msg[2048];
  snprintf(msg, sizeof msg,
           "Logged in to the IdMS as %s.\n\nMC service IDs this gateway now holds:\n"
           "  mcptt_id:   %s\n  mcdata_id:  %s\n  mcvideo_id: %s\n",
           p->sub, p->mcptt_id ? p->mcptt_id : "(none)", p->mcdata_id ? p->mcdata_id : "(none)",
           p->mcvideo_id ? p->mcvideo_id : "(none)");
  finish_browser(idm, 200, msg);
}

/* ---- token jobs ---------------------------------------------------------- */

/* An ID token refused while the clock is known to be skewed: would it pass
 * at the IdMS's time? Then the skew is the cause, and the reason says so
 * instead of only "expired" or "issued in the future". The token stays
 * refused: the gateway does not take its time from an unsigned header. */
static void explain_skew(const gw_idm *idm, const char *t, csc1_jwt_expect e, char *why,
                         size_t whylen) {
  csc1_id_token probe;
  char what[96];
  int64_t ms = idm->skew.last.skew_ms;
  e.now -= (ms + (ms < 0 ? -500 : 500)) / 1000;
  if (csc1_jwt_validate(t, strlen(t), idm->jwks, &e, &probe, NULL, 0) != CSC1_JWT_OK)
    return;
  csc1_id_token_free(&probe);
  csc1_clock_skew_describe(ms, what, sizeof what);
  size_t n = strlen(why);
  if (n < whylen)
    snprintf(why + n, whylen - n, "; %s (its Date header): check NTP/GNSS time on the gateway",
             what);
}

static int validate(gw_idm *idm, token_job *job, csc1_id_token *id, char *why, size_t whylen) {
  csc1_jwt_expect e = {.issuer = idm->issuer,
                       .client_id = idm->auth.client_id,
                       .nonce = job->nonce[0] ? job->nonce : NULL,
                       .now = now_unix(),
                       .leeway_s = IDM_LEEWAY_S};
  const char *t = job->tokens.id_token;
  int r = csc1_jwt_validate(t, strlen(t), idm->jwks, &e, id, why, whylen);
  if (r == CSC1_JWT_ECLAIMS && idm->skew.large)
    explain_skew(idm, t, e, why, whylen);
  return r;
}

static void job_failed(gw_idm *idm, token_job *job, int r, const char *why) {
  char msg[512];
  snprintf(msg, sizeof msg, "ID token refused: %s", why);
  if (job->op != OP_REFRESH)
    login_failed(idm, job->op, 502, msg);
  else if (r == CSC1_JWT_EUNKNOWN_KID) {
    refresh_transient(idm, msg, -1); /* the keys may come back */
  } else {
    idm->refresh_id_token_invalid++; /* not invalid_grant: the IdMS accepted the refresh */
    login_gone(idm, msg);
  }
  job_free(job);
}

/* Whether scope (space-separated) holds the scope value want (n bytes). */
static bool scope_has(const char *scope, const char *want, size_t n) {
  for (const char *p = scope; *p;) {
    size_t m = strcspn(p, " ");
    if (m == n && strncmp(p, want, n) == 0)
      return true;
    p += m;
    p += strspn(p, " ");
  }
  return false;
}

/* The granted scope of a token response: its scope, or when it has none
 * the one requested (RFC 6749 5.1) - for a refresh, which requests no
 * scope, the one granted before. */
static const char *granted_scope(const gw_idm *idm, const token_job *job) {
  if (job->tokens.scope)
    return job->tokens.scope;
  if (job->op == OP_REFRESH && idm->granted_scope)
    return idm->granted_scope;
  return idm->scope;
}

/* "Authorized" means authorized for MC service: every required_scope
 * granted, and at least one MC service ID in the ID token (TS 33.180 Table
 * 5.1.2.1-1) - the new one, or on a refresh without one the login's. NULL,
 * or what is missing (in buf). */
static const char *mc_service_missing(const gw_idm *idm, const token_job *job,
                                      const csc1_id_token *id, char *buf, size_t len) {
  const char *granted = granted_scope(idm, job);
  for (const char *p = idm->required_scope; *p;) {
    size_t n = strcspn(p, " ");
    if (!scope_has(granted, p, n)) {
      snprintf(buf, len, "the IdMS granted no %.*s", (int)n, p);
      return buf;
    }
    p += n;
    p += strspn(p, " ");
  }
  const csc1_id_token *who = id ? id : &idm->principal;
  if (!who->mcptt_id && !who->mcdata_id && !who->mcvideo_id) {
    snprintf(buf, len, "the ID token holds no MC service ID");
    return buf;
  }
  return NULL;
}

/* A login or refresh whose tokens are valid but not for MC service: not
 * adopted (a login refused so leaves a login already held alone, and its
 * refresh token is revoked); a refresh so refused ends the login. The state
 * is error until the next login. */
static void discard_refresh_token(gw_idm *idm, char *refresh_token);

static void not_for_mc_service(gw_idm *idm, token_job *job, const char *missing) {
  char msg[512];
  snprintf(msg, sizeof msg, "not authorized for MC service: %s", missing);
  idm->refused = true;
  if (job->op != OP_REFRESH) {
    login_failed(idm, job->op, 403, msg);
    discard_refresh_token(idm, job->tokens.refresh_token);
    job->tokens.refresh_token = NULL;
  } else {
    char *refresh_token = idm->refresh_token;
    idm->refresh_not_for_mc_service++;
    idm->refresh_token = NULL;
    end_login(idm);
    discard_refresh_token(idm, refresh_token);
    gw_log(TN_LOG_ERROR, "idm_login_failed", TN_S("via", "refresh"), TN_S("error", msg),
           TN_LOG_END);
    set_authorized(idm, false, msg);
  }
  set_error(idm, "%s", missing);
  job_free(job);
  settle_state(idm);
}

/* Validates the job's ID token (waiting once for a JWKS refetch on an
 * unknown kid), then adopts its tokens. Takes ownership of job. */
static void process_job(gw_idm *idm, token_job *job) {
  char why[384];
  csc1_id_token id;
  memset(&id, 0, sizeof id);
  if (idm->closing) {
    job_free(job);
    return;
  }
  if (!job->tokens.id_token && job->op != OP_REFRESH) {
    job_failed(idm, job, CSC1_JWT_EMALFORMED, "the token response has no id_token");
    return;
  }
  if (job->tokens.id_token) {
    int r = validate(idm, job, &id, why, sizeof why);
    if (r == CSC1_JWT_EUNKNOWN_KID && !job->jwks_refetched) {
      job->jwks_refetched = true;
      if (idm->parked[job->op])
        job_free(idm->parked[job->op]);
      idm->parked[job->op] = job;
      gw_log(TN_LOG_INFO, "idm_jwks_refetch", TN_S("reason", "ID token signed with an unknown key"),
             TN_LOG_END);
      refetch_jwks(idm);
      return;
    }
    if (r != CSC1_JWT_OK) {
      job_failed(idm, job, r, why);
      return;
    }
    if (job->op == OP_REFRESH && idm->principal.sub &&
        !csc1_id_token_same_principal(&idm->principal, &id)) {
      csc1_id_token_free(&id);
      job_failed(idm, job, CSC1_JWT_ECLAIMS, "the refreshed ID token changed iss, sub or aud");
      return;
    }
  }
  const char *missing =
      mc_service_missing(idm, job, job->tokens.id_token ? &id : NULL, why, sizeof why);
  if (missing) {
    csc1_id_token_free(&id);
    not_for_mc_service(idm, job, missing);
    return;
  }
  token_op op = job->op;
  if (op != OP_REFRESH)
    cancel_refresh(idm);
  adopt(idm, job, job->tokens.id_token ? &id : NULL);
  csc1_id_token_free(&id);
  job_free(job);
  if (op != OP_REFRESH)
    login_succeeded(idm, op);
  settle_state(idm);
}

/* A new login, once its ID token is valid, supersedes a refresh in flight:
 * that result would be stale (and if the login fails, the refresh goes on). */
static void cancel_refresh(gw_idm *idm) {
  csc1_https_cancel(idm->refresh_req);
  idm->refresh_req = NULL;
  if (idm->parked[OP_REFRESH])
    job_free(idm->parked[OP_REFRESH]);
  idm->parked[OP_REFRESH] = NULL;
}

/* Common handling of a login's token response (code exchange, device poll
 * that succeeded). */
static void login_tokens(gw_idm *idm, token_op op, const csc1_https_response *resp,
                         const char *nonce) {
  char why[512];
  token_job *job = calloc(1, sizeof *job);
  if (!job) {
    login_failed(idm, op, 500, "out of memory");
    return;
  }
  job->op = op;
  snprintf(job->nonce, sizeof job->nonce, "%s", nonce ? nonce : "");
  if (csc1_oidc_tokens_parse(resp->body, resp->body_len, &job->tokens, why, sizeof why) != 0) {
    job_free(job);
    login_failed(idm, op, 502, why);
    return;
  }
  process_job(idm, job);
}

/* ---- browser login ------------------------------------------------------- */

static void expire_pending(gw_idm *idm) {
  uint64_t now = uv_now(idm->loop);
  for (int i = 0; i < IDM_MAX_PENDING; i++) {
    pending_login *p = &idm->pending[i];
    if (p->used && now - p->created_ms > IDM_STATE_TTL_MS) {
      OPENSSL_cleanse(p, sizeof *p);
      p->used = false;
    }
  }
}

/* A free slot, or the oldest one (its login can no longer complete). */
static pending_login *new_pending(gw_idm *idm) {
  pending_login *best = &idm->pending[0];
  expire_pending(idm);
  for (int i = 0; i < IDM_MAX_PENDING; i++) {
    if (!idm->pending[i].used)
      return &idm->pending[i];
    if (idm->pending[i].created_ms < best->created_ms)
      best = &idm->pending[i];
  }
  OPENSSL_cleanse(best, sizeof *best);
  return best;
}

char *gw_idm_login_url(gw_idm *idm, char *err, size_t errlen) {
  const char *why = NULL;
  if (idm->login != GW_IDM_LOGIN_BROWSER) {
    snprintf(err, errlen, "login = device: use POST /login/device (mcgw login)");
    return NULL;
  }
  if (!idm->discovered) {
    snprintf(err, errlen, "the IdMS has not been reached yet (discovery pending; see /status)");
    return NULL;
  }
  pending_login *p = new_pending(idm);
  const csc1_authz_params params = {
      .authorization_endpoint = idm->ep.authorization,
      .client_id = idm->auth.client_id,
      .redirect_uri = idm->redirect_uri,
      .scope = idm->scope,
      .acr_values = idm->acr_values && *idm->acr_values ? idm->acr_values : NULL,
  };
  char *url = csc1_authz_url(&params, &p->s, &why);
  if (!url) {
    snprintf(err, errlen, "%s", why);
    return NULL;
  }
  p->used = true;
  p->created_ms = uv_now(idm->loop);
  gw_log(TN_LOG_INFO, "idm_login_started", TN_S("via", "browser"),
         TN_S("authorization_endpoint", idm->ep.authorization), TN_LOG_END);
  settle_state(idm);
  return url;
}

/* The pending login whose state equals s (constant time), or NULL. */
static pending_login *find_pending(gw_idm *idm, const char *s) {
  expire_pending(idm);
  size_t n = strlen(s);
  for (int i = 0; i < IDM_MAX_PENDING; i++) {
    pending_login *p = &idm->pending[i];
    if (p->used && n == strlen(p->s.state) && CRYPTO_memcmp(p->s.state, s, n) == 0)
      return p;
  }
  return NULL;
}

static void refuse_callback(const char *reason, gw_idm_done_cb cb, void *arg) {
  char msg[300];
  gw_log(TN_LOG_WARN, "idm_callback_refused", TN_S("reason", reason),
         TN_S("action", "dropped; the code (if any) was not used"), TN_LOG_END);
  snprintf(msg, sizeof msg, "Refused: %s. Nothing was changed.\n", reason);
  cb(400, msg, arg);
}

/* The IdMS answered error=...: shown to the operator. */
static void idms_error(gw_idm *idm, const csc1_authz_callback *c, gw_idm_done_cb cb, void *arg) {
  char err[64], desc[200], msg[400];
  csc1_oidc_sanitize(c->error, err, sizeof err);
  csc1_oidc_sanitize(c->error_description ? c->error_description : "", desc, sizeof desc);
  set_error(idm, "login refused by the IdMS: %s%s%s", err, desc[0] ? ": " : "", desc);
  gw_log(TN_LOG_WARN, "idm_login_failed", TN_S("via", "browser"), TN_S("error", err),
         TN_S("description", desc), TN_LOG_END);
  snprintf(msg, sizeof msg, "The IdMS refused the login: %s%s%s\n", err, desc[0] ? ": " : "", desc);
  cb(403, msg, arg);
  settle_state(idm);
}

static void on_code_exchange(int err, const char *detail, const csc1_https_response *resp,
                             void *arg);

static void exchange_code(gw_idm *idm, const csc1_authz_callback *c, pending_login *p) {
  csc1_form form = {0};
  csc1_form_add(&form, "grant_type", "authorization_code");
  csc1_form_add(&form, "code", c->code);
  csc1_form_add(&form, "redirect_uri", idm->redirect_uri);
  csc1_form_add(&form, "code_verifier", p->s.verifier);
  /* The nonce travels with the request context until the response. */
  char *nonce = strdup(p->s.nonce);
  OPENSSL_cleanse(p, sizeof *p);
  p->used = false;
  if (!nonce) {
    csc1_form_free(&form);
    login_failed(idm, OP_CODE, 500, "out of memory");
    return;
  }
  if (token_post(idm, &form, on_code_exchange, &idm->login_req) != 0) {
    wipe_str(&nonce);
    login_failed(idm, OP_CODE, 502, "cannot reach the token endpoint");
    return;
  }
  idm->pending_nonce = nonce;
  settle_state(idm);
}

static void on_code_exchange(int err, const char *detail, const csc1_https_response *resp,
                             void *arg) {
  gw_idm *idm = arg;
  char why[512];
  char *nonce = idm->pending_nonce;
  idm->pending_nonce = NULL;
  idm->login_req = NULL;
  check_clock(idm, err, resp);
  if (err || resp->status != 200) {
    csc1_oidc_error oe = {0};
    if (!err)
      csc1_oidc_error_parse(resp->body, resp->body_len, &oe);
    describe(err, detail, resp, &oe, why, sizeof why);
    login_failed(idm, OP_CODE, 502, why);
  } else {
    login_tokens(idm, OP_CODE, resp, nonce);
  }
  wipe_str(&nonce);
}

void gw_idm_callback(gw_idm *idm, const char *query, gw_idm_done_cb cb, void *arg) {
  csc1_authz_callback c = {0};
  csc1_authz_callback_parse(query, &c);
  pending_login *p = c.state && !c.dup ? find_pending(idm, c.state) : NULL;
  if (c.dup)
    refuse_callback("a parameter occurs more than once", cb, arg);
  else if (!p)
    refuse_callback("unknown, used or expired state", cb, arg);
  else if (c.iss && strcmp(c.iss, idm->issuer) != 0)
    refuse_callback("the iss parameter is not the configured issuer (RFC 9207)", cb, arg);
  else if (c.error)
    idms_error(idm, &c, cb, arg);
  else if (!c.code || !*c.code)
    refuse_callback("no code in the response", cb, arg);
  else if (idm->login_req || idm->done_cb)
    cb(409, "Another login is being completed; try again in a moment.\n", arg);
  else {
    idm->done_cb = cb;
    idm->done_arg = arg;
    exchange_code(idm, &c, p);
    p = NULL;
  }
  if (p) { /* single use, even when refused after the state matched */
    OPENSSL_cleanse(p, sizeof *p);
    p->used = false;
  }
  csc1_authz_callback_free(&c);
}

/* ---- device login --------------------------------------------------------- */

json_t *gw_idm_device_status(const gw_idm *idm) {
  json_t *o = json_pack("{s:s}", "status", dev_status_names[idm->dev]);
  if (!o)
    return NULL;
  const csc1_oidc_device_auth *d = &idm->dev_auth;
  if (idm->dev == DEV_PENDING) {
    uint64_t now = uv_now(idm->loop);
    json_object_set_new(o, "verification_uri", json_string(d->verification_uri));
    if (d->verification_uri_complete)
      json_object_set_new(o, "verification_uri_complete",
                          json_string(d->verification_uri_complete));
    if (d->user_code)
      json_object_set_new(o, "user_code", json_string(d->user_code));
    json_object_set_new(o, "expires_in_s",
                        json_integer(idm->dev_deadline_ms > now
                                         ? (json_int_t)((idm->dev_deadline_ms - now) / 1000)
                                         : 0));
    json_object_set_new(o, "interval_s", json_integer((json_int_t)(idm->dev_interval_ms / 1000)));
  }
  if (idm->dev_error[0])
    json_object_set_new(o, "error", json_string(idm->dev_error));
  if (idm->dev == DEV_AUTHORIZED && idm->principal.sub) {
    json_object_set_new(o, "subject", json_string(idm->principal.sub));
    json_t *ids = json_object();
    if (idm->principal.mcptt_id)
      json_object_set_new(ids, "mcptt_id", json_string(idm->principal.mcptt_id));
    if (idm->principal.mcdata_id)
      json_object_set_new(ids, "mcdata_id", json_string(idm->principal.mcdata_id));
    if (idm->principal.mcvideo_id)
      json_object_set_new(ids, "mcvideo_id", json_string(idm->principal.mcvideo_id));
    json_object_set_new(o, "mc_service_ids", ids);
  }
  return o;
}

static void answer_device(gw_idm *idm, int status) {
  gw_idm_json_cb cb = idm->dev_cb;
  idm->dev_cb = NULL;
  if (cb)
    cb(status, gw_idm_device_status(idm), idm->dev_arg);
}

static void device_poll(gw_idm *idm);

static void on_device_timer(uv_timer_t *t) { device_poll(t->data); }

static void next_poll(gw_idm *idm) {
  uv_timer_start(&idm->device_timer, on_device_timer, idm->dev_interval_ms, 0);
}

static void on_device_token(int err, const char *detail, const csc1_https_response *resp,
                            void *arg) {
  gw_idm *idm = arg;
  char why[512];
  csc1_oidc_error oe = {0};
  idm->login_req = NULL;
  check_clock(idm, err, resp);
  if (idm->dev != DEV_PENDING)
    return;
  if (!err && resp->status == 200) {
    login_tokens(idm, OP_DEVICE, resp, NULL);
    return;
  }
  if (!err)
    csc1_oidc_error_parse(resp->body, resp->body_len, &oe);
  describe(err, detail, resp, &oe, why, sizeof why);
  if (strcmp(oe.error, "authorization_pending") == 0) {
    next_poll(idm);
  } else if (strcmp(oe.error, "slow_down") == 0) {
    idm->dev_interval_ms += IDM_SLOW_DOWN_MS;
    gw_log(TN_LOG_INFO, "idm_device_slow_down", TN_U("interval_ms", idm->dev_interval_ms),
           TN_LOG_END);
    next_poll(idm);
  } else if (strcmp(oe.error, "access_denied") == 0) {
    finish_device(idm, DEV_DENIED, why);
  } else if (strcmp(oe.error, "expired_token") == 0) {
    finish_device(idm, DEV_EXPIRED, why);
  } else if (err || resp->status >= 500 || resp->status == 429) {
    gw_log(TN_LOG_WARN, "idm_device_poll_failed", TN_S("error", why), TN_LOG_END);
    next_poll(idm); /* transient: the deadline still applies */
  } else {
    login_failed(idm, OP_DEVICE, 502, why);
  }
  settle_state(idm);
}

static void device_poll(gw_idm *idm) {
  csc1_form form = {0};
  if (idm->dev != DEV_PENDING || idm->login_req)
    return;
  if (uv_now(idm->loop) >= idm->dev_deadline_ms) {
    finish_device(idm, DEV_EXPIRED, "the user code expired before the login was completed");
    settle_state(idm);
    return;
  }
  csc1_form_add(&form, "grant_type", "urn:ietf:params:oauth:grant-type:device_code");
  csc1_form_add(&form, "device_code", idm->dev_auth.device_code);
  if (token_post(idm, &form, on_device_token, &idm->login_req) != 0)
    next_poll(idm);
}

static void on_device_auth(int err, const char *detail, const csc1_https_response *resp,
                           void *arg) {
  gw_idm *idm = arg;
  char why[512];
  csc1_oidc_error oe = {0};
  idm->login_req = NULL;
  check_clock(idm, err, resp);
  csc1_oidc_device_auth_free(&idm->dev_auth);
  if (err || resp->status != 200) {
    if (!err)
      csc1_oidc_error_parse(resp->body, resp->body_len, &oe);
    describe(err, detail, resp, &oe, why, sizeof why);
    login_failed(idm, OP_DEVICE, 502, why);
    answer_device(idm, 502);
    return;
  }
  if (csc1_oidc_device_auth_parse(resp->body, resp->body_len, &idm->dev_auth, why, sizeof why)) {
    login_failed(idm, OP_DEVICE, 502, why);
    answer_device(idm, 502);
    return;
  }
  idm->dev = DEV_PENDING;
  idm->dev_error[0] = '\0';
  idm->dev_interval_ms = (uint64_t)idm->dev_auth.interval * 1000;
  idm->dev_deadline_ms = uv_now(idm->loop) + (uint64_t)idm->dev_auth.expires_in * 1000;
  gw_log(TN_LOG_INFO, "idm_login_started", TN_S("via", "device"),
         TN_S("verification_uri", idm->dev_auth.verification_uri),
         TN_I("expires_in_s", idm->dev_auth.expires_in), TN_I("interval_s", idm->dev_auth.interval),
         TN_LOG_END);
  next_poll(idm);
  settle_state(idm);
  answer_device(idm, 200);
}

void gw_idm_device_start(gw_idm *idm, gw_idm_json_cb cb, void *arg) {
  csc1_form form = {0};
  char why[600];
  if (idm->login != GW_IDM_LOGIN_DEVICE) {
    json_t *doc = json_pack("{s:s, s:s}", "status", "error", "error",
                            "login = browser: open GET /login on the admin listener");
    cb(409, doc, arg);
    return;
  }
  if (!idm->discovered) {
    snprintf(why, sizeof why, "the IdMS has not been reached yet: %s",
             idm->last_error[0] ? idm->last_error : "discovery pending");
    cb(503, json_pack("{s:s, s:s}", "status", "error", "error", why), arg);
    return;
  }
  if (idm->dev == DEV_PENDING) {
    cb(200, gw_idm_device_status(idm), arg);
    return;
  }
  if (idm->dev_cb || idm->login_req) {
    cb(409, json_pack("{s:s, s:s}", "status", "error", "error", "a login is already being started"),
       arg);
    return;
  }
  csc1_form_add(&form, "scope", idm->scope);
  if (idm->acr_values && *idm->acr_values)
    csc1_form_add(&form, "acr_values", idm->acr_values);
  char *authz = NULL;
  const char *url = idm->ep.device_authorization;
  int err = csc1_client_auth_apply(&idm->auth, endpoint_token(idm), now_unix(), &form, &authz);
  if (err == 0)
    err = http(idm, "POST", url, &form, authz, on_device_auth, &idm->login_req);
  wipe_str(&authz);
  csc1_form_free(&form);
  if (err) {
    json_t *doc = json_pack("{s:s, s:s}", "status", "error", "error",
                            "cannot reach the device authorization endpoint");
    cb(502, doc, arg);
    return;
  }
  idm->dev = DEV_STARTING;
  idm->dev_error[0] = '\0';
  idm->dev_cb = cb;
  idm->dev_arg = arg;
  settle_state(idm);
}

/* ---- logout (RFC 7009 revocation) ---------------------------------------- */

/* {"state", "revoked", "error", "end_session_endpoint"}: the outcome of a
 * logout, for the operator. */
static json_t *logout_doc(const gw_idm *idm, bool revoked, const char *error) {
  return json_pack("{s:s, s:b, s:o, s:o}", "state", gw_idm_state_name(idm->state), "revoked",
                   revoked, "error", error ? json_string(error) : json_null(),
                   "end_session_endpoint",
                   idm->ep.end_session ? json_string(idm->ep.end_session) : json_null());
}

static void finish_logout(gw_idm *idm, int status, const char *error) {
  gw_idm_json_cb cb = idm->logout_cb;
  idm->logout_cb = NULL;
  if (error)
    idm->logout_not_revoked++;
  else if (status == 200)
    idm->logout_revoked++;
  else
    idm->logout_nothing_held++;
  if (error) {
    set_error(idm,
              "logout: the refresh token was not revoked at the IdMS (%s); it was dropped "
              "here all the same",
              error);
    gw_log(TN_LOG_ERROR, "idm_logout", TN_S("revoked", "no"), TN_S("error", error),
           TN_S("action", "logged out locally; revoke the login at the IdMS if it matters"),
           TN_LOG_END);
  } else {
    gw_log(TN_LOG_INFO, "idm_logout", TN_S("revoked", status == 200 ? "yes" : "nothing to revoke"),
           TN_LOG_END);
  }
  if (cb)
    cb(error ? status : 200, logout_doc(idm, !error && status == 200, error), idm->logout_arg);
}

static void on_revoked(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  gw_idm *idm = arg;
  char why[512];
  csc1_oidc_error oe = {0};
  idm->logout_req = NULL;
  check_clock(idm, err, resp);
  if (!err && resp->status == 200) { /* RFC 7009 2.2: revoked, or already invalid */
    finish_logout(idm, 200, NULL);
    return;
  }
  if (!err)
    csc1_oidc_error_parse(resp->body, resp->body_len, &oe);
  describe(err, detail, resp, &oe, why, sizeof why);
  finish_logout(idm, 502, why);
}

/* Starts an RFC 7009 revocation of refresh_token (taken: wiped here, once
 * the request is built) with the client's authentication. 0, or -1 with
 * *why (cb is then never called). */
static int post_revocation(gw_idm *idm, char *refresh_token, csc1_https_cb cb,
                           csc1_https_req **slot, const char **why) {
  const char *url = idm->discovered ? idm->ep.revocation : idm->ov_revocation;
  if (!url) {
    wipe_str(&refresh_token);
    *why = idm->discovered ? "the IdMS offers no revocation_endpoint ([idm] revocation_endpoint)"
                           : "the IdMS has not been reached yet (no discovery)";
    return -1;
  }
  csc1_form form = {0};
  csc1_form_add(&form, "token", refresh_token);
  csc1_form_add(&form, "token_type_hint", "refresh_token");
  wipe_str(&refresh_token);
  char *authz = NULL;
  const char *aud = endpoint_token(idm) ? endpoint_token(idm) : url;
  int err = csc1_client_auth_apply(&idm->auth, aud, now_unix(), &form, &authz);
  if (err == 0)
    err = http(idm, "POST", url, &form, authz, cb, slot);
  wipe_str(&authz);
  csc1_form_free(&form);
  *why = "cannot start the revocation request";
  return err ? -1 : 0;
}

/* The logout's revocation. */
static void revoke_token(gw_idm *idm, char *refresh_token) {
  const char *why = NULL;
  if (post_revocation(idm, refresh_token, on_revoked, &idm->logout_req, &why) != 0)
    finish_logout(idm, 502, why);
}

static void on_discarded(int err, const char *detail, const csc1_https_response *resp, void *arg) {
  gw_idm *idm = arg;
  char why[512] = "";
  idm->discard_req = NULL;
  check_clock(idm, err, resp);
  bool ok = !err && resp->status == 200;
  if (!ok)
    describe(err, detail, resp, NULL, why, sizeof why);
  gw_log(ok ? TN_LOG_INFO : TN_LOG_WARN, "idm_refused_login_revoked",
         TN_S("revoked", ok ? "yes" : "no"), TN_S("error", why), TN_LOG_END);
}

/* A login refused for MC service: its refresh token is revoked, not just
 * dropped (best effort, one at a time; the outcome is only logged). */
static void discard_refresh_token(gw_idm *idm, char *refresh_token) {
  const char *why = NULL;
  if (!refresh_token)
    return;
  if (idm->discard_req) {
    wipe_str(&refresh_token);
    why = "another refused login's revocation is in flight";
  } else if (post_revocation(idm, refresh_token, on_discarded, &idm->discard_req, &why) == 0) {
    return;
  }
  gw_log(TN_LOG_WARN, "idm_refused_login_revoked", TN_S("revoked", "no"), TN_S("error", why),
         TN_LOG_END);
}

/* Ends everything in progress that would log the gateway in again. */
static void drop_logins_in_progress(gw_idm *idm) {
  csc1_https_cancel(idm->login_req);
  idm->login_req = NULL;
  cancel_refresh(idm);
  for (int op = 0; op < 3; op++) {
    if (idm->parked[op])
      job_free(idm->parked[op]);
    idm->parked[op] = NULL;
  }
  finish_browser(idm, 409, "The gateway was logged out meanwhile; start a new login.\n");
  OPENSSL_cleanse(idm->pending, sizeof idm->pending);
  wipe_str(&idm->pending_nonce);
  if (idm->dev == DEV_STARTING || idm->dev == DEV_PENDING)
    finish_device(idm, DEV_ERROR, "logged out");
  if (idm->dev_cb) {
    gw_idm_json_cb cb = idm->dev_cb;
    idm->dev_cb = NULL;
    cb(409, gw_idm_device_status(idm), idm->dev_arg);
  }
  idm->dev = DEV_NONE;
  idm->dev_error[0] = '\0';
}

void gw_idm_logout(gw_idm *idm, gw_idm_json_cb cb, void *arg) {
  char err[512];
  if (idm->logout_cb) {
    cb(409, json_pack("{s:s}", "error", "a logout is already waiting for the IdMS"), arg);
    return;
  }
  drop_logins_in_progress(idm);
  char *refresh_token = idm->refresh_token;
  idm->refresh_token = NULL;
  wipe_str(&idm->access_token);
  uv_timer_stop(&idm->expiry_timer);
  idm->refresh_attempt = 0;
  idm->refused = false;
  csc1_id_token_free(&idm->principal);
  free(idm->granted_scope);
  idm->granted_scope = NULL;
  idm->last_error[0] = '\0';
  if (csc1_token_store_remove(idm->state_dir, err, sizeof err) != CSC1_TS_OK) {
    set_error(idm, "logout: %s", err);
    gw_log(TN_LOG_ERROR, "idm_state_remove_failed", TN_S("error", err), TN_LOG_END);
  }
  set_authorized(idm, false, "logged out");
  settle_state(idm);
  idm->logout_cb = cb;
  idm->logout_arg = arg;
  if (!refresh_token) {
    finish_logout(idm, 204, NULL);
    return;
  }
  revoke_token(idm, refresh_token);
}

void gw_idm_set_attempt_delay(gw_idm *idm, uint64_t ms) {
  csc1_https_ctx_set_attempt_delay(idm->https, ms);
}

void gw_idm_set_refresh_before(gw_idm *idm, uint64_t ms) {
  idm->refresh_before_ms = ms;
  int64_t left = (int64_t)(idm->access_expiry_ms - uv_now(idm->loop)) / 1000;
  if (!has_access(idm) || idm->refresh_req || idm->refresh_attempt || !idm->refresh_token)
    return;
  uint64_t delay = refresh_delay_ms(idm, left);
  schedule_step(idm, delay);
  gw_log(TN_LOG_INFO, "idm_refresh_scheduled", TN_U("refresh_before_ms", ms), TN_U("in_ms", delay),
         TN_LOG_END);
}

/* ---- life cycle ----------------------------------------------------------- */

void gw_idm_view_get(const gw_idm *idm, gw_idm_view *out) {
  memset(out, 0, sizeof *out);
  out->state = idm->state;
  out->subject = idm->principal.sub;
  out->mcptt_id = idm->principal.mcptt_id;
  out->mcdata_id = idm->principal.mcdata_id;
  out->mcvideo_id = idm->principal.mcvideo_id;
  out->access_token_expiry =
      has_access(idm) ? now_unix() + (int64_t)((idm->access_expiry_ms - uv_now(idm->loop)) / 1000)
                      : 0;
  out->refresh_ok = idm->refresh_ok;
  out->refresh_failed = idm->refresh_failed;
  out->refresh_invalid_grant = idm->refresh_invalid_grant;
  out->refresh_id_token_invalid = idm->refresh_id_token_invalid;
  out->refresh_not_for_mc_service = idm->refresh_not_for_mc_service;
  out->logout_revoked = idm->logout_revoked;
  out->logout_not_revoked = idm->logout_not_revoked;
  out->logout_nothing_held = idm->logout_nothing_held;
  out->last_error = idm->last_error[0] ? idm->last_error : NULL;
  out->clock_skew_known = idm->skew.known;
  out->clock_skew_ms = idm->skew.last.skew_ms;
  out->clock_skew_uncertainty_ms = idm->skew.last.uncertainty_ms;
  out->clock_skew_measured_at = idm->skew_at;
  out->clock_skew_large = idm->skew.large;
  out->clock_skew_threshold_s = IDM_LEEWAY_S;
  out->end_session_endpoint = idm->ep.end_session;
  out->granted_scope = has_access(idm) ? idm->granted_scope : NULL;
  out->required_scope = idm->required_scope;
}

/* The default required_scope: the 3gpp:mc:* values of scope (malloc'd). */
static char *mc_scopes(const char *scope) {
  char *out = scope ? calloc(1, strlen(scope) + 1) : NULL;
  size_t len = 0;
  for (const char *p = scope; out && *p;) {
    size_t n = strcspn(p, " ");
    if (n > 8 && strncmp(p, "3gpp:mc:", 8) == 0) {
      len += (size_t)sprintf(out + len, "%s%.*s", len ? " " : "", (int)n, p);
    }
    p += n;
    p += strspn(p, " ");
  }
  return out;
}

static int copy_config(gw_idm *idm, const gw_idm_opts *o) {
  const gw_idm_config *c = o->cfg;
  idm->issuer = dup_or_null(c->issuer);
  idm->redirect_uri = dup_or_null(o->redirect_uri);
  idm->scope = dup_or_null(c->scope ? c->scope : "openid");
  idm->acr_values = dup_or_null(c->acr_values);
  idm->state_dir = dup_or_null(o->state_dir);
  idm->ov_authz = dup_or_null(c->authorization_endpoint);
  idm->ov_token = dup_or_null(c->token_endpoint);
  idm->ov_jwks = dup_or_null(c->jwks_uri);
  idm->ov_device = dup_or_null(c->device_authorization_endpoint);
  idm->ov_revocation = dup_or_null(c->revocation_endpoint);
  idm->required_scope = c->required_scope ? strdup(c->required_scope) : mc_scopes(idm->scope);
  idm->login = c->login;
  idm->refresh_before_ms = c->refresh_before_ms;
  return idm->issuer && idm->redirect_uri && idm->scope && idm->state_dir && idm->required_scope
             ? 0
             : -1;
}

static void idm_free(gw_idm *idm) {
  free(idm->issuer);
  free(idm->redirect_uri);
  free(idm->scope);
  free(idm->acr_values);
  free(idm->state_dir);
  free(idm->ov_authz);
  free(idm->ov_token);
  free(idm->ov_jwks);
  free(idm->ov_device);
  free(idm->ov_revocation);
  free(idm->required_scope);
  free(idm->granted_scope);
  csc1_client_auth_free(&idm->auth);
  csc1_https_ctx_free(idm->https);
  csc1_oidc_endpoints_free(&idm->ep);
  csc1_jwks_free(idm->jwks);
  wipe_str(&idm->access_token);
  wipe_str(&idm->refresh_token);
  wipe_str(&idm->pending_nonce);
  csc1_id_token_free(&idm->principal);
  csc1_oidc_device_auth_free(&idm->dev_auth);
  OPENSSL_cleanse(idm->pending, sizeof idm->pending);
  free(idm);
}

static void on_timer_closed(uv_handle_t *h) {
  gw_idm *idm = h->data;
  if (--idm->handles == 0)
    idm_free(idm);
}

static void init_timer(gw_idm *idm, uv_timer_t *t) {
  uv_timer_init(idm->loop, t);
  t->data = idm;
  idm->handles++;
}

/* The https client's socket hook: the [idm] egress's options. */
static int apply_egress(void *arg, int fd, int family) {
  const tn_egress *eg = arg;
  return tn_egress_up(eg) ? tn_egress_apply(fd, eg, family) : UV_ENETDOWN;
}

int gw_idm_start(uv_loop_t *loop, const gw_idm_opts *o, gw_idm **out, char *err, size_t errlen) {
  gw_idm *idm = calloc(1, sizeof *idm);
  if (!idm || copy_config(idm, o) != 0) {
    snprintf(err, errlen, "out of memory");
    if (idm)
      idm_free(idm);
    return -1;
  }
  idm->loop = loop;
  csc1_clock_skew_init(&idm->skew, IDM_LEEWAY_S);
  idm->on_authorized = o->on_authorized;
  idm->cb_arg = o->arg;
  const gw_idm_config *c = o->cfg;
  const csc1_client_auth_opts auth = {.method = c->client_auth,
                                      .client_id = c->client_id,
                                      .client_secret_file = c->client_secret_file,
                                      .client_key = c->client_key};
  if (csc1_token_store_prepare(idm->state_dir, err, errlen) != CSC1_TS_OK ||
      csc1_client_auth_init(&idm->auth, &auth, err, errlen) != 0 ||
      !(idm->https = csc1_https_ctx_new(c->ca_file, c->tls_cert, c->tls_key, err, errlen))) {
    idm_free(idm);
    return -1;
  }
  if (o->resolver)
    csc1_https_ctx_set_resolver(idm->https, o->resolver);
  csc1_https_ctx_set_attempt_delay(idm->https, o->attempt_delay_ms);
  if (o->egress) {
    idm->egress = *o->egress;
    csc1_https_ctx_set_socket_setup(idm->https, apply_egress, &idm->egress);
  }
  init_timer(idm, &idm->timer);
  init_timer(idm, &idm->expiry_timer);
  init_timer(idm, &idm->device_timer);
  init_timer(idm, &idm->jwks_timer);
  *out = idm;
  if (!o->deferred)
    gw_idm_begin(idm);
  return 0;
}

void gw_idm_begin(gw_idm *idm) {
  load_login(idm);
  gw_log(TN_LOG_INFO, "idm_starting", TN_S("issuer", idm->issuer),
         TN_S("client_id", idm->auth.client_id),
         TN_S("login", idm->login == GW_IDM_LOGIN_DEVICE ? "device" : "browser"),
         TN_S("stored_login", idm->refresh_token ? "yes" : "no"),
         TN_S("required_scope", idm->required_scope), TN_LOG_END);
  start_discovery(idm);
  settle_state(idm);
}

void gw_idm_close(gw_idm *idm) {
  if (!idm || idm->closing)
    return;
  idm->closing = true;
  csc1_https_req **reqs[] = {&idm->discovery_req, &idm->jwks_req,   &idm->refresh_req,
                             &idm->login_req,     &idm->logout_req, &idm->discard_req};
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    csc1_https_cancel(*reqs[i]);
    *reqs[i] = NULL;
  }
  for (int op = 0; op < 3; op++) {
    if (idm->parked[op])
      job_free(idm->parked[op]);
    idm->parked[op] = NULL;
  }
  finish_browser(idm, 503, "The gateway is shutting down.\n");
  if (idm->dev_cb) {
    gw_idm_json_cb cb = idm->dev_cb;
    idm->dev_cb = NULL;
    cb(503, json_pack("{s:s, s:s}", "status", "error", "error", "shutting down"), idm->dev_arg);
  }
  if (idm->logout_cb) /* logged out locally; the revocation's outcome is unknown */
    finish_logout(idm, 503, "shutting down before the IdMS answered the revocation");
  uv_close((uv_handle_t *)&idm->timer, on_timer_closed);
  uv_close((uv_handle_t *)&idm->expiry_timer, on_timer_closed);
  uv_close((uv_handle_t *)&idm->device_timer, on_timer_closed);
  uv_close((uv_handle_t *)&idm->jwks_timer, on_timer_closed);
}
