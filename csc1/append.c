/* See append.h. */
#include "csc1/append.h"

#include <stdlib.h>
#include <string.h>

int csc1_append(char **buf, size_t *len, const char *at, size_t n, size_t cap) {
  if (*len + n > cap)
    return CSC1_APPEND_TOO_BIG;
  char *grown = realloc(*buf, *len + n + 1);
  if (!grown)
    return CSC1_APPEND_NOMEM;
  memcpy(grown + *len, at, n);
  *len += n;
  grown[*len] = '\0';
  *buf = grown;
  return CSC1_APPEND_OK;
}
