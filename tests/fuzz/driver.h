/* Loopback driver shared by the harnesses that fuzz a network front end
 * (the HTTP/1.1 CONNECT listener, the admin listener) through the real code
 * path: a TCP connection on 127.0.0.1 into a server running on this process's
 * own libuv loop. No test hook in the engine is needed, and what is fuzzed is
 * exactly what a device reaches: accept, read callbacks, llhttp, our
 * callbacks, the response and the lingering close.
 *
 * Not built into mcgw; linked into every harness by tests/fuzz/CMakeLists.txt.
 */
#ifndef FZ_DRIVER_H
#define FZ_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "tunnel/engine.h"

/* What the server sent back on one connection (the first bytes only). */
typedef struct fz_reply {
  char head[4096]; /* the first bytes of the response, NUL-terminated */
  size_t len;      /* total bytes received */
  bool reset;      /* the connection ended with a reset rather than a FIN */
} fz_reply;

/* Returns true once the server has finished with every connection (its own
 * counters say so); the driver runs the loop until then. */
typedef bool (*fz_settled_fn)(void *arg);

/* Connects to addr, writes data[0..size) as fast as the server takes it,
 * shuts the write side, reads until the server closes, waits for settled(arg),
 * then closes the client with a reset (no TIME_WAIT: a harness makes
 * thousands of connections a second). Aborts when any of that takes longer
 * than FZ_DEADLINE_MS: a hang is a bug. */
void fz_exchange(uv_loop_t *loop, const struct sockaddr_storage *addr, const uint8_t *data,
                 size_t size, fz_settled_fn settled, void *arg, fz_reply *out);

/* fz_exchange, but the client's write side stays open after the last byte
 * until every byte has reached the server's socket and, after that,
 * ready_to_shut(arg) (unless the server closes first): so that the
 * server answers what it was sent before it sees the client go, rather than
 * cancelling work in progress at the FIN. NULL: shut at once. */
void fz_exchange_ex(uv_loop_t *loop, const struct sockaddr_storage *addr, const uint8_t *data,
                    size_t size, fz_settled_fn ready_to_shut, fz_settled_fn settled, void *arg,
                    fz_reply *out);

/* The HTTP status of a reply ("HTTP/1.1 403 ..." -> 403); 0 when there is no
 * response, -1 when the bytes are not an HTTP/1.1 status line. */
int fz_reply_status(const fz_reply *r);

/* Walks the server's HTTP/2 frames in r, as far as the driver kept them
 * (4 KiB), HPACK-decoding every header block with nghttp2's own inflater;
 * fails (as harness) on ":status: 200", i.e. a tunnel that opened. A block
 * that does not decode ends the walk: what follows cannot be trusted. */
void fz_h2_check_reply(const fz_reply *r, const char *harness);

/* Keeps a private copy of stderr for fz_fail, so a harness run with
 * -close_fd_mask=2 (silencing the engine's logs) still says why it failed.
 * Call from LLVMFuzzerInitialize, which libFuzzer runs before it closes fd 2. */
void fz_setup(void);

/* The LLVMFuzzerInitialize of a harness that needs nothing but fz_setup:
 * `return fz_initialize(argc, argv);`. */
int fz_initialize(int *argc, char ***argv);

/* Prints "<harness>: message" on the saved stderr and aborts. */
__attribute__((noreturn, format(printf, 1, 2))) void fz_fail(const char *fmt, ...);

/* The harnesses' logger: debug, text, on stderr, so that every log line's
 * formatting is fuzzed too. fz_loopback_engine's engine logs through it. */
tn_logger *fz_logger(void);

/* The engine the network-front-end harnesses fuzz: one plain listener on
 * 127.0.0.1:0 (its bound address in *listen_addr), allow rules that name
 * only loopback targets, allow_private as given (normally false), and
 * require_tls; timeouts long enough that the client always finishes first.
 * So any tunnel that reaches upstream is a policy bypass. tune (or NULL)
 * adjusts the options before the start. Aborts on failure. */
tn_engine *fz_loopback_engine(uv_loop_t *loop, bool allow_private, void (*tune)(tn_engine_opts *o),
                              struct sockaddr_storage *listen_addr);

#define FZ_DEADLINE_MS 5000

#endif
