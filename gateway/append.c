/* See append.h. */
#include "gateway/append.h"

#include <stdlib.h>
#include <string.h>

int gw_append(char **buf, size_t *len, const char *at, size_t n, size_t cap) {
  if (*len + n > cap)
    return GW_APPEND_TOO_BIG;
  char *grown = realloc(*buf, *len + n + 1);
  if (!grown)
    return GW_APPEND_NOMEM;
  memcpy(grown + *len, at, n);
  *len += n;
  grown[*len] = '\0';
  *buf = grown;
  return GW_APPEND_OK;
}
