/* The identity management routes of the admin listener:
 *   GET  /login         302 to the IdMS authorization endpoint (browser login);
 *                       403 when a browser says another site asked for it
 *   GET  /callback      the IdMS redirects the operator's browser back here
 *   POST /login/device  starts a device login (RFC 8628); JSON in (else 415) and out
 *   GET  /login/device  the device login's progress; JSON (mcgw login polls it)
 *   POST /logout        logs out and revokes (gw_idm_logout); Content-Type:
 *                       application/json only (else 415, nothing changed) */
#ifndef GW_IDM_ADMIN_H
#define GW_IDM_ADMIN_H

#include <jansson.h>

#include "gateway/ops/admin.h"
#include "gateway/idm.h"

/* 0 or UV_ENOMEM. *slot is the instance in force, read at each request
 * (NULL: no [idm], 404); the slot outlives the admin listener, and an
 * instance taken out of it is closed, which answers what it has pending. */
int gw_idm_admin_register(gw_admin *a, gw_idm **slot);

/* The "idm" object of /status from a view (also for "unconfigured"). */
json_t *gw_idm_status_json(const gw_idm_view *v);

#endif
