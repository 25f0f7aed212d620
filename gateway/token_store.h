/* The gateway's own login on disk: the refresh token and what the ID token
 * said, in {state_dir}/idm-login.json, so that a restart needs no operator.
 *
 * The directory is 0700 and the file 0600. A save is atomic and durable:
 * temp file (O_EXCL, 0600), write, fsync, rename, fsync of the directory,
 * so a crash leaves either the old or the new file, never a torn one - a
 * rotated refresh token is on disk before it is ever used.
 *
 * A file that cannot be read or parsed is moved aside (never deleted) and
 * reported. Nothing here logs; error texts name files, never contents. */
#ifndef GW_TOKEN_STORE_H
#define GW_TOKEN_STORE_H

#include <stddef.h>

#define GW_TOKEN_STORE_FILE "idm-login.json"

typedef struct gw_stored_login {
  char *issuer;        /* the login is only reused for the same issuer */
  char *client_id;     /* and client */
  char *refresh_token; /* NULL: no usable login (e.g. after invalid_grant) */
  char *subject;       /* from the last valid ID token */
  char **aud;          /* sorted */
  size_t n_aud;
  char *mcptt_id, *mcdata_id, *mcvideo_id;
} gw_stored_login;

enum {
  GW_TS_OK = 0,
  GW_TS_NONE = 1,     /* no file: first start */
  GW_TS_CORRUPT = -1, /* unreadable or not ours: moved aside, see err */
  GW_TS_EIO = -2      /* cannot create, write or rename: see err */
};

/* Creates dir with mode 0700 if missing; tightens an existing directory of
 * ours to 0700. GW_TS_OK or GW_TS_EIO. */
int gw_token_store_prepare(const char *dir, char *err, size_t errlen);

/* Atomically replaces the stored login. GW_TS_OK or GW_TS_EIO. */
int gw_token_store_save(const char *dir, const gw_stored_login *l, char *err, size_t errlen);

/* Removes the stored login (logout): unlink, then fsync of the directory,
 * so that the removal survives a crash. No file is not an error.
 * GW_TS_OK or GW_TS_EIO. */
int gw_token_store_remove(const char *dir, char *err, size_t errlen);

/* Loads the stored login into *out (free with gw_stored_login_free).
 * GW_TS_OK, GW_TS_NONE, or GW_TS_CORRUPT after moving the file aside to
 * "idm-login.json.corrupt-<unix time>" (err names it). */
int gw_token_store_load(const char *dir, gw_stored_login *out, char *err, size_t errlen);

/* Parses a stored login document from a buffer. 0, or -1 when it is not a
 * valid document. For the loader and for fuzzing. */
int gw_token_store_parse(const char *buf, size_t len, gw_stored_login *out);

void gw_stored_login_free(gw_stored_login *l);

#endif
