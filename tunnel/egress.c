/* Egress socket options (engine.h: tn_egress_apply, tn_egress_up). */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel/engine.h"

int tn_egress_apply(int fd, const tn_egress *eg, int family) {
  if (!eg || !eg->name[0]) /* no egress */
    return 0;
  if (eg->interface[0] &&
      setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, eg->interface, (socklen_t)strlen(eg->interface)))
    return -errno;
  if (eg->has_mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &eg->mark, sizeof eg->mark))
    return -errno;
  if (eg->dscp >= 0) {
    int tos = eg->dscp << 2;
    if (family == AF_INET ? setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos)
                          : setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos))
      return -errno;
  }
  if (eg->source.ss_family) {
    if (eg->source.ss_family != family)
      return UV_EAFNOSUPPORT;
    socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (const struct sockaddr *)&eg->source, len) != 0)
      return -errno;
  }
  return 0;
}

bool tn_egress_source_here(const struct sockaddr_storage *source) {
  if (!source->ss_family)
    return true;
  int fd = socket(source->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return true; /* cannot tell: let the connect say */
  socklen_t len =
      source->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  bool here = bind(fd, (const struct sockaddr *)source, len) == 0 || errno != EADDRNOTAVAIL;
  close(fd);
  return here;
}

bool tn_egress_up(const tn_egress *eg) {
  if (!eg)
    return true;
  if (!tn_egress_source_here(&eg->source))
    return false;
  if (!eg->interface[0])
    return true;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return true; /* cannot tell: let the connect say */
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, eg->interface, strnlen(eg->interface, IFNAMSIZ - 1));
  bool up = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP) &&
            (ifr.ifr_flags & IFF_RUNNING);
  close(fd);
  return up;
}
