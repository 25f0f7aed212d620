/* ID token validation. See jwt.h. */
#include "csc1/jwt.h"

#include <cjose/cjose.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CSC1_JWKS_MAX_KEYS 64

typedef enum { ALG_RS256 = 0, ALG_PS256, ALG_ES256, ALG_COUNT_ } alg_id;

static const char *const alg_names[ALG_COUNT_] = {"RS256", "PS256", "ES256"};

typedef struct jwks_key {
  char *kid;           /* NULL when the JWK has none */
  cjose_jwk_kty_t kty; /* RSA or EC (P-256) */
  char *alg;           /* the JWK's own "alg", or NULL */
  cjose_jwk_t *jwk;
} jwks_key;

struct csc1_jwks {
  jwks_key keys[CSC1_JWKS_MAX_KEYS];
  size_t n;
};

/* ---- helpers ------------------------------------------------------------ */

/* Writes the reason into why and returns code. */
__attribute__((format(printf, 4, 5))) static int fail(int code, char *why, size_t whylen,
                                                      const char *fmt, ...) {
  if (why && whylen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static char *dup_json_string(json_t *v) {
  return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* Constant-time string equality (nonces are secrets until used). */
static bool secret_equal(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* Decodes one base64url segment into a JSON object. */
static json_t *decode_json_segment(const char *s, size_t n) {
  uint8_t *raw = NULL;
  size_t raw_len = 0;
  cjose_err err;
  if (n == 0 || !cjose_base64url_decode(s, n, &raw, &raw_len, &err))
    return NULL;
  json_error_t jerr;
  json_t *j = json_loadb((const char *)raw, raw_len, JSON_REJECT_DUPLICATES, &jerr);
  cjose_get_dealloc()(raw);
  if (j && !json_is_object(j)) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

static bool is_b64url_char(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_';
}

/* Splits a compact JWS into its three segments: exactly two dots, only
 * base64url characters, header and payload not empty. */
static bool split_compact(const char *jwt, size_t len, size_t seg[3][2]) {
  size_t start = 0, k = 0;
  if (len == 0 || len > CSC1_JWT_MAX_LEN)
    return false;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || jwt[i] == '.') {
      if (k == 3)
        return false;
      seg[k][0] = start;
      seg[k][1] = i - start;
      k++;
      start = i + 1;
    } else if (!is_b64url_char(jwt[i])) {
      return false;
    }
  }
  return k == 3 && seg[0][1] > 0 && seg[1][1] > 0;
}

static int alg_lookup(const char *name) {
  for (int i = 0; i < ALG_COUNT_; i++)
    if (strcmp(name, alg_names[i]) == 0)
      return i;
  return -1;
}

/* ---- JWKS --------------------------------------------------------------- */

/* Whether key k may verify alg: its type matches, and its own alg (if any)
 * is the same. */
static bool key_fits(const jwks_key *k, alg_id alg) {
  cjose_jwk_kty_t want = alg == ALG_ES256 ? CJOSE_JWK_KTY_EC : CJOSE_JWK_KTY_RSA;
  if (k->kty != want)
    return false;
  return !k->alg || strcmp(k->alg, alg_names[alg]) == 0;
}

/* Key material members are base64url (RFC 7518 6): anything else is refused
 * before cjose sees it. Debian's cjose 0.6.2 aborts the process on some
 * malformed base64 (an assertion in its decoder, e.g. "A=AAAA"), and the
 * JWKS comes from the network. */
static bool key_members_ok(json_t *jk) {
  static const char *const members[] = {"n", "e", "x", "y", "d", "p", "q", "dp", "dq", "qi", "k"};
  for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
    json_t *v = json_object_get(jk, members[i]);
    if (!v)
      continue;
    if (!json_is_string(v))
      return false;
    for (const char *c = json_string_value(v); *c; c++)
      if (!is_b64url_char(*c))
        return false;
  }
  return true;
}

static bool import_key(json_t *jk, jwks_key *out) {
  cjose_err err;
  if (!key_members_ok(jk))
    return false;
  json_t *use = json_object_get(jk, "use");
  json_t *kty = json_object_get(jk, "kty");
  if (!json_is_string(kty) ||
      (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)))
    return false;
  const char *t = json_string_value(kty);
  if (strcmp(t, "RSA") != 0 && strcmp(t, "EC") != 0)
    return false; /* "oct" never: a public JWKS holds no shared secrets */
  char *text = json_dumps(jk, JSON_COMPACT);
  if (!text)
    return false;
  cjose_jwk_t *jwk = cjose_jwk_import(text, strlen(text), &err);
  free(text);
  if (!jwk)
    return false;
  cjose_jwk_kty_t kt = cjose_jwk_get_kty(jwk, &err);
  bool ok = (kt == CJOSE_JWK_KTY_RSA && cjose_jwk_get_keysize(jwk, &err) >= 2048) ||
            (kt == CJOSE_JWK_KTY_EC && cjose_jwk_EC_get_curve(jwk, &err) == CJOSE_JWK_EC_P_256);
  if (!ok) {
    cjose_jwk_release(jwk);
    return false;
  }
  out->jwk = jwk;
  out->kty = kt;
  out->kid = dup_json_string(json_object_get(jk, "kid"));
  out->alg = dup_json_string(json_object_get(jk, "alg"));
  return true;
}

csc1_jwks *csc1_jwks_parse(const char *buf, size_t len, const char **why) {
  json_error_t jerr;
  json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *keys = json_is_object(doc) ? json_object_get(doc, "keys") : NULL;
  if (!json_is_array(keys)) {
    if (why)
      *why = doc ? "JWKS has no \"keys\" array" : "JWKS is not valid JSON";
    json_decref(doc);
    return NULL;
  }
  csc1_jwks *set = calloc(1, sizeof *set);
  if (!set) {
    if (why)
      *why = "out of memory";
    json_decref(doc);
    return NULL;
  }
  size_t i;
  json_t *jk;
  json_array_foreach(keys, i, jk) {
    if (set->n == CSC1_JWKS_MAX_KEYS)
      break;
    if (json_is_object(jk) && import_key(jk, &set->keys[set->n]))
      set->n++;
  }
  json_decref(doc);
  return set;
}

size_t csc1_jwks_count(const csc1_jwks *k) { return k ? k->n : 0; }

void csc1_jwks_free(csc1_jwks *k) {
  if (!k)
    return;
  for (size_t i = 0; i < k->n; i++) {
    cjose_jwk_release(k->keys[i].jwk);
    free(k->keys[i].kid);
    free(k->keys[i].alg);
  }
  free(k);
}

/* ---- signature ---------------------------------------------------------- */

typedef struct header_info {
  alg_id alg;
  char *kid;
} header_info;

static int check_header(json_t *hdr, header_info *hi, char *why, size_t whylen) {
  json_t *alg = json_object_get(hdr, "alg");
  if (!json_is_string(alg))
    return fail(CSC1_JWT_EMALFORMED, why, whylen, "JOSE header has no alg");
  int a = alg_lookup(json_string_value(alg));
  if (a < 0)
    return fail(CSC1_JWT_EALG, why, whylen, "alg is not one of RS256, PS256, ES256");
  if (json_object_get(hdr, "crit"))
    return fail(CSC1_JWT_EALG, why, whylen, "JOSE header has crit extensions");
  json_t *kid = json_object_get(hdr, "kid");
  if (kid && !json_is_string(kid))
    return fail(CSC1_JWT_EMALFORMED, why, whylen, "kid is not a string");
  hi->alg = (alg_id)a;
  hi->kid = dup_json_string(kid);
  if (kid && !hi->kid)
    return CSC1_JWT_ENOMEM;
  return CSC1_JWT_OK;
}

/* Verifies with the key named by kid, or, without a kid, with any key that
 * fits the alg. */
static int verify_signature(const char *jwt, size_t len, const csc1_jwks *keys, const header_info *hi,
                            char *why, size_t whylen) {
  cjose_err err;
  cjose_jws_t *jws = cjose_jws_import(jwt, len, &err);
  if (!jws)
    return fail(CSC1_JWT_EMALFORMED, why, whylen, "not a valid JWS");
  bool candidate = false, verified = false;
  for (size_t i = 0; keys && i < keys->n && !verified; i++) {
    const jwks_key *k = &keys->keys[i];
    if (hi->kid && (!k->kid || strcmp(k->kid, hi->kid) != 0))
      continue;
    if (!key_fits(k, hi->alg)) {
      if (hi->kid) {
        cjose_jws_release(jws);
        return fail(CSC1_JWT_EALG, why, whylen, "the key named by kid is not a %s key",
                    alg_names[hi->alg]);
      }
      continue;
    }
    candidate = true;
    verified = cjose_jws_verify(jws, k->jwk, &err);
  }
  cjose_jws_release(jws);
  if (!candidate)
    return fail(CSC1_JWT_EUNKNOWN_KID, why, whylen, hi->kid ? "unknown kid" : "no %s key in the JWKS",
                alg_names[hi->alg]);
  if (!verified)
    return fail(CSC1_JWT_ESIGNATURE, why, whylen, "bad signature");
  return CSC1_JWT_OK;
}

/* ---- claims ------------------------------------------------------------- */

static bool get_time(json_t *claims, const char *name, int64_t *out) {
  json_t *v = json_object_get(claims, name);
  if (json_is_integer(v)) {
    *out = (int64_t)json_integer_value(v);
    return true;
  }
  if (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15) {
    *out = (int64_t)json_real_value(v);
    return true;
  }
  return false;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* aud: a string or an array of strings; copied sorted into t. */
static int take_aud(json_t *aud, csc1_id_token *t, char *why, size_t whylen) {
  size_t n = json_is_string(aud) ? 1 : json_is_array(aud) ? json_array_size(aud) : 0;
  if (n == 0 || n > 64)
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "aud missing or malformed");
  if (!(t->aud = calloc(n, sizeof *t->aud)))
    return CSC1_JWT_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_is_string(aud) ? aud : json_array_get(aud, i);
    if (!json_is_string(v))
      return fail(CSC1_JWT_ECLAIMS, why, whylen, "aud holds a non-string");
    if (!(t->aud[i] = strdup(json_string_value(v))))
      return CSC1_JWT_ENOMEM;
    t->n_aud++;
  }
  qsort(t->aud, t->n_aud, sizeof *t->aud, cmp_str);
  return CSC1_JWT_OK;
}

static bool aud_has(const csc1_id_token *t, const char *id) {
  for (size_t i = 0; i < t->n_aud; i++)
    if (strcmp(t->aud[i], id) == 0)
      return true;
  return false;
}

static int check_audience(json_t *claims, const csc1_jwt_expect *e, csc1_id_token *t, char *why,
                          size_t whylen) {
  int r = take_aud(json_object_get(claims, "aud"), t, why, whylen);
  if (r != CSC1_JWT_OK)
    return r;
  if (!aud_has(t, e->client_id))
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "aud does not contain the client_id");
  json_t *azp = json_object_get(claims, "azp");
  if (azp && (!json_is_string(azp) || strcmp(json_string_value(azp), e->client_id) != 0))
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "azp is not the client_id");
  if (t->n_aud > 1 && !azp)
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "several audiences but no azp");
  return CSC1_JWT_OK;
}

static int check_times(json_t *claims, const csc1_jwt_expect *e, csc1_id_token *t, char *why,
                       size_t whylen) {
  int64_t leeway = e->leeway_s > CSC1_JWT_MAX_LEEWAY_S ? CSC1_JWT_MAX_LEEWAY_S : e->leeway_s;
  if (!get_time(claims, "exp", &t->exp))
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "exp missing or not a number");
  if (!get_time(claims, "iat", &t->iat))
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "iat missing or not a number");
  if (e->now > t->exp + leeway)
    return fail(CSC1_JWT_ECLAIMS, why, whylen,
                "expired %lld s ago (leeway %lld s; is the clock right?)",
                (long long)(e->now - t->exp), (long long)leeway);
  if (t->iat > e->now + leeway)
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "issued %lld s in the future (is the clock right?)",
                (long long)(t->iat - e->now));
  return CSC1_JWT_OK;
}

static int take_service_ids(json_t *claims, csc1_id_token *t, char *why, size_t whylen) {
  static const char *const names[] = {"mcptt_id", "mcdata_id", "mcvideo_id"};
  char **dst[] = {&t->mcptt_id, &t->mcdata_id, &t->mcvideo_id};
  for (size_t i = 0; i < 3; i++) {
    json_t *v = json_object_get(claims, names[i]);
    if (!v)
      continue;
    if (!json_is_string(v))
      return fail(CSC1_JWT_ECLAIMS, why, whylen, "%s is not a string", names[i]);
    if (!(*dst[i] = strdup(json_string_value(v))))
      return CSC1_JWT_ENOMEM;
  }
  return CSC1_JWT_OK;
}

static int check_claims(json_t *claims, const csc1_jwt_expect *e, csc1_id_token *t, char *why,
                        size_t whylen) {
  json_t *iss = json_object_get(claims, "iss");
  if (!json_is_string(iss) || strcmp(json_string_value(iss), e->issuer) != 0)
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "iss is not the configured issuer");
  json_t *sub = json_object_get(claims, "sub");
  if (!json_is_string(sub) || json_string_length(sub) == 0)
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "sub missing");
  int r = check_audience(claims, e, t, why, whylen);
  if (r == CSC1_JWT_OK)
    r = check_times(claims, e, t, why, whylen);
  if (r != CSC1_JWT_OK)
    return r;
  json_t *nonce = json_object_get(claims, "nonce");
  if (e->nonce && (!json_is_string(nonce) || !secret_equal(json_string_value(nonce), e->nonce)))
    return fail(CSC1_JWT_ECLAIMS, why, whylen, "nonce does not match the request");
  if (!(t->iss = strdup(json_string_value(iss))) || !(t->sub = strdup(json_string_value(sub))))
    return CSC1_JWT_ENOMEM;
  return take_service_ids(claims, t, why, whylen);
}

/* ---- entry points ------------------------------------------------------- */

int csc1_jwt_validate(const char *jwt, size_t len, const csc1_jwks *keys, const csc1_jwt_expect *e,
                    csc1_id_token *out, char *why, size_t whylen) {
  size_t seg[3][2];
  header_info hi = {0};
  csc1_id_token t;
  memset(&t, 0, sizeof t);
  memset(out, 0, sizeof *out);
  if (why && whylen)
    why[0] = '\0';
  if (!jwt || !split_compact(jwt, len, seg))
    return fail(CSC1_JWT_EMALFORMED, why, whylen, "not a compact JWS");
  json_t *hdr = decode_json_segment(jwt + seg[0][0], seg[0][1]);
  json_t *claims = decode_json_segment(jwt + seg[1][0], seg[1][1]);
  int r = CSC1_JWT_EMALFORMED;
  if (!hdr || !claims)
    fail(r, why, whylen, "header or claims are not a base64url JSON object");
  else if ((r = check_header(hdr, &hi, why, whylen)) == CSC1_JWT_OK &&
           (r = verify_signature(jwt, len, keys, &hi, why, whylen)) == CSC1_JWT_OK)
    r = check_claims(claims, e, &t, why, whylen);
  if (r == CSC1_JWT_OK) {
    snprintf(t.alg, sizeof t.alg, "%s", alg_names[hi.alg]);
    t.kid = hi.kid;
    hi.kid = NULL;
    *out = t;
  } else {
    csc1_id_token_free(&t);
  }
  free(hi.kid);
  json_decref(hdr);
  json_decref(claims);
  return r;
}

char *csc1_jwt_peek_kid(const char *jwt, size_t len) {
  size_t seg[3][2];
  if (!jwt || !split_compact(jwt, len, seg))
    return NULL;
  json_t *hdr = decode_json_segment(jwt + seg[0][0], seg[0][1]);
  char *kid = hdr ? dup_json_string(json_object_get(hdr, "kid")) : NULL;
  json_decref(hdr);
  return kid;
}

void csc1_id_token_free(csc1_id_token *t) {
  if (!t)
    return;
  for (size_t i = 0; i < t->n_aud; i++)
    free(t->aud[i]);
  free(t->aud);
  free(t->iss);
  free(t->sub);
  free(t->mcptt_id);
  free(t->mcdata_id);
  free(t->mcvideo_id);
  free(t->kid);
  memset(t, 0, sizeof *t);
}

static bool str_eq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

bool csc1_id_token_same_principal(const csc1_id_token *a, const csc1_id_token *b) {
  if (!str_eq(a->iss, b->iss) || !str_eq(a->sub, b->sub) || a->n_aud != b->n_aud)
    return false;
  for (size_t i = 0; i < a->n_aud; i++)
    if (!str_eq(a->aud[i], b->aud[i]))
      return false;
  return true;
}

const char *csc1_jwt_strerror(int err) {
  switch (err) {
  case CSC1_JWT_OK: return "ok";
  case CSC1_JWT_EMALFORMED: return "malformed JWT";
  case CSC1_JWT_EALG: return "signature algorithm refused";
  case CSC1_JWT_EUNKNOWN_KID: return "no matching key";
  case CSC1_JWT_ESIGNATURE: return "bad signature";
  case CSC1_JWT_ECLAIMS: return "claims refused";
  case CSC1_JWT_ENOMEM: return "out of memory";
  default: return "unknown error";
  }
}
