/* Dropping root: `[gateway] user = NAME`. Started as root, mcgw binds its
 * listeners (ports below 1024 included), then switches to NAME's uid, gid and
 * groups for good before it serves anything. Started as another user, there is
 * nothing to drop and the setting is only checked. */
#ifndef GW_PRIVDROP_H
#define GW_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct gw_privdrop {
  bool needed;    /* running as root with a user configured */
  char name[33];
  uid_t uid;
  gid_t gid;
} gw_privdrop;

/* Before binding: looks the user up. Returns 0, or -1 with a one-line reason
 * in err (root with a user that does not exist, or that is root itself). */
int gw_privdrop_prepare(const char *user, gw_privdrop *p, char *err, size_t errlen);

/* After binding: setgroups, setgid, setuid, then checks that root cannot be
 * regained. Returns 0 (also when !p->needed), or -1 with the reason in err. */
int gw_privdrop_apply(const gw_privdrop *p, char *err, size_t errlen);

#endif
