/* CSC-1 wire formats. See oidc.h. */
#include "csc1/oidc.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csc1/url.h"

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t whylen, const char *fmt,
                                                      ...) {
  if (why && whylen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static json_t *load_object(const char *buf, size_t len) {
  json_error_t jerr;
  json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (j && !json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  return j;
}

static void wipe_free(char *s) {
  if (s)
    OPENSSL_cleanse(s, strlen(s));
  free(s);
}

void csc1_oidc_sanitize(const char *s, char *out, size_t cap) {
  size_t o = 0;
  if (!cap)
    return;
  for (; s && *s && o + 1 < cap; s++)
    out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
  out[o] = '\0';
}

/* ---- discovery ---------------------------------------------------------- */

/* Copies an optional https URL member. */
static int take_endpoint(json_t *doc, const char *name, char **out, char *why, size_t whylen) {
  json_t *v = json_object_get(doc, name);
  csc1_url u;
  const char *bad = NULL;
  if (!v)
    return 0;
  if (!json_is_string(v))
    return fail(why, whylen, "discovery: %s is not a string", name);
  if (csc1_url_parse(json_string_value(v), &u, &bad) != 0 || !u.https)
    return fail(why, whylen, "discovery: %s is not an https URL", name);
  *out = strdup(json_string_value(v));
  return *out ? 0 : fail(why, whylen, "out of memory");
}

int csc1_oidc_discovery_parse(const char *buf, size_t len, const char *issuer, csc1_oidc_endpoints *out,
                            char *why, size_t whylen) {
  csc1_oidc_endpoints e = {0};
  memset(out, 0, sizeof *out);
  json_t *doc = load_object(buf, len);
  if (!doc)
    return fail(why, whylen, "discovery document is not a JSON object");
  json_t *iss = json_object_get(doc, "issuer");
  int r = 0;
  if (!json_is_string(iss) || strcmp(json_string_value(iss), issuer) != 0) {
    char shown[128];
    csc1_oidc_sanitize(json_is_string(iss) ? json_string_value(iss) : "(none)", shown, sizeof shown);
    r = fail(why, whylen, "discovery: issuer '%s' is not the configured issuer '%s'", shown,
             issuer);
  }
  if (r == 0)
    r = take_endpoint(doc, "authorization_endpoint", &e.authorization, why, whylen);
  if (r == 0)
    r = take_endpoint(doc, "token_endpoint", &e.token, why, whylen);
  if (r == 0)
    r = take_endpoint(doc, "jwks_uri", &e.jwks_uri, why, whylen);
  if (r == 0)
    r = take_endpoint(doc, "device_authorization_endpoint", &e.device_authorization, why, whylen);
  if (r == 0)
    r = take_endpoint(doc, "revocation_endpoint", &e.revocation, why, whylen);
  if (r == 0)
    r = take_endpoint(doc, "end_session_endpoint", &e.end_session, why, whylen);
  json_decref(doc);
  if (r != 0)
    csc1_oidc_endpoints_free(&e);
  else
    *out = e;
  return r;
}

void csc1_oidc_endpoints_free(csc1_oidc_endpoints *e) {
  free(e->authorization);
  free(e->token);
  free(e->jwks_uri);
  free(e->device_authorization);
  free(e->revocation);
  free(e->end_session);
  memset(e, 0, sizeof *e);
}

/* ---- token responses ---------------------------------------------------- */

static int take_secret(const char *what, json_t *doc, const char *name, bool required, char **out,
                       char *why, size_t whylen) {
  json_t *v = json_object_get(doc, name);
  if (!v && !required)
    return 0;
  if (!json_is_string(v) || json_string_length(v) == 0)
    return fail(why, whylen, "%s: %s %s", what, name,
                v ? "is not a non-empty string" : "is missing");
  *out = strdup(json_string_value(v));
  return *out ? 0 : fail(why, whylen, "out of memory");
}

static bool get_seconds(json_t *doc, const char *name, int64_t *out) {
  json_t *v = json_object_get(doc, name);
  if (json_is_integer(v))
    *out = (int64_t)json_integer_value(v);
  else if (json_is_real(v) && json_real_value(v) < 1e12 && json_real_value(v) > -1e12)
    *out = (int64_t)json_real_value(v);
  else if (json_is_string(v) && *json_string_value(v)) { /* some servers quote numbers */
    char *end;
    long long n = strtoll(json_string_value(v), &end, 10);
    if (*end)
      return false;
    *out = n;
  } else
    return false;
  return true;
}

/* The optional scope member: a string (possibly empty: nothing granted). */
static int take_scope(json_t *doc, char **out, char *why, size_t whylen) {
  json_t *v = json_object_get(doc, "scope");
  if (!v)
    return 0;
  if (!json_is_string(v))
    return fail(why, whylen, "token response: scope is not a string");
  *out = strdup(json_string_value(v));
  return *out ? 0 : fail(why, whylen, "out of memory");
}

int csc1_oidc_tokens_parse(const char *buf, size_t len, csc1_oidc_tokens *out, char *why,
                         size_t whylen) {
  csc1_oidc_tokens t = {0};
  memset(out, 0, sizeof *out);
  json_t *doc = load_object(buf, len);
  if (!doc)
    return fail(why, whylen, "token response is not a JSON object");
  json_t *type = json_object_get(doc, "token_type");
  int r = 0;
  if (!json_is_string(type) || strcasecmp(json_string_value(type), "bearer") != 0)
    r = fail(why, whylen, "token response: token_type is not Bearer");
  else if (!get_seconds(doc, "expires_in", &t.expires_in) || t.expires_in <= 0 ||
           t.expires_in > 366 * 86400)
    r = fail(why, whylen, "token response: expires_in missing or out of range");
  if (r == 0)
    r = take_secret("token response", doc, "access_token", true, &t.access_token, why, whylen);
  if (r == 0)
    r = take_secret("token response", doc, "refresh_token", false, &t.refresh_token, why, whylen);
  if (r == 0)
    r = take_secret("token response", doc, "id_token", false, &t.id_token, why, whylen);
  if (r == 0)
    r = take_scope(doc, &t.scope, why, whylen);
  json_decref(doc);
  if (r != 0)
    csc1_oidc_tokens_free(&t);
  else
    *out = t;
  return r;
}

void csc1_oidc_tokens_free(csc1_oidc_tokens *t) {
  wipe_free(t->access_token);
  wipe_free(t->refresh_token);
  wipe_free(t->id_token);
  free(t->scope);
  memset(t, 0, sizeof *t);
}

int csc1_oidc_error_parse(const char *buf, size_t len, csc1_oidc_error *out) {
  memset(out, 0, sizeof *out);
  json_t *doc = load_object(buf, len);
  json_t *err = doc ? json_object_get(doc, "error") : NULL;
  int r = -1;
  if (json_is_string(err)) {
    csc1_oidc_sanitize(json_string_value(err), out->error, sizeof out->error);
    json_t *d = json_object_get(doc, "error_description");
    if (json_is_string(d))
      csc1_oidc_sanitize(json_string_value(d), out->description, sizeof out->description);
    r = 0;
  }
  json_decref(doc);
  return r;
}

/* ---- device authorization ----------------------------------------------- */

#define DEV "device authorization response"

int csc1_oidc_device_auth_parse(const char *buf, size_t len, csc1_oidc_device_auth *out, char *why,
                              size_t whylen) {
  csc1_oidc_device_auth d = {0};
  memset(out, 0, sizeof *out);
  json_t *doc = load_object(buf, len);
  if (!doc)
    return fail(why, whylen, "device authorization response is not a JSON object");
  int r = take_secret(DEV, doc, "device_code", true, &d.device_code, why, whylen);
  if (r == 0)
    r = take_secret(DEV, doc, "user_code", true, &d.user_code, why, whylen);
  if (r == 0)
    r = take_secret(DEV, doc, "verification_uri", true, &d.verification_uri, why, whylen);
  if (r == 0)
    r = take_secret(DEV, doc, "verification_uri_complete", false, &d.verification_uri_complete, why,
                    whylen);
  if (r == 0 &&
      (!get_seconds(doc, "expires_in", &d.expires_in) || d.expires_in <= 0 || d.expires_in > 86400))
    r = fail(why, whylen, "device authorization: expires_in missing or out of range");
  if (r == 0 && !get_seconds(doc, "interval", &d.interval))
    d.interval = 5;
  if (r == 0 && (d.interval < 1 || d.interval > 600))
    r = fail(why, whylen, "device authorization: interval out of range");
  json_decref(doc);
  if (r != 0) {
    csc1_oidc_device_auth_free(&d);
  } else {
    *out = d;
  }
  return r;
}

void csc1_oidc_device_auth_free(csc1_oidc_device_auth *d) {
  wipe_free(d->device_code);
  wipe_free(d->user_code);
  free(d->verification_uri);
  free(d->verification_uri_complete);
  memset(d, 0, sizeof *d);
}

/* ---- forms -------------------------------------------------------------- */

static void form_grow(csc1_form *f, size_t need) {
  if (f->oom || f->len + need + 1 <= f->cap)
    return;
  size_t cap = f->cap ? f->cap : 256;
  while (cap < f->len + need + 1)
    cap *= 2;
  char *b = malloc(cap);
  if (!b) {
    f->oom = true;
    return;
  }
  if (f->buf) {
    memcpy(b, f->buf, f->len + 1);
    OPENSSL_cleanse(f->buf, f->cap);
    free(f->buf);
  }
  f->buf = b;
  f->cap = cap;
}

void csc1_form_add(csc1_form *f, const char *name, const char *value) {
  size_t need = 3 * (strlen(name) + strlen(value)) + 2;
  form_grow(f, need);
  if (f->oom)
    return;
  if (f->len)
    f->buf[f->len++] = '&';
  f->len = csc1_url_encode(f->buf, f->len, f->cap, name);
  f->buf[f->len++] = '=';
  f->len = csc1_url_encode(f->buf, f->len, f->cap, value);
}

void csc1_form_free(csc1_form *f) {
  if (f->buf) {
    OPENSSL_cleanse(f->buf, f->cap);
    free(f->buf);
  }
  memset(f, 0, sizeof *f);
}
