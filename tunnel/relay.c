/* The byte relay between device and destination.
 *
 * - Bytes are written at once with uv_try_write when the other side has
 *   nothing queued (one syscall, no request, buffer back to the pool at
 *   once); only the unsent rest is queued with uv_write.
 * - Backpressure: reading a side stops while the other side has more than
 *   TN_RELAY_HIGH bytes queued, and resumes below TN_RELAY_LOW.
 * - Half-close: EOF from one side becomes shutdown(SHUT_WR) on the other,
 *   after the queued bytes. The tunnel ends when both directions are done.
 * - A read or write error on either side closes both (RST to the other).
 * Payload bytes are never inspected, except the first five of the device's,
 * which must form a TLS record header when require_tls is set. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"
#include "tunnel/log.h"

/* Who owns the bytes being sent, so they are given back the right way. */
typedef enum { BUF_POOL = 0, BUF_HEAP, BUF_STATIC } buf_kind;

typedef struct {
  uv_write_t req;
  char *base;
  buf_kind kind;
} relay_write;

static const char response_200[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

static tn_side *side_of(tn_tunnel *t, uv_stream_t *s) {
  return s == (uv_stream_t *)&t->down.tcp ? &t->down : &t->up;
}

static tn_side *other_side(tn_tunnel *t, tn_side *s) { return s == &t->down ? &t->up : &t->down; }

static const char *reset_reason(tn_tunnel *t, tn_side *s) {
  return s == &t->down ? "reset_down" : "reset_up";
}

bool tn__tls_check(tn_tunnel *t, const char *p, size_t n) {
  for (size_t i = 0; i < n && t->tls_checked < 5; i++, t->tls_checked++) {
    uint8_t c = (uint8_t)p[i];
    switch (t->tls_checked) {
    case 0: /* ContentType handshake(22) */
      if (c != 0x16)
        return false;
      break;
    case 1: /* legacy_record_version major 3 */
      if (c != 0x03)
        return false;
      break;
    case 2: /* minor 0..4: SSL 3.0 to TLS 1.3 */
      if (c > 0x04)
        return false;
      break;
    case 3: /* length, at most 2^14 (RFC 8446 5.1) */
      if (c > 0x40)
        return false;
      t->tls_len_hi = c;
      break;
    default:
      if ((t->tls_len_hi == 0 && c == 0) || (t->tls_len_hi == 0x40 && c != 0))
        return false;
    }
  }
  return true;
}

static void buf_free(char *base, buf_kind kind) {
  if (kind == BUF_POOL)
    tn__buf_release(base);
  else if (kind == BUF_HEAP)
    free(base);
}

static void release_write(relay_write *w) {
  buf_free(w->base, w->kind);
  free(w);
}

static void start_reading(tn_tunnel *t, tn_side *s);

static void on_written(uv_write_t *req, int status) {
  relay_write *w = (relay_write *)req;
  tn_tunnel *t = req->handle->data;
  tn_side *to = side_of(t, req->handle), *from = other_side(t, to);
  release_write(w);
  if (status == UV_ECANCELED || t->phase != TN_PHASE_RELAY)
    return;
  if (status < 0)
    return tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, to));
  if (!from->reading && !from->eof && to->tcp.write_queue_size < TN_RELAY_LOW)
    start_reading(t, from);
}

/* Queues base[off..len) to `to`, taking ownership of base. */
static int queue_write(tn_side *to, char *base, buf_kind kind, size_t off, size_t len) {
  relay_write *w = malloc(sizeof(*w));
  if (!w)
    return UV_ENOMEM;
  w->base = base;
  w->kind = kind;
  uv_buf_t b = uv_buf_init(base + off, (unsigned)(len - off));
  int err = uv_write(&w->req, (uv_stream_t *)&to->tcp, &b, 1, on_written);
  if (err)
    free(w); /* base stays with the caller */
  return err;
}

/* Sends len bytes of base to `to`, taking ownership of base either way. */
static int send_bytes(tn_side *to, char *base, buf_kind kind, size_t len) {
  size_t off = 0;
  if (to->tcp.write_queue_size == 0) {
    uv_buf_t b = uv_buf_init(base, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&to->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
      buf_free(base, kind);
      return n;
    }
    off = n > 0 ? (size_t)n : 0;
  }
  int err = 0;
  if (off == len || (err = queue_write(to, base, kind, off, len)) != 0)
    buf_free(base, kind);
  return err;
}

static void forward(tn_tunnel *t, tn_side *from, char *base, size_t n) {
  tn_side *to = other_side(t, from);
  if (from == &t->down) {
    if (t->tls_checked < 5 && !tn__tls_check(t, base, n)) {
      tn__buf_release(base);
      return tn__tunnel_close(t, TN_RESULT_REFUSED_NOT_TLS, "not_tls");
    }
    t->bytes_up += n;
    tn__count_bytes(t->engine, n, 0);
  } else {
    t->bytes_down += n;
    tn__count_bytes(t->engine, 0, n);
  }
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (send_bytes(to, base, BUF_POOL, n) != 0)
    return tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, to));
  if (to->tcp.write_queue_size > TN_RELAY_HIGH) {
    uv_read_stop((uv_stream_t *)&from->tcp);
    from->reading = false;
  }
}

static void maybe_done(tn_tunnel *t) {
  if (t->down.eof && t->up.eof && t->down.shut && t->up.shut)
    tn__tunnel_close(t, TN_RESULT_OK, "eof");
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  tn_tunnel *t = req->handle->data;
  tn_side *s = side_of(t, req->handle);
  free(req);
  if (status == UV_ECANCELED || t->phase != TN_PHASE_RELAY)
    return;
  if (status < 0)
    return tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, s));
  s->shut = true;
  maybe_done(t);
}

static void on_eof(tn_tunnel *t, tn_side *from) {
  tn_side *to = other_side(t, from);
  from->eof = true;
  from->reading = false;
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (!req || uv_shutdown(req, (uv_stream_t *)&to->tcp, on_shutdown) != 0) {
    free(req);
    tn__tunnel_close(t, TN_RESULT_OK, "shutdown_failed");
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  tn_tunnel *t = stream->data;
  tn_side *from = side_of(t, stream);
  if (nread > 0)
    return forward(t, from, buf->base, (size_t)nread);
  tn__buf_release(buf->base);
  if (nread == 0 || t->phase != TN_PHASE_RELAY)
    return;
  if (nread == UV_EOF)
    return on_eof(t, from);
  tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, from));
}

static void start_reading(tn_tunnel *t, tn_side *s) {
  if (uv_read_start((uv_stream_t *)&s->tcp, tn__alloc_cb, on_read) == 0)
    s->reading = true;
  else
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed");
}

void tn__relay_start(tn_tunnel *t) {
  tn_setup *s = t->setup;
  t->phase = TN_PHASE_RELAY;
  t->deadline_ms = 0;
  t->result = TN_RESULT_OK;
  t->status = 200;
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (!tn__opts(t->engine)->require_tls)
    t->tls_checked = 5;
  tn__list_move(t->engine, t, true);
  uv_tcp_nodelay(&t->down.tcp, 1);
  uv_tcp_nodelay(&t->up.tcp, 1);
  char *pending = s->pending;
  size_t pending_len = s->pending_len;
  s->pending = NULL;
  tn__setup_free(t);
  if (send_bytes(&t->down, (char *)response_200, BUF_STATIC, sizeof(response_200) - 1) != 0) {
    free(pending);
    return tn__tunnel_close(t, TN_RESULT_ERROR, "reset_down");
  }
  if (pending_len) {
    t->bytes_up += pending_len;
    tn__count_bytes(t->engine, pending_len, 0);
    if (send_bytes(&t->up, pending, BUF_HEAP, pending_len) != 0)
      return tn__tunnel_close(t, TN_RESULT_OK, "reset_up");
  }
  start_reading(t, &t->down);
  if (t->phase == TN_PHASE_RELAY)
    start_reading(t, &t->up);
}
