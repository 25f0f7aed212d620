/* The daemon's configuration: an INI file parsed with inih.
 *
 * Every problem is collected, not just the first, each as "FILE:LINE: message"
 * so `mcgw check` can print them all. Unknown sections and keys are errors:
 * a typo in a security setting must never be silently ignored.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tunnel/engine.h"
#include "tunnel/log.h"

typedef struct gw_config {
  char *path;                 /* as given to gw_config_load */
  tn_log_level log_level;     /* [gateway] log_level, default info */
  tn_log_format log_format;   /* [gateway] log_format, default text */
  bool admin_enabled;         /* [admin] listen present (default 127.0.0.1:9090) */
  struct sockaddr_storage admin_listen;
  tn_engine_opts tunnel;      /* [tunnel] */
} gw_config;

typedef struct gw_config_errors {
  char **msgs; /* "FILE:LINE: message", or "FILE: message" when no line applies */
  size_t n;
  size_t cap;
} gw_config_errors;

/* Loads path into cfg (which it initialises with the defaults first).
 * Returns 0 when the file is valid; otherwise a negative code, with every
 * problem appended to errs. cfg must be released with gw_config_free in both
 * cases. */
int gw_config_load(const char *path, gw_config *cfg, gw_config_errors *errs);
/* The same, from an in-memory string; `name` stands for the file name in
 * messages. For tests and fuzzing. */
int gw_config_load_string(const char *name, const char *text, gw_config *cfg,
                          gw_config_errors *errs);
void gw_config_free(gw_config *cfg);
void gw_config_errors_free(gw_config_errors *errs);

/* Parses a duration: an unsigned integer followed by ms, s, m or h ("500ms",
 * "10s", "5m", "1h"). A bare number is an error (the unit must be said).
 * Returns 0 and *out_ms, or -1 with *out_ms untouched. */
int gw_duration_parse(const char *s, uint64_t *out_ms);

#endif
