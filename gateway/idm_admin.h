/* The identity management routes of the admin listener:
 *   GET  /login         302 to the IdMS authorization endpoint (browser login)
 *   GET  /callback      the IdMS redirects the operator's browser back here
 *   POST /login/device  starts a device login (RFC 8628); JSON
 *   GET  /login/device  the device login's progress; JSON (mcgw login polls it) */
#ifndef GW_IDM_ADMIN_H
#define GW_IDM_ADMIN_H

#include <jansson.h>

#include "gateway/admin.h"
#include "gateway/idm.h"

/* 0 or UV_ENOMEM. idm must outlive the admin listener's requests (or close
 * first: its gw_idm_close answers what is pending). */
int gw_idm_admin_register(gw_admin *a, gw_idm *idm);

/* The "idm" object of /status from a view (also for "unconfigured"). */
json_t *gw_idm_status_json(const gw_idm_view *v);

#endif
