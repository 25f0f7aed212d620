/* The live status page: static HTML, CSS and JS from gateway/ops/www/, embedded
 * into the binary at build time (cmake/embed_www.cmake), served by the admin
 * listener. The page holds no figures itself: it polls /status and /tunnels.
 * So its files are public routes even when an admin token is required; the
 * page asks for the token and sends it on its own requests. */
#ifndef GW_PAGE_H
#define GW_PAGE_H

#include <stddef.h>

#include "gateway/ops/admin.h"

typedef struct gw_www_asset {
  const char *path;         /* "/" for index.html, else "/" + file name */
  const char *content_type;
  const unsigned char *data;
  size_t len;
} gw_www_asset;

/* Generated at build time from gateway/ops/www/. */
extern const gw_www_asset gw_www_assets[];
extern const size_t gw_www_n_assets;

/* Registers GET for every asset. Returns 0 or UV_ENOMEM. */
int gw_page_register(gw_admin *a);

#endif
