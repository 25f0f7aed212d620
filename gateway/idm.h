/* The gateway's own identity management over CSC-1 (TS 33.180 5.1.2.1 and
 * Annex B): the MC gateway UE logs its MC user in to the IdMS with OpenID
 * Connect, keeps that login alive (refresh before expiry, across restarts)
 * and knows its MC service IDs, and logs out (RFC 7009 revocation). It is
 * authorized only while it holds a valid access token for MC service (the
 * required scopes granted, an MC service ID in the ID token); otherwise
 * on_authorized(false) tells the relay engine to close the
 * allow_when_authorized gate.
 *
 * States (gw_idm_view.state):
 *   unauthorized --/login + /callback, or device flow--> authorizing
 *   authorizing  --token response, ID token valid-->     authorized
 *   authorized   --refresh_before ahead of expiry-->     refreshing
 *   refreshing   --new tokens--> authorized; --invalid_grant--> unauthorized
 *   refreshing   --network error / 5xx--> retried with backoff; once the
 *                  access token has expired meanwhile--> error
 *   authorizing, refreshing --tokens not for MC service--> error (until the
 *                  next login; a refresh so refused ends the login)
 *   any          --gw_idm_logout--> unauthorized
 * A stored refresh token at start-up goes straight to authorizing.
 *
 * Tokens, codes, verifiers and secrets are never logged, never in the view. */
#ifndef GW_IDM_H
#define GW_IDM_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "gateway/config.h"
#include "csc1/https_client.h"
#include "gateway/idm_view.h"

typedef struct gw_idm gw_idm;

/* Called whenever the gateway starts or stops holding a valid access token. */
typedef void (*gw_idm_authorized_cb)(bool authorized, void *arg);

typedef struct gw_idm_opts {
  const gw_idm_config *cfg; /* copied */
  const char *state_dir;    /* copied */
  const char *redirect_uri; /* the effective redirect URI; copied */
  gw_idm_authorized_cb on_authorized;
  void *arg;
  bool deferred; /* prepare only: gw_idm_begin reads the stored login and starts */
  const csc1_https_resolver *resolver; /* name lookups of the IdMS (copied); NULL: getaddrinfo */
  const tn_egress *egress;             /* [idm] egress (copied); NULL: none */
  uint64_t attempt_delay_ms; /* Happy Eyeballs to the IdMS ([tunnel] attempt_delay); 0: 250 ms */
} gw_idm_opts;

/* Prepares state_dir, loads the client secret or key and the trust anchors,
 * reads a stored login, and starts discovery (then a refresh if a login was
 * stored). Returns 0 and *out, or -1 with err filled (nothing left open). */
int gw_idm_start(uv_loop_t *loop, const gw_idm_opts *o, gw_idm **out, char *err, size_t errlen);

/* Reads the stored login and starts discovery, for an instance started
 * with opts.deferred (a reload prepares the new instance before the old one
 * logs out). */
void gw_idm_begin(gw_idm *idm);

/* refresh_before, applied in place: the next refresh is rescheduled. */
void gw_idm_set_refresh_before(gw_idm *idm, uint64_t ms);

/* [tunnel] attempt_delay, applied in place to the IdMS requests started
 * from now on (the client's Happy Eyeballs race, csc1_https_ctx_set_attempt_delay). */
void gw_idm_set_attempt_delay(gw_idm *idm, uint64_t ms);

/* Cancels what is in flight, answers waiting admin requests with 503, closes
 * timers; freed once they have closed. */
void gw_idm_close(gw_idm *idm);

/* A snapshot of the login's state for /status, /metrics and the page; *out
 * owns nothing (its strings point into idm and live until its next change
 * on the loop thread). */
void gw_idm_view_get(const gw_idm *idm, gw_idm_view *out);

/* ---- browser login (Annex B native-app flow) ---- */

/* A new authorization request: a fresh single-use state (5-minute TTL),
 * nonce and PKCE verifier (csc1_authz_url). Returns the authorization URL
 * (malloc'd, the caller frees) or NULL with the reason in err (discovery not
 * done yet, login = device, no randomness, no memory). */
char *gw_idm_login_url(gw_idm *idm, char *err, size_t errlen);

/* status: HTTP status for the operator's page; message: plain text. */
typedef void (*gw_idm_done_cb)(int status, const char *message, void *arg);

/* Handles the redirect back from the IdMS (the query string of /callback).
 * A wrong or unknown state answers 400 at once and changes nothing; an
 * error= response is reported; otherwise the code is exchanged and cb runs
 * when that is done. cb is called exactly once (503 on shutdown). */
void gw_idm_callback(gw_idm *idm, const char *query, gw_idm_done_cb cb, void *arg);

/* ---- device login (RFC 8628) ---- */

/* cb(status, doc): doc is the device login status (see gw_idm_device_status). */
typedef void (*gw_idm_json_cb)(int status, json_t *doc, void *arg);

/* Starts a device authorization (or returns the one in progress). cb runs
 * once the IdMS has answered; exactly once (503 on shutdown). */
void gw_idm_device_start(gw_idm *idm, gw_idm_json_cb cb, void *arg);

/* ---- logout (RFC 7009) ---- */

/* Logs the gateway out. At once and whatever the IdMS says: logins in
 * progress are abandoned, the access token dropped, idm-login.json
 * removed (unlink, fsync of the directory), the state becomes unauthorized
 * (on_authorized(false)). Then the refresh token, if any, is revoked at the
 * revocation endpoint (discovery or [idm] revocation_endpoint) with the
 * client's authentication; it is never kept to retry. cb runs exactly once:
 * 200 {"state", "revoked", "error": null, "end_session_endpoint"} when
 * revoked or nothing was held; 502 with "error" (also in last_error and the
 * log) when the revocation failed; 409 when a logout is already waiting for
 * the IdMS; 503 on shutdown. */
void gw_idm_logout(gw_idm *idm, gw_idm_json_cb cb, void *arg);

/* {"status": "none|starting|pending|authorized|expired|denied|error",
 *  "verification_uri", "verification_uri_complete", "user_code",
 *  "expires_in_s", "interval_s", "error", "subject", "mc_service_ids"}
 * The user code is shown to the operator, who types it at the IdMS; the
 * device code never leaves the gateway. */
json_t *gw_idm_device_status(const gw_idm *idm);

#endif
