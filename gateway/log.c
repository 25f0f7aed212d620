/* The daemon's logger. See log.h. */
#include "gateway/log.h"

#include <stdarg.h>

static tn_logger logger = TN_LOGGER_INIT;

tn_logger *gw_logger(void) { return &logger; }

void gw_log_setup(tn_log_level level, tn_log_format format) {
  logger.level = level;
  logger.format = format;
}

int gw_log_enabled(tn_log_level level) { return tn_log_enabled(&logger, level); }

void gw_log(tn_log_level level, const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  tn_logv(&logger, level, msg, ap);
  va_end(ap);
}
