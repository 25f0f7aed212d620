/* TCP endpoint. Writes go out at once with uv_try_write when nothing is
 * queued (one syscall, no request, the buffer back to the pool at once);
 * only the unsent rest is queued with uv_write. Read buffers come from the
 * pool only while a socket is readable. See ep.h for the contract. */
#include <stdlib.h>
#include <sys/socket.h>

#include "tunnel/ep.h"

typedef struct {
  uv_write_t req;
  char *base;
  tn_buf_kind kind;
} tcp_write;

void tn__buf_free(char *base, tn_buf_kind kind) {
  if (kind == TN_BUF_POOL)
    tn__buf_release(base);
  else if (kind == TN_BUF_HEAP)
    free(base);
}

static tn_ep_tcp *tcp_of(tn_ep *ep) { return (tn_ep_tcp *)ep; }
static tn_ep_tcp *tcp_of_handle(uv_handle_t *h) { return tn__ep_tcp_of(h); }

int tn__sock_error(int fd, int fallback) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr)
    return uv_translate_sys_error(soerr);
  return fallback;
}

/* What an end of stream really was. libuv reports a reset as UV_EOF when it
 * comes right after a short read: seeing POLLHUP then, uv__stream_io ends the
 * stream without another read(), so ECONNRESET is never returned. The socket
 * still holds the error, and a device's reset relayed as a FIN would look
 * like a complete upload to the destination. */
static int eof_or_reset(uv_tcp_t *tcp) {
  uv_os_fd_t fd;
  if (uv_fileno((const uv_handle_t *)tcp, &fd) != 0)
    return UV_EOF;
  return tn__sock_error(fd, UV_EOF);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tn_ep_tcp *e = tcp_of_handle((uv_handle_t *)s);
  if (nread > 0) {
    e->ep.sink->data(&e->ep, buf->base, TN_BUF_POOL, (size_t)nread);
    return;
  }
  tn__buf_release(buf->base);
  if (nread == 0 || e->ep.closing)
    return;
  e->ep.reading = false;
  if (nread == UV_EOF)
    nread = eof_or_reset(&e->tcp);
  if (nread == UV_EOF) {
    e->ep.eof = true;
    e->ep.sink->eof(&e->ep);
    return;
  }
  e->ep.sink->error(&e->ep, (int)nread);
}

static int tcp_read_start(tn_ep *ep) {
  tn_ep_tcp *e = tcp_of(ep);
  if (ep->reading || ep->eof || ep->closing)
    return 0;
  int err = uv_read_start((uv_stream_t *)&e->tcp, tn__alloc_cb, on_read);
  ep->reading = err == 0;
  return err;
}

static void tcp_read_stop(tn_ep *ep) {
  if (!ep->reading)
    return;
  uv_read_stop((uv_stream_t *)&tcp_of(ep)->tcp);
  ep->reading = false;
}

static size_t tcp_queued(const tn_ep *ep) { return ((const tn_ep_tcp *)ep)->tcp.write_queue_size; }

static void on_written(uv_write_t *req, int status) {
  tcp_write *w = (tcp_write *)req;
  tn_ep_tcp *e = tcp_of_handle((uv_handle_t *)req->handle);
  tn__buf_free(w->base, w->kind);
  free(w);
  if (status == UV_ECANCELED || e->ep.closing)
    return;
  if (status < 0) {
    e->ep.sink->error(&e->ep, status);
    return;
  }
  if (e->want_drain && e->tcp.write_queue_size < TN_RELAY_LOW) {
    e->want_drain = false;
    e->ep.sink->drained(&e->ep);
  }
}

static int tcp_write_bytes(tn_ep *ep, char *base, tn_buf_kind kind, size_t len) {
  tn_ep_tcp *e = tcp_of(ep);
  size_t off = 0;
  if (e->tcp.write_queue_size == 0) {
    uv_buf_t b = uv_buf_init(base, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&e->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
      tn__buf_free(base, kind);
      return n;
    }
    off = n > 0 ? (size_t)n : 0;
  }
  if (off == len) {
    tn__buf_free(base, kind);
    return 0;
  }
  tcp_write *w = malloc(sizeof(*w));
  if (!w) {
    tn__buf_free(base, kind);
    return UV_ENOMEM;
  }
  w->base = base;
  w->kind = kind;
  uv_buf_t b = uv_buf_init(base + off, (unsigned)(len - off));
  int err = uv_write(&w->req, (uv_stream_t *)&e->tcp, &b, 1, on_written);
  if (err) {
    tn__buf_free(base, kind);
    free(w);
    return err;
  }
  if (e->tcp.write_queue_size > TN_RELAY_HIGH)
    e->want_drain = true;
  return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  tn_ep_tcp *e = tcp_of_handle((uv_handle_t *)req->handle);
  free(req);
  if (status == UV_ECANCELED || e->ep.closing)
    return;
  if (status < 0) {
    e->ep.sink->error(&e->ep, status);
    return;
  }
  e->ep.shut = true;
  e->ep.sink->shut(&e->ep);
}

static int tcp_shutdown(tn_ep *ep) {
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (!req)
    return UV_ENOMEM;
  int err = uv_shutdown(req, (uv_stream_t *)&tcp_of(ep)->tcp, on_shutdown);
  if (err)
    free(req);
  return err;
}

static void on_closed(uv_handle_t *h) {
  tn_ep_tcp *e = tcp_of_handle(h);
  e->ep.sink->closed(&e->ep);
}

static void tcp_close(tn_ep *ep, bool reset) {
  tn_ep_tcp *e = tcp_of(ep);
  if (ep->closing)
    return;
  ep->closing = true;
  ep->reading = false;
  e->open = false;
  /* An abortive close (RST) tells the peer the other side reset, instead of
   * a FIN that would look like a clean end of stream. */
  if (reset && !ep->shut && uv_tcp_close_reset(&e->tcp, on_closed) == 0)
    return;
  uv_close((uv_handle_t *)&e->tcp, on_closed);
}

static const tn_ep_ops tcp_ops = {
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write_bytes,
    .queued = tcp_queued,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
};

int tn__ep_tcp_init(tn_ep_tcp *e, uv_loop_t *loop, tn_bufpool *pool, const tn_ep_sink *sink,
                    void *owner) {
  int err = uv_tcp_init(loop, &e->tcp);
  if (err)
    return err;
  e->ep = (tn_ep){.ops = &tcp_ops, .sink = sink, .owner = owner};
  e->tcp.data = pool;
  e->open = true;
  e->want_drain = false;
  return 0;
}
