/* Structured logging for the relay engine and the daemon.
 *
 * A tn_logger is an object its user owns (the daemon): level, format and
 * output. The engine logs through the one in its options (opts.logger);
 * there is no process-wide logger state in tunnel/. One record is one line
 * on the logger's stream (stderr by default), either logfmt
 *   ts=2026-11-27T17:47:17.123Z level=info msg=tunnel_closed id=7 bytes_up=512
 * or a JSON object per line. Fields are typed key/value pairs passed as
 * varargs and terminated by TN_LOG_END:
 *
 *   tn_log(lg, TN_LOG_INFO, "listening", TN_S("addr", text), TN_U("fd", 3), TN_LOG_END);
 *
 * Contract: never pass payload bytes, tokens, codes or secrets as a field. The
 * logger cannot tell them apart from other strings; callers must not log them.
 */
#ifndef TN_LOG_H
#define TN_LOG_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

typedef enum { TN_LOG_ERROR = 0, TN_LOG_WARN, TN_LOG_INFO, TN_LOG_DEBUG } tn_log_level;
typedef enum { TN_LOG_TEXT = 0, TN_LOG_JSON } tn_log_format;

typedef enum { TN_KV_END = 0, TN_KV_STR, TN_KV_INT, TN_KV_UINT, TN_KV_DBL } tn_kv_type;

typedef struct tn_kv {
  tn_kv_type type;
  const char *key;
  union {
    const char *s;
    int64_t i;
    uint64_t u;
    double d;
  } v;
} tn_kv;

#define TN_S(k, x) ((tn_kv){.type = TN_KV_STR, .key = (k), .v.s = (x)})
#define TN_I(k, x) ((tn_kv){.type = TN_KV_INT, .key = (k), .v.i = (int64_t)(x)})
#define TN_U(k, x) ((tn_kv){.type = TN_KV_UINT, .key = (k), .v.u = (uint64_t)(x)})
#define TN_D(k, x) ((tn_kv){.type = TN_KV_DBL, .key = (k), .v.d = (double)(x)})
#define TN_LOG_END ((tn_kv){.type = TN_KV_END})

/* A logger. Fill it with tn_logger_init (or TN_LOGGER_INIT) and change
 * level and format whenever (a reload): they apply from the next record.
 * Not thread-safe: one thread logs through a logger at a time (each loop
 * its own). The members after `out` are its private cache. */
typedef struct tn_logger {
  tn_log_level level;
  tn_log_format format;
  FILE *out;        /* NULL: stderr. Not owned. */
  time_t ts_sec;    /* the second ts_text holds, -1 none */
  char ts_text[24]; /* "YYYY-MM-DDTHH:MM:SS" of ts_sec */
} tn_logger;

#define TN_LOGGER_INIT                                                                             \
  { .level = TN_LOG_INFO, .format = TN_LOG_TEXT, .out = NULL, .ts_sec = -1 }

/* Sets up lg with level and format, writing to stderr. Holds no resources:
 * there is nothing to free. */
void tn_logger_init(tn_logger *lg, tn_log_level level, tn_log_format format);
/* Whether a record at level would be written; false for a NULL logger.
 * Lets a caller skip formatting what nobody will see. */
int tn_log_enabled(const tn_logger *lg, tn_log_level level);
/* Writes one record (msg and the fields up to TN_LOG_END) in one write,
 * truncated at 2 KiB, never split; nothing when lg is NULL or the level is
 * off. */
void tn_log(tn_logger *lg, tn_log_level level, const char *msg, ...);
/* tn_log with the fields as a va_list (for wrappers such as the daemon's). */
void tn_logv(tn_logger *lg, tn_log_level level, const char *msg, va_list ap);

/* Parses "error", "warn", "info", "debug" into a tn_log_level; returns -1
 * when unknown. */
int tn_log_level_parse(const char *s);
/* Parses "text", "json" into a tn_log_format; returns -1 when unknown. */
int tn_log_format_parse(const char *s);

#endif
