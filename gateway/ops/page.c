/* Serves the embedded status page. See page.h. */
#include "gateway/ops/page.h"

/* No inline script or style, no other origin: the page cannot be turned
 * against the admin API by injected content, and needs nothing from outside
 * the vehicle. */
#define PAGE_HEADERS                                                                         \
  "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "       \
  "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "          \
  "frame-ancestors 'none'\r\n"                                                               \
  "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"

static void serve(gw_admin_req *req, void *arg) {
  const gw_www_asset *a = arg;
  gw_admin_respond(req, 200, a->content_type, PAGE_HEADERS, (const char *)a->data, a->len);
}

int gw_page_register(gw_admin *a) {
  for (size_t i = 0; i < gw_www_n_assets; i++) {
    int err = gw_admin_route_public(a, "GET", gw_www_assets[i].path, serve,
                                    (void *)&gw_www_assets[i]);
    if (err)
      return err;
  }
  return 0;
}
