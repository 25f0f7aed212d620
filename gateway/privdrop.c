/* Privilege drop. See privdrop.h. */
#include "gateway/privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gateway/log.h"

int gw_privdrop_prepare(const char *user, gw_privdrop *p, char *err, size_t errlen) {
  memset(p, 0, sizeof(*p));
  if (geteuid() != 0) {
    if (user)
      gw_log(TN_LOG_DEBUG, "user_not_switched", TN_S("user", user),
             TN_S("reason", "not started as root"), TN_LOG_END);
    return 0;
  }
  if (!user) {
    gw_log(TN_LOG_WARN, "running_as_root",
           TN_S("hint", "set [gateway] user = mcgw, or run under systemd (mcgw.service)"),
           TN_LOG_END);
    return 0;
  }
  errno = 0;
  struct passwd *pw = getpwnam(user);
  if (!pw) {
    snprintf(err, errlen,
             "[gateway] user = %s: no such user%s%s; create it (useradd --system --no-create-home "
             "--shell /usr/sbin/nologin %s) or remove the setting",
             user, errno ? ": " : "", errno ? strerror(errno) : "", user);
    return -1;
  }
  if (pw->pw_uid == 0) {
    snprintf(err, errlen, "[gateway] user = %s: that user is root; name an unprivileged user",
             user);
    return -1;
  }
  p->needed = true;
  snprintf(p->name, sizeof(p->name), "%s", user);
  p->uid = pw->pw_uid;
  p->gid = pw->pw_gid;
  return 0;
}

int gw_privdrop_apply(const gw_privdrop *p, char *err, size_t errlen) {
  if (!p->needed)
    return 0;
  const char *step = "setgroups";
  if (setgroups(1, &p->gid) == 0 && (step = "setgid", setgid(p->gid) == 0) &&
      (step = "setuid", setuid(p->uid) == 0)) {
    if (setuid(0) == 0 || seteuid(0) == 0) {
      snprintf(err, errlen, "user %s: root could be regained after setuid; refusing to run",
               p->name);
      return -1;
    }
    gw_log(TN_LOG_INFO, "privileges_dropped", TN_S("user", p->name), TN_U("uid", p->uid),
           TN_U("gid", p->gid), TN_LOG_END);
    return 0;
  }
  snprintf(err, errlen, "user %s: %s failed: %s", p->name, step, strerror(errno));
  return -1;
}
