/* Fuzzes tn_authority_parse, the strict CONNECT target parser every request
 * passes through before any policy decision. Oracles beyond the sanitizers:
 * - whatever it accepts is canonical: formatting it and parsing the result
 *   gives the same authority, and the port is 1..65535;
 * - an accepted name never contains a byte outside [a-z0-9._-] and never
 *   looks like a number in disguise (its last label is not all digits or 0x..);
 * - on failure the out-parameter is left untouched. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/addr.h"

static void fail(const char *why, const uint8_t *data, size_t size) {
  fprintf(stderr, "fuzz_authority: %s for input '%.*s'\n", why, (int)size, (const char *)data);
  abort();
}

static void check_name(const tn_authority *a, const uint8_t *data, size_t size) {
  for (const char *p = a->host; *p; p++)
    if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '.' || *p == '-' ||
          *p == '_'))
      fail("accepted name has a byte outside [a-z0-9._-]", data, size);
  const char *last = strrchr(a->host, '.');
  last = last ? last + 1 : a->host;
  bool digits = *last != '\0';
  for (const char *p = last; *p; p++)
    digits = digits && isdigit((unsigned char)*p);
  if (digits || (last[0] == '0' && last[1] == 'x'))
    fail("accepted a name whose last label is numeric", data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tn_authority a, b, untouched;
  memset(&a, 0xa5, sizeof(a));
  memcpy(&untouched, &a, sizeof(a));
  if (tn_authority_parse((const char *)data, size, &a) != 0) {
    if (memcmp(&a, &untouched, sizeof(a)) != 0)
      fail("out-parameter modified on failure", data, size);
    return 0;
  }
  if (a.port == 0)
    fail("accepted port 0", data, size);
  if (a.kind == TN_HOST_NAME)
    check_name(&a, data, size);
  char text[TN_HOST_MAX + 16];
  int n = tn_authority_format(&a, text, sizeof(text));
  if (n <= 0 || (size_t)n >= sizeof(text))
    fail("format failed", data, size);
  if (tn_authority_parse(text, (size_t)n, &b) != 0)
    fail("formatted authority does not parse again", data, size);
  if (a.kind != b.kind || a.port != b.port || strcmp(a.host, b.host) != 0)
    fail("formatted authority parses to something else", data, size);
  return 0;
}
