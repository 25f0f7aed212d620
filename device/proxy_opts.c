/* The device tools' proxy options. See proxy_opts.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "device/proxy_opts.h"

bool mcx_proxy_opt(mcx_proxy_opts *p, int c, const char *arg) {
  switch (c) {
  case MCX_O_PROXY:
    p->url = arg;
    return true;
  case MCX_O_H2:
    p->h2 = true;
    return true;
  case MCX_O_PROXY_CACERT:
    p->cacert = arg;
    return true;
  case MCX_O_PROXY_CERT:
    p->cert = arg;
    return true;
  case MCX_O_PROXY_KEY:
    p->key = arg;
    return true;
  default:
    return false;
  }
}

bool mcx_proxy_opts_tls(const mcx_proxy_opts *p) {
  return p->url && strncmp(p->url, "https://", 8) == 0;
}

const char *mcx_proxy_opts_usage_error(const mcx_proxy_opts *p) {
  if (p->url && strncmp(p->url, "http://", 7) != 0 && !mcx_proxy_opts_tls(p))
    return "--proxy: expected http://GW:PORT or https://GW:PORT";
  if ((p->cert != NULL) != (p->key != NULL))
    return "--proxy-cert and --proxy-key go together";
  /* Silently unused, they would let a device believe it is verifying the
   * gateway or showing it a certificate. */
  if (p->url && !mcx_proxy_opts_tls(p) && (p->cacert || p->cert))
    return "--proxy-cacert, --proxy-cert and --proxy-key need an https:// proxy";
  return NULL;
}

int mcx_proxy_opts_check_key(const mcx_proxy_opts *p, char *err, size_t errlen) {
  struct stat st;
  if (!p->key)
    return 0;
  if (stat(p->key, &st) != 0) {
    snprintf(err, errlen, "--proxy-key %s: %s", p->key, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "--proxy-key %s: not a regular file", p->key);
    return -1;
  }
  if (st.st_mode & 077) {
    snprintf(err, errlen,
             "--proxy-key %s: accessible by group or others (mode %04o); it must be 0600 or "
             "stricter (chmod 600 '%s')",
             p->key, (unsigned)(st.st_mode & 07777), p->key);
    return -1;
  }
  return 0;
}
