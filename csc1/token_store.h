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
#ifndef CSC1_TOKEN_STORE_H
#define CSC1_TOKEN_STORE_H

#include <stddef.h>

#define CSC1_TOKEN_STORE_FILE "idm-login.json"

typedef struct csc1_stored_login {
  char *issuer;        /* the login is only reused for the same issuer */
  char *client_id;     /* and client */
  char *refresh_token; /* NULL: no usable login (e.g. after invalid_grant) */
  char *subject;       /* from the last valid ID token */
  char **aud;          /* sorted */
  size_t n_aud;
  char *mcptt_id, *mcdata_id, *mcvideo_id;
} csc1_stored_login;

enum {
  CSC1_TS_OK = 0,
  CSC1_TS_NONE = 1,     /* no file: first start */
  CSC1_TS_CORRUPT = -1, /* unreadable or not ours: moved aside, see err */
  CSC1_TS_EIO = -2      /* cannot create, write or rename: see err */
};

/* Creates dir with mode 0700 if missing; tightens an existing directory of
 * ours to 0700. CSC1_TS_OK or CSC1_TS_EIO. */
int csc1_token_store_prepare(const char *dir, char *err, size_t errlen);

/* Atomically replaces the stored login. CSC1_TS_OK or CSC1_TS_EIO. */
int csc1_token_store_save(const char *dir, const csc1_stored_login *l, char *err, size_t errlen);

/* Removes the stored login (logout): unlink, then fsync of the directory,
 * so that the removal survives a crash. No file is not an error.
 * CSC1_TS_OK or CSC1_TS_EIO. */
int csc1_token_store_remove(const char *dir, char *err, size_t errlen);

/* Loads the stored login into *out (free with csc1_stored_login_free).
 * CSC1_TS_OK, CSC1_TS_NONE, or CSC1_TS_CORRUPT after moving the file aside to
 * "idm-login.json.corrupt-<unix time>" (err names it). */
int csc1_token_store_load(const char *dir, csc1_stored_login *out, char *err, size_t errlen);

/* Parses a stored login document from a buffer. 0, or -1 when it is not a
 * valid document. For the loader and for fuzzing. */
int csc1_token_store_parse(const char *buf, size_t len, csc1_stored_login *out);

/* Frees and wipes the strings of *l (the refresh token among them) and
 * zeroes it; safe on a zeroed *l. */
void csc1_stored_login_free(csc1_stored_login *l);

#endif
