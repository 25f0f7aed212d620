/* The systemd service notification protocol (sd_notify(3), via libsystemd).
 * Every call is a no-op when NOTIFY_SOCKET is not set, i.e. outside a
 * Type=notify service. Messages are sent from the loop thread only. */
#ifndef GW_NOTIFY_H
#define GW_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* READY=1 with STATUS=status: the listeners are bound. */
void gw_notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC (systemd >= 253 needs it to track the
 * reload); follow with gw_notify_ready once the reload is done. */
void gw_notify_reloading(void);
/* STOPPING=1 with STATUS=status: the drain has begun. */
void gw_notify_stopping(const char *status);
/* STATUS=status alone: what `systemctl status` shows. */
void gw_notify_status(const char *status);
/* WatchdogSec= in force: the interval at which to send gw_notify_watchdog. */
bool gw_notify_watchdog_interval_ms(uint64_t *ms);
/* WATCHDOG=1: the loop is alive. */
void gw_notify_watchdog(void);

#endif
