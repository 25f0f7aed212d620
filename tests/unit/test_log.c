/* Unit tests for tunnel/log.c: logfmt and JSON lines, number formatting,
 * escaping of hostile strings, timestamps, and levels. stderr is redirected
 * to a temporary file for each test. Loggers are objects: two of them
 * with their own level, format and stream coexist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tunnel/log.h"

static char line[4096];
static tn_logger lg;

/* Runs the logger with stderr going to a temp file; returns what it wrote. */
#define CAPTURE(call)                                                                            \
  do {                                                                                           \
    fflush(stderr);                                                                              \
    FILE *tmp = tmpfile();                                                                       \
    assert_non_null(tmp);                                                                        \
    int saved = dup(2);                                                                          \
    dup2(fileno(tmp), 2);                                                                        \
    call;                                                                                        \
    fflush(stderr);                                                                              \
    dup2(saved, 2);                                                                              \
    close(saved);                                                                                \
    rewind(tmp);                                                                                 \
    size_t n = fread(line, 1, sizeof(line) - 1, tmp);                                            \
    line[n] = '\0';                                                                              \
    fclose(tmp);                                                                                 \
  } while (0)

static void logfmt_fields_and_numbers(void **state) {
  (void)state;
  tn_logger_init(&lg, TN_LOG_DEBUG, TN_LOG_TEXT);
  CAPTURE(tn_log(&lg, TN_LOG_INFO, "tunnel_closed", TN_U("id", 0), TN_U("big", UINT64_MAX),
                 TN_I("neg", INT64_MIN), TN_I("minus", -42), TN_S("target", "a.example:443"),
                 TN_LOG_END));
  assert_non_null(strstr(line, " level=info msg=tunnel_closed id=0 big=18446744073709551615 "
                               "neg=-9223372036854775808 minus=-42 target=a.example:443\n"));
  assert_memory_equal(line, "ts=", 3);
  /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
  assert_int_equal(line[13], 'T');
  assert_int_equal(line[22], '.');
  assert_int_equal(line[26], 'Z');
}

static void logfmt_quotes_what_needs_it(void **state) {
  (void)state;
  tn_logger_init(&lg, TN_LOG_DEBUG, TN_LOG_TEXT);
  CAPTURE(tn_log(&lg, TN_LOG_WARN, "x", TN_S("a", "two words"), TN_S("b", "q\"uote"),
                 TN_S("c", "new\nline"), TN_S("d", ""), TN_S("e", "k=v"), TN_LOG_END));
  assert_non_null(strstr(line, " a=\"two words\" b=\"q\\\"uote\" c=\"new\\u000aline\" d=\"\" "
                               "e=\"k=v\"\n"));
  /* One record is one line, whatever the values hold. */
  assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
}

static void json_lines_escape_and_type(void **state) {
  (void)state;
  tn_logger_init(&lg, TN_LOG_DEBUG, TN_LOG_JSON);
  CAPTURE(tn_log(&lg, TN_LOG_ERROR, "m\"sg", TN_S("s", "a\\b\x01"), TN_U("u", 7), TN_I("i", -7),
                 TN_LOG_END));
  assert_memory_equal(line, "{\"ts\":\"", 7);
  assert_non_null(strstr(line, ",\"level\":\"error\",\"msg\":\"m\\\"sg\",\"s\":\"a\\\\b\\u0001\","
                               "\"u\":7,\"i\":-7}\n"));
}

static void levels_filter(void **state) {
  (void)state;
  tn_logger_init(&lg, TN_LOG_WARN, TN_LOG_TEXT);
  assert_false(tn_log_enabled(&lg, TN_LOG_INFO));
  assert_true(tn_log_enabled(&lg, TN_LOG_ERROR));
  CAPTURE(tn_log(&lg, TN_LOG_INFO, "hidden", TN_LOG_END));
  assert_string_equal(line, "");
  assert_int_equal(tn_log_level_parse("debug"), TN_LOG_DEBUG);
  assert_int_equal(tn_log_level_parse("verbose"), -1);
  assert_int_equal(tn_log_format_parse("json"), TN_LOG_JSON);
  assert_int_equal(tn_log_format_parse("xml"), -1);
}

static void long_records_are_cut_not_split(void **state) {
  (void)state;
  char big[5000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  tn_logger_init(&lg, TN_LOG_DEBUG, TN_LOG_TEXT);
  CAPTURE(tn_log(&lg, TN_LOG_INFO, "big", TN_S("v", big), TN_LOG_END));
  size_t n = strlen(line);
  assert_true(n > 1000 && n <= 2048);
  assert_int_equal(line[n - 1], '\n');
  assert_null(memchr(line, '\n', n - 1));
}

/* Two loggers side by side, each with its own level, format and stream
 * (the engine's logger is in its options, not process-wide); a NULL logger
 * writes nothing. */
static void loggers_are_independent(void **state) {
  (void)state;
  FILE *fa = tmpfile(), *fb = tmpfile();
  assert_non_null(fa);
  assert_non_null(fb);
  tn_logger a, b;
  tn_logger_init(&a, TN_LOG_DEBUG, TN_LOG_JSON);
  tn_logger_init(&b, TN_LOG_WARN, TN_LOG_TEXT);
  a.out = fa;
  b.out = fb;
  tn_log(&a, TN_LOG_DEBUG, "to_a", TN_U("n", 1), TN_LOG_END);
  tn_log(&b, TN_LOG_DEBUG, "hidden_in_b", TN_LOG_END);
  tn_log(&b, TN_LOG_WARN, "to_b", TN_U("n", 2), TN_LOG_END);
  tn_log(NULL, TN_LOG_ERROR, "nowhere", TN_LOG_END);
  assert_false(tn_log_enabled(NULL, TN_LOG_ERROR));
  char got[512];
  rewind(fa);
  size_t n = fread(got, 1, sizeof(got) - 1, fa);
  got[n] = '\0';
  assert_non_null(strstr(got, "\"msg\":\"to_a\",\"n\":1}\n"));
  assert_null(strstr(got, "to_b"));
  rewind(fb);
  n = fread(got, 1, sizeof(got) - 1, fb);
  got[n] = '\0';
  assert_non_null(strstr(got, " level=warn msg=to_b n=2\n"));
  assert_null(strstr(got, "hidden_in_b"));
  assert_null(strstr(got, "to_a"));
  fclose(fa);
  fclose(fb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(logfmt_fields_and_numbers),
      cmocka_unit_test(logfmt_quotes_what_needs_it),
      cmocka_unit_test(json_lines_escape_and_type),
      cmocka_unit_test(levels_filter),
      cmocka_unit_test(long_records_are_cut_not_split),
      cmocka_unit_test(loggers_are_independent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
