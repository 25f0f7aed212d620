/* Relay read buffers (TN_BUF_SIZE). A buffer is taken only when a socket is
 * readable and given back as soon as its bytes are written, so an idle
 * tunnel holds none. A few free buffers are kept to serve bulk transfers
 * without malloc churn; large buffers mean fewer syscalls per byte.
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

char *tn__buf_get(tn_bufpool *p) {
  if (p->len)
    return p->keep[--p->len];
  buf_head *h = malloc(sizeof(*h) + TN_BUF_SIZE);
  if (!h)
    return NULL;
  h->pool = p;
  return (char *)(h + 1);
}

void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  char *p = tn__buf_get(h->data);
  /* len 0 makes libuv report UV_ENOBUFS to the read callback. */
  *buf = uv_buf_init(p, p ? TN_BUF_SIZE : 0);
}

void tn__buf_release(char *b) {
  if (!b)
    return;
  buf_head *h = (buf_head *)b - 1;
  tn_bufpool *p = h->pool;
  if (p->len < TN_BUFPOOL_KEEP)
    p->keep[p->len++] = b;
  else
    free(h);
}

void tn__bufpool_trim(tn_bufpool *p) {
  while (p->len)
    free((buf_head *)p->keep[--p->len] - 1);
}
