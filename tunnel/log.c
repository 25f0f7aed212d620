/* Structured logging: logfmt or JSON lines on stderr. See log.h. */
#include "tunnel/log.h"

#include <string.h>
#include <sys/time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void tn_logger_init(tn_logger *lg, tn_log_level level, tn_log_format format) {
  *lg = (tn_logger)TN_LOGGER_INIT;
  lg->level = level;
  lg->format = format;
}

int tn_log_enabled(const tn_logger *lg, tn_log_level level) { return lg && level <= lg->level; }

int tn_log_level_parse(const char *s) {
  for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
    if (strcmp(s, level_names[i]) == 0)
      return (int)i;
  return -1;
}

int tn_log_format_parse(const char *s) {
  if (strcmp(s, "text") == 0)
    return TN_LOG_TEXT;
  if (strcmp(s, "json") == 0)
    return TN_LOG_JSON;
  return -1;
}

/* A bounded line buffer: records longer than it are truncated, never split. */
typedef struct {
  char buf[2048];
  size_t len;
  tn_log_format format;
} line_buf;

static void put_char(line_buf *b, char c) {
  if (b->len < sizeof(b->buf) - 2)
    b->buf[b->len++] = c;
}

static void put_str(line_buf *b, const char *s) {
  while (*s)
    put_char(b, *s++);
}

__attribute__((format(printf, 2, 3))) static void put_fmt(line_buf *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  put_str(b, tmp);
}

/* JSON string escaping (RFC 8259): quotes, backslash and control bytes. */
static void put_json_str(line_buf *b, const char *s) {
  put_char(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      put_char(b, '\\');
      put_char(b, (char)c);
    } else if (c < 0x20 || c == 0x7f) {
      put_fmt(b, "\\u%04x", c);
    } else {
      put_char(b, (char)c);
    }
  }
  put_char(b, '"');
}

/* logfmt: bare when safe, else quoted with the same escaping as JSON. */
static void put_logfmt_str(line_buf *b, const char *s) {
  int bare = *s != '\0';
  for (const char *p = s; *p && bare; p++)
    if ((unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
      bare = 0;
  if (bare)
    put_str(b, s);
  else
    put_json_str(b, s);
}

/* Decimal digits without printf: the access log is on the per-tunnel path. */
static void put_u64(line_buf *b, uint64_t v) {
  char tmp[24];
  size_t i = sizeof(tmp);
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (i < sizeof(tmp))
    put_char(b, tmp[i++]);
}

static void put_i64(line_buf *b, int64_t v) {
  if (v < 0) {
    put_char(b, '-');
    put_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    put_u64(b, (uint64_t)v);
  }
}

/* The date and time to the second are formatted once per second (cached in
 * the logger). */
static void put_timestamp(line_buf *b, tn_logger *lg) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  if (tv.tv_sec != lg->ts_sec) {
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    strftime(lg->ts_text, sizeof(lg->ts_text), "%Y-%m-%dT%H:%M:%S", &tm);
    lg->ts_sec = tv.tv_sec;
  }
  put_str(b, lg->ts_text);
  int ms = (int)(tv.tv_usec / 1000);
  put_char(b, '.');
  put_char(b, (char)('0' + ms / 100));
  put_char(b, (char)('0' + ms / 10 % 10));
  put_char(b, (char)('0' + ms % 10));
  put_char(b, 'Z');
}

static void put_value(line_buf *b, const tn_kv *kv) {
  switch (kv->type) {
  case TN_KV_STR:
    if (b->format == TN_LOG_JSON)
      put_json_str(b, kv->v.s ? kv->v.s : "");
    else
      put_logfmt_str(b, kv->v.s ? kv->v.s : "");
    break;
  case TN_KV_INT:
    put_i64(b, kv->v.i);
    break;
  case TN_KV_UINT:
    put_u64(b, kv->v.u);
    break;
  case TN_KV_DBL:
    put_fmt(b, "%.3f", kv->v.d);
    break;
  case TN_KV_END:
    break;
  }
}

static void put_field(line_buf *b, const char *key, const tn_kv *kv) {
  if (b->format == TN_LOG_JSON) {
    put_char(b, ',');
    put_json_str(b, key);
    put_char(b, ':');
  } else {
    put_char(b, ' ');
    put_str(b, key);
    put_char(b, '=');
  }
  put_value(b, kv);
}

void tn_logv(tn_logger *lg, tn_log_level level, const char *msg, va_list ap) {
  if (!tn_log_enabled(lg, level))
    return;
  line_buf b = {.len = 0, .format = lg->format};
  tn_kv head = TN_S("level", level_names[level]);
  tn_kv text = TN_S("msg", msg);
  if (b.format == TN_LOG_JSON) {
    put_str(&b, "{\"ts\":\"");
  } else {
    put_str(&b, "ts=");
  }
  put_timestamp(&b, lg);
  if (b.format == TN_LOG_JSON)
    put_char(&b, '"');
  put_field(&b, "level", &head);
  put_field(&b, "msg", &text);
  for (;;) {
    tn_kv kv = va_arg(ap, tn_kv);
    if (kv.type == TN_KV_END)
      break;
    put_field(&b, kv.key, &kv);
  }
  if (b.format == TN_LOG_JSON)
    b.buf[b.len++] = '}';
  b.buf[b.len++] = '\n';
  /* One write per record so concurrent writers never interleave lines. */
  FILE *out = lg->out ? lg->out : stderr;
  fwrite(b.buf, 1, b.len, out);
  fflush(out);
}

void tn_log(tn_logger *lg, tn_log_level level, const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  tn_logv(lg, level, msg, ap);
  va_end(ap);
}
