/* mcgw_csc1: the CSC-1 client library (TS 33.180 5.1.2.1 and Annex B, the
 * OpenID Connect profile for MCX), used by the daemon's own login
 * (gateway/idm.c) and by the reference device (mcx-login). This header
 * includes every public header of the library; a file may include just the
 * ones it needs.
 *
 *   url.h          absolute http(s) URLs, form encoding, query parameters
 *   pkce.h         PKCE S256, random state/nonce
 *   authz.h        the authorization request and the redirect back
 *   oidc.h         discovery, token, device and error responses; form bodies
 *   jwt.h          JWKS and ID token validation
 *   client_auth.h  client authentication at the token endpoint
 *   https_client.h the asynchronous HTTPS client (libuv, OpenSSL, llhttp),
 *                  optionally through an HTTP/1.1 or HTTP/2 CONNECT proxy
 *   clock_skew.h   the local clock against the IdMS's Date
 *   token_store.h  the login kept on disk across restarts
 *   append.h       a capped growing buffer for the parsers
 *
 * Dependencies: itself, mcgw_base (base/hostport.h) and its libraries
 * (OpenSSL, libuv, nghttp2, llhttp, jansson, cjose) - never gateway/ or
 * tunnel/. mcgw_csc1 links no other target of ours, so such an include does
 * not compile.
 *
 * Error convention (every function of csc1/):
 * - Success is 0 or a non-NULL pointer. Failure is -1 or NULL, or - where a
 *   caller must tell failures apart - a negative code of the module's enum
 *   (CSC1_HTTPS_E*, CSC1_JWT_E*, CSC1_TS_*, CSC1_APPEND_*); the HTTPS and JWT
 *   codes have a csc1_*_strerror() giving their static name.
 * - The human reason goes to an out-parameter: a caller's buffer (char *err
 *   or *why with its length) when it carries details, or `const char **why`
 *   set to a static string. It names files, hosts and claims, never a
 *   secret (token, code, verifier, password) or a response's contents.
 * - Nothing is logged and nothing is printed: the caller decides (the daemon
 *   logs through its log, mcx-login prints).
 * - Out-parameters are untouched, or zeroed where the prototype says so, on
 *   failure. What a function allocates is freed by the *_free named in its
 *   contract; every *_free accepts a zeroed object.
 * - Asynchronous calls (csc1_https_request): when the call returns an error
 *   the callback is never called; otherwise it is called exactly once,
 *   unless csc1_https_cancel came first. */
#ifndef CSC1_CSC1_H
#define CSC1_CSC1_H

#include "csc1/append.h"
#include "csc1/authz.h"
#include "csc1/client_auth.h"
#include "csc1/clock_skew.h"
#include "csc1/https_client.h"
#include "csc1/jwt.h"
#include "csc1/oidc.h"
#include "csc1/pkce.h"
#include "csc1/token_store.h"
#include "csc1/url.h"

#endif
