/* Private to tunnel/: per-client tunnel counts (clients.c), for
 * max_tunnels_per_client. Layer: the bottom (see objects.h); used by
 * service.c. */
#ifndef TN_CLIENTS_H
#define TN_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* A client is its device certificate
 * subject when it has one, else its IP address. */
typedef struct tn_clients tn_clients;
#define TN_CLIENT_KEY_MAX 257 /* tag byte + a subject of up to 256 bytes, or 16 address bytes */
typedef struct {
  uint8_t b[TN_CLIENT_KEY_MAX];
  uint16_t len;
} tn_client_key;
/* The bytes that name a client: 'S' + subject, or 4/6 + the address bytes. */
void tn__client_key(const struct sockaddr *sa, const char *subject, tn_client_key *k);
/* Such a key back in words: the subject (returns true), or the address
 * ("-" if it is neither), in text of TN_CLIENT_KEY_TEXT_MAX bytes. */
#define TN_CLIENT_KEY_TEXT_MAX (TN_CLIENT_KEY_MAX + 46)
bool tn__client_key_text(const uint8_t *key, size_t len, char *text);
tn_clients *tn__clients_new(void);
void tn__clients_free(tn_clients *c);
/* Increments the count for the client; returns the new count, 0 on ENOMEM. */
uint32_t tn__clients_add(tn_clients *c, const struct sockaddr *sa, const char *subject);
void tn__clients_remove(tn_clients *c, const struct sockaddr *sa, const char *subject);
uint32_t tn__clients_get(const tn_clients *c, const struct sockaddr *sa, const char *subject);
uint64_t tn__clients_active(const tn_clients *c);

#endif
