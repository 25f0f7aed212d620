/* See dns_link.h. A lookup answered at once (cache, /etc/hosts, a literal)
 * is handed over from a zero timer, because the client's interface says
 * done is never called from inside start. */
#include "gateway/dns_link.h"

#include <stdlib.h>
#include <string.h>

#include "tunnel/error.h"

typedef struct lookup {
  uv_timer_t timer; /* first member: the handle's memory is the lookup's */
  tn_dns_req req;
  csc1_https_resolved_fn done;
  void *arg;
} lookup;

static void on_closed(uv_handle_t *h) { free(h); }

static void deliver(lookup *l) {
  struct sockaddr_storage addrs[TN_DNS_ADDRS_MAX];
  size_t n = 0;
  if (l->req.status == 0)
    for (; n < l->req.answer.n; n++) {
      memset(&addrs[n], 0, sizeof(addrs[n]));
      memcpy(&addrs[n], &l->req.answer.addrs[n], sizeof(l->req.answer.addrs[n]));
    }
  l->done(l->arg, l->req.status ? tn_strerror(l->req.status) : NULL, addrs, n);
  uv_close((uv_handle_t *)&l->timer, on_closed);
}

static void on_answer(tn_dns_req *req) { deliver(req->data); }

static void on_timer(uv_timer_t *t) { deliver((lookup *)t); }

static void *start(void *ctx, const char *host, csc1_https_resolved_fn done, void *arg) {
  gw_dns_link *link = ctx;
  lookup *l = calloc(1, sizeof(*l));
  if (!l)
    return NULL;
  l->done = done;
  l->arg = arg;
  l->req.data = l;
  uv_timer_init(link->loop, &l->timer);
  int rc = tn_resolver_lookup(link->resolver, &l->req, host, on_answer);
  if (rc == 1)
    uv_timer_start(&l->timer, on_timer, 0, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)&l->timer, on_closed);
    return NULL;
  }
  return l;
}

static void cancel(void *ctx, void *handle) {
  lookup *l = handle;
  (void)ctx;
  tn_resolver_cancel(&l->req);
  uv_close((uv_handle_t *)&l->timer, on_closed); /* a started timer stops with it */
}

csc1_https_resolver gw_dns_link_resolver(gw_dns_link *link) {
  return (csc1_https_resolver){.start = start, .cancel = cancel, .ctx = link};
}
