/* `mcgw login -c FILE`: asks the running daemon, through its admin
 * listener, to log the gateway in, and waits until that is done.
 *
 * login = device: starts the device flow (POST /login/device), prints the
 * verification URI and the user code, then polls GET /login/device, showing
 * progress, until the login completes (exit 0), is denied or expires
 * (exit 1). login = browser: prints the /login URL to open and waits for
 * /status to say "authorized". Requests go through the CLI's one admin API
 * client (admin_client.h). */
#ifndef GW_LOGIN_CLI_H
#define GW_LOGIN_CLI_H

#include <stdio.h>

#include "gateway/config.h"

/* admin: "host:port" overriding [admin] listen, or NULL. Returns the exit
 * code. */
int gw_login_cli(const gw_config *cfg, const char *admin, FILE *out);

#endif
