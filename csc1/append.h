/* Growing a NUL-terminated byte buffer with a size cap: what the HTTP
 * parsers' header-value and body callbacks need (llhttp hands values over
 * in pieces). */
#ifndef CSC1_APPEND_H
#define CSC1_APPEND_H

#include <stddef.h>

enum { CSC1_APPEND_OK = 0, CSC1_APPEND_TOO_BIG = -1, CSC1_APPEND_NOMEM = -2 };

/* Appends n bytes to *buf, which holds *len bytes plus a NUL (NULL and 0 to
 * start), so that at most cap bytes are held. Returns CSC1_APPEND_OK, or
 * CSC1_APPEND_TOO_BIG / CSC1_APPEND_NOMEM with *buf and *len unchanged. */
int csc1_append(char **buf, size_t *len, const char *at, size_t n, size_t cap);

#endif
