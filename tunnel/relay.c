/* The byte relay between a device endpoint and the destination, and the
 * sinks through which both endpoints report to their tunnel.
 *
 * - Backpressure: reading a side stops while the other side has more than
 *   TN_RELAY_HIGH bytes queued, and resumes on its drained event.
 * - Half-close: EOF from one side becomes shutdown on the other (TCP FIN,
 *   TLS close_notify, HTTP/2 END_STREAM), after the queued bytes. The tunnel
 *   ends when both directions are finished.
 * - A read or write error on either side closes both, with a reset.
 * - Plain TCP on both sides: the tunnel may move to splice(2) (splice.c),
 *   after which these endpoints no longer read.
 * Payload bytes are never inspected, except the first five from the device,
 * which must form a TLS record header when require_tls is set. */
#include <stdlib.h>
#include <string.h>

#include "tunnel/lifecycle.h"
#include "tunnel/log.h"
#include "tunnel/proto.h"
#include "tunnel/service.h"

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

static tn_ep *other(tn_tunnel *t, tn_ep *ep) { return ep == t->down ? &t->up.ep : t->down; }

static const char *reset_reason(tn_tunnel *t, tn_ep *ep) {
  return ep == t->down ? "reset_down" : "reset_up";
}

/* A CONNECT-UDP tunnel's device bytes are capsules (udp.c). */
static void forward_udp(tn_tunnel *t, char *base, tn_buf_kind kind, size_t n) {
  bool ok = tn__udp_from_device(t, base, n);
  tn__buf_free(base, kind);
  if (!ok)
    tn__tunnel_close(t, TN_RESULT_OK, "malformed_capsule", TN_CLOSE_RESET);
}

static void forward(tn_tunnel *t, tn_ep *from, char *base, tn_buf_kind kind, size_t n) {
  tn_ep *to = other(t, from);
  if (from == t->down) {
    if (t->tls_checked < 5 && !tn__tls_check(t, base, n)) {
      tn__buf_free(base, kind);
      tn__tunnel_close(t, TN_RESULT_REFUSED_NOT_TLS, "not_tls", TN_CLOSE_FIN);
      return;
    }
    t->bytes_up += n;
    tn__count_bytes(t->engine, n, 0);
  } else {
    t->bytes_down += n;
    tn__count_bytes(t->engine, 0, n);
  }
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (tn__ep_write(to, base, kind, n) != 0) {
    tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, to), TN_CLOSE_RESET);
    return;
  }
  if (tn__ep_queued(to) > TN_RELAY_HIGH)
    tn__ep_read_stop(from);
  else if (t->splice_ok && (t->splice_want || t->bytes_up + t->bytes_down >= TN_SPLICE_AUTO_MIN)) {
    t->splice_want = true; /* bulk: switch at the first chance */
    tn__splice_try(t);
  }
}

/* Both directions finished. After down_gone (nothing more can reach the
 * device) the tunnel still waits for the destination's EOF, reading and
 * dropping: closing a socket with unread bytes sends a reset, and the
 * kernel would discard what the device sent that is not yet delivered. */
static void maybe_done(tn_tunnel *t) {
  bool up_done = t->down->eof && t->up.ep.shut;
  bool down_done = t->up.ep.eof && (t->down->shut || t->down_gone);
  if (up_done && down_done)
    tn__tunnel_close(t, TN_RESULT_OK, "eof", TN_CLOSE_FIN);
}

static void on_eof(tn_tunnel *t, tn_ep *from) {
  tn_ep *to = other(t, from);
  if (t->phase != TN_PHASE_RELAY)
    return;
  if (t->udp) { /* only the device side can end: a UDP socket has no EOF */
    tn__udp_device_ended(t);
    return;
  }
  if (to == t->down && t->down_gone) {
    maybe_done(t);
    return;
  }
  if (tn__ep_shutdown(to) != 0)
    tn__tunnel_close(t, TN_RESULT_OK, reset_reason(t, to), TN_CLOSE_RESET);
}

/* ---- the device side ---- */

static void down_data(tn_ep *ep, char *base, tn_buf_kind kind, size_t n) {
  tn_tunnel *t = ep->owner;
  switch (t->phase) {
  case TN_PHASE_HEADER:
    t->proto->data(t, base, kind, n);
    return;
  case TN_PHASE_RESOLVING:
  case TN_PHASE_CONNECTING: /* data sent before our 200 is held, bounded */
    /* Checked as it arrives: held bytes go upstream unexamined later. */
    if (t->tls_checked < 5 && tn__opts(t->engine)->require_tls && !tn__tls_check(t, base, n)) {
      tn__buf_free(base, kind);
      tn__tunnel_close(t, TN_RESULT_REFUSED_NOT_TLS, "not_tls", TN_CLOSE_FIN);
      return;
    }
    if (!tn__tunnel_hold(t, base, n)) {
      tn__buf_free(base, kind);
      tn__tunnel_fail(t, TN_RESULT_ERROR, 503, "too much data before the tunnel was up");
      return;
    }
    tn__buf_free(base, kind);
    if (t->setup->pending_len > TN_RELAY_HIGH)
      tn__ep_read_stop(ep); /* HTTP/1.1: backpressure; HTTP/2: the window bounds it */
    return;
  case TN_PHASE_RELAY:
    if (t->udp)
      forward_udp(t, base, kind, n);
    else
      forward(t, ep, base, kind, n);
    return;
  default: /* LINGER, CLOSING: dropped unread */
    tn__buf_free(base, kind);
  }
}

/* The device reset its stream or connection while its tunnel was being set
 * up: the device gave up. Closing the tunnel cancels the lookup (or drops
 * its late result) and closes the half-open upstream socket. */
static bool cancel_setup(tn_tunnel *t) {
  if (t->phase != TN_PHASE_RESOLVING && t->phase != TN_PHASE_CONNECTING)
    return false;
  tn__tunnel_close(t, TN_RESULT_CANCELLED, "reset_down", TN_CLOSE_RESET);
  return true;
}

static void down_eof(tn_ep *ep) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_HEADER) {
    tn__tunnel_close(t, TN_RESULT_ERROR, "client_closed_during_request", TN_CLOSE_FIN);
    return;
  }
  /* HTTP/1.1 cannot tell close from half-close: an EOF before the 200 with
   * nothing to deliver is taken as the device giving up (connect, CONNECT,
   * close loops); with bytes held, they still go up. */
  if (t->proto->eof_cancels_setup && !(t->setup && t->setup->pending_len) && cancel_setup(t))
    return;
  if (t->phase == TN_PHASE_LINGER) {
    if (ep->shut)
      tn__tunnel_close(t, t->result, t->close_reason, TN_CLOSE_FIN);
    return;
  }
  on_eof(t, ep); /* before RELAY the flag is kept for tn__relay_start */
}

static void down_error(tn_ep *ep, int err) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_LINGER) {
    tn__tunnel_close(t, t->result, t->close_reason, TN_CLOSE_FIN);
    return;
  }
  if (cancel_setup(t))
    return;
  tn__tunnel_close(t, t->phase == TN_PHASE_RELAY ? TN_RESULT_OK : TN_RESULT_ERROR, "reset_down",
                   TN_CLOSE_RESET);
}

static void down_drained(tn_ep *ep) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_RELAY && !t->splice && !t->udp && tn__ep_read_start(&t->up.ep) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
}

static void down_shut(tn_ep *ep) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_LINGER) {
    if (ep->eof)
      tn__tunnel_close(t, t->result, t->close_reason, TN_CLOSE_FIN);
    return;
  }
  if (t->phase != TN_PHASE_RELAY)
    return;
  /* down_gone: the device's queue is gone, so no drained event will resume
   * the destination if backpressure stopped it; read on until its EOF. */
  if (t->down_gone && !t->up.ep.eof && tn__ep_read_start(&t->up.ep) != 0) {
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
    return;
  }
  maybe_done(t);
}

static void down_closed(tn_ep *ep) { tn__tunnel_ep_closed(ep->owner); }
static void no_ready(tn_ep *ep) {}

const tn_ep_sink tn__down_sink = {
    .data = down_data,
    .eof = down_eof,
    .error = down_error,
    .drained = down_drained,
    .shut = down_shut,
    .closed = down_closed,
    .ready = no_ready,
};

/* ---- the destination side ---- */

static void up_data(tn_ep *ep, char *base, tn_buf_kind kind, size_t n) {
  tn_tunnel *t = ep->owner;
  if (t->phase != TN_PHASE_RELAY) {
    tn__buf_free(base, kind);
    return;
  }
  if (t->down_gone) { /* the device can take nothing more */
    tn__buf_free(base, kind);
    return;
  }
  forward(t, ep, base, kind, n);
}

static void up_eof(tn_ep *ep) { on_eof(ep->owner, ep); }

bool tn__uplink_dead(int err) {
  return err == UV_ETIMEDOUT || err == UV_EHOSTUNREACH || err == UV_ENETUNREACH ||
         err == UV_ENETDOWN;
}

/* The uplink died (tn__uplink_dead): keepalive probes or TCP_USER_TIMEOUT. The device gets a reset (h1) or RST_STREAM(CONNECT_ERROR) (h2) so
 * that its client reconnects at once. */
static void up_error(tn_ep *ep, int err) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_RELAY)
    tn__tunnel_close(t, TN_RESULT_OK, tn__uplink_dead(err) ? "uplink_dead" : "reset_up",
                     TN_CLOSE_RESET);
}

static void up_drained(tn_ep *ep) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_RELAY && !t->splice && tn__ep_read_start(t->down) != 0)
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
}

static void up_shut(tn_ep *ep) {
  tn_tunnel *t = ep->owner;
  if (t->phase == TN_PHASE_RELAY)
    maybe_done(t);
}

static void up_closed(tn_ep *ep) { tn__connect_up_closed(ep->owner); }

const tn_ep_sink tn__up_sink = {
    .data = up_data,
    .eof = up_eof,
    .error = up_error,
    .drained = up_drained,
    .shut = up_shut,
    .closed = up_closed,
    .ready = no_ready,
};

/* Upstream connected: answer 200, send what the device already sent, and
 * relay. */
void tn__relay_start(tn_tunnel *t) {
  tn_setup *s = t->setup;
  t->phase = TN_PHASE_RELAY;
  t->deadline_ms = 0;
  t->result = TN_RESULT_OK;
  t->status = 200;
  t->last_activity_ms = uv_now(tn__loop(t->engine));
  if (!tn__opts(t->engine)->require_tls)
    t->tls_checked = 5;
  tn__splice_init(t);
  tn__list_move(t->engine, t, true);
  uv_tcp_nodelay(&t->up.tcp, 1); /* the device side has it from its listener */
  char *pending = s->pending;
  size_t pending_len = s->pending_len;
  s->pending = NULL;
  tn__setup_free(t);
  int err = t->proto->established(t);
  if (err) {
    free(pending);
    tn__tunnel_close(t, TN_RESULT_ERROR, "reset_down", TN_CLOSE_RESET);
    return;
  }
  tn__tunnel_log_opened(t);
  if (pending_len) {
    t->bytes_up += pending_len;
    tn__count_bytes(t->engine, pending_len, 0);
    if (tn__ep_write(&t->up.ep, pending, TN_BUF_HEAP, pending_len) != 0) {
      tn__tunnel_close(t, TN_RESULT_OK, "reset_up", TN_CLOSE_RESET);
      return;
    }
  } else {
    free(pending);
  }
  if (t->down->eof)
    on_eof(t, t->down); /* the device finished sending before the 200 */
  else if (tn__ep_read_start(t->down) != 0) {
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
    return;
  }
  if (t->phase == TN_PHASE_RELAY && tn__ep_read_start(&t->up.ep) != 0) {
    tn__tunnel_close(t, TN_RESULT_ERROR, "read_failed", TN_CLOSE_FIN);
    return;
  }
  if (t->splice_want)
    tn__splice_try(t); /* splice = always */
}
