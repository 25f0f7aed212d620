/* Dropping a pending connection without allocating.
 *
 * When a listener's connection callback cannot allocate its connection
 * object, it must still take the connection off the listener: libuv stops
 * watching a listener whose pending connection was not accepted, and it
 * would never accept again. A spare handle, embedded in the listener's
 * object, accepts it and closes it. If the spare is still closing from the
 * previous drop, the connection stays pending and is taken as soon as the
 * spare is free.
 */
#ifndef TN_SPARE_H
#define TN_SPARE_H

#include <stdbool.h>
#include <uv.h>

typedef struct tn_spare {
  uv_tcp_t tcp;
  uv_stream_t *server;
  /* Called when the spare goes idle after a drop (its handle closed and
   * nothing pending): the owner may then free its memory. */
  void (*on_idle)(struct tn_spare *s);
  void *data;
  bool busy;    /* the handle is in use or closing */
  bool pending; /* a connection waits for the spare */
} tn_spare;

/* Sets up s for server (the listener it drops connections of); on_idle and
 * data as above. Nothing is allocated and no handle is opened until a drop;
 * the owner frees s's memory only once it is idle (never used, or after
 * on_idle). */
void tn_spare_init(tn_spare *s, uv_stream_t *server, void (*on_idle)(tn_spare *), void *data);
/* Takes server's pending connection and closes it, or leaves it pending
 * until the spare is free. Never allocates. */
void tn_spare_drop(tn_spare *s);

#endif
