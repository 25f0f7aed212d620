/* Private to tunnel/: endpoints, one side of a relay whatever carries it,
 * and the relay buffers they move. Layer: the bottom of the private headers
 * (see objects.h): it knows nothing of tunnels or the engine.
 *
 * The relay moves bytes between two endpoints without knowing what they are:
 * a TCP socket (ep_tcp.c), TLS over a TCP socket (ep_tls.c), or one HTTP/2
 * stream of a multiplexed device connection (h2.c). An endpoint reports to
 * its owner through a sink; the owner drives it through ops.
 *
 * Contract, for every implementation:
 * - write() takes ownership of base whatever it returns; bytes are sent in
 *   order after those already queued. queued() is what was accepted and not
 *   yet handed to the kernel (or to the HTTP/2 session): the relay's
 *   backpressure measure.
 * - Once reading, data arrives through sink->data with ownership of base.
 *   read_stop() stops it (for HTTP/2: stops opening the flow-control
 *   window), read_start() resumes.
 * - shutdown() ends the sending direction after the queued bytes (TCP FIN,
 *   TLS close_notify + FIN, HTTP/2 END_STREAM); sink->shut follows.
 * - close() is idempotent; sink->closed follows exactly once, after which the
 *   endpoint's memory may be released by its owner. No sink call but
 *   `closed` happens after close().
 * - sink->error reports a read, write or shutdown failure; the owner closes.
 */
#ifndef TN_EP_H
#define TN_EP_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#define TN_BUF_SIZE (256 * 1024)   /* relay read buffer: one read, one write for bulk */
#define TN_RELAY_HIGH (256 * 1024) /* stop reading when the other side has this much unsent */
#define TN_RELAY_LOW (64 * 1024)   /* resume once it is below this */

/* A pool of equal buffers (bufpool.c). An engine has two: relay buffers
 * (TN_BUF_SIZE, at most TN_BUFPOOL_KEEP kept idle: 2 MiB) and datagram
 * buffers (TN_DGRAM_BUF_SIZE, one DATAGRAM capsule towards a device each, at
 * most TN_DGRAM_KEEP kept idle: 128 KiB). */
#define TN_BUFPOOL_KEEP 8
#define TN_DGRAM_BUF_SIZE 2048 /* a capsule header and the default 1500-byte payload fit */
#define TN_DGRAM_KEEP 64       /* a tunnel's queue towards its device at most (udp.c) */
typedef struct tn_bufpool {
  char *keep[TN_DGRAM_KEEP];
  size_t len;
  size_t size; /* bytes of each buffer */
  size_t max;  /* free buffers kept at most (<= TN_DGRAM_KEEP) */
} tn_bufpool;

/* Who owns bytes being sent, so they are given back the right way:
 * TN_BUF_POOL to its pool, TN_BUF_HEAP to free(), TN_BUF_STATIC nowhere. */
typedef enum { TN_BUF_POOL = 0, TN_BUF_HEAP, TN_BUF_STATIC } tn_buf_kind;

/* Gives base back the way kind says (ep_tcp.c). */
void tn__buf_free(char *base, tn_buf_kind kind);
/* The error a socket holds (SO_ERROR, as a libuv code), or fallback if none. */
int tn__sock_error(int fd, int fallback);

/* bufpool.c. An empty pool of buffers of size bytes, keeping at most max
 * free ones. */
void tn__bufpool_init(tn_bufpool *p, size_t size, size_t max);
/* A buffer of p->size bytes from p, or NULL on ENOMEM. */
char *tn__buf_get(tn_bufpool *p);
/* libuv alloc callback for a tn_ep_tcp's handle: a buffer from its pool. */
void tn__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
/* Gives a buffer of tn__buf_get back to its own pool (freed if the pool
 * keeps enough); NULL is ignored. */
void tn__buf_release(char *p);
/* Frees the buffers p keeps (the engine's end: none is in flight then). */
void tn__bufpool_trim(tn_bufpool *p);

typedef struct tn_ep tn_ep;

typedef struct tn_ep_sink {
  void (*data)(tn_ep *ep, char *base, tn_buf_kind kind, size_t n);
  void (*eof)(tn_ep *ep);
  void (*error)(tn_ep *ep, int err);
  void (*drained)(tn_ep *ep); /* queued() fell below TN_RELAY_LOW */
  void (*shut)(tn_ep *ep);
  void (*closed)(tn_ep *ep);
  void (*ready)(tn_ep *ep); /* TLS: the handshake completed */
} tn_ep_sink;

typedef struct tn_ep_ops {
  int (*read_start)(tn_ep *ep);
  void (*read_stop)(tn_ep *ep);
  int (*write)(tn_ep *ep, char *base, tn_buf_kind kind, size_t len);
  size_t (*queued)(const tn_ep *ep);
  int (*shutdown)(tn_ep *ep);
  void (*close)(tn_ep *ep, bool reset);
} tn_ep_ops;

struct tn_ep {
  const tn_ep_ops *ops;
  const tn_ep_sink *sink;
  void *owner;
  bool reading;
  bool eof;  /* EOF received from the peer */
  bool shut; /* our shutdown completed */
  bool closing;
};

/* Thin inline dispatch. */
static inline int tn__ep_read_start(tn_ep *e) { return e->ops->read_start(e); }
static inline void tn__ep_read_stop(tn_ep *e) { e->ops->read_stop(e); }
static inline int tn__ep_write(tn_ep *e, char *b, tn_buf_kind k, size_t n) {
  return e->ops->write(e, b, k, n);
}
static inline size_t tn__ep_queued(const tn_ep *e) { return e->ops->queued(e); }
static inline int tn__ep_shutdown(tn_ep *e) { return e->ops->shutdown(e); }
static inline void tn__ep_close(tn_ep *e, bool reset) { e->ops->close(e, reset); }

/* A TCP endpoint. Embed it; init before use. */
typedef struct tn_ep_tcp {
  tn_ep ep;
  uv_tcp_t tcp;    /* tcp.data: the tn_bufpool reads take buffers from (not owned) */
  bool open;       /* handle initialised and not yet closed */
  bool want_drain; /* a drained event is owed once below TN_RELAY_LOW */
} tn_ep_tcp;

/* Initialises the handle on loop; reads take buffers from pool. 0 or a
 * libuv error. */
int tn__ep_tcp_init(tn_ep_tcp *e, uv_loop_t *loop, tn_bufpool *pool, const tn_ep_sink *sink,
                    void *owner);
/* The TCP endpoint whose handle h is (h is embedded, not pointed to: the
 * handle's data holds the pool, so that the endpoint stays as small as it
 * was before pools were per engine). */
static inline tn_ep_tcp *tn__ep_tcp_of(uv_handle_t *h) {
  return (tn_ep_tcp *)(void *)((char *)h - offsetof(tn_ep_tcp, tcp));
}
/* The pool e's reads take buffers from. */
static inline tn_bufpool *tn__ep_tcp_pool(const tn_ep_tcp *e) { return e->tcp.data; }
/* Re-targets the sink (hand-over from one owner to another). */
static inline void tn__ep_set_sink(tn_ep *e, const tn_ep_sink *sink, void *owner) {
  e->sink = sink;
  e->owner = owner;
}

/* A TLS server endpoint over TCP. Allocated by tn__ep_tls_new; freed by its
 * owner after sink->closed. */
typedef struct tn_ep_tls tn_ep_tls;
/* Wraps an accepted TCP endpoint (taking it over: its sink becomes the TLS
 * layer's) and starts the handshake; sink->ready follows, or sink->error. */
tn_ep_tls *tn__ep_tls_new(tn_ep_tcp *tcp, SSL_CTX *ctx, const tn_ep_sink *sink, void *owner);
/* Starts reading ciphertext: the handshake runs as the ClientHello arrives. */
int tn__ep_tls_start(tn_ep_tls *t);
tn_ep *tn__ep_tls_ep(tn_ep_tls *t);
/* The connection keeps its record buffers from now on, for its life. By
 * default (SSL_MODE_RELEASE_BUFFERS, tls.c) they are given back whenever
 * they are empty, which suits bulk and idle connections, but costs two
 * allocations per record, i.e. per datagram, on a connection that carries
 * CONNECT-UDP: udp.c calls this as such a tunnel starts (about 34 KiB held). */
void tn__ep_tls_keep_buffers(tn_ep_tls *t);
/* Why the handshake or a record failed (OpenSSL's reason), or NULL. */
const char *tn__ep_tls_error(const tn_ep_tls *t);
void tn__ep_tls_free(tn_ep_tls *t);
/* After the handshake: the negotiated ALPN protocol ("h2", "http/1.1") or
 * NULL, and the verified client certificate's subject (one-line RFC 2253
 * form, caller frees) or NULL. */
const char *tn__ep_tls_alpn(const tn_ep_tls *t);
char *tn__ep_tls_subject(const tn_ep_tls *t);

#endif
