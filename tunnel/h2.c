/* HTTP/2 CONNECT (RFC 9113 8.5) on an nghttp2 server session: many device
 * tunnels multiplexed over one connection (TLS with ALPN h2, or h2c with
 * prior knowledge on a plain listener).
 *
 * Each request stream becomes a tn_tunnel whose device endpoint is the
 * stream (an h2_stream below, implementing tn_ep_ops):
 * - device DATA -> sink->data; the stream's flow-control window is reopened
 *   (nghttp2_session_consume) only while the upstream socket keeps up: when
 *   the relay stops reading the stream (upstream has TN_RELAY_HIGH queued),
 *   received bytes stay unconsumed until it drains. Automatic WINDOW_UPDATE
 *   is off. A slow tunnel therefore stalls only itself.
 * - upstream bytes -> write() queue -> a deferred data provider, resumed on
 *   each write; the queue's size is the relay's backpressure measure. The
 *   queue's nodes are recycled through the session (no allocation per
 *   write in the steady state, e.g. one per datagram of a CONNECT-UDP
 *   stream); a CONNECT-UDP stream's DATA is lent to its tunnel, which parses
 *   it within the call, instead of copied.
 * - END_STREAM from the device is EOF; shutdown() sends END_STREAM.
 * - RST_STREAM from the device resets the upstream socket, except
 *   RST_STREAM(NO_ERROR) after the device's END_STREAM, which only means it
 *   wants no more bytes: what it sent still reaches the destination.
 * - An upstream reset becomes RST_STREAM(CONNECT_ERROR).
 * - HEADERS on an established stream are a stream error (we check this
 *   ourselves: HTTP messaging in nghttp2 is off so that requests are
 *   validated here, and :protocol gets a clear status instead of a reset).
 * nghttp2 is never re-entered from its own callbacks: output is flushed
 * once the outermost session call returns, or (writes from tunnels) once
 * per turn of the loop (schedule()).
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/addr.h"
#include "tunnel/conn.h"
#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

typedef struct out_buf {
  struct out_buf *next;
  char *base;
  tn_buf_kind kind;
  size_t len, off;
} out_buf;

typedef struct h2_stream {
  tn_ep ep; /* first member: the tunnel's device endpoint */
  struct h2_stream *prev, *next;
  tn_h2 *h2;
  int32_t id;
  tn_tunnel *t; /* NULL once the tunnel let go of the endpoint */
  /* request */
  char authority[TN_HOST_MAX + 16];
  size_t authority_len;
  bool method_seen, is_connect, has_authority, has_scheme_or_path, has_protocol;
  bool connect_udp; /* :protocol connect-udp (RFC 9298) */
  char *path;       /* :path, kept for an extended CONNECT; owned */
  size_t path_len;
  bool malformed, regular_seen, request_done;
  /* upstream -> device */
  out_buf *out_head, *out_tail;
  size_t out_bytes;
  bool out_eof, deferred, want_drain, responded;
  /* device -> upstream */
  size_t unconsumed;
  bool paused;
  /* state */
  bool remote_ended, local_ended, closed_in_session;
  bool rst_sent; /* we already reset it: no second RST_STREAM */
  bool busy;     /* a sink call is under way: not to be freed yet */
} h2_stream;

struct tn_h2 {
  tn_link link; /* first member: in the engine's session list */
  tn_conn *conn;
  tn_engine *engine;
  nghttp2_session *session;
  h2_stream *streams;
  unsigned depth; /* nested calls into nghttp2 */
  bool need_flush, write_blocked, goaway, closing;
  bool calm_sent;   /* our GOAWAY(ENHANCE_YOUR_CALM) is queued */
  uint32_t refused; /* 429s answered on this connection */
  /* A header block begun (HEADERS without END_HEADERS yet, or a request
   * head not yet complete) on head_stream: header_timeout bounds it from
   * head_deadline_ms; 0 when none is open (tn__engine_head_open). */
  uint64_t head_deadline_ms;
  int32_t head_stream;
  bool head_timed_out; /* closing for it: linger so the GOAWAY is read */
  char *out;           /* frames being coalesced into one write */
  size_t out_len;
  out_buf *spare; /* queue nodes kept for reuse, at most TN_DGRAM_KEEP */
  size_t n_spare;
  tn_later flush_later; /* output scheduled outside nghttp2's calls */
};

static void flush(tn_h2 *h);
static void session_close(tn_h2 *h);

/* ---- request-head deadline ----
 * A device could open a header block and never finish it (a HEADERS frame
 * whose CONTINUATION never comes): nothing else may arrive on the
 * connection meanwhile (RFC 9113 6.10), and no tunnel exists yet, so the
 * session itself keeps the header_timeout deadline; the engine's sweep
 * calls h2_sweep. */

static void head_begin(tn_h2 *h, int32_t stream_id) {
  if (h->head_deadline_ms)
    return;
  h->head_deadline_ms = uv_now(tn__loop(h->engine)) + tn__opts(h->engine)->header_timeout_ms;
  h->head_stream = stream_id;
  tn__engine_head_open(h->engine, true);
}

static void head_end(tn_h2 *h) {
  if (!h->head_deadline_ms)
    return;
  h->head_deadline_ms = 0;
  tn__engine_head_open(h->engine, false);
}

/* ---- stream objects ---- */

static out_buf *node_get(tn_h2 *h) {
  out_buf *b = h->spare;
  if (!b)
    return malloc(sizeof(*b));
  h->spare = b->next;
  h->n_spare--;
  return b;
}

/* Gives a queue node back to the session, with the bytes it held. */
static void node_put(tn_h2 *h, out_buf *b) {
  tn__buf_free(b->base, b->kind);
  if (h->n_spare >= TN_DGRAM_KEEP) {
    free(b);
    return;
  }
  b->next = h->spare;
  h->spare = b;
  h->n_spare++;
}

static void out_free_all(h2_stream *st) {
  while (st->out_head) {
    out_buf *b = st->out_head;
    st->out_head = b->next;
    node_put(st->h2, b);
  }
  st->out_tail = NULL;
  st->out_bytes = 0;
}

/* A stream object goes once nghttp2 and the tunnel are both done with it. */
static void stream_maybe_free(h2_stream *st) {
  if (st->t || st->busy || !(st->closed_in_session || st->h2->closing))
    return;
  tn_h2 *h = st->h2;
  if (st->prev)
    st->prev->next = st->next;
  else
    h->streams = st->next;
  if (st->next)
    st->next->prev = st->prev;
  if (!h->closing)
    nghttp2_session_set_stream_user_data(h->session, st->id, NULL);
  out_free_all(st);
  free(st->path);
  free(st);
}

static void consume(h2_stream *st, size_t n) {
  if (n && !st->closed_in_session && !st->h2->closing)
    nghttp2_session_consume(st->h2->session, st->id, n);
}

/* Output is wanted: flushed when the outermost session call returns, or,
 * outside any (a tunnel's upstream data, a close), later in this turn of
 * the loop, together with whatever else the session's streams write until
 * then: one transport write for many datagrams. */
static void schedule(tn_h2 *h) {
  h->need_flush = true;
  if (h->depth == 0)
    tn__engine_later(h->engine, &h->flush_later);
}

static void flush_later(tn_later *l) {
  tn_h2 *h = (tn_h2 *)(void *)((char *)l - offsetof(tn_h2, flush_later));
  if (h->need_flush)
    flush(h);
}

/* ---- the stream as a tunnel endpoint ---- */

static int st_read_start(tn_ep *ep) {
  h2_stream *st = (h2_stream *)ep;
  ep->reading = true;
  st->paused = false;
  consume(st, st->unconsumed);
  st->unconsumed = 0;
  schedule(st->h2);
  return 0;
}

static void st_read_stop(tn_ep *ep) {
  ep->reading = false;
  ((h2_stream *)ep)->paused = true;
}

static void resume(h2_stream *st) {
  if (st->deferred && !st->closed_in_session) {
    st->deferred = false;
    nghttp2_session_resume_data(st->h2->session, st->id);
  }
  schedule(st->h2);
}

static int st_write(tn_ep *ep, char *base, tn_buf_kind kind, size_t len) {
  h2_stream *st = (h2_stream *)ep;
  if (st->closed_in_session || st->local_ended || st->out_eof) {
    tn__buf_free(base, kind); /* nothing more can reach the device */
    return 0;
  }
  out_buf *b = node_get(st->h2);
  if (!b) {
    tn__buf_free(base, kind);
    return UV_ENOMEM;
  }
  *b = (out_buf){.base = base, .kind = kind, .len = len};
  if (st->out_tail)
    st->out_tail->next = b;
  else
    st->out_head = b;
  st->out_tail = b;
  st->out_bytes += len;
  if (st->out_bytes > TN_RELAY_HIGH)
    st->want_drain = true;
  resume(st);
  return 0;
}

static size_t st_queued(const tn_ep *ep) { return ((const h2_stream *)ep)->out_bytes; }

static int st_shutdown(tn_ep *ep) {
  h2_stream *st = (h2_stream *)ep;
  st->out_eof = true;
  resume(st);
  return 0;
}

/* Ends the tunnel's use of the stream. A reset, or a close while the stream
 * is still open and nothing final is queued, sends RST_STREAM; a pending
 * response or END_STREAM is still delivered. */
static void st_close(tn_ep *ep, bool reset) {
  h2_stream *st = (h2_stream *)ep;
  if (ep->closing)
    return;
  ep->closing = true;
  ep->reading = false;
  tn_h2 *h = st->h2;
  if (!st->closed_in_session && !h->closing) {
    uint32_t code = NGHTTP2_NO_ERROR;
    if (reset)
      code = st->t && tn__udp_malformed(st->t) ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_CONNECT_ERROR;
    else if (!st->local_ended && !st->out_eof)
      code = NGHTTP2_CANCEL;
    bool want_rst = reset || code != NGHTTP2_NO_ERROR || (st->local_ended && !st->remote_ended);
    if (want_rst && !st->rst_sent) {
      out_free_all(st);
      st->rst_sent = true;
      nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, code);
    }
    consume(st, st->unconsumed);
    st->unconsumed = 0;
  }
  tn_tunnel *t = st->t;
  st->t = NULL;
  tn__tunnel_ep_closed(t);
  stream_maybe_free(st);
  schedule(h);
}

static const tn_ep_ops stream_ops = {
    .read_start = st_read_start,
    .read_stop = st_read_stop,
    .write = st_write,
    .queued = st_queued,
    .shutdown = st_shutdown,
    .close = st_close,
};

/* ---- data provider: upstream bytes out as DATA frames ---- */

static ssize_t read_data(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user) {
  h2_stream *st = source->ptr;
  size_t n = 0;
  while (n < length && st->out_head) {
    out_buf *b = st->out_head;
    size_t take = b->len - b->off < length - n ? b->len - b->off : length - n;
    memcpy(buf + n, b->base + b->off, take);
    n += take;
    b->off += take;
    if (b->off == b->len) {
      st->out_head = b->next;
      if (!st->out_head)
        st->out_tail = NULL;
      node_put(st->h2, b);
    }
  }
  st->out_bytes -= n;
  if (st->out_bytes == 0 && st->out_eof)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  else if (n == 0) {
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (st->want_drain && st->out_bytes < TN_RELAY_LOW && st->t) {
    st->want_drain = false;
    st->ep.sink->drained(&st->ep);
  }
  return (ssize_t)n;
}

/* ---- request validation ---- */

static bool is(const uint8_t *p, size_t n, const char *s) {
  return n == strlen(s) && memcmp(p, s, n) == 0;
}

static void on_pseudo(h2_stream *st, const uint8_t *name, size_t nlen, const uint8_t *value,
                      size_t vlen) {
  if (st->regular_seen) {
    st->malformed = true; /* pseudo-headers must come first */
  } else if (is(name, nlen, ":method")) {
    st->malformed |= st->method_seen;
    st->method_seen = true;
    st->is_connect = is(value, vlen, "CONNECT");
  } else if (is(name, nlen, ":authority")) {
    st->malformed |= st->has_authority || vlen >= sizeof(st->authority);
    st->has_authority = true;
    if (vlen < sizeof(st->authority)) {
      memcpy(st->authority, value, vlen);
      st->authority_len = vlen;
    }
  } else if (is(name, nlen, ":scheme")) {
    st->has_scheme_or_path = true;
  } else if (is(name, nlen, ":path")) {
    st->has_scheme_or_path = true;
    st->malformed |= st->path != NULL || vlen == 0;
    if (!st->path && vlen && (st->path = malloc(vlen))) {
      memcpy(st->path, value, vlen);
      st->path_len = vlen;
    }
  } else if (is(name, nlen, ":protocol")) {
    st->malformed |= st->has_protocol;
    st->has_protocol = true;
    st->connect_udp = is(value, vlen, "connect-udp");
  } else {
    st->malformed = true;
  }
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st || st->request_done || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  if (nlen && name[0] == ':')
    on_pseudo(st, name, nlen, value, vlen);
  else
    st->regular_seen = true;
  return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  tn_h2 *h = user;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  head_begin(h, frame->hd.stream_id);
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    /* HEADERS on an open stream (trailers, or a second head): not allowed on
     * a CONNECT stream (RFC 9113 8.5); nghttp2 #2849. */
    h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                              NGHTTP2_PROTOCOL_ERROR);
    if (st) {
      st->rst_sent = true;
      if (st->t && !st->ep.closing)
        st->ep.sink->error(&st->ep, UV_EPROTO);
    }
    return 0;
  }
  h2_stream *st = calloc(1, sizeof(*st));
  if (!st)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->h2 = h;
  st->id = frame->hd.stream_id;
  st->ep = (tn_ep){.ops = &stream_ops};
  st->next = h->streams;
  if (h->streams)
    h->streams->prev = st;
  h->streams = st;
  nghttp2_session_set_stream_user_data(session, st->id, st);
  return 0;
}

/* The request head is complete: one tunnel per stream, each logged. */
static void on_request(tn_h2 *h, h2_stream *st, bool end_stream) {
  st->request_done = true;
  tn_tunnel *t = tn__tunnel_new(h->conn, &tn__proto_h2, &st->ep);
  if (!t) {
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
    return;
  }
  st->t = t;
  t->stream = st;
  t->phase = TN_PHASE_RESOLVING; /* the head is in; no header deadline */
  st->ep.eof = end_stream;
  st->remote_ended = end_stream;
  bool bad_connect =
      st->is_connect && (!st->has_authority || (st->has_scheme_or_path && !st->has_protocol));
  if (st->malformed || !st->method_seen || bad_connect) {
    st->malformed = true;
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 400, "malformed CONNECT request");
    return;
  }
  if (!st->is_connect) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 405,
                    "only CONNECT is supported: this is a tunnel gateway, not a web proxy");
    return;
  }
  if (st->has_protocol && !st->connect_udp) {
    tn__tunnel_fail(t, TN_RESULT_BAD_REQUEST, 501,
                    "extended CONNECT (:protocol, RFC 8441) is supported for connect-udp only");
    return;
  }
  if (st->connect_udp) {
    if (!st->path) {
      tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "out of memory");
      return;
    }
    tn__tunnel_request_udp(t, st->path, st->path_len);
    return;
  }
  tn__tunnel_request(t, st->authority, st->authority_len);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  tn_h2 *h = user;
  if (frame->hd.type == NGHTTP2_HEADERS) /* the whole block is in */
    head_end(h);
  h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st)
    return 0;
  bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
      !st->request_done)
    return on_request(h, st, end_stream), 0;
  if (frame->hd.type == NGHTTP2_DATA && end_stream && !st->remote_ended) {
    st->remote_ended = true;
    if (st->t && !st->ep.closing) {
      st->ep.eof = true;
      st->ep.sink->eof(&st->ep);
    }
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user) {
  h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
  if (!st || !st->t || st->ep.closing) {
    nghttp2_session_consume(session, id, len); /* keep the connection window open */
    return 0;
  }
  if (st->t->udp) { /* parsed within the call (udp.c): lent, not copied */
    st->ep.sink->data(&st->ep, (char *)(uintptr_t)data, TN_BUF_STATIC, len);
  } else { /* a TCP tunnel may queue it upstream */
    char *copy = malloc(len ? len : 1);
    if (!copy)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(copy, data, len);
    st->ep.sink->data(&st->ep, copy, TN_BUF_HEAP, len);
  }
  if (!st->t || st->ep.closing)
    return 0; /* st_close consumed what was outstanding */
  if (st->paused)
    st->unconsumed += len;
  else
    consume(st, len);
  return 0;
}

/* Every GOAWAY sent is counted by why (mcgw_h2_goaway_total{reason}). */
static void count_goaway(tn_h2 *h, uint32_t code) {
  tn_goaway_reason r = TN_GOAWAY_PROTOCOL;
  if (code == NGHTTP2_NO_ERROR)
    r = TN_GOAWAY_DRAIN;
  else if (code == NGHTTP2_ENHANCE_YOUR_CALM)
    r = h->calm_sent ? TN_GOAWAY_RATE_LIMITED : TN_GOAWAY_FLOOD;
  tn__count_goaway(h->engine, r);
  tn_log(tn__logger(h->engine), TN_LOG_INFO, "h2_goaway", TN_S("reason", tn_goaway_reason_name(r)),
         TN_S("code", nghttp2_http2_strerror(code)), TN_U("refused", h->refused), TN_LOG_END);
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  if (frame->hd.type == NGHTTP2_GOAWAY)
    count_goaway(user, frame->goaway.error_code);
  h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
      (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS))
    return 0;
  st->local_ended = true;
  if (st->t && !st->ep.closing) {
    st->ep.shut = true;
    st->ep.sink->shut(&st->ep);
  } else if (!st->remote_ended) {
    /* A final answer was sent and the tunnel is gone: ask the device to
     * stop sending (RFC 9113 8.1). */
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *user) {
  if (id == ((tn_h2 *)user)->head_stream) /* its head refused or reset */
    head_end(user);
  h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
  if (!st)
    return 0;
  st->closed_in_session = true;
  st->busy = true; /* the sink calls below may let the tunnel go */
  if (st->t && !st->ep.closing) {
    if (code == NGHTTP2_NO_ERROR && st->remote_ended) {
      /* DATA(END_STREAM) then RST_STREAM(NO_ERROR), or both ends done: the
       * device's half is complete; nothing more can reach it. */
      st->t->down_gone = true;
      out_free_all(st);
      st->ep.shut = true;
      st->ep.sink->shut(&st->ep);
    } else {
      st->ep.sink->error(&st->ep, UV_ECONNRESET);
    }
  }
  st->busy = false;
  stream_maybe_free(st);
  return 0;
}

/* The session's callbacks: made per session and freed once nghttp2 copied
 * them (no process-wide state); NULL on ENOMEM. */
static nghttp2_session_callbacks *callbacks_new(void) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return NULL;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  return cbs;
}

/* ---- session output ---- */

static int write_out(tn_h2 *h) {
  if (!h->out_len)
    return 0;
  char *buf = h->out;
  size_t len = h->out_len;
  h->out = NULL;
  h->out_len = 0;
  return tn__ep_write(h->conn->transport, buf, TN_BUF_POOL, len);
}

/* Copies frames into pool buffers (TN_BUF_SIZE), one transport write per buffer. */
static int emit(tn_h2 *h, const uint8_t *data, size_t n) {
  while (n) {
    if (!h->out && !(h->out = tn__buf_get(tn__bufpool(h->engine))))
      return UV_ENOMEM;
    size_t take = TN_BUF_SIZE - h->out_len < n ? TN_BUF_SIZE - h->out_len : n;
    memcpy(h->out + h->out_len, data, take);
    h->out_len += take;
    data += take;
    n -= take;
    if (h->out_len == TN_BUF_SIZE && write_out(h) != 0)
      return UV_EIO;
  }
  return 0;
}

static void flush(tn_h2 *h) {
  if (h->closing || h->depth)
    return;
  h->need_flush = false;
  h->depth++;
  int err = 0;
  while (!err && tn__ep_queued(h->conn->transport) < TN_RELAY_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h->session, &data);
    if (n <= 0) {
      err = n < 0 ? (int)n : 0;
      break;
    }
    err = emit(h, data, (size_t)n);
  }
  h->depth--;
  if (!err)
    err = write_out(h);
  h->write_blocked = tn__ep_queued(h->conn->transport) >= TN_RELAY_HIGH;
  if (err || (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session)))
    session_close(h);
  else if (h->need_flush && !h->write_blocked)
    flush(h);
}

/* ---- the device connection's transport ---- */

static void tr_data(tn_ep *ep, char *base, tn_buf_kind kind, size_t n) {
  tn_h2 *h = ep->owner;
  if (h->closing) { /* lingering: dropped unread */
    tn__buf_free(base, kind);
    return;
  }
  h->depth++;
  ssize_t rv = nghttp2_session_mem_recv(h->session, (const uint8_t *)base, n);
  h->depth--;
  tn__buf_free(base, kind);
  if (rv < 0) {
    tn_log(tn__logger(h->engine), TN_LOG_DEBUG, "h2_session_error",
           TN_S("error", nghttp2_strerror((int)rv)), TN_LOG_END);
    nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
  }
  flush(h);
}

/* EOF or an error: the session ends; a lingering one is done. */
static void tr_gone(tn_ep *ep) {
  tn_h2 *h = ep->owner;
  if (h->conn->mode == TN_CONN_LINGER) {
    tn__conn_abort(h->conn, "linger_done");
    return;
  }
  session_close(h);
}

static void tr_error(tn_ep *ep, int err) { tr_gone(ep); }

static void tr_drained(tn_ep *ep) {
  tn_h2 *h = ep->owner;
  if (h->write_blocked)
    flush(h);
}

static void tr_shut(tn_ep *ep) {}

static void tr_closed(tn_ep *ep) {
  tn_h2 *h = ep->owner;
  tn_conn *c = h->conn;
  while (h->streams) { /* none is still held by a tunnel (session_close) */
    h2_stream *st = h->streams;
    h->streams = st->next;
    out_free_all(st);
    free(st);
  }
  while (h->spare) {
    out_buf *b = h->spare;
    h->spare = b->next;
    free(b);
  }
  nghttp2_session_del(h->session);
  tn__buf_free(h->out, TN_BUF_POOL);
  tn__engine_later_cancel(&h->flush_later);
  free(h);
  tn__conn_free(c);
}

static void tr_ready(tn_ep *ep) {}

static const tn_ep_sink transport_sink = {
    .data = tr_data,
    .eof = tr_gone,
    .error = tr_error,
    .drained = tr_drained,
    .shut = tr_shut,
    .closed = tr_closed,
    .ready = tr_ready,
};

/* Closes the session: every stream's tunnel sees a device reset, then the
 * connection closes (a GOAWAY already queued goes out first if it can). */
static void session_close(tn_h2 *h) {
  if (h->closing)
    return;
  h->closing = true;
  tn__engine_later_cancel(&h->flush_later);
  head_end(h);
  tn__engine_session_removed(h->engine, &h->link);
  /* Each tunnel lets go of its stream on the error, which frees it. */
  for (h2_stream *st = h->streams, *next; st; st = next) {
    next = st->next;
    if (st->t && !st->ep.closing)
      st->ep.sink->error(&st->ep, UV_ECONNRESET);
    else
      stream_maybe_free(st);
  }
  /* After our GOAWAY(ENHANCE_YOUR_CALM) the device is likely still sending
   * (streams it opened before reading it): linger, so it reads the GOAWAY. */
  if ((h->calm_sent || h->head_timed_out) && tn__ep_shutdown(h->conn->transport) == 0) {
    tn__engine_conn_linger(h->engine, h->conn);
    return;
  }
  h->conn->mode = TN_CONN_CLOSING;
  tn__ep_close(h->conn->transport, false);
}

/* Drain: GOAWAY now, each session closing once its streams are done; or,
 * with close_now, close them all. */
static void h2_drain(tn_engine *e, bool close_now) {
  tn_link *sessions = tn__engine_sessions(e);
  tn_link *l = sessions->next;
  while (l != sessions) {
    tn_h2 *h = (tn_h2 *)l;
    l = l->next;
    if (close_now) {
      session_close(h);
      continue;
    }
    h->goaway = true;
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    schedule(h);
  }
}

/* A request head not complete within header_timeout: the session ends
 * with GOAWAY (its complete streams see a device reset), lingering so the
 * device reads it. */
static void h2_sweep(tn_engine *e, uint64_t now) {
  tn_link *sessions = tn__engine_sessions(e);
  for (tn_link *l = sessions->next, *next; l != sessions; l = next) {
    next = l->next; /* schedule() below may end h's session, and unlink it */
    tn_h2 *h = (tn_h2 *)l;
    if (!h->head_deadline_ms || now < h->head_deadline_ms || h->head_timed_out)
      continue;
    h->head_timed_out = true;
    h->goaway = true;
    head_end(h);
    char client[64] = "-";
    tn_addr_format((const struct sockaddr *)&h->conn->client, client, sizeof client);
    tn_log(tn__logger(h->engine), TN_LOG_INFO, "h2_header_timeout", TN_S("client", client),
           TN_U("stream", (uint64_t)h->head_stream), TN_LOG_END);
    nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
    schedule(h);
  }
}

static int submit_settings(tn_h2 *h) {
  const tn_engine_opts *o = tn__opts(h->engine);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->h2_max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->h2_stream_window},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441: for CONNECT-UDP */
  };
  int rv = nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, 3);
  /* The connection window must not be what stalls a stream: room for every
   * stream's full window. */
  uint64_t conn_window = (uint64_t)o->h2_max_concurrent_streams * o->h2_stream_window;
  if (conn_window > 0x7fffffff)
    conn_window = 0x7fffffff;
  if (rv == 0)
    rv = nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                               (int32_t)conn_window);
  return rv;
}

static nghttp2_session *new_session(tn_h2 *h) {
  nghttp2_option *opt;
  nghttp2_session *s = NULL;
  nghttp2_session_callbacks *cbs = callbacks_new();
  if (!cbs)
    return NULL;
  if (nghttp2_option_new(&opt) == 0) {
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_session_server_new2(&s, cbs, h, opt); /* copies cbs */
    nghttp2_option_del(opt);
  }
  nghttp2_session_callbacks_del(cbs);
  return s;
}

static void h2_start(tn_conn *c, const char *first, size_t n) {
  tn_h2 *h = calloc(1, sizeof(*h));
  if (!h || !(h->session = new_session(h))) {
    free(h);
    tn__conn_abort(c, "out_of_memory");
    return;
  }
  h->conn = c;
  h->engine = c->engine;
  h->flush_later.run = flush_later;
  tn__engine_session_added(h->engine, &h->link);
  tn__ep_set_sink(c->transport, &transport_sink, h);
  if (submit_settings(h) != 0) {
    session_close(h);
    return;
  }
  if (n) { /* the h2c preface and whatever followed it */
    char *copy = malloc(n);
    if (!copy) {
      session_close(h);
      return;
    }
    memcpy(copy, first, n);
    tr_data(c->transport, copy, TN_BUF_HEAP, n);
  } else {
    flush(h);
  }
  /* A closing session's transport closes asynchronously: h is still valid. */
  if (!h->closing && tn__ep_read_start(c->transport) != 0)
    session_close(h);
}

/* ---- tunnel outcomes on a stream ---- */

static int h2_established(tn_tunnel *t) {
  h2_stream *st = t->stream;
  nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
                     {(uint8_t *)"capsule-protocol", (uint8_t *)"?1", 16, 2, NGHTTP2_NV_FLAG_NONE}};
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_data};
  int rv = nghttp2_submit_response(st->h2->session, st->id, nv, t->udp ? 2 : 1, &dp);
  st->responded = rv == 0;
  schedule(st->h2);
  return rv == 0 ? 0 : UV_EPROTO;
}

/* A device that keeps opening streams past its rate (typically resetting
 * each at once) is told to go away after h2_max_refused_per_connection
 * refusals, on top of nghttp2's own rapid-reset limit: reconnecting costs
 * it a handshake, and each connection's refusals are bounded. The session
 * ends once the GOAWAY is out (streams in flight see a device reset). */
static void refused_one(tn_h2 *h) {
  uint32_t max = tn__opts(h->engine)->h2_max_refused_per_connection;
  if (++h->refused < max || max == 0 || h->calm_sent || h->closing)
    return;
  h->calm_sent = true;
  h->goaway = true;
  nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM);
  schedule(h);
}

/* Answers the status on the stream with a short text body, then lets the
 * tunnel go; the body still goes out from the stream's queue. 429s count
 * towards h2_max_refused_per_connection (GOAWAY(ENHANCE_YOUR_CALM)). */
static void h2_fail(tn_tunnel *t, int status, const char *reason) {
  h2_stream *st = t->stream;
  tn_h2 *h = st->h2;
  if (status == 400 && st->malformed) {
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
  } else if (!st->responded && !st->closed_in_session) {
    char code[8], retry[16], *body = NULL;
    int len = asprintf(&body, "%s\n", reason);
    snprintf(code, sizeof(code), "%03d", status);
    int rlen = snprintf(retry, sizeof(retry), "%u", (unsigned)t->retry_after_s);
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"retry-after", (uint8_t *)retry, 11, (size_t)rlen, NGHTTP2_NV_FLAG_NONE},
    };
    out_free_all(st);
    if (len > 0)
      st_write(&st->ep, body, TN_BUF_HEAP, (size_t)len);
    st->out_eof = true;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_data};
    st->responded =
        nghttp2_submit_response(h->session, st->id, nv, t->retry_after_s ? 3 : 2, &dp) == 0;
  }
  if (status == 429)
    refused_one(h);
  tn__tunnel_close(t, t->result, reason, TN_CLOSE_FIN);
}

static void h2_describe(const tn_tunnel *t, tn_tunnel_info *info) {
  (void)t;
  info->proto = tn__proto_h2.name;
}

const tn_proto tn__proto_h2 = {
    .name = "h2",
    .stats_index = 1,
    .tunnel_owns_conn = false,
    .eof_cancels_setup = false,
    .may_splice = false,
    .alpn = "h2",
    .preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", /* h2c with prior knowledge */
    .start = h2_start,
    .data = NULL, /* the session reads request heads */
    .established = h2_established,
    .fail = h2_fail,
    .drain = h2_drain,
    .sweep = h2_sweep,
    .describe = h2_describe,
};
