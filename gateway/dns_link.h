/* The gateway's HTTPS client (CSC-1) looks names up with the tunnel
 * engine's resolver: one c-ares resolver, one cache, one serve-stale policy
 * for the devices' tunnels and the gateway's own IdMS traffic. This is the
 * glue between the client's resolver interface (csc1_https_resolver, which
 * knows nothing of tunnel/) and tn_resolver. */
#ifndef GW_DNS_LINK_H
#define GW_DNS_LINK_H

#include <uv.h>

#include "csc1/https_client.h"
#include "tunnel/resolver.h"

typedef struct gw_dns_link {
  uv_loop_t *loop;
  tn_resolver *resolver;
} gw_dns_link;

/* The interface for csc1_https_ctx_set_resolver; link (loop and resolver set
 * by the caller) must outlive every request made with it. */
csc1_https_resolver gw_dns_link_resolver(gw_dns_link *link);

#endif
