/* CONNECT targets and socket addresses: parsing, classification, formatting.
 *
 * Everything here is pure (no I/O, no allocation) so it can be unit-tested and
 * fuzzed directly. Every parse function leaves its out-parameter untouched on
 * failure and returns a negative TN_E* code from tunnel/error.h.
 */
#ifndef TN_ADDR_H
#define TN_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define TN_HOST_MAX 253 /* longest DNS name in text form, no trailing dot */
/* "[" + longest IPv6 text + "]:" + 5-digit port + NUL */
#define TN_ADDRSTR_MAX (INET6_ADDRSTRLEN + 9)

typedef enum { TN_HOST_NAME = 0, TN_HOST_IPV4, TN_HOST_IPV6 } tn_host_kind;

/* A parsed CONNECT authority (RFC 9110 7.2 / 9.3.6): host and port only. */
typedef struct tn_authority {
  tn_host_kind kind;
  /* Normalised host: a lowercase DNS name without trailing dot, or the IP in
   * canonical text form (IPv6 without brackets). */
  char host[TN_HOST_MAX + 1];
  uint16_t port; /* 1..65535 */
  union {
    struct in_addr v4;
    struct in6_addr v6;
  } ip; /* valid when kind != TN_HOST_NAME */
} tn_authority;

/* Parses a CONNECT request target "host:port" or "[v6]:port" of len bytes (not
 * necessarily NUL-terminated).
 *
 * Strict, because every leniency here is a way around the allowlist:
 * - the port is required, decimal digits only, 1..65535, at most 5 digits;
 * - no userinfo ('@'), no percent-encoding, no whitespace or control bytes;
 * - IPv4 only as a strict dotted quad (inet_pton). Names whose last label is
 *   numeric or hexadecimal-looking (127.1, 0x7f000001, 2130706433,
 *   017700000001) are refused rather than handed to a resolver that would
 *   accept them;
 * - IPv6 only in brackets, no zone id;
 * - names: LDH labels (letters, digits, '-', '_'), 1..63 bytes each, 253 in
 *   all; lowercased; one trailing dot removed.
 * Returns 0 or TN_EINVAL. */
int tn_authority_parse(const char *s, size_t len, tn_authority *out);

/* Writes "host:port" (IPv6 in brackets) into buf; returns snprintf's result. */
int tn_authority_format(const tn_authority *a, char *buf, size_t len);

/* What kind of address a destination is. Everything but TN_ADDR_PUBLIC is
 * refused as a tunnel target unless allow_private is set. */
typedef enum {
  TN_ADDR_PUBLIC = 0,
  TN_ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
  TN_ADDR_LOOPBACK,    /* 127.0.0.0/8, ::1 */
  TN_ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
  TN_ADDR_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
  TN_ADDR_MULTICAST,   /* 224/4, ff00::/8 */
  TN_ADDR_V4MAPPED,    /* ::ffff:0:0/96, ::/96 (v4-compatible), 64:ff9b::/96 */
  TN_ADDR_RESERVED     /* documentation, benchmarking, 240/4, broadcast,
                          192.0.0/24, 2001:db8::/32, fec0::/10, 100::/64 ... */
} tn_addr_class;

/* The class of sa's address, by the ranges above (an IPv4-mapped IPv6
 * address is TN_ADDR_V4MAPPED, not its IPv4 address's class); NULL or
 * another family: TN_ADDR_RESERVED. */
tn_addr_class tn_addr_classify(const struct sockaddr *sa);
/* Whether sa is the limited broadcast address 255.255.255.255, also in its
 * IPv4-mapped IPv6 form: never a CONNECT-UDP target, even with
 * allow_private (a subnet's directed broadcast is known only to its hosts:
 * allow_private's default, off, refuses private subnets as a whole). */
bool tn_addr_is_broadcast(const struct sockaddr *sa);
/* "public", "loopback", ...: a static string for every c. */
const char *tn_addr_class_name(tn_addr_class c);

/* Formats "1.2.3.4:80" or "[::1]:80" (buf of TN_ADDRSTR_MAX). Returns 0 or
 * TN_EINVAL for an unsupported family. */
int tn_addr_format(const struct sockaddr *sa, char *buf, size_t len);

/* Parses a listen address: numeric "a.b.c.d:port", "[v6]:port" or
 * "*:port"/"0.0.0.0:port". Port 0 is allowed (the kernel picks one).
 * Returns 0 or TN_EINVAL. */
int tn_addr_parse_listen(const char *s, struct sockaddr_storage *out);

/* An IP prefix, e.g. 10.0.0.0/8 or fd00::/8. */
typedef struct tn_cidr {
  int family; /* AF_INET or AF_INET6 */
  uint8_t addr[16];
  uint8_t prefix; /* 0..32 or 0..128 */
} tn_cidr;

/* Parses "a.b.c.d/n", "v6/n" or a bare address (a full-length prefix). Host
 * bits set below the prefix are an error (10.0.0.1/8 is almost always a typo).
 * Returns 0 or TN_EINVAL. */
int tn_cidr_parse(const char *s, size_t len, tn_cidr *out);
/* Whether sa's address is inside c. Families must match: a v4-mapped IPv6
 * address is not inside an IPv4 prefix. False for NULL arguments. */
bool tn_cidr_contains(const tn_cidr *c, const struct sockaddr *sa);

#endif
