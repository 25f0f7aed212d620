/* The daemon: one libuv loop running the relay engine and the admin
 * listener, with signal handling (SIGTERM/SIGINT drain, SIGHUP reload). */
#ifndef GW_DAEMON_H
#define GW_DAEMON_H

#include "gateway/config.h"

/* Runs until drained. Takes ownership of *cfg (freed before returning).
 * Returns the process exit code: 0 after a drain, 1 when start-up failed. */
int gw_daemon_run(gw_config *cfg);

#endif
