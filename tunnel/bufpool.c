/* Relay read buffers (TN_BUF_SIZE). A buffer is taken only when a socket is
 * readable and given back as soon as its bytes are written, so an idle
 * tunnel holds none. A few free buffers are kept to serve bulk transfers
 * without malloc churn; large buffers mean fewer syscalls per byte.
 * Single-threaded: only ever used from the loop thread. */
#include <stdlib.h>

#include "tunnel/internal.h"

#define POOL_KEEP 8 /* 2 MiB at most kept idle */

static char *pool[POOL_KEEP];
static size_t pool_len;

void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  char *p = pool_len ? pool[--pool_len] : malloc(TN_BUF_SIZE);
  /* len 0 makes libuv report UV_ENOBUFS to the read callback. */
  *buf = uv_buf_init(p, p ? TN_BUF_SIZE : 0);
}

void tn__buf_release(char *p) {
  if (!p)
    return;
  if (pool_len < POOL_KEEP)
    pool[pool_len++] = p;
  else
    free(p);
}

void tn__bufpool_trim(void) {
  while (pool_len)
    free(pool[--pool_len]);
}
