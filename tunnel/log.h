/* Structured logging for the relay engine and the daemon.
 *
 * One record is one line on stderr, either logfmt
 *   ts=2026-11-27T17:47:17.123Z level=info msg=tunnel_closed id=7 bytes_up=512
 * or a JSON object per line. Fields are typed key/value pairs passed as
 * varargs and terminated by TN_LOG_END:
 *
 *   tn_log(TN_LOG_INFO, "listening", TN_S("addr", text), TN_U("fd", 3), TN_LOG_END);
 *
 * Contract: never pass payload bytes, tokens, codes or secrets as a field. The
 * logger cannot tell them apart from other strings; callers must not log them.
 */
#ifndef TN_LOG_H
#define TN_LOG_H

#include <stdint.h>

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

void tn_log_setup(tn_log_level level, tn_log_format format);
int tn_log_enabled(tn_log_level level);
void tn_log(tn_log_level level, const char *msg, ...);

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int tn_log_level_parse(const char *s);
/* Parses "text", "json"; returns -1 when unknown. */
int tn_log_format_parse(const char *s);

#endif
