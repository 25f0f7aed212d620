/* mcgw_gateway: the daemon. It links mcgw_csc1 (its own CSC-1 login),
 * mcgw_tunnel (the relay engine) and mcgw_base, plus inih, libsystemd and
 * libpsl; nothing links it but the mcgw executable (and its tests).
 *
 *   gateway/        main, daemon (start, reload, drain), config, idm (the
 *                   gateway's own login), privdrop, notify (systemd)
 *   gateway/ops/    the ops surface: the admin listener, /status and
 *                   /tunnels, metrics, the status page (www/), the login
 *                   routes (idm_admin), the CLI (status, tunnels, logout,
 *                   login) and its one admin API client
 *
 * Error convention (gateway/ and gateway/ops/):
 * - A function that can fail returns 0 (or a non-NULL pointer) on success
 *   and -1 (or NULL) on failure, with a one-line reason in a caller's
 *   buffer (char *err, size_t errlen) - never a token or secret. The caller
 *   that owns the outcome logs it (tunnel/log.h) or prints it (the CLI).
 * - Two exceptions remain, each for a reason:
 *   - what binds or registers on the libuv loop (gw_admin_start,
 *     gw_admin_route, gw_ops_start, gw_page_register, gw_idm_admin_register)
 *     returns 0 or a negative libuv code (UV_ENOMEM, UV_EADDRINUSE...): it
 *     passes libuv's own error on, which callers turn into text with
 *     uv_strerror; wrapping it in a buffer would only lose the code.
 *   - gw_config_load collects every problem as a "FILE:LINE: message" in
 *     gw_config_errors, not just the first, because `mcgw check` must show
 *     them all; its return value is 0 or negative (an errno or TN_E* code)
 *     and callers only test it.
 * - Out-parameters are untouched on failure. Errors from csc1/ (see
 *   csc1/csc1.h) are turned into this convention where they cross into
 *   gateway/ (e.g. gw_idm_login_url copies csc1_authz_url's static reason
 *   into err). */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include "gateway/config.h"
#include "gateway/daemon.h"
#include "gateway/idm.h"
#include "gateway/notify.h"
#include "gateway/privdrop.h"

#endif
