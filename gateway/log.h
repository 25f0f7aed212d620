/* The daemon's logger: the one tn_logger of the mcgw process, set from
 * [gateway] log_level and log_format, used by the gateway's own code and
 * handed to the relay engine (tn_engine_opts.logger). Starts at info, text,
 * on stderr, so that what is logged before the configuration is read still
 * shows. Loop thread only. */
#ifndef GW_LOG_H
#define GW_LOG_H

#include "tunnel/log.h"

/* The process's logger; lives as long as the process. */
tn_logger *gw_logger(void);
/* Sets its level and format (start and reload); from the next record on. */
void gw_log_setup(tn_log_level level, tn_log_format format);
/* tn_log_enabled and tn_log on the process's logger. */
int gw_log_enabled(tn_log_level level);
void gw_log(tn_log_level level, const char *msg, ...);

#endif
