/* Per-client-address tunnel counts, for max_tunnels_per_client and the number
 * of active clients. A chained hash table keyed by the IP address (port
 * ignored); entries are removed when their count drops to zero, so the table
 * only holds clients with open tunnels. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

#define N_BUCKETS 4096

typedef struct entry {
  struct entry *next;
  uint8_t key[17]; /* family tag + 16 address bytes */
  uint32_t count;
} entry;

struct tn_clients {
  entry *buckets[N_BUCKETS];
  uint64_t active;
};

static void make_key(const struct sockaddr *sa, uint8_t key[17]) {
  memset(key, 0, 17);
  if (sa->sa_family == AF_INET) {
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    key[0] = 6;
    memcpy(key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
  }
}

/* FNV-1a: small, good enough for addresses, no seeding needed because the
 * table only holds admitted clients and a bucket chain is short. */
static size_t bucket_of(const uint8_t key[17]) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < 17; i++)
    h = (h ^ key[i]) * 16777619u;
  return h % N_BUCKETS;
}

static entry **find(const tn_clients *c, const uint8_t key[17]) {
  entry **pp = (entry **)&c->buckets[bucket_of(key)];
  while (*pp && memcmp((*pp)->key, key, 17) != 0)
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

uint32_t tn__clients_add(tn_clients *c, const struct sockaddr *sa) {
  uint8_t key[17];
  make_key(sa, key);
  entry **pp = find(c, key);
  if (!*pp) {
    entry *e = calloc(1, sizeof(*e));
    if (!e)
      return 0;
    memcpy(e->key, key, sizeof(key));
    *pp = e;
    c->active++;
  }
  return ++(*pp)->count;
}

void tn__clients_remove(tn_clients *c, const struct sockaddr *sa) {
  uint8_t key[17];
  make_key(sa, key);
  entry **pp = find(c, key);
  entry *e = *pp;
  if (!e)
    return;
  if (--e->count == 0) {
    *pp = e->next;
    free(e);
    c->active--;
  }
}

uint32_t tn__clients_get(const tn_clients *c, const struct sockaddr *sa) {
  uint8_t key[17];
  make_key(sa, key);
  entry **pp = find(c, key);
  return *pp ? (*pp)->count : 0;
}

uint64_t tn__clients_active(const tn_clients *c) { return c->active; }
