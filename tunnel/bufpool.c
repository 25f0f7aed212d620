/* Pools of equal buffers: relay read buffers (TN_BUF_SIZE) and datagram
 * buffers (TN_DGRAM_BUF_SIZE). A buffer is taken only when bytes are there
 * (a socket is readable, a datagram arrived) and given back as soon as they
 * are written, so an idle tunnel holds none. A few free buffers are kept so
 * that the steady state of a relay allocates nothing: large relay buffers
 * mean fewer syscalls per byte; a datagram buffer holds one capsule.
 *
 * Each engine has its own pool (no process-wide state): a buffer carries,
 * just before its bytes, the pool it goes back to, so that whoever holds it
 * (an endpoint, an HTTP/2 queue) releases it without knowing the engine.
 * A pool is used only from its engine's loop thread. */
#include <stddef.h>
#include <stdlib.h>

#include "tunnel/ep.h"

/* What precedes a buffer's bytes; keeps them max-aligned. */
typedef union buf_head {
  tn_bufpool *pool;
  max_align_t align;
} buf_head;

void tn__bufpool_init(tn_bufpool *p, size_t size, size_t max) {
  p->len = 0;
  p->size = size;
  p->max = max < TN_DGRAM_KEEP ? max : TN_DGRAM_KEEP;
}

char *tn__buf_get(tn_bufpool *p) {
  if (p->len)
    return p->keep[--p->len];
  buf_head *h = malloc(sizeof(*h) + p->size);
  if (!h)
    return NULL;
  h->pool = p;
  return (char *)(h + 1);
}

void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  tn_bufpool *pool = h->data;
  char *p = tn__buf_get(pool);
  /* len 0 makes libuv report UV_ENOBUFS to the read callback. */
  *buf = uv_buf_init(p, p ? (unsigned)pool->size : 0);
}

void tn__buf_release(char *b) {
  if (!b)
    return;
  buf_head *h = (buf_head *)b - 1;
  tn_bufpool *p = h->pool;
  if (p->len < p->max)
    p->keep[p->len++] = b;
  else
    free(h);
}

void tn__bufpool_trim(tn_bufpool *p) {
  while (p->len)
    free((buf_head *)p->keep[--p->len] - 1);
}
