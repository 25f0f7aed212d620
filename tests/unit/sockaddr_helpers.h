/* Socket addresses for unit tests: include after <cmocka.h>. */
#ifndef MCGW_TEST_SOCKADDR_HELPERS_H
#define MCGW_TEST_SOCKADDR_HELPERS_H

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

/* A sockaddr for an IP literal; the family follows from the text. */
static inline struct sockaddr_storage sa_of(const char *ip, uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  }
  return ss;
}

#endif
