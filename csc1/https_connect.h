/* The HTTPS client's connection race: Happy Eyeballs v2 (RFC 8305) over a
 * looked-up name's addresses. Internal to csc1/ (https_client.c starts it);
 * the csc1__race functions are hidden and may change at any time.
 *
 * Attempts go in base_he_order's order (the resolver's, families
 * alternating), a new one every attempt_delay_ms while none has connected,
 * at once when the last one in flight failed (RFC 8305 5). Each is a
 * non-blocking socket given to the socket hook before its connect, watched
 * with uv_poll. The first to connect wins; the others are closed. The race
 * has no deadline of its own: its owner's (the request's) bounds it, and
 * cancels it. */
#ifndef CSC1_HTTPS_CONNECT_H
#define CSC1_HTTPS_CONNECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "csc1/https_client.h"

#define CSC1_RACE_ADDRS_MAX 16 /* addresses raced; the rest are ignored */

typedef struct csc1__race csc1__race;

/* The outcome, called once from the loop (never from inside start), unless
 * the race was cancelled first: fd >= 0, the winner's connected socket
 * (non-blocking, close-on-exec), now the caller's; or fd -1 and err, the
 * last attempt's negative errno (UV_ECONNREFUSED-like codes; libuv's
 * uv_strerror names them). The race is gone when it is called. */
typedef void (*csc1__race_cb)(void *arg, int fd, int err);

typedef struct csc1__race_opts {
  const struct sockaddr_storage *addrs; /* AF_INET / AF_INET6, best first; copied */
  size_t n;                             /* >= 1 */
  uint16_t port;                        /* set on every address */
  uint64_t attempt_delay_ms;
  csc1_https_socket_fn setup; /* or NULL: applied to every attempt's socket */
  void *setup_arg;
} csc1__race_opts;

/* Starts a race on loop. The race, or NULL (no memory; cb never called). */
csc1__race *csc1__race_start(uv_loop_t *loop, const csc1__race_opts *o, csc1__race_cb cb,
                             void *arg);

/* Abandons a race that has not called back: cb will not be called; its
 * sockets close now, its memory once its handles have closed. */
void csc1__race_cancel(csc1__race *race);

#endif
