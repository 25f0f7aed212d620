/* What the relay harnesses (fuzz_relay_h1.c, fuzz_relay_h2.c) share: an
 * in-process echo upstream on the harness's own loop, a ledger of every
 * byte each side of each tunnel sent and received, the fuzz-input reader,
 * and the oracles checked once an input has run to the end.
 *
 * Telling tunnels apart upstream: the first bytes a device sends on tunnel i
 * are a tag (fzr_tag) naming the input and i; it is also a valid TLS record
 * header, so the engine keeps require_tls on. The upstream reads the tag,
 * then echoes everything it receives (the tag included) XORed with a
 * per-tunnel key, so two tunnels fed the same bytes still get different
 * replies and a byte that crosses tunnels is seen.
 *
 * Oracles (fzr_check), for every tunnel i of the input:
 *   - what upstream i received is what the device sent on i, in order:
 *     exactly, unless a reset was asked for on i (then a prefix);
 *   - what the device received on i is what upstream i sent: exactly, or a
 *     prefix after a reset (or after it said it wants no more: device_gone);
 *   - nothing reset a tunnel that the input did not ask to reset;
 *   - an upstream connection that carries no complete tag (the device reset
 *     first) received a prefix of a tag and nothing else;
 *   - the engine's access-log figures (tn_engine_on_close) add up to the
 *     bytes the ledger counted, and each such tunnel closed with close=eof.
 * The harness checks that the engine has no tunnel or connection left. */
#ifndef FZ_RELAY_H
#define FZ_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "tunnel/engine.h"

#define FZR_TUNNELS 16
#define FZR_TAG_LEN 14

typedef struct fzr_bytes {
  uint8_t *p;
  size_t len, cap;
} fzr_bytes;

typedef struct fzr_upstream fzr_upstream;

typedef struct fzr_tunnel {
  bool used;          /* the input opened it */
  bool reset_asked;   /* the input reset it, on either side */
  bool reset_seen;    /* a side saw a reset (or an error status) */
  bool device_gone;   /* HTTP/2: RST_STREAM(NO_ERROR) after END_STREAM: only
                         * what the device receives may be cut short */
  fzr_bytes dev_sent; /* device -> engine: the tag, then payload */
  fzr_bytes up_got;   /* what its upstream connection received */
  fzr_bytes up_sent;  /* what its upstream connection sent back */
  fzr_bytes dev_got;  /* what the device received after the 200 */
  fzr_upstream *up;   /* its upstream connection, once the tag is read */
} fzr_tunnel;

/* The fuzz input as a stream of bytes; reads past the end give 0. */
typedef struct fzr_input {
  const uint8_t *p;
  size_t n, at;
} fzr_input;

uint8_t fzr_byte(fzr_input *in);
/* Up to want bytes of the input, at *out; returns how many there were. */
size_t fzr_take(fzr_input *in, size_t want, const uint8_t **out);
bool fzr_more(const fzr_input *in);

/* Starts the echo upstream on 127.0.0.1:0 on loop; its address in *addr. */
void fzr_init(uv_loop_t *loop, struct sockaddr_storage *addr);

/* One engine of a relay harness: tune (or NULL) adjusts its options; with
 * alpn (wire format) devices use a TLS listener offering it (fzr_tls_engine:
 * one such engine per harness), else the plain one. */
typedef struct fzr_engine_spec {
  void (*tune)(tn_engine_opts *o);
  const char *alpn;
  size_t alpn_len;
} fzr_engine_spec;

/* What a relay harness's LLVMFuzzerInitialize does: fz_setup, loop, the echo
 * upstream (fzr_init, its address in *upstream; none when NULL), then
 * engines[k] for spec[k], k < n, on fz_loopback_engine with allow_private
 * on, each watched (fzr_watch), the address devices connect to in addrs[k]. */
void fzr_setup(uv_loop_t *loop, struct sockaddr_storage *upstream, const fzr_engine_spec *spec,
               size_t n, tn_engine **engines, struct sockaddr_storage *addrs);
/* n bytes of fzr_pattern(seed), kept for the harness's life. */
uint8_t *fzr_filler(size_t n, uint32_t seed);
/* Observes the engine's closed tunnels for the byte and close=eof oracles. */
void fzr_watch(tn_engine *e);
/* A new input: the ledger is emptied, tags change. */
void fzr_begin(void);
fzr_tunnel *fzr_tunnel_at(size_t i);
/* The tag tunnel i's device sends first. */
void fzr_tag(size_t i, uint8_t out[FZR_TAG_LEN]);
void fzr_bytes_add(fzr_bytes *b, const void *p, size_t n);
/* Deterministic filler for bulk writes (the splice switch, backpressure). */
void fzr_pattern(uint8_t *out, size_t n, uint32_t seed);

/* The upstream side of tunnel i, once its connection is known (else no-op):
 * FIN now (later bytes are still read, no longer echoed), reset, stop or
 * resume reading. */
void fzr_up_fin(size_t i);
void fzr_up_reset(size_t i);
void fzr_up_pause(size_t i, bool paused);
void fzr_up_resume_all(void);
/* Upstream connections not yet closed. */
size_t fzr_up_open(void);

/* ---- a device's TLS client for the TLS listener, over memory BIOs ---- */

typedef struct fzr_tls {
  SSL *ssl;               /* NULL: not open */
  bool ready;             /* the handshake is done */
  bool close_notify_seen; /* the gateway ended its stream with a close_notify */
  fzr_bytes early;        /* plaintext written before the handshake completed */
} fzr_tls;

/* An engine as fz_loopback_engine makes it (tune, allow_private as given)
 * plus a TLS listener (listener 1, address in *tls_addr) with the throwaway
 * certificate for 127.0.0.1 of fuzz_https_response_certs.h; and the client
 * context devices use: TLS 1.3 (so KeyUpdate exists), the gateway verified
 * against the throwaway CA, ALPN alpn (wire format). Call once. */
tn_engine *fzr_tls_engine(uv_loop_t *loop, bool allow_private, void (*tune)(tn_engine_opts *o),
                          struct sockaddr_storage *tls_addr, const char *alpn, size_t alpn_len);
/* Starts a client: the ClientHello waits in fzr_tls_output. */
void fzr_tls_open(fzr_tls *t);
void fzr_tls_free(fzr_tls *t);
/* Plaintext to the gateway (held until the handshake is done), after a
 * KeyUpdate that requests the gateway's when key_update is set. */
void fzr_tls_write(fzr_tls *t, const void *p, size_t n, bool key_update);
/* Our close_notify. */
void fzr_tls_close_notify(fzr_tls *t);
/* Ciphertext to send the gateway, up to cap bytes; 0 when there is none.
 * Call until 0 after every other fzr_tls_ call. */
size_t fzr_tls_output(fzr_tls *t, char *buf, size_t cap);
/* Ciphertext from the gateway: completes the handshake (then sends what
 * was held), hands plaintext to plain(arg, ...), which must not free t.
 * Returns true once the gateway's close_notify has arrived. A TLS error
 * fails the harness. */
bool fzr_tls_input(fzr_tls *t, const char *p, size_t n,
                   void (*plain)(void *arg, const char *p, size_t n), void *arg);

/* ---- writes, and the nghttp2 client devices (fuzz_relay_h2, _udp) ---- */

/* Writes a copy of p[0..n) on s; cb gets req->data = data and frees req.
 * Returns uv_write's result (on failure the copy is freed here). */
int fzr_write(uv_stream_t *s, const void *p, size_t n, void *data, uv_write_cb cb);
/* The same on a connection that must not fail (an HTTP/2 device's): any
 * error fails the harness. */
void fzr_send(uv_stream_t *s, const void *p, size_t n);
/* A connect callback that fails the harness (named by req->data) on error. */
void fzr_connected(uv_connect_t *req, int status);

/* One stream of a device's nghttp2 client session (fzr_h2_session): the
 * DATA it sends, how it consumes what it receives (automatic WINDOW_UPDATE
 * is off, so a stalled stream's window shuts), and what the engine said.
 * The first member of the harness's own stream struct, which is the
 * stream's user data. */
typedef struct fzr_h2_stream {
  int32_t id;    /* 0 until submitted (fzr_h2_submit) */
  fzr_bytes out; /* DATA to send */
  size_t out_at; /* handed to nghttp2 up to here */
  size_t limit;  /* out may go up to here (SIZE_MAX: all of it) */
  bool fin;      /* END_STREAM once all of out has gone */
  bool fin_sent; /* ... and written: the engine sees it before anything later */
  bool deferred; /* the provider is waiting for more */
  bool closed;   /* the session closed the stream, with close_code */
  uint32_t close_code;
  bool stalled;          /* not consuming what arrives */
  size_t unconsumed;     /* received while stalled */
  bool status_200;       /* the response: :status 200 (any other fails) */
  bool capsule_protocol; /* and capsule-protocol: ?1 */
} fzr_h2_stream;

/* A device's session (its user data). */
typedef struct fzr_h2_device {
  const char *harness;
  /* DATA on st (after its :status 200); consumed afterwards unless stalled */
  void (*data)(fzr_h2_stream *st, const uint8_t *p, size_t n);
  size_t open_streams;   /* submitted, not yet closed; a GOAWAY while any is open fails */
  bool ping_acked;       /* a PING "mcgwdone" came back: the engine saw all before it */
  bool connect_protocol; /* the engine's SETTINGS_ENABLE_CONNECT_PROTOCOL is 1 */
} fzr_h2_device;

/* A client session for dev, automatic WINDOW_UPDATE off. */
nghttp2_session *fzr_h2_session(fzr_h2_device *dev);
/* Submits st's request (its DATA from out, fzr_h2_provider); fails on error. */
void fzr_h2_submit(nghttp2_session *s, fzr_h2_device *dev, fzr_h2_stream *st, const nghttp2_nv *nv,
                   size_t n);

/* The data provider for st's request: out up to limit, then END_STREAM. */
nghttp2_data_provider fzr_h2_provider(fzr_h2_stream *st);
/* More may go (out, limit or fin changed). */
void fzr_h2_resume(nghttp2_session *s, fzr_h2_stream *st);
/* len bytes of DATA arrived on st: consumed, or held while stalled. */
void fzr_h2_received(nghttp2_session *s, fzr_h2_stream *st, size_t len);
/* Stops or resumes consuming (what was held is consumed then). */
void fzr_h2_stall(nghttp2_session *s, fzr_h2_stream *st, bool stalled);
/* Every frame the session has queued, in order, to out(p, n). */
void fzr_h2_send(nghttp2_session *s, void (*out)(const uint8_t *p, size_t n));

/* Closes tcp, with a reset (RST, not FIN) when reset is set. */
void fzr_close(uv_tcp_t *tcp, bool reset, uv_close_cb cb);

/* Runs the loop 1..16 turns (the next input byte) without waiting. */
void fzr_turns(fzr_input *in);

/* Runs the loop until done(), failing as a hang after FZ_DEADLINE_MS. */
void fzr_run_until(bool (*done)(void), const char *harness);

/* The oracles above, after the input's loop has drained. */
void fzr_check(const char *harness);

#endif
