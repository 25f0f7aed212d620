/* See spare.h. */
#include "tunnel/spare.h"

static void on_spare_closed(uv_handle_t *h);

static void take(tn_spare *s) {
  s->busy = true;
  s->pending = false;
  uv_tcp_init(s->server->loop, &s->tcp); /* cannot fail for AF_UNSPEC */
  s->tcp.data = s;
  uv_accept(s->server, (uv_stream_t *)&s->tcp);
  uv_close((uv_handle_t *)&s->tcp, on_spare_closed);
}

static void on_spare_closed(uv_handle_t *h) {
  tn_spare *s = h->data;
  if (s->pending && !uv_is_closing((uv_handle_t *)s->server)) {
    take(s); /* still busy */
    return;
  }
  s->busy = false;
  s->pending = false;
  if (s->on_idle)
    s->on_idle(s);
}

void tn_spare_init(tn_spare *s, uv_stream_t *server, void (*on_idle)(tn_spare *), void *data) {
  *s = (tn_spare){.server = server, .on_idle = on_idle, .data = data};
}

void tn_spare_drop(tn_spare *s) {
  if (s->busy)
    s->pending = true;
  else
    take(s);
}
