/* Growing a NUL-terminated byte buffer with a size cap: what the HTTP
 * parsers' header-value and body callbacks need (llhttp hands values over
 * in pieces). */
#ifndef GW_APPEND_H
#define GW_APPEND_H

#include <stddef.h>

enum { GW_APPEND_OK = 0, GW_APPEND_TOO_BIG = -1, GW_APPEND_NOMEM = -2 };

/* Appends n bytes to *buf, which holds *len bytes plus a NUL (NULL and 0 to
 * start), so that at most cap bytes are held. Returns GW_APPEND_OK, or
 * GW_APPEND_TOO_BIG / GW_APPEND_NOMEM with *buf and *len unchanged. */
int gw_append(char **buf, size_t *len, const char *at, size_t n, size_t cap);

#endif
