/* The daemon's configuration: an INI file parsed with inih.
 *
 * Every problem is collected, not just the first, each as "FILE:LINE: message"
 * so `mcgw check` can print them all. Unknown sections and keys are errors:
 * a typo in a security setting must never be silently ignored.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "csc1/client_auth.h"
#include "tunnel/engine.h"
#include "tunnel/log.h"

/* [idm]: the gateway's own CSC-1 login (TS 33.180 5.1.2.1, Annex B). */
typedef enum { GW_IDM_LOGIN_BROWSER = 0, GW_IDM_LOGIN_DEVICE } gw_idm_login;

typedef struct gw_idm_config {
  bool enabled;                 /* an [idm] section is present */
  char *issuer;                 /* exact; discovery at {issuer}/.well-known/... */
  char *authorization_endpoint; /* overrides of the discovery document, or NULL */
  char *token_endpoint;
  char *jwks_uri;
  char *device_authorization_endpoint;
  char *revocation_endpoint; /* RFC 7009; NULL: from discovery */
  char *client_id;
  csc1_auth_method client_auth; /* how the token endpoint authenticates us */
  char *client_secret_file;     /* mode 0600 or stricter (checked here) */
  char *client_key;             /* PEM private key for private_key_jwt */
  char *redirect_uri;           /* NULL: http://{admin listener}/callback */
  char *scope;                  /* default "openid" */
  char *required_scope;         /* NULL: the 3gpp:mc:* scopes of scope; "" none */
  uint16_t egress;              /* [idm] egress: tunnel.egress[egress - 1]; 0 = none */
  char *acr_values;             /* NULL or "": not sent */
  char *ca_file;                /* NULL: the system trust store */
  char *tls_cert, *tls_key;     /* mutual TLS to the IdMS, or NULL */
  uint64_t refresh_before_ms;   /* default 60 s */
  gw_idm_login login;           /* default browser */
} gw_idm_config;

typedef struct gw_config_errors {
  char **msgs; /* "FILE:LINE: message", or "FILE: message" when no line applies */
  size_t n;
  size_t cap;
} gw_config_errors;

/* Said by `mcgw check` and at start-up when there is no [idm] section. */
#define GW_NO_IDM_WARNING                                                                          \
  "no [idm]: this gateway performs no identity management of its own (TS 33.180 5.1.2.1: an "      \
  "MC gateway UE performs identity management before MC services; right only for a lab, or a "     \
  "relay in front of a separately authenticated gateway)"

typedef struct gw_config {
  char *path;               /* as given to gw_config_load */
  char *state_dir;          /* [gateway] state_dir, default /var/lib/mcgw */
  tn_log_level log_level;   /* [gateway] log_level, default info */
  tn_log_format log_format; /* [gateway] log_format, default text */
  bool admin_enabled;       /* [admin] listen present (default 127.0.0.1:9090) */
  struct sockaddr_storage admin_listen;
  char *admin_token_file;    /* [admin] admin_token_file, resolved against the config's
                                 directory; NULL when not set */
  char *admin_token;         /* its content (a bearer token), checked at load: the file is
                                 0600 and holds one token68 line. Wiped by gw_config_free */
  char *user;                /* [gateway] user: drop to it after binding when run as root */
  tn_engine_opts tunnel;     /* [tunnel] */
  bool allow_public_suffix;  /* [tunnel] allow_public_suffix: wildcard rules on public suffixes */
  gw_config_errors warnings; /* "FILE:LINE: warning: message": a valid file that opens more
                                 than it seems to; `mcgw check` prints them, the daemon logs
                                 them at every start and reload */
  gw_idm_config idm;         /* [idm] */
  tn_resolver_opts dns;      /* [dns]: servers as "ADDR:PORT,..." (c-ares's form) */
} gw_config;

/* Loads path into cfg (which it initialises with the defaults first).
 * Returns 0 when the file is valid; otherwise a negative code, with every
 * problem appended to errs. cfg must be released with gw_config_free in both
 * cases. */
int gw_config_load(const char *path, gw_config *cfg, gw_config_errors *errs);
/* The same, from an in-memory string; `name` stands for the file name in
 * messages. For tests and fuzzing. */
int gw_config_load_string(const char *name, const char *text, gw_config *cfg,
                          gw_config_errors *errs);
/* Frees what cfg owns (strings, the policy, the admin token, wiped) and
 * zeroes it; safe after a failed load. */
void gw_config_free(gw_config *cfg);
/* Frees the collected messages and zeroes *errs. */
void gw_config_errors_free(gw_config_errors *errs);

/* Parses a duration: an unsigned integer followed by ms, s, m or h ("500ms",
 * "10s", "5m", "1h"). A bare number is an error (the unit must be said).
 * Returns 0 and *out_ms, or -1 with *out_ms untouched. */
int gw_duration_parse(const char *s, uint64_t *out_ms);

/* Whether an admin listener on addr may run without a token: loopback only.
 * 0.0.0.0 and :: count as non-loopback (they listen everywhere). */
bool gw_config_admin_is_loopback(const struct sockaddr_storage *addr);

#endif
