/* Error names for the engine's negative codes. */
#include "tunnel/error.h"

#include <stdbool.h>
#include <uv.h>

/* uv_strerror() allocates (and leaks) a message for codes it does not know, so
 * it is only called for codes in libuv's own table. */
static bool is_uv_code(int err) {
  switch (err) {
#define TN_UV_CASE(code, msg) case UV_##code:
    UV_ERRNO_MAP(TN_UV_CASE)
#undef TN_UV_CASE
    return true;
  default:
    return false;
  }
}

/* Returns a static string for every input. The TN_E* codes share their values
 * with the matching UV_E* codes, so they are named first. */
const char *tn_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case TN_ENOENT:
    return "not found";
  case TN_EINVAL:
    return "invalid argument";
  case TN_ENOMEM:
    return "out of memory";
  case TN_ERANGE:
    return "value out of range";
  case TN_EEXIST:
    return "already exists";
  case TN_ETLS:
    return "TLS failure";
  case TN_EDNS_NXDOMAIN:
    return "name not found";
  case TN_EDNS_TIMEOUT:
    return "name lookup timed out";
  case TN_EDNS_ERROR:
    return "name lookup failed";
  default:
    break;
  }
  return is_uv_code(err) ? uv_strerror(err) : "unknown error";
}
