/* Unit tests for tunnel/addr.c: authority parsing (the SSRF barrier's first
 * half), address classification, listen addresses and prefixes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "tunnel/addr.h"
#include "tunnel/error.h"

#include "sockaddr_helpers.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define SENTINEL 0xA5


static const struct sockaddr *sa(const struct sockaddr_storage *ss) {
  return (const struct sockaddr *)ss;
}

/* "a.a.a...": labels of label_len bytes joined by '.', total bytes long. */
static void make_name(char *buf, size_t total, size_t label_len) {
  for (size_t i = 0; i < total; i++)
    buf[i] = (i % (label_len + 1) == label_len) ? '.' : 'a';
  if (total > 0 && buf[total - 1] == '.')
    buf[total - 1] = 'b';
  buf[total] = '\0';
}

/* --- tn_authority_parse: accepted ----------------------------------------- */

typedef struct {
  const char *in;
  tn_host_kind kind;
  const char *host;
  uint16_t port;
} accept_case;

static const accept_case accepts[] = {
    {"example.org:443", TN_HOST_NAME, "example.org", 443},
    {"EXAMPLE.ORG.:443", TN_HOST_NAME, "example.org", 443},
    {"Idms.Example.Org:8443", TN_HOST_NAME, "idms.example.org", 8443},
    {"a_b.example:80", TN_HOST_NAME, "a_b.example", 80},
    {"localhost.:443", TN_HOST_NAME, "localhost", 443},
    {"localhost:1", TN_HOST_NAME, "localhost", 1},
    {"x:65535", TN_HOST_NAME, "x", 65535},
    {"example.org:00443", TN_HOST_NAME, "example.org", 443},
    {"1.example:443", TN_HOST_NAME, "1.example", 443},
    {"127.0.0.1.nip.example:443", TN_HOST_NAME, "127.0.0.1.nip.example", 443},
    {"0x7f.example:443", TN_HOST_NAME, "0x7f.example", 443},
    {"example.cafe:443", TN_HOST_NAME, "example.cafe", 443},
    {"host.1x:443", TN_HOST_NAME, "host.1x", 443},
    {"xn--bcher-kva.example:443", TN_HOST_NAME, "xn--bcher-kva.example", 443},
    {"1.2.3.4:443", TN_HOST_IPV4, "1.2.3.4", 443},
    {"0.0.0.0:1", TN_HOST_IPV4, "0.0.0.0", 1},
    {"10.0.0.10:22", TN_HOST_IPV4, "10.0.0.10", 22},
    {"255.255.255.255:65535", TN_HOST_IPV4, "255.255.255.255", 65535},
    {"[::1]:443", TN_HOST_IPV6, "::1", 443},
    {"[::ffff:127.0.0.1]:443", TN_HOST_IPV6, "::ffff:127.0.0.1", 443},
    {"[0:0:0:0:0:ffff:7f00:1]:443", TN_HOST_IPV6, "::ffff:127.0.0.1", 443},
    {"[2001:DB8::A]:443", TN_HOST_IPV6, "2001:db8::a", 443},
    {"[2001:0db8:0000:0000:0000:0000:0000:0001]:8443", TN_HOST_IPV6, "2001:db8::1", 8443},
    {"[::]:443", TN_HOST_IPV6, "::", 443},
};

static void test_authority_accepts(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(accepts); i++) {
    const accept_case *c = &accepts[i];
    tn_authority a;
    memset(&a, SENTINEL, sizeof(a));
    if (tn_authority_parse(c->in, strlen(c->in), &a) != 0)
      fail_msg("refused \"%s\"", c->in);
    if (a.kind != c->kind || a.port != c->port || strcmp(a.host, c->host) != 0)
      fail_msg("\"%s\": kind %d host \"%s\" port %u", c->in, (int)a.kind, a.host,
               (unsigned)a.port);
  }
}

static void test_authority_ip_bytes(void **state) {
  tn_authority a;
  struct in_addr v4;
  struct in6_addr v6;
  (void)state;
  assert_int_equal(tn_authority_parse("192.0.2.33:443", 14, &a), 0);
  assert_int_equal(inet_pton(AF_INET, "192.0.2.33", &v4), 1);
  assert_memory_equal(&a.ip.v4, &v4, sizeof(v4));

  assert_int_equal(tn_authority_parse("[0:0:0:0:0:ffff:7f00:1]:443", 27, &a), 0);
  assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", &v6), 1);
  assert_memory_equal(&a.ip.v6, &v6, sizeof(v6));
}

static void test_authority_name_limits(void **state) {
  char name[300], in[320];
  tn_authority a;
  (void)state;

  /* 63-byte label: the longest allowed. */
  make_name(name, 63, 63);
  snprintf(in, sizeof(in), "%s.example:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), 0);
  assert_int_equal(strlen(a.host), 63 + 8);

  /* 253-byte name, with and without its trailing dot. */
  make_name(name, 253, 63);
  snprintf(in, sizeof(in), "%s:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), 0);
  assert_string_equal(a.host, name);
  snprintf(in, sizeof(in), "%s.:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), 0);
  assert_string_equal(a.host, name);
}

/* --- tn_authority_parse: refused ------------------------------------------ */

static const char *const refuses[] = {
    /* port */
    "example.org", "example.org:", "example.org:0", "example.org:00000", "example.org:65536",
    "example.org:99999", "example.org:000443", "example.org:+80", "example.org:-1",
    "example.org:0x1bb", "example.org:4e2", "example.org:4 43", "example.org: 443",
    "example.org:443 ", "example.org:443/", "example.org:443:443", "[::1]:", "[::1]:0",
    "[::1]:65536",
    /* host missing or malformed */
    ":443", ".:443", "..:443", ".example.org:443", "example..org:443", "example.org..:443",
    "exa$mple.org:443", "exa mple.org:443", " example.org:443", "example.org\t:443",
    "example.org:443\r\n", "\xc3\xa9.example:443", "del\x7f.example:443", "exa/mple.org:443",
    "*.example.org:443", "*:443",
    /* userinfo, percent-encoding */
    "a@b:443", "user:pass@example.org:443", "@example.org:443", "%31.2.3.4:443",
    "example%2eorg:443", "%5B::1%5D:443",
    /* IPv6 */
    "::1:443", "2001:db8::1:443", "[::1]", "[::1]443", "[::1:443", "::1]:443", "[]:443",
    "[1.2.3.4]:443", "[::1]x:443", "x[::1]:443", "[[::1]]:443", "[v1.fe]:443", "[::g]:443",
    "[fe80::1%eth0]:443", "[fe80::1%25eth0]:443", "[1:2:3:4:5:6:7:8:9]:443",
    /* non-canonical IPv4 */
    "127.1:443", "0x7f000001:443", "2130706433:443", "017700000001:443", "127.0.0.01:443",
    "0x7f.0.0.1:443", "0177.0.0.1:443", "127.0.0.0x1:443", "127.0.0.1.:443", "1.2.3:443",
    "1.2.3.4.5:443", "256.1.1.1:443", "1.2.3.256:443", "01.2.3.4:443", "1.2.3.00:443",
    "1.2.3.0004:443", "example.123:443", "example.0x1f:443", "example.0X1F:443", "0x:443",
    "4294967295:443", "0:443",
};

static void test_authority_refuses(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(refuses); i++) {
    tn_authority a, saved;
    memset(&a, SENTINEL, sizeof(a));
    memcpy(&saved, &a, sizeof(a));
    if (tn_authority_parse(refuses[i], strlen(refuses[i]), &a) != TN_EINVAL)
      fail_msg("accepted \"%s\"", refuses[i]);
    if (memcmp(&a, &saved, sizeof(a)) != 0)
      fail_msg("\"%s\": out modified on failure", refuses[i]);
  }
}

static void test_authority_refuses_long_names(void **state) {
  char name[300], in[320];
  tn_authority a;
  (void)state;
  make_name(name, 64, 64); /* one 64-byte label */
  snprintf(in, sizeof(in), "%s.example:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), TN_EINVAL);

  make_name(name, 254, 63); /* 254 bytes without a trailing dot */
  snprintf(in, sizeof(in), "%s:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), TN_EINVAL);
  snprintf(in, sizeof(in), "%s.:443", name);
  assert_int_equal(tn_authority_parse(in, strlen(in), &a), TN_EINVAL);
}

/* Bytes past len are never read, and NULs inside len are refused. */
static void test_authority_len_bounded(void **state) {
  static const char text[] = "example.org:443";
  tn_authority a;
  char *exact;
  (void)state;

  assert_int_equal(tn_authority_parse("example.org:443garbage", 15, &a), 0);
  assert_string_equal(a.host, "example.org");
  assert_int_equal(a.port, 443);
  assert_int_equal(tn_authority_parse("example.org:443", 14, &a), 0);
  assert_int_equal(a.port, 44);

  exact = malloc(sizeof(text) - 1); /* no terminating NUL: ASan catches overreads */
  assert_non_null(exact);
  memcpy(exact, text, sizeof(text) - 1);
  assert_int_equal(tn_authority_parse(exact, sizeof(text) - 1, &a), 0);
  assert_int_equal(a.port, 443);
  memcpy(exact, "[::1]:443", 9);
  assert_int_equal(tn_authority_parse(exact, 9, &a), 0);
  assert_string_equal(a.host, "::1");
  free(exact);

  assert_int_equal(tn_authority_parse("exam\0ple.org:443", 16, &a), TN_EINVAL);
  assert_int_equal(tn_authority_parse("example.org:443\0", 16, &a), TN_EINVAL);
  assert_int_equal(tn_authority_parse("example.org\0:443", 16, &a), TN_EINVAL);
  assert_int_equal(tn_authority_parse("example.org:443", 0, &a), TN_EINVAL);
  assert_int_equal(tn_authority_parse(NULL, 5, &a), TN_EINVAL);
  assert_int_equal(tn_authority_parse("a:1", 3, NULL), TN_EINVAL);
}

static void test_authority_format(void **state) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"EXAMPLE.org.:443", "example.org:443"},
      {"1.2.3.4:80", "1.2.3.4:80"},
      {"[0:0:0:0:0:0:0:1]:8443", "[::1]:8443"},
      {"[::ffff:7f00:1]:1", "[::ffff:127.0.0.1]:1"},
  };
  char buf[TN_HOST_MAX + 16];
  tn_authority a;
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    assert_int_equal(tn_authority_parse(cases[i].in, strlen(cases[i].in), &a), 0);
    assert_int_equal(tn_authority_format(&a, buf, sizeof(buf)), (int)strlen(cases[i].out));
    assert_string_equal(buf, cases[i].out);
  }
  /* Truncation reports the full length, like snprintf. */
  assert_int_equal(tn_authority_parse("example.org:443", 15, &a), 0);
  assert_int_equal(tn_authority_format(&a, buf, 5), 15);
  assert_string_equal(buf, "exam");
  assert_int_equal(tn_authority_format(&a, NULL, 0), 15);
}

/* --- classification -------------------------------------------------------- */

#define PUB TN_ADDR_PUBLIC
#define UNS TN_ADDR_UNSPECIFIED
#define LOO TN_ADDR_LOOPBACK
#define PRI TN_ADDR_PRIVATE
#define LNK TN_ADDR_LINK_LOCAL
#define MUL TN_ADDR_MULTICAST
#define MAP TN_ADDR_V4MAPPED
#define RES TN_ADDR_RESERVED

typedef struct {
  const char *ip;
  tn_addr_class cls;
} class_case;

/* Each range: first and last address, and the neighbours just outside. */
static const class_case classes[] = {
    {"0.0.0.0", UNS}, {"0.255.255.255", UNS}, {"1.0.0.0", PUB},
    {"9.255.255.255", PUB}, {"10.0.0.0", PRI}, {"10.255.255.255", PRI}, {"11.0.0.0", PUB},
    {"100.63.255.255", PUB}, {"100.64.0.0", PRI}, {"100.127.255.255", PRI}, {"100.128.0.0", PUB},
    {"126.255.255.255", PUB}, {"127.0.0.0", LOO}, {"127.0.0.1", LOO}, {"127.255.255.255", LOO},
    {"128.0.0.0", PUB},
    {"169.253.255.255", PUB}, {"169.254.0.0", LNK}, {"169.254.169.254", LNK},
    {"169.254.255.255", LNK}, {"169.255.0.0", PUB},
    {"172.15.255.255", PUB}, {"172.16.0.0", PRI}, {"172.31.255.255", PRI}, {"172.32.0.0", PUB},
    {"191.255.255.255", PUB}, {"192.0.0.0", RES}, {"192.0.0.255", RES}, {"192.0.1.0", PUB},
    {"192.0.1.255", PUB}, {"192.0.2.0", RES}, {"192.0.2.255", RES}, {"192.0.3.0", PUB},
    {"192.88.98.255", PUB}, {"192.88.99.0", RES}, {"192.88.99.255", RES}, {"192.88.100.0", PUB},
    {"192.167.255.255", PUB}, {"192.168.0.0", PRI}, {"192.168.255.255", PRI},
    {"192.169.0.0", PUB},
    {"198.17.255.255", PUB}, {"198.18.0.0", RES}, {"198.19.255.255", RES}, {"198.20.0.0", PUB},
    {"198.51.99.255", PUB}, {"198.51.100.0", RES}, {"198.51.100.255", RES},
    {"198.51.101.0", PUB},
    {"203.0.112.255", PUB}, {"203.0.113.0", RES}, {"203.0.113.255", RES}, {"203.0.114.0", PUB},
    {"223.255.255.255", PUB}, {"224.0.0.0", MUL}, {"239.255.255.255", MUL},
    {"240.0.0.0", RES}, {"255.255.255.254", RES}, {"255.255.255.255", RES},
    {"8.8.8.8", PUB}, {"1.1.1.1", PUB},

    {"::", UNS}, {"::1", LOO},
    /* ::/96, IPv4-compatible */
    {"::2", MAP}, {"::0.0.0.2", MAP}, {"::127.0.0.1", MAP}, {"::ffff:ffff", MAP},
    {"::1:0:0", RES}, /* rest of ::/8 */
    /* ::ffff:0:0/96 */
    {"::fffe:ffff:ffff", RES}, {"::ffff:0:0", MAP}, {"::ffff:127.0.0.1", MAP},
    {"::ffff:10.0.0.1", MAP}, {"::ffff:8.8.8.8", MAP}, {"::ffff:ffff:ffff", MAP},
    {"0:0:0:1::", RES}, {"0:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RES},
    {"100:0:0:0:0:0:0:0", RES}, {"1ff::", PUB},
    /* 64:ff9b::/96 */
    {"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"64:ff9b::", MAP},
    {"64:ff9b::7f00:1", MAP}, {"64:ff9b::ffff:ffff", MAP}, {"64:ff9b::1:0:0", RES},
    /* 64:ff9b:1::/48, local-use NAT64 */
    {"64:ff9b:0:ffff::", RES}, {"64:ff9b:1::1", PRI}, {"64:ff9b:1:ffff::", PRI}, {"64:ff9b:2::", RES},
    /* 100::/64 */
    {"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"100::", RES},
    {"100::ffff:ffff:ffff:ffff", RES}, {"100:0:0:1::", PUB},
    /* 2001::/23, 2001:db8::/32, 2002::/16 */
    {"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"2001::", RES}, {"2001::1", RES},
    {"2001:0:4136:e378:8000:63bf:3fff:fdd2", RES}, {"2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", RES},
    {"2001:200::", PUB}, {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"2001:db8::", RES},
    {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"2001:db9::", PUB},
    {"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"2002::", RES}, {"2002:7f00:1::", RES},
    {"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"2003::", PUB},
    /* 3fff::/20, documentation (RFC 9637) */
    {"3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"3fff::", RES},
    {"3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"3fff:1000::", PUB},
    /* fc00::/7, fe80::/10, fec0::/10, ff00::/8 */
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"fc00::", PRI}, {"fd00::1", PRI},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRI}, {"fe00::", PUB},
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUB}, {"fe80::", LNK}, {"fe80::1", LNK},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LNK}, {"fec0::", RES},
    {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RES}, {"ff00::", MUL}, {"ff02::1", MUL},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", MUL},
    {"2606:4700::1111", PUB}, {"2a00:1450:4001::1", PUB},
};

static void test_classify(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ELEMS(classes); i++) {
    struct sockaddr_storage ss = sa_of(classes[i].ip, 443);
    tn_addr_class got = tn_addr_classify(sa(&ss));
    if (got != classes[i].cls)
      fail_msg("%s: got %s, want %s", classes[i].ip, tn_addr_class_name(got),
               tn_addr_class_name(classes[i].cls));
  }
}

static void test_classify_other_families(void **state) {
  struct sockaddr_un un;
  struct sockaddr_storage ss;
  (void)state;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  assert_int_equal(tn_addr_classify((const struct sockaddr *)&un), TN_ADDR_RESERVED);
  memset(&ss, 0, sizeof(ss)); /* AF_UNSPEC */
  assert_int_equal(tn_addr_classify(sa(&ss)), TN_ADDR_RESERVED);
  assert_int_equal(tn_addr_classify(NULL), TN_ADDR_RESERVED);
}

static void test_class_names(void **state) {
  static const struct {
    tn_addr_class c;
    const char *name;
  } names[] = {
      {PUB, "public"},    {UNS, "unspecified"}, {LOO, "loopback"}, {PRI, "private"},
      {LNK, "link_local"}, {MUL, "multicast"},  {MAP, "v4mapped"}, {RES, "reserved"},
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(names); i++)
    assert_string_equal(tn_addr_class_name(names[i].c), names[i].name);
  assert_string_equal(tn_addr_class_name((tn_addr_class)99), "unknown");
}

/* --- tn_addr_format -------------------------------------------------------- */

static void test_addr_format(void **state) {
  static const struct {
    const char *ip;
    uint16_t port;
    const char *out;
  } cases[] = {
      {"192.0.2.1", 8080, "192.0.2.1:8080"},
      {"0.0.0.0", 0, "0.0.0.0:0"},
      {"2001:db8::1", 443, "[2001:db8::1]:443"},
      {"::ffff:127.0.0.1", 1, "[::ffff:127.0.0.1]:1"},
      {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
       "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
  };
  char buf[TN_ADDRSTR_MAX];
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    struct sockaddr_storage ss = sa_of(cases[i].ip, cases[i].port);
    assert_int_equal(tn_addr_format(sa(&ss), buf, sizeof(buf)), 0);
    assert_string_equal(buf, cases[i].out);
  }
}

static void test_addr_format_errors(void **state) {
  struct sockaddr_storage ss = sa_of("192.0.2.1", 8080);
  struct sockaddr_un un;
  char buf[TN_ADDRSTR_MAX];
  (void)state;
  assert_int_equal(tn_addr_format(sa(&ss), buf, 6), TN_ERANGE);
  assert_string_equal(buf, "192.0");
  assert_int_equal(tn_addr_format(sa(&ss), buf, 14), TN_ERANGE); /* no room for NUL */
  assert_int_equal(tn_addr_format(sa(&ss), buf, 15), 0);
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  assert_int_equal(tn_addr_format((const struct sockaddr *)&un, buf, sizeof(buf)), TN_EINVAL);
  assert_int_equal(tn_addr_format(NULL, buf, sizeof(buf)), TN_EINVAL);
  assert_int_equal(tn_addr_format(sa(&ss), NULL, 10), TN_EINVAL);
}

/* --- tn_addr_parse_listen --------------------------------------------------- */

static void test_parse_listen_accepts(void **state) {
  static const struct {
    const char *in, *ip;
    uint16_t port;
  } cases[] = {
      {"*:8080", "0.0.0.0", 8080},       {"0.0.0.0:0", "0.0.0.0", 0},
      {"127.0.0.1:3128", "127.0.0.1", 3128}, {"192.0.2.1:65535", "192.0.2.1", 65535},
      {"[::]:443", "::", 443},           {"[::1]:0", "::1", 0},
      {"[2001:DB8::1]:80", "2001:db8::1", 80},
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    struct sockaddr_storage got, want = sa_of(cases[i].ip, cases[i].port);
    memset(&got, SENTINEL, sizeof(got));
    if (tn_addr_parse_listen(cases[i].in, &got) != 0)
      fail_msg("refused \"%s\"", cases[i].in);
    assert_int_equal(got.ss_family, want.ss_family);
    if (want.ss_family == AF_INET)
      assert_memory_equal(&got, &want, sizeof(struct sockaddr_in));
    else
      assert_memory_equal(&got, &want, sizeof(struct sockaddr_in6));
  }
}

static void test_parse_listen_refuses(void **state) {
  static const char *const cases[] = {
      "", ":80", "*", "*:", "x:80", "0:80", "*:65536", "*:123456", "*:+80", "**:80", "[*]:80", "localhost:80",
      "127.1:80", "127.0.0.01:80", "0x7f000001:80", "::1:80", "[::1]", "[::1]80", "[::1:80",
      "[fe80::1%eth0]:80", " 127.0.0.1:80", "127.0.0.1:80 ", "127.0.0.1", "1.2.3.4:8 0",
      "[1.2.3.4]:80",
      "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535-and-a-much-longer-tail",
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    struct sockaddr_storage ss, saved;
    memset(&ss, SENTINEL, sizeof(ss));
    memcpy(&saved, &ss, sizeof(ss));
    if (tn_addr_parse_listen(cases[i], &ss) != TN_EINVAL)
      fail_msg("accepted \"%s\"", cases[i]);
    if (memcmp(&ss, &saved, sizeof(ss)) != 0)
      fail_msg("\"%s\": out modified on failure", cases[i]);
  }
  assert_int_equal(tn_addr_parse_listen(NULL, &(struct sockaddr_storage){0}), TN_EINVAL);
  assert_int_equal(tn_addr_parse_listen("*:80", NULL), TN_EINVAL);
}

/* --- prefixes --------------------------------------------------------------- */

static void test_cidr_parse_accepts(void **state) {
  static const struct {
    const char *in;
    int family;
    const char *addr;
    uint8_t prefix;
  } cases[] = {
      {"10.0.0.0/8", AF_INET, "10.0.0.0", 8},
      {"0.0.0.0/0", AF_INET, "0.0.0.0", 0},
      {"192.0.2.1/32", AF_INET, "192.0.2.1", 32},
      {"192.0.2.1", AF_INET, "192.0.2.1", 32},
      {"172.16.0.0/12", AF_INET, "172.16.0.0", 12},
      {"128.0.0.0/1", AF_INET, "128.0.0.0", 1},
      {"255.255.255.254/31", AF_INET, "255.255.255.254", 31},
      {"fd00::/8", AF_INET6, "fd00::", 8},
      {"::/0", AF_INET6, "::", 0},
      {"::1/128", AF_INET6, "::1", 128},
      {"::1", AF_INET6, "::1", 128},
      {"2001:DB8::/32", AF_INET6, "2001:db8::", 32},
      {"::ffff:0.0.0.0/96", AF_INET6, "::ffff:0:0", 96},
      {"::ffff:10.0.0.0/104", AF_INET6, "::ffff:10.0.0.0", 104},
      {"fe80::/10", AF_INET6, "fe80::", 10},
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_cidr c;
    uint8_t want[16] = {0};
    memset(&c, SENTINEL, sizeof(c));
    if (tn_cidr_parse(cases[i].in, strlen(cases[i].in), &c) != 0)
      fail_msg("refused \"%s\"", cases[i].in);
    assert_int_equal(inet_pton(cases[i].family, cases[i].addr, want), 1);
    assert_int_equal(c.family, cases[i].family);
    assert_int_equal(c.prefix, cases[i].prefix);
    assert_memory_equal(c.addr, want, cases[i].family == AF_INET ? 4 : 16);
  }
}

static void test_cidr_parse_refuses(void **state) {
  static const char *const cases[] = {
      "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.1/8", "10.0.0.0/8x", "10.0.0.0/-1",
      "10.0.0.0/+8", "10.0.0.0/08", "10.0.0.0/ 8", " 10.0.0.0/8", "10.0.0.0//8",
      "10.0.0.0/8/8", "10.0.0.0/1000", "10.0.0.0/4294967304", "fd00::1/8", "fe80::1%eth0/64",
      "fe80::1%eth0", "127.1/8", "010.0.0.0/8", "0x0a.0.0.0/8", "example.org/8",
      "[fd00::]/8", "[::1]", "0.0.0.1/0", "::1/0", "255.255.255.255/31", "10.0.0.0/8 ",
      "1.2.3.4:443", "::ffff:10.0.0.1/96", "/", "10.0.0.0.0/8",
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_cidr c, saved;
    memset(&c, SENTINEL, sizeof(c));
    memcpy(&saved, &c, sizeof(c));
    if (tn_cidr_parse(cases[i], strlen(cases[i]), &c) != TN_EINVAL)
      fail_msg("accepted \"%s\"", cases[i]);
    if (memcmp(&c, &saved, sizeof(c)) != 0)
      fail_msg("\"%s\": out modified on failure", cases[i]);
  }
  {
    tn_cidr c;
    assert_int_equal(tn_cidr_parse("", 0, &c), TN_EINVAL);
    assert_int_equal(tn_cidr_parse(NULL, 3, &c), TN_EINVAL);
    assert_int_equal(tn_cidr_parse("::1", 3, NULL), TN_EINVAL);
  }
}

static void test_cidr_parse_len_bounded(void **state) {
  tn_cidr c;
  (void)state;
  assert_int_equal(tn_cidr_parse("10.0.0.0/8XYZ", 10, &c), 0);
  assert_int_equal(c.prefix, 8);
  assert_int_equal(tn_cidr_parse("128.0.0.0/16", 11, &c), 0); /* "128.0.0.0/1" */
  assert_int_equal(c.prefix, 1);
  assert_int_equal(tn_cidr_parse("10.0.0.0/8", 8, &c), 0); /* bare address */
  assert_int_equal(c.prefix, 32);
}

static void test_cidr_contains(void **state) {
  static const struct {
    const char *cidr, *ip;
    bool in;
  } cases[] = {
      {"10.0.0.0/8", "10.0.0.0", true},
      {"10.0.0.0/8", "10.255.255.255", true},
      {"10.0.0.0/8", "9.255.255.255", false},
      {"10.0.0.0/8", "11.0.0.0", false},
      {"10.0.0.0/8", "::ffff:10.0.0.1", false}, /* v4-mapped never matches IPv4 */
      {"10.0.0.0/8", "::10.0.0.1", false},
      {"0.0.0.0/0", "1.2.3.4", true},
      {"0.0.0.0/0", "255.255.255.255", true},
      {"0.0.0.0/0", "::1", false},
      {"192.0.2.1/32", "192.0.2.1", true},
      {"192.0.2.1/32", "192.0.2.0", false},
      {"192.0.2.1/32", "192.0.2.2", false},
      {"172.16.0.0/12", "172.31.255.255", true},
      {"172.16.0.0/12", "172.32.0.0", false},
      {"172.16.0.0/12", "172.15.255.255", false},
      {"128.0.0.0/1", "128.0.0.0", true},
      {"128.0.0.0/1", "255.255.255.255", true},
      {"128.0.0.0/1", "127.255.255.255", false},
      {"fd00::/8", "fd12::1", true},
      {"fd00::/8", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
      {"fd00::/8", "fe00::", false},
      {"fd00::/8", "fc00::", false},
      {"fd00::/8", "10.0.0.1", false},
      {"::/0", "2001:db8::1", true},
      {"::/0", "::ffff:1.2.3.4", true},
      {"::/0", "1.2.3.4", false},
      {"::1/128", "::1", true},
      {"::1/128", "::2", false},
      {"::1/128", "::", false},
      {"::ffff:0:0/96", "::ffff:10.0.0.1", true},
      {"::ffff:0:0/96", "10.0.0.1", false},
      {"2001:db8::/33", "2001:db8:7fff:ffff::", true},
      {"2001:db8::/33", "2001:db8:8000::", false},
  };
  (void)state;
  for (size_t i = 0; i < N_ELEMS(cases); i++) {
    tn_cidr c;
    struct sockaddr_storage ss = sa_of(cases[i].ip, 443);
    assert_int_equal(tn_cidr_parse(cases[i].cidr, strlen(cases[i].cidr), &c), 0);
    if (tn_cidr_contains(&c, sa(&ss)) != cases[i].in)
      fail_msg("%s in %s: want %d", cases[i].ip, cases[i].cidr, (int)cases[i].in);
  }
}

static void test_cidr_contains_odd_inputs(void **state) {
  tn_cidr c;
  struct sockaddr_un un;
  struct sockaddr_storage ss = sa_of("10.0.0.1", 1);
  (void)state;
  assert_int_equal(tn_cidr_parse("0.0.0.0/0", 9, &c), 0);
  assert_true(tn_cidr_contains(&c, sa(&ss)));
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  assert_false(tn_cidr_contains(&c, (const struct sockaddr *)&un));
  assert_false(tn_cidr_contains(NULL, sa(&ss)));
  assert_false(tn_cidr_contains(&c, NULL));
  c.prefix = 33; /* corrupt: never matches rather than reading past the address */
  assert_false(tn_cidr_contains(&c, sa(&ss)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_authority_accepts),
      cmocka_unit_test(test_authority_ip_bytes),
      cmocka_unit_test(test_authority_name_limits),
      cmocka_unit_test(test_authority_refuses),
      cmocka_unit_test(test_authority_refuses_long_names),
      cmocka_unit_test(test_authority_len_bounded),
      cmocka_unit_test(test_authority_format),
      cmocka_unit_test(test_classify),
      cmocka_unit_test(test_classify_other_families),
      cmocka_unit_test(test_class_names),
      cmocka_unit_test(test_addr_format),
      cmocka_unit_test(test_addr_format_errors),
      cmocka_unit_test(test_parse_listen_accepts),
      cmocka_unit_test(test_parse_listen_refuses),
      cmocka_unit_test(test_cidr_parse_accepts),
      cmocka_unit_test(test_cidr_parse_refuses),
      cmocka_unit_test(test_cidr_parse_len_bounded),
      cmocka_unit_test(test_cidr_contains),
      cmocka_unit_test(test_cidr_contains_odd_inputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
