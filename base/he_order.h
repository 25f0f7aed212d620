/* mcgw_base: the order of Happy Eyeballs connection attempts (RFC 8305 4).
 *
 * One rule for both racers, the tunnel engine's (tunnel/connect.c) and the
 * CSC-1 client's (csc1/https_connect.c): the addresses in the resolver's
 * order (it already sorted them by RFC 6724), the two families alternating,
 * the family of the first address first. When one family runs out, the rest
 * of the other follows in order. Pure: no state, no I/O, no allocation. */
#ifndef BASE_HE_ORDER_H
#define BASE_HE_ORDER_H

#include <stddef.h>
#include <sys/socket.h>

/* families[0..n): each address's family (AF_INET6; anything else counts as
 * the other family). Writes a permutation of 0..n-1 to order[0..n): the
 * index of the address to try first, second, ... Cannot fail. */
void base_he_order(const sa_family_t *families, size_t n, size_t *order);

#endif
