/* sd_notify wrappers. See notify.h. */
#include "gateway/notify.h"

#include <inttypes.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "gateway/log.h"

/* A failed notification is logged once: systemd would then kill or time out
 * the service, and the log should say why. */
static void sent(const char *what, int rc) {
  static int warned;
  if (rc < 0 && !warned) {
    warned = 1;
    gw_log(TN_LOG_WARN, "sd_notify_failed", TN_S("message", what), TN_I("error", rc), TN_LOG_END);
  }
}

void gw_notify_ready(const char *status) {
  sent("READY", sd_notifyf(0, "READY=1\nSTATUS=%s", status));
}

void gw_notify_reloading(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
  sent("RELOADING", sd_notifyf(0, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%" PRIu64, usec));
}

void gw_notify_stopping(const char *status) {
  sent("STOPPING", sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status));
}

void gw_notify_status(const char *status) {
  sent("STATUS", sd_notifyf(0, "STATUS=%s", status));
}

bool gw_notify_watchdog_interval_ms(uint64_t *ms) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
    return false;
  *ms = usec / 2000u; /* half the timeout, as sd_watchdog_enabled(3) advises */
  if (*ms == 0)
    *ms = 1;
  return true;
}

void gw_notify_watchdog(void) { sent("WATCHDOG", sd_notify(0, "WATCHDOG=1")); }
