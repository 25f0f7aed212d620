/* A read-only snapshot of the gateway's own CSC-1 login state, for the ops
 * surface (status, metrics, page, CLI). Filled by the identity management
 * module; the ops code never reaches into it otherwise. Never holds tokens. */
#ifndef GW_IDM_VIEW_H
#define GW_IDM_VIEW_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
  GW_IDM_UNCONFIGURED = 0, /* no [idm] section: a plain relay */
  GW_IDM_UNAUTHORIZED,     /* no valid login: limited service, a login is needed */
  GW_IDM_AUTHORIZING,      /* a login is in progress */
  GW_IDM_AUTHORIZED,       /* holds a valid access token */
  GW_IDM_REFRESHING,       /* holds a valid access token, refresh in flight */
  GW_IDM_ERROR             /* IdMS unreachable or misconfigured; retrying */
} gw_idm_state;

/* The state's name as /status and the metrics spell it; static, never NULL. */
static inline const char *gw_idm_state_name(gw_idm_state s) {
  static const char *const names[] = {"unconfigured", "unauthorized", "authorizing",
                                      "authorized",   "refreshing",   "error"};
  return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

typedef struct gw_idm_view {
  gw_idm_state state;
  const char *subject;  /* ID token sub, or NULL */
  const char *mcptt_id; /* MC service IDs from the ID token, or NULL */
  const char *mcdata_id;
  const char *mcvideo_id;
  int64_t access_token_expiry;         /* unix seconds; 0 when none */
  uint64_t refresh_ok;                 /* refreshes by result since start */
  uint64_t refresh_failed;             /* network errors, 5xx: retried with backoff */
  uint64_t refresh_invalid_grant;      /* the IdMS refused the refresh token: the login is gone */
  uint64_t refresh_id_token_invalid;   /* the refreshed ID token failed validation (expired by a
                                      * clock ahead, bad signature...): the login is ended */
  uint64_t refresh_not_for_mc_service; /* valid tokens, but without the MC service scope or ID
                                        * required: the login is ended */
  uint64_t logout_revoked;             /* logouts by result since start: refresh token revoked */
  uint64_t logout_not_revoked;         /* revocation failed (logged out locally all the same) */
  uint64_t logout_nothing_held;        /* no refresh token to revoke */
  const char *last_error;              /* human-readable, or NULL; never a token */
  /* The gateway's clock against the IdMS's, from the latest IdMS response
   * with a Date header (csc1/clock_skew.h). */
  bool clock_skew_known;             /* false until such a response */
  int64_t clock_skew_ms;             /* local - IdMS: > 0 the gateway is ahead */
  int64_t clock_skew_uncertainty_ms; /* round trip and Date's 1 s resolution */
  int64_t clock_skew_measured_at;    /* unix seconds (local clock) */
  bool clock_skew_large;             /* beyond the threshold: warned in the log */
  unsigned clock_skew_threshold_s;
  const char *end_session_endpoint; /* from discovery, or NULL: shown, never followed */
  const char *granted_scope;        /* of the login held, or NULL */
  const char *required_scope;       /* [idm] required_scope in force */
} gw_idm_view;

#endif
