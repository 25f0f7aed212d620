/* The operations surface on the admin listener: GET /metrics (Prometheus),
 * /status and /tunnels (JSON), the live status page (/, its assets), plus
 * what the daemon reports to systemd (STATUS=) and the refusal-spike log.
 *
 * It reads the engine only through tunnel/engine.h and the gateway's login
 * state only through a gw_idm_view, fetched through the daemon's callback.
 */
#ifndef GW_OPS_H
#define GW_OPS_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "gateway/ops/admin.h"
#include "gateway/config.h"
#include "gateway/idm_view.h"
#include "tunnel/engine.h"

typedef struct gw_ops gw_ops;

typedef struct gw_ops_deps {
  uv_loop_t *loop;
  tn_engine *engine;    /* valid until its drain completes, then gw_ops_close */
  gw_admin *admin;      /* NULL when [admin] listen = off */
  const gw_config *cfg; /* the config in force: the pointer stays valid across reloads */
  /* Fills the gateway's login state; called at every request that shows it
   * (the pointers in it need only stay valid until the handler returns). */
  void (*idm_view)(void *arg, gw_idm_view *out);
  void *idm_arg;
  tn_resolver *resolver; /* the shared resolver (metrics, /status dns); NULL: not shown */
} gw_ops_deps;

/* Registers the routes, becomes the engine's close observer and starts a 1 s
 * timer (systemd STATUS=, refusal spikes). Returns 0 or UV_ENOMEM; on error
 * nothing is registered with the engine. */
int gw_ops_start(const gw_ops_deps *deps, gw_ops **out);

/* Counts a SIGHUP reload by result (mcgw_config_reloads_total) and applies the
 * admin token of the config now in force. */
void gw_ops_reloaded(gw_ops *o, bool ok);

/* The daemon stopped accepting: /status says "draining". */
void gw_ops_set_draining(gw_ops *o);

/* The text systemd shows for the service: "<n> tunnels, <login state>". */
void gw_ops_status_line(gw_ops *o, char *buf, size_t len);

/* The /status document (new reference). */
json_t *gw_ops_status_json(gw_ops *o);

/* Closes the timer; o is freed in its close callback. Call it once the engine
 * is gone (from the drain's done callback) and before the admin listener
 * closes: it does not touch the engine, whose close observer it was. */
void gw_ops_close(gw_ops *o);

#endif
