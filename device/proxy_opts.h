/* The options by which both device tools (mcx-login, mcx-media) reach the
 * gateway: --proxy URL, --h2, --proxy-cacert, --proxy-cert, --proxy-key.
 * One table, one parser, one set of checks and one help text for both.
 *
 * libc only (its own CMake target, mcx_proxy_opts): mcx-media, which shares
 * no code with the gateway and links no CSC-1, uses it as mcx-login does. */
#ifndef MCX_PROXY_OPTS_H
#define MCX_PROXY_OPTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct mcx_proxy_opts {
  const char *url;    /* --proxy: http://GW:PORT or https://GW:PORT */
  const char *cacert; /* --proxy-cacert: trust anchors for an https:// proxy; NULL: system */
  const char *cert;   /* --proxy-cert and --proxy-key: the device certificate for the */
  const char *key;    /* gateway's TLS listener (client_ca) */
  bool h2;            /* --h2 */
} mcx_proxy_opts;

/* getopt_long values of these options, above any a tool gives its own. */
enum { MCX_O_PROXY = 0x1000, MCX_O_H2, MCX_O_PROXY_CACERT, MCX_O_PROXY_CERT, MCX_O_PROXY_KEY };

/* Their struct option entries, for the head of a tool's getopt_long table. */
#define MCX_PROXY_LONGOPTS                                                                         \
  {"proxy", required_argument, NULL, MCX_O_PROXY}, {"h2", no_argument, NULL, MCX_O_H2},            \
      {"proxy-cacert", required_argument, NULL, MCX_O_PROXY_CACERT},                               \
      {"proxy-cert", required_argument, NULL, MCX_O_PROXY_CERT}, {                                 \
    "proxy-key", required_argument, NULL, MCX_O_PROXY_KEY                                          \
  }

/* Their --help lines: h1, what the tool does over HTTP/1.1 ("HTTP/1.1
 * CONNECT"); h2_help, what --h2 makes of it. String literals only. */
#define MCX_PROXY_HELP(h1, h2_help)                                                                \
  "  --proxy URL            http://GW:PORT (" h1 "; with --h2, HTTP/2 prior\n"                     \
  "                         knowledge) or https://GW:PORT (TLS; ALPN h2 with --h2)\n"              \
  "  --h2                   " h2_help "\n"                                                         \
  "  --proxy-cacert FILE    trust anchors for an https:// proxy (default: system store)\n"         \
  "  --proxy-cert FILE      device certificate for the gateway's TLS listener\n"                   \
  "  --proxy-key FILE       its private key (mode 0600 or stricter)\n"

/* One getopt_long result: true if it was one of these options (now in p). */
bool mcx_proxy_opt(mcx_proxy_opts *p, int c, const char *arg);

/* Once every option is read: NULL when these hang together (a missing
 * --proxy is the tool's to judge), else what is wrong, for the tool's usage
 * error: the URL's scheme, --proxy-cert without --proxy-key or the other
 * way round, TLS options for an http:// proxy. */
const char *mcx_proxy_opts_usage_error(const mcx_proxy_opts *p);

/* Whether the URL is https://. */
bool mcx_proxy_opts_tls(const mcx_proxy_opts *p);

/* Before the key is used: 0, or -1 with why in err when --proxy-key cannot
 * be examined, is not a regular file, or is open to group or others. */
int mcx_proxy_opts_check_key(const mcx_proxy_opts *p, char *err, size_t errlen);

#endif
