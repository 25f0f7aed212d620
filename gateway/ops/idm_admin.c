/* Identity management admin routes. See idm_admin.h. */
#include "gateway/ops/idm_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The callback URL carries a code: keep it out of Referer headers. */
#define NO_REFERRER "Referrer-Policy: no-referrer\r\n"

/* The routes hold the daemon's slot, not the instance: a reload may replace
 * the instance or remove [idm] (then they answer 404, as without routes). */
static gw_idm *current(gw_admin_req *req, void *slot) {
  gw_idm *idm = *(gw_idm **)slot;
  if (!idm)
    gw_admin_respond_text(req, 404, "not found: this gateway has no [idm] section\n");
  return idm;
}

/* GET /login from a page of another site (an image, a link, a form that a
 * browser says is cross-site) is refused: another site must not start a
 * login that the operator's IdMS session could complete unasked. */
static void handle_login(gw_admin_req *req, void *arg) {
  char why[200];
  if (gw_admin_req_from_another_site(req)) {
    gw_admin_respond_text(req, 403,
                          "Refused: a page of another site asked for /login. Open /login "
                          "directly (or from the status page). Nothing was started.\n");
    return;
  }
  gw_idm *idm = current(req, arg);
  if (!idm)
    return;
  char *url = gw_idm_login_url(idm, why, sizeof why);
  if (!url) {
    char msg[300];
    snprintf(msg, sizeof msg, "Cannot start a login: %s\n", why);
    gw_admin_respond_text(req, 409, msg);
    return;
  }
  size_t n = strlen(url) + 32;
  char *hdr = malloc(n + sizeof NO_REFERRER);
  if (!hdr) {
    free(url);
    gw_admin_respond_text(req, 500, "out of memory\n");
    return;
  }
  snprintf(hdr, n + sizeof NO_REFERRER, "Location: %s\r\n" NO_REFERRER, url);
  const char *body = "Redirecting to the IdMS login.\n";
  gw_admin_respond(req, 302, "text/plain; charset=utf-8", hdr, body, strlen(body));
  free(hdr);
  free(url);
}

static void callback_done(int status, const char *message, void *arg) {
  gw_admin_respond(arg, status, "text/plain; charset=utf-8", NO_REFERRER, message, strlen(message));
}

static void handle_callback(gw_admin_req *req, void *arg) {
  gw_idm *idm = current(req, arg);
  if (idm)
    gw_idm_callback(idm, gw_admin_req_query(req), callback_done, req);
}

static void json_done(int status, json_t *doc, void *arg) {
  gw_admin_respond_json(arg, status, doc);
}

static const char not_json[] = "needs Content-Type: application/json (a body of {} is enough); "
                               "nothing was changed\n";

/* POST /login/device: JSON only, like POST /logout (CSRF). */
static void handle_device_start(gw_admin_req *req, void *arg) {
  if (!gw_admin_req_is_json(req)) {
    gw_admin_respond_text(req, 415, not_json);
    return;
  }
  gw_idm *idm = current(req, arg);
  if (idm)
    gw_idm_device_start(idm, json_done, req);
}

static void handle_device_status(gw_admin_req *req, void *arg) {
  gw_idm *idm = current(req, arg);
  if (idm)
    gw_admin_respond_json(req, 200, gw_idm_device_status(idm));
}

/* POST /logout: JSON only (CSRF: see gw_admin_req_is_json), any JSON body
 * ("{}" is enough; it is not read). */
static void handle_logout(gw_admin_req *req, void *arg) {
  if (!gw_admin_req_is_json(req)) {
    gw_admin_respond_text(req, 415, not_json);
    return;
  }
  gw_idm *idm = current(req, arg);
  if (idm)
    gw_idm_logout(idm, json_done, req);
}

int gw_idm_admin_register(gw_admin *a, gw_idm **slot) {
  void *idm = slot;
  int err = gw_admin_route(a, "GET", "/login", handle_login, idm);
  if (!err)
    /* The IdMS redirects the operator's browser here, which cannot add the
     * admin token; the callback is bound to a login this gateway started
     * (/login, which needs the token) by its single-use random state and the
     * PKCE verifier only the gateway holds, so it is served without it. */
    err = gw_admin_route_public(a, "GET", "/callback", handle_callback, idm);
  if (!err)
    err = gw_admin_route(a, "POST", "/login/device", handle_device_start, idm);
  if (!err)
    err = gw_admin_route(a, "GET", "/login/device", handle_device_status, idm);
  if (!err)
    err = gw_admin_route(a, "POST", "/logout", handle_logout, idm);
  return err;
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

/* {skew_s, uncertainty_s, measured_at, large, threshold_s}, or null before
 * the first IdMS response with a Date header. skew_s > 0: the gateway's
 * clock is ahead of the IdMS's. */
static json_t *clock_skew_json(const gw_idm_view *v) {
  if (!v->clock_skew_known)
    return json_null();
  return json_pack("{s:f, s:f, s:I, s:b, s:I}", "skew_s", (double)v->clock_skew_ms / 1000,
                   "uncertainty_s", (double)v->clock_skew_uncertainty_ms / 1000, "measured_at",
                   (json_int_t)v->clock_skew_measured_at, "large", v->clock_skew_large,
                   "threshold_s", (json_int_t)v->clock_skew_threshold_s);
}

json_t *gw_idm_status_json(const gw_idm_view *v) {
  json_t *ids = json_object();
  if (v->mcptt_id)
    json_object_set_new(ids, "mcptt_id", json_string(v->mcptt_id));
  if (v->mcdata_id)
    json_object_set_new(ids, "mcdata_id", json_string(v->mcdata_id));
  if (v->mcvideo_id)
    json_object_set_new(ids, "mcvideo_id", json_string(v->mcvideo_id));
  int64_t left = v->access_token_expiry ? v->access_token_expiry - (int64_t)time(NULL) : 0;
  json_t *o = json_pack(
      "{s:s, s:o, s:o, s:I, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I}}", "state",
      gw_idm_state_name(v->state), "subject", str_or_null(v->subject), "mc_service_ids", ids,
      "access_token_expires_in_s", (json_int_t)(left > 0 ? left : 0), "access_token_expires_at",
      (json_int_t)v->access_token_expiry, "last_error", str_or_null(v->last_error), "refreshes",
      "ok", (json_int_t)v->refresh_ok, "failed", (json_int_t)v->refresh_failed, "invalid_grant",
      (json_int_t)v->refresh_invalid_grant, "id_token_invalid",
      (json_int_t)v->refresh_id_token_invalid, "not_for_mc_service",
      (json_int_t)v->refresh_not_for_mc_service);
  if (o) {
    json_object_set_new(o, "clock_skew", clock_skew_json(v));
    json_object_set_new(o, "granted_scope", str_or_null(v->granted_scope));
    json_object_set_new(o, "required_scope", str_or_null(v->required_scope));
    json_object_set_new(o, "end_session_endpoint", str_or_null(v->end_session_endpoint));
  }
  return o;
}
