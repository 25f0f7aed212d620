/* The Capsule Protocol (RFC 9297 section 3.2) as CONNECT-UDP (RFC 9298)
 * uses it: variable-length integers, a stream reader that turns device bytes
 * into UDP payloads, and the header of a DATAGRAM capsule to write.
 *
 * Pure: no I/O, no allocation of its own (a datagram split across reads is
 * collected in a buffer the caller lends through tn_capsule_ops.hold), so it
 * is unit-tested and fuzzed directly. Errors are negative TN_E* codes
 * (tunnel/error.h).
 */
#ifndef TN_CAPSULE_H
#define TN_CAPSULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TN_CAPSULE_DATAGRAM 0x00           /* RFC 9297 section 3.5 */
#define TN_VARINT_MAX ((UINT64_C(1) << 62) - 1)
#define TN_VARINT_LEN_MAX 8
/* type (1) + length (up to 8) + context id 0 (1): the longest header
 * tn_capsule_datagram_head writes. */
#define TN_CAPSULE_HEAD_MAX 10

/* Decodes the QUIC variable-length integer (RFC 9000 section 16) at p[0..n).
 * Returns the bytes it takes (1, 2, 4 or 8) and stores the value, or 0 when
 * n is too short (*out untouched). Any encoding is accepted, minimal or not. */
size_t tn_varint_decode(const uint8_t *p, size_t n, uint64_t *out);
/* Bytes the shortest encoding of v takes: 1, 2, 4 or 8; 0 if v > TN_VARINT_MAX. */
size_t tn_varint_len(uint64_t v);
/* Writes the shortest encoding of v (<= TN_VARINT_MAX) to p, which has room
 * for TN_VARINT_LEN_MAX bytes. Returns the bytes written, 0 if v is too large. */
size_t tn_varint_encode(uint64_t v, uint8_t *p);

/* Writes the header of a DATAGRAM capsule carrying a UDP payload of
 * payload_len bytes with Context ID 0: the payload follows it on the stream.
 * out has room for TN_CAPSULE_HEAD_MAX. Returns the header's length. */
size_t tn_capsule_datagram_head(uint8_t *out, size_t payload_len);

/* Why the reader passed over a capsule without handing a payload on. */
typedef enum {
  TN_CAPSULE_SKIP_CONTEXT = 0, /* a DATAGRAM with a Context ID other than 0 */
  TN_CAPSULE_SKIP_TYPE,        /* a capsule type other than DATAGRAM */
  TN_CAPSULE_SKIP_TOO_LARGE,   /* a UDP payload over max_payload */
  TN_CAPSULE_SKIP_NO_BUFFER,   /* a split payload and hold() lent no buffer */
} tn_capsule_skip;

/* What the reader calls, with arg. Both are called from within
 * tn_capsule_read only, and may not call it again for the same reader. */
typedef struct tn_capsule_ops {
  /* A complete UDP payload (Context ID 0), len <= max_payload; valid for the
   * duration of the call only (it points into the caller's input or into the
   * buffer hold() lent, which the reader no longer uses after this call). */
  void (*datagram)(void *arg, const uint8_t *payload, size_t len);
  /* A capsule passed over (RFC 9297 3.2: unknown types are skipped; RFC 9298
   * section 4: unknown Context IDs are dropped). May be NULL. */
  void (*skip)(void *arg, tn_capsule_skip why);
  /* A buffer of len (1..max_payload) bytes for a payload that arrives in
   * pieces, or NULL (the payload is then skipped). The reader writes into it
   * until it passes it to datagram(). */
  uint8_t *(*hold)(void *arg, size_t len);
} tn_capsule_ops;

/* The state between reads of one stream. Small (an idle tunnel holds one):
 * a partial header and a count of bytes still to collect or skip. */
typedef struct tn_capsule_reader {
  uint64_t remaining; /* payload bytes still to collect (body) or skip */
  /* The buffer hold() lent while a payload is being collected, else NULL; a
   * stream that ends mid-payload leaves it here for its owner to return. */
  uint8_t *body;
  uint32_t body_len;  /* bytes collected so far */
  uint32_t max_payload;
  uint8_t state;    /* private */
  uint8_t head_len; /* bytes in head */
  uint8_t head[3 * TN_VARINT_LEN_MAX];
} tn_capsule_reader;

/* Starts reading a stream whose UDP payloads may be at most max_payload bytes. */
void tn_capsule_reader_init(tn_capsule_reader *r, uint32_t max_payload);

/* Feeds the next n bytes of the stream. Returns 0, or TN_EINVAL for a
 * malformed capsule (a DATAGRAM capsule too short to hold its Context ID):
 * the stream must end (RST_STREAM(PROTOCOL_ERROR), or the HTTP/1.1
 * connection closed), and the reader may not be fed again. */
int tn_capsule_read(tn_capsule_reader *r, const uint8_t *p, size_t n, const tn_capsule_ops *ops,
                    void *arg);

/* True between capsules: a stream that ends otherwise ended mid-capsule,
 * which RFC 9297 3.3 calls malformed. */
bool tn_capsule_reader_at_boundary(const tn_capsule_reader *r);

#endif
