/* Per-client tunnel counts, for max_tunnels_per_client and the number of
 * active clients. A client is its device certificate subject when it
 * presented one (devices behind one NAT address stay apart), else its IP
 * address (port ignored). A chained hash table; entries are removed when
 * their count drops to zero, so it only holds clients with open tunnels. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/clients.h"

#define N_BUCKETS 4096

typedef struct entry {
  struct entry *next;
  uint32_t count;
  uint16_t key_len;
  uint8_t key[]; /* key_len bytes */
} entry;

struct tn_clients {
  entry *buckets[N_BUCKETS];
  uint64_t active;
};

void tn__client_key(const struct sockaddr *sa, const char *subject, tn_client_key *k) {
  memset(k, 0, sizeof(*k));
  if (subject) {
    size_t n = strnlen(subject, TN_CLIENT_KEY_MAX - 1);
    k->b[0] = 'S';
    memcpy(k->b + 1, subject, n);
    k->len = (uint16_t)(n + 1);
  } else if (sa->sa_family == AF_INET) {
    k->b[0] = 4;
    memcpy(k->b + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    k->len = 5;
  } else if (sa->sa_family == AF_INET6) {
    k->b[0] = 6;
    memcpy(k->b + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    k->len = 17;
  } else {
    k->len = 1;
  }
}

bool tn__client_key_text(const uint8_t *key, size_t len, char *text) {
  if (len > 0 && key[0] == 'S') {
    snprintf(text, TN_CLIENT_KEY_TEXT_MAX, "%.*s", (int)len - 1, (const char *)key + 1);
    return true;
  }
  if ((len != 5 && len != 17) ||
      !inet_ntop(len == 5 ? AF_INET : AF_INET6, key + 1, text, TN_CLIENT_KEY_TEXT_MAX))
    strcpy(text, "-");
  return false;
}

/* FNV-1a: small, good enough for addresses, no seeding needed because the
 * table only holds admitted clients and a bucket chain is short. */
static size_t bucket_of(const tn_client_key *k) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < k->len; i++)
    h = (h ^ k->b[i]) * 16777619u;
  return h % N_BUCKETS;
}

static entry **find(const tn_clients *c, const tn_client_key *k) {
  entry **pp = (entry **)&c->buckets[bucket_of(k)];
  while (*pp && ((*pp)->key_len != k->len || memcmp((*pp)->key, k->b, k->len) != 0))
    pp = &(*pp)->next;
  return pp;
}

tn_clients *tn__clients_new(void) { return calloc(1, sizeof(tn_clients)); }

void tn__clients_free(tn_clients *c) {
  if (!c)
    return;
  for (size_t i = 0; i < N_BUCKETS; i++) {
    entry *e = c->buckets[i];
    while (e) {
      entry *next = e->next;
      free(e);
      e = next;
    }
  }
  free(c);
}

uint32_t tn__clients_add(tn_clients *c, const struct sockaddr *sa, const char *subject) {
  tn_client_key k;
  tn__client_key(sa, subject, &k);
  entry **pp = find(c, &k);
  if (!*pp) {
    entry *e = calloc(1, sizeof(*e) + k.len);
    if (!e)
      return 0;
    memcpy(e->key, k.b, k.len);
    e->key_len = k.len;
    *pp = e;
    c->active++;
  }
  return ++(*pp)->count;
}

void tn__clients_remove(tn_clients *c, const struct sockaddr *sa, const char *subject) {
  tn_client_key k;
  tn__client_key(sa, subject, &k);
  entry **pp = find(c, &k);
  entry *e = *pp;
  if (!e)
    return;
  if (--e->count == 0) {
    *pp = e->next;
    free(e);
    c->active--;
  }
}

uint32_t tn__clients_get(const tn_clients *c, const struct sockaddr *sa, const char *subject) {
  tn_client_key k;
  tn__client_key(sa, subject, &k);
  entry **pp = find(c, &k);
  return *pp ? (*pp)->count : 0;
}

uint64_t tn__clients_active(const tn_clients *c) { return c->active; }
