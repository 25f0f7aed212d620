/* The admin (ops) HTTP listener: GET /healthz and GET /status, one request
 * per connection, parsed with llhttp. Other paths answer 404, other methods
 * 405. Responses never carry payload, tokens or secrets. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <jansson.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct gw_admin gw_admin;

/* Builds the /status document; the admin listener takes the reference. */
typedef json_t *(*gw_admin_status_fn)(void *arg);

/* Binds and listens. Returns 0 or a negative libuv error (logged); *out is
 * untouched on failure and nothing is left open once the loop runs. */
int gw_admin_start(uv_loop_t *loop, const struct sockaddr_storage *addr,
                   gw_admin_status_fn status, void *arg, gw_admin **out);
int gw_admin_addr(const gw_admin *a, struct sockaddr_storage *out);
/* Closes the listener and every admin connection; frees a once all closed. */
void gw_admin_close(gw_admin *a);

#endif
