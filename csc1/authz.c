/* The authorization request and its callback. See authz.h. */
#include "csc1/authz.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csc1/url.h"

/* Appends ?name=value or &name=value, value percent-encoded. The caller
 * sized url for every parameter: 3 bytes per byte of value, plus names. */
static void add_param(char *url, size_t *len, size_t cap, const char *name, const char *value) {
  int w = snprintf(url + *len, cap - *len, "%c%s=", memchr(url, '?', *len) ? '&' : '?', name);
  *len = csc1_url_encode(url, *len + (size_t)w, cap, value);
}

char *csc1_authz_url(const csc1_authz_params *p, csc1_authz_secrets *s, const char **why) {
  char challenge[CSC1_PKCE_CHALLENGE_LEN + 1];
  if (csc1_random_token(32, s->state) != 0 || csc1_random_token(32, s->nonce) != 0 ||
      csc1_pkce_verifier_new(s->verifier) != 0 || csc1_pkce_challenge(s->verifier, challenge) != 0)
    return *why = "no randomness from OpenSSL", NULL;
  /* The fixed names and values (response_type, code_challenge_method, the
   * state, nonce and challenge, all unreserved) fit in 512 bytes. */
  size_t cap = strlen(p->authorization_endpoint) +
               3 * (strlen(p->client_id) + strlen(p->redirect_uri) + strlen(p->scope) +
                    (p->acr_values ? strlen(p->acr_values) : 0)) +
               512;
  char *url = malloc(cap);
  if (!url)
    return *why = "out of memory", NULL;
  size_t len = (size_t)snprintf(url, cap, "%s", p->authorization_endpoint);
  add_param(url, &len, cap, "response_type", "code");
  add_param(url, &len, cap, "client_id", p->client_id);
  add_param(url, &len, cap, "redirect_uri", p->redirect_uri);
  add_param(url, &len, cap, "scope", p->scope);
  add_param(url, &len, cap, "state", s->state);
  add_param(url, &len, cap, "nonce", s->nonce);
  if (p->acr_values)
    add_param(url, &len, cap, "acr_values", p->acr_values);
  add_param(url, &len, cap, "code_challenge", challenge);
  add_param(url, &len, cap, "code_challenge_method", "S256");
  return url;
}

void csc1_authz_callback_parse(const char *query, csc1_authz_callback *c) {
  bool d[5] = {0};
  c->code = csc1_url_query_param(query, "code", &d[0]);
  c->state = csc1_url_query_param(query, "state", &d[1]);
  c->iss = csc1_url_query_param(query, "iss", &d[2]);
  c->error = csc1_url_query_param(query, "error", &d[3]);
  c->error_description = csc1_url_query_param(query, "error_description", &d[4]);
  c->dup = d[0] || d[1] || d[2] || d[3] || d[4];
}

void csc1_authz_callback_free(csc1_authz_callback *c) {
  char **s[] = {&c->code, &c->state, &c->iss, &c->error, &c->error_description};
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
    if (*s[i]) {
      OPENSSL_cleanse(*s[i], strlen(*s[i]));
      free(*s[i]);
    }
  memset(c, 0, sizeof *c);
}
