/* The Capsule Protocol reader and writer (RFC 9297, RFC 9298 section 5). */
#include "tunnel/capsule.h"

#include <string.h>

#include "tunnel/error.h"

enum { ST_HEAD = 0, ST_BODY, ST_SKIP, ST_BROKEN };

size_t tn_varint_decode(const uint8_t *p, size_t n, uint64_t *out) {
  size_t len;
  uint64_t v;
  if (n == 0)
    return 0;
  len = (size_t)1 << (p[0] >> 6);
  if (n < len)
    return 0;
  v = p[0] & 0x3f;
  for (size_t i = 1; i < len; i++)
    v = (v << 8) | p[i];
  *out = v;
  return len;
}

size_t tn_varint_len(uint64_t v) {
  if (v <= 63)
    return 1;
  if (v <= 16383)
    return 2;
  if (v <= 1073741823)
    return 4;
  return v <= TN_VARINT_MAX ? 8 : 0;
}

size_t tn_varint_encode(uint64_t v, uint8_t *p) {
  size_t len = tn_varint_len(v);
  static const uint8_t prefix[9] = {0, 0x00, 0x40, 0, 0x80, 0, 0, 0, 0xc0};
  for (size_t i = len; i > 0; i--) {
    p[i - 1] = (uint8_t)(v & 0xff);
    v >>= 8;
  }
  if (len > 0)
    p[0] |= prefix[len];
  return len;
}

size_t tn_capsule_datagram_head(uint8_t *out, size_t payload_len) {
  size_t n = 0;
  out[n++] = TN_CAPSULE_DATAGRAM;
  n += tn_varint_encode((uint64_t)payload_len + 1, out + n);
  out[n++] = 0; /* Context ID 0: a UDP payload */
  return n;
}

void tn_capsule_reader_init(tn_capsule_reader *r, uint32_t max_payload) {
  memset(r, 0, sizeof(*r));
  r->max_payload = max_payload;
}

bool tn_capsule_reader_at_boundary(const tn_capsule_reader *r) {
  return r->state == ST_HEAD && r->head_len == 0;
}

/* A capsule's header as far as the reader needs it. */
typedef struct {
  uint64_t type, length, context;
  uint64_t payload; /* length less the Context ID (DATAGRAM) */
  size_t size;      /* bytes of type, length and (DATAGRAM) Context ID */
} head;

/* Parses the header at p[0..n): its size, 0 while incomplete, or TN_EINVAL
 * for a DATAGRAM capsule whose length cannot hold its Context ID. */
static int parse_head(const uint8_t *p, size_t n, head *h) {
  size_t a, b, c;
  if ((a = tn_varint_decode(p, n, &h->type)) == 0)
    return 0;
  if ((b = tn_varint_decode(p + a, n - a, &h->length)) == 0)
    return 0;
  h->context = 0;
  h->payload = h->length;
  h->size = a + b;
  if (h->type != TN_CAPSULE_DATAGRAM)
    return (int)h->size;
  if (h->length == 0)
    return TN_EINVAL;
  if (n == a + b)
    return 0;
  c = (size_t)1 << (p[a + b] >> 6);
  if (c > h->length)
    return TN_EINVAL; /* the Context ID would run past the capsule */
  if (tn_varint_decode(p + a + b, n - a - b, &h->context) == 0)
    return 0;
  h->payload = h->length - c;
  h->size += c;
  return (int)h->size;
}

/* Passes over the next `bytes` bytes of the stream, after telling why. */
static void skip(tn_capsule_reader *r, uint64_t bytes, tn_capsule_skip why,
                 const tn_capsule_ops *ops, void *arg) {
  if (ops->skip)
    ops->skip(arg, why);
  r->remaining = bytes;
  r->state = bytes > 0 ? ST_SKIP : ST_HEAD;
}

/* The header h was read; p[0..n) is whatever of its payload this read holds.
 * Hands on a payload that is all there without copying it, or starts
 * collecting or skipping it. Returns the bytes it took from p. */
static size_t begin_payload(tn_capsule_reader *r, const head *h, const uint8_t *p, size_t n,
                            const tn_capsule_ops *ops, void *arg) {
  if (h->type != TN_CAPSULE_DATAGRAM)
    skip(r, h->payload, TN_CAPSULE_SKIP_TYPE, ops, arg);
  else if (h->context != 0)
    skip(r, h->payload, TN_CAPSULE_SKIP_CONTEXT, ops, arg);
  else if (h->payload > r->max_payload)
    skip(r, h->payload, TN_CAPSULE_SKIP_TOO_LARGE, ops, arg);
  else if (n >= h->payload) {
    ops->datagram(arg, p, (size_t)h->payload);
    return (size_t)h->payload;
  } else if (!ops->hold || !(r->body = ops->hold(arg, (size_t)h->payload)))
    skip(r, h->payload, TN_CAPSULE_SKIP_NO_BUFFER, ops, arg);
  else {
    r->state = ST_BODY;
    r->remaining = h->payload;
    r->body_len = 0;
  }
  return 0;
}

/* Reads (more of) a header from p[0..n). Returns the bytes taken, or
 * TN_EINVAL. An incomplete header is always shorter than head[], so while
 * incomplete every byte of p fits there. */
static int read_head(tn_capsule_reader *r, const uint8_t *p, size_t n, const tn_capsule_ops *ops,
                     void *arg) {
  size_t old = r->head_len, take = n, used;
  head h;
  int rc;
  if (old == 0) {
    rc = parse_head(p, n, &h);
  } else {
    if (take > sizeof(r->head) - old)
      take = sizeof(r->head) - old;
    memcpy(r->head + old, p, take);
    rc = parse_head(r->head, old + take, &h);
  }
  if (rc < 0) {
    r->state = ST_BROKEN;
    return rc;
  }
  if (rc == 0) {
    if (old == 0)
      memcpy(r->head, p, n);
    r->head_len = (uint8_t)(old + take);
    return (int)take;
  }
  used = (size_t)rc - old;
  r->head_len = 0;
  return (int)(used + begin_payload(r, &h, p + used, n - used, ops, arg));
}

static size_t read_body(tn_capsule_reader *r, const uint8_t *p, size_t n,
                        const tn_capsule_ops *ops, void *arg) {
  size_t take = n < r->remaining ? n : (size_t)r->remaining;
  uint8_t *body = r->body;
  memcpy(body + r->body_len, p, take);
  r->body_len += (uint32_t)take;
  r->remaining -= take;
  if (r->remaining == 0) {
    r->body = NULL;
    r->state = ST_HEAD;
    ops->datagram(arg, body, r->body_len);
  }
  return take;
}

static size_t skip_bytes(tn_capsule_reader *r, size_t n) {
  size_t take = n < r->remaining ? n : (size_t)r->remaining;
  r->remaining -= take;
  if (r->remaining == 0)
    r->state = ST_HEAD;
  return take;
}

int tn_capsule_read(tn_capsule_reader *r, const uint8_t *p, size_t n, const tn_capsule_ops *ops,
                    void *arg) {
  while (n > 0) {
    size_t used;
    if (r->state == ST_BROKEN)
      return TN_EINVAL;
    if (r->state == ST_HEAD) {
      int rc = read_head(r, p, n, ops, arg);
      if (rc < 0)
        return rc;
      used = (size_t)rc;
    } else if (r->state == ST_BODY) {
      used = read_body(r, p, n, ops, arg);
    } else {
      used = skip_bytes(r, n);
    }
    p += used;
    n -= used;
  }
  return r->state == ST_BROKEN ? TN_EINVAL : 0;
}
