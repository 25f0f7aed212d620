/* See he_order.h. */
#include "base/he_order.h"

#include <netinet/in.h>
#include <stdbool.h>

/* The first index >= from whose family is (or is not) IPv6; n if none. */
static size_t next_of(const sa_family_t *families, size_t n, size_t from, bool v6) {
  while (from < n && (families[from] == AF_INET6) != v6)
    from++;
  return from;
}

void base_he_order(const sa_family_t *families, size_t n, size_t *order) {
  bool v6 = n > 0 && families[0] == AF_INET6;
  size_t next6 = next_of(families, n, 0, true), next4 = next_of(families, n, 0, false);
  for (size_t k = 0; k < n; k++) {
    bool take6 = next4 == n || (v6 && next6 < n);
    if (take6) {
      order[k] = next6;
      next6 = next_of(families, n, next6 + 1, true);
    } else {
      order[k] = next4;
      next4 = next_of(families, n, next4 + 1, false);
    }
    v6 = !take6;
  }
}
