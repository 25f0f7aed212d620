/* The CONNECT-UDP request target: RFC 9298's default URI template,
 * /.well-known/masque/udp/{target_host}/{target_port}/, parsed into the same
 * tn_authority a CONNECT target becomes (tunnel/addr.h), so that one policy
 * decides both.
 *
 * Pure, like addr.h: no I/O, no allocation; *out untouched on failure.
 */
#ifndef TN_UDP_TARGET_H
#define TN_UDP_TARGET_H

#include <stddef.h>

#include "tunnel/addr.h"

#define TN_UDP_PATH_PREFIX "/.well-known/masque/udp/"

/* Parses path[0..len) (the :path of an HTTP/2 extended CONNECT, or the
 * origin-form target of an HTTP/1.1 Upgrade request).
 * - target_host: a DNS name, an IPv4 literal, or an IPv6 literal whose
 *   colons are percent-encoded (2001%3Adb8%3A%3A1); percent-encoding is
 *   decoded once, then the host is held to tn_authority_parse's rules (no
 *   brackets, zone ids, '%' or '@' once decoded);
 * - target_port: decimal, 1..65535.
 * Returns 0; TN_ENOENT when the path is not the template (the answer is 404):
 * another prefix, a segment missing or empty, anything after the final '/'
 * (a query included); TN_EINVAL when it is but a value is bad (400). */
int tn_udp_target_parse(const char *path, size_t len, tn_authority *out);

#endif
