/* mcgw_base: the one host:port parser.
 *
 * base/ is the leaf library of the project: libc only, no state, no I/O, no
 * allocation, nothing of ours. tunnel/, csc1/ and gateway/ all link it, so the
 * grammar of "host:port" lives here once.
 *
 * Error convention (the whole of base/): a function returns 0 on success, or
 * -1 with *why (when why is not NULL) pointing at a static English reason;
 * out-parameters are untouched on failure.
 */
#ifndef BASE_HOSTPORT_H
#define BASE_HOSTPORT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest host text kept: a URL host may be 255 bytes; a strict (CONNECT)
 * name at most 253, the longest DNS name in text form without trailing dot. */
#define BASE_HOST_MAX 255
#define BASE_NAME_MAX 253

typedef enum { BASE_HOST_NAME = 0, BASE_HOST_IPV4, BASE_HOST_IPV6 } base_host_kind;

/* A parsed authority: host and port only. */
typedef struct base_hostport {
  base_host_kind kind;
  /* Lowercase name, or IP text; IPv6 without brackets. Strict mode: the name
   * without its trailing dot, IPs in canonical inet_ntop form. URL mode: the
   * text as written (names lowercased). */
  char host[BASE_HOST_MAX + 1];
  uint16_t port; /* 1..65535; 0 when absent (BASE_HP_PORT_OPTIONAL only) */
  union {
    struct in_addr v4;
    struct in6_addr v6;
  } ip; /* valid when kind != BASE_HOST_NAME */
} base_hostport;

/* Flags for base_hostport_parse. With none, the grammar is the strict CONNECT
 * target of RFC 9110 9.3.6 (see below). */
enum {
  /* "host" and "[v6]" without ":port" are accepted; port is 0 then. */
  BASE_HP_PORT_OPTIONAL = 1u << 0,
  /* The host of an http(s) URL (RFC 3986 reg-name, as CSC-1 endpoints and the
   * CLI's --admin use it): 1..255 bytes of letters, digits, '-', '.', '_',
   * lowercased; label lengths, empty labels and a trailing dot are not
   * checked; an all-numeric name that is not a dotted quad (127.1) is a name,
   * not refused. kind is IPV4 when inet_pton reads it as a dotted quad. The
   * text is kept as written (not canonicalised). */
  BASE_HP_URL_HOST = 1u << 1,
};

/* Parses "host:port" or "[v6]:port" of len bytes (not necessarily
 * NUL-terminated) into *out.
 *
 * Always: the port is decimal digits only, at most 5 of them, 1..65535; an
 * IPv6 literal only in brackets, no zone id, as inet_pton reads it; no
 * userinfo ('@'), percent-encoding, whitespace, control or non-ASCII bytes.
 *
 * Strict (no BASE_HP_URL_HOST), because every leniency here is a way around
 * an allowlist:
 * - IPv4 only as a strict dotted quad. Names whose last label is numeric or
 *   hexadecimal-looking (127.1, 0x7f000001, 2130706433, 017700000001) are
 *   refused rather than handed to a resolver that would accept them;
 * - names: LDH labels (letters, digits, '-', '_'), 1..63 bytes each, 253 in
 *   all; lowercased; one trailing dot removed.
 *
 * Returns 0, or -1 with *why (if why) set to a static reason; *out is
 * untouched on failure. */
int base_hostport_parse(const char *s, size_t len, unsigned flags, base_hostport *out,
                        const char **why);

/* The pieces of that grammar, for the other address grammars of the project
 * (listen addresses, CIDR prefixes in tunnel/addr.c), so that an IP or a port
 * is read one way everywhere. Each reads len bytes (not necessarily
 * NUL-terminated). */

/* A decimal port: 1..5 digits, no sign or spaces, 1..65535 (0..65535 with
 * allow_zero: a listener's "any port"). */
int base_port_parse(const char *s, size_t len, bool allow_zero, uint16_t *out, const char **why);
/* A strict dotted quad: four decimal octets of 1..3 digits without leading
 * zeros, confirmed by inet_pton. inet_aton() forms (127.1, 0x7f.0.0.1,
 * 017.0.0.1, 2130706433) are refused so that no later consumer can read them
 * otherwise. 0 or -1 (no reason: the caller knows what it expected). */
int base_ipv4_parse(const char *s, size_t len, struct in_addr *out);
/* IPv6 text as inet_pton reads it (embedded dotted quad allowed); no zone id,
 * no brackets. 0 or -1. */
int base_ipv6_parse(const char *s, size_t len, struct in6_addr *out);

#endif
