/* The relay engine's error codes; the convention is described in engine.h
 * ("Errors"). Negative codes: those libuv returns (UV_E*) pass through
 * unchanged; tn_strerror() names both. */
#ifndef TN_ERROR_H
#define TN_ERROR_H

#define TN_ENOENT (-2)  /* same value as UV_ENOENT */
#define TN_EINVAL (-22) /* same value as UV_EINVAL */
#define TN_ENOMEM (-12) /* same value as UV_ENOMEM */
#define TN_ERANGE (-34)
#define TN_EEXIST (-17)
#define TN_ETLS (-4200) /* TLS handshake or record failure; the endpoint says why */
/* A name lookup's outcome (resolver.h): the name does not exist (or has no
 * address), no server answered in time, or a server failed or refused. */
#define TN_EDNS_NXDOMAIN (-4201)
#define TN_EDNS_TIMEOUT (-4202)
#define TN_EDNS_ERROR (-4203)

/* A static, human-readable name for err (a TN_E* or UV_E* code, 0 for
 * success); "unknown error" for anything else. Never NULL, never freed. */
const char *tn_strerror(int err);

#endif
