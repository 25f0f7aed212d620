/* Private to tunnel/: downstream connections (conn.c). Layer: above
 * service.h; called by engine.c (accept, sweep, drain), by the front ends
 * and by the tunnel life cycle (a tunnel that owns its connection frees
 * it). conn.c calls only the layers below and, to hand a connection over,
 * the protocol table. See objects.h.
 */
#ifndef TN_CONN_H
#define TN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "tunnel/objects.h"

/* Accepts from server into a new connection. Returns 0, or UV_ENOMEM when
 * the connection could not even be allocated: then the pending connection
 * is still on the listener and the caller must drop it (tn_spare). */
int tn__conn_accept(tn_engine *e, size_t listener, uv_stream_t *server, bool tls);
/* The set-up deadline passed. */
void tn__conn_timeout(tn_conn *c);
/* Closes a connection still in set-up (drain, timeout, refusal). */
void tn__conn_abort(tn_conn *c, const char *reason);
/* The connection's transport reported closed and its user is done with it. */
void tn__conn_free(tn_conn *c);

#endif
