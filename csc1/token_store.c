/* The stored login. See token_store.h. */
#include "csc1/token_store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STORE_VERSION 1
#define STORE_MAX_BYTES 65536

__attribute__((format(printf, 4, 5))) static int fail(int code, char *err, size_t errlen,
                                                      const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static void path_of(char *buf, size_t len, const char *dir, const char *suffix) {
  snprintf(buf, len, "%s/%s%s", dir, CSC1_TOKEN_STORE_FILE, suffix);
}

int csc1_token_store_prepare(const char *dir, char *err, size_t errlen) {
  struct stat st;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return fail(CSC1_TS_EIO, err, errlen, "cannot create state_dir %s: %s", dir, strerror(errno));
  if (stat(dir, &st) != 0)
    return fail(CSC1_TS_EIO, err, errlen, "cannot stat state_dir %s: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return fail(CSC1_TS_EIO, err, errlen, "state_dir %s is not a directory", dir);
  if ((st.st_mode & 077) && chmod(dir, 0700) != 0)
    return fail(CSC1_TS_EIO, err, errlen, "state_dir %s is mode %04o and cannot be made 0700: %s",
                dir, (unsigned)(st.st_mode & 07777), strerror(errno));
  return CSC1_TS_OK;
}

/* ---- document ----------------------------------------------------------- */

static void set_opt(json_t *o, const char *key, const char *v) {
  if (v)
    json_object_set_new(o, key, json_string(v));
}

static json_t *to_json(const csc1_stored_login *l) {
  json_t *o = json_pack("{s:i, s:s, s:s}", "version", STORE_VERSION, "issuer",
                        l->issuer ? l->issuer : "", "client_id", l->client_id ? l->client_id : "");
  if (!o)
    return NULL;
  set_opt(o, "refresh_token", l->refresh_token);
  set_opt(o, "subject", l->subject);
  set_opt(o, "mcptt_id", l->mcptt_id);
  set_opt(o, "mcdata_id", l->mcdata_id);
  set_opt(o, "mcvideo_id", l->mcvideo_id);
  json_t *aud = json_array();
  for (size_t i = 0; i < l->n_aud; i++)
    json_array_append_new(aud, json_string(l->aud[i]));
  json_object_set_new(o, "aud", aud);
  return o;
}

/* Copies an optional string member; false when present but not a string. */
static bool take(json_t *o, const char *key, char **dst) {
  json_t *v = json_object_get(o, key);
  if (!v)
    return true;
  if (!json_is_string(v))
    return false;
  *dst = strdup(json_string_value(v));
  return *dst != NULL;
}

static bool take_aud(json_t *o, csc1_stored_login *l) {
  json_t *aud = json_object_get(o, "aud");
  if (!aud)
    return true;
  if (!json_is_array(aud) || json_array_size(aud) > 64)
    return false;
  size_t n = json_array_size(aud);
  if (n && !(l->aud = calloc(n, sizeof *l->aud)))
    return false;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(aud, i);
    if (!json_is_string(v) || !(l->aud[i] = strdup(json_string_value(v))))
      return false;
    l->n_aud++;
  }
  return true;
}

int csc1_token_store_parse(const char *buf, size_t len, csc1_stored_login *out) {
  csc1_stored_login l;
  memset(&l, 0, sizeof l);
  memset(out, 0, sizeof *out);
  json_error_t jerr;
  json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *ver = json_is_object(o) ? json_object_get(o, "version") : NULL;
  bool ok = json_is_integer(ver) && json_integer_value(ver) == STORE_VERSION &&
            json_is_string(json_object_get(o, "issuer")) &&
            json_is_string(json_object_get(o, "client_id")) && take(o, "issuer", &l.issuer) &&
            take(o, "client_id", &l.client_id) && take(o, "refresh_token", &l.refresh_token) &&
            take(o, "subject", &l.subject) && take(o, "mcptt_id", &l.mcptt_id) &&
            take(o, "mcdata_id", &l.mcdata_id) && take(o, "mcvideo_id", &l.mcvideo_id) &&
            take_aud(o, &l);
  json_decref(o);
  if (!ok) {
    csc1_stored_login_free(&l);
    return -1;
  }
  *out = l;
  return 0;
}

void csc1_stored_login_free(csc1_stored_login *l) {
  if (!l)
    return;
  if (l->refresh_token)
    OPENSSL_cleanse(l->refresh_token, strlen(l->refresh_token));
  free(l->refresh_token);
  free(l->issuer);
  free(l->client_id);
  free(l->subject);
  free(l->mcptt_id);
  free(l->mcdata_id);
  free(l->mcvideo_id);
  for (size_t i = 0; i < l->n_aud; i++)
    free(l->aud[i]);
  free(l->aud);
  memset(l, 0, sizeof *l);
}

/* ---- save --------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int r = fsync(fd);
  close(fd);
  return r;
}

/* Writes text to a fresh 0600 temp file and fsyncs it. */
static int write_temp(const char *tmp, const char *text, char *err, size_t errlen) {
  unlink(tmp); /* a stale temp file from a crash */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return fail(CSC1_TS_EIO, err, errlen, "cannot create %s: %s", tmp, strerror(errno));
  int r = write_all(fd, text, strlen(text));
  if (r == 0)
    r = fsync(fd);
  int e = errno;
  if (close(fd) != 0 && r == 0) {
    r = -1;
    e = errno;
  }
  if (r != 0) {
    unlink(tmp);
    return fail(CSC1_TS_EIO, err, errlen, "cannot write %s: %s", tmp, strerror(e));
  }
  return CSC1_TS_OK;
}

int csc1_token_store_save(const char *dir, const csc1_stored_login *l, char *err, size_t errlen) {
  char path[4096], tmp[4096];
  path_of(path, sizeof path, dir, "");
  path_of(tmp, sizeof tmp, dir, ".tmp");
  json_t *doc = to_json(l);
  char *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
  json_decref(doc);
  if (!text)
    return fail(CSC1_TS_EIO, err, errlen, "out of memory");
  int r = write_temp(tmp, text, err, errlen);
  OPENSSL_cleanse(text, strlen(text));
  free(text);
  if (r != CSC1_TS_OK)
    return r;
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return fail(CSC1_TS_EIO, err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
  }
  if (fsync_dir(dir) != 0)
    return fail(CSC1_TS_EIO, err, errlen, "cannot fsync %s: %s", dir, strerror(errno));
  return CSC1_TS_OK;
}

int csc1_token_store_remove(const char *dir, char *err, size_t errlen) {
  char path[4096];
  path_of(path, sizeof path, dir, "");
  if (unlink(path) != 0 && errno != ENOENT)
    return fail(CSC1_TS_EIO, err, errlen, "cannot remove %s: %s", path, strerror(errno));
  if (fsync_dir(dir) != 0)
    return fail(CSC1_TS_EIO, err, errlen, "cannot fsync %s: %s", dir, strerror(errno));
  return CSC1_TS_OK;
}

/* ---- load --------------------------------------------------------------- */

/* Moves the file aside to .corrupt-<time>[.<n>]; never deletes it. */
static int move_aside(const char *dir, const char *why, char *err, size_t errlen) {
  char path[4096], aside[4200];
  path_of(path, sizeof path, dir, "");
  long long now = (long long)time(NULL);
  for (int n = 0; n < 100; n++) {
    char suffix[64];
    if (n == 0)
      snprintf(suffix, sizeof suffix, ".corrupt-%lld", now);
    else
      snprintf(suffix, sizeof suffix, ".corrupt-%lld.%d", now, n);
    path_of(aside, sizeof aside, dir, suffix);
    if (access(aside, F_OK) == 0)
      continue;
    if (rename(path, aside) == 0)
      return fail(CSC1_TS_CORRUPT, err, errlen, "%s %s; kept as %s", path, why, aside);
    break;
  }
  return fail(CSC1_TS_CORRUPT, err, errlen, "%s %s, and it could not be moved aside: %s", path, why,
              strerror(errno));
}

/* Reads at most STORE_MAX_BYTES; -1 with errno, or -2 when too large. */
static ssize_t read_file(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      return (ssize_t)n;
    n += (size_t)r;
    if (n == cap)
      return -2;
  }
}

int csc1_token_store_load(const char *dir, csc1_stored_login *out, char *err, size_t errlen) {
  char path[4096];
  memset(out, 0, sizeof *out);
  path_of(path, sizeof path, dir, "");
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT)
    return CSC1_TS_NONE;
  if (fd < 0) {
    char why[128];
    snprintf(why, sizeof why, "cannot be read (%s)", strerror(errno));
    return move_aside(dir, why, err, errlen);
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077))
    fchmod(fd, 0600); /* never leave a refresh token readable by others */
  char *buf = malloc(STORE_MAX_BYTES);
  ssize_t n = buf ? read_file(fd, buf, STORE_MAX_BYTES) : -1;
  int e = errno;
  close(fd);
  int r;
  if (n == -2)
    r = move_aside(dir, "is too large", err, errlen);
  else if (n < 0) {
    char why[128];
    snprintf(why, sizeof why, "cannot be read (%s)", strerror(e));
    r = move_aside(dir, why, err, errlen);
  } else if (csc1_token_store_parse(buf, (size_t)n, out) != 0)
    r = move_aside(dir, "is not a valid mcgw login file", err, errlen);
  else
    r = CSC1_TS_OK;
  if (buf) {
    OPENSSL_cleanse(buf, STORE_MAX_BYTES);
    free(buf);
  }
  return r;
}
