/* mcgw login. See login_cli.h. */
#include "gateway/ops/login_cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tunnel/addr.h"

#define CLI_TIMEOUT_S 15
#define CLI_MAX_RESPONSE 65536
#define CLI_BROWSER_WAIT_S 600

typedef struct admin_target {
  struct sockaddr_storage addr;
  char text[TN_ADDRSTR_MAX];
  const char *token; /* the admin token from the config, or NULL */
} admin_target;

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* One request; returns the status and the body (malloc'd), or -1. */
static int request(const admin_target *t, const char *method, const char *path, char **body) {
  int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {CLI_TIMEOUT_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  socklen_t len =
      t->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  char req[1024];
  bool post = strcmp(method, "POST") == 0; /* JSON: the admin listener's CSRF rule */
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                   "%s%s%s%sContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                   method, path, t->text, t->token ? "Authorization: Bearer " : "",
                   t->token ? t->token : "", t->token ? "\r\n" : "",
                   post ? "Content-Type: application/json\r\n" : "", post ? 2 : 0,
                   post ? "{}" : "");
  if (n < 0 || (size_t)n >= sizeof req) {
    close(fd);
    return -1;
  }
  char *buf = malloc(CLI_MAX_RESPONSE + 1);
  size_t got = 0;
  bool sent = buf && connect(fd, (const struct sockaddr *)&t->addr, len) == 0 &&
              send(fd, req, (size_t)n, MSG_NOSIGNAL) == n;
  explicit_bzero(req, sizeof req); /* it held the admin token */
  if (!sent) {
    free(buf);
    close(fd);
    return -1;
  }
  for (;;) {
    ssize_t r = recv(fd, buf + got, CLI_MAX_RESPONSE - got, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0 || (got += (size_t)r) == CLI_MAX_RESPONSE)
      break;
  }
  close(fd);
  buf[got] = '\0';
  int status = -1;
  char *sep = strstr(buf, "\r\n\r\n");
  if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !sep) {
    free(buf);
    return -1;
  }
  memmove(buf, sep + 4, got - (size_t)(sep + 4 - buf) + 1);
  *body = buf;
  return status;
}

static json_t *request_json(FILE *out, const admin_target *t, const char *method, const char *path,
                            int *status) {
  char *body = NULL;
  *status = request(t, method, path, &body);
  if (*status < 0) {
    fprintf(out,
            "mcgw login: cannot reach the daemon's admin listener at %s: %s\n"
            "  (is `mcgw run` running with this configuration?)\n",
            t->text, errno ? strerror(errno) : "bad response");
    return NULL;
  }
  json_t *doc = json_loads(body, 0, NULL);
  free(body);
  if (!doc)
    fprintf(out, "mcgw login: %s %s answered %d without JSON\n", method, path, *status);
  return doc;
}

static const char *str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static void print_ids(FILE *out, json_t *ids) {
  const char *names[] = {"mcptt_id", "mcdata_id", "mcvideo_id"};
  fprintf(out, "MC service IDs this gateway now holds:\n");
  for (size_t i = 0; i < 3; i++)
    fprintf(out, "  %-11s %s\n", names[i], *str(ids, names[i]) ? str(ids, names[i]) : "(none)");
}

static int device_login(FILE *out, const admin_target *t) {
  int status;
  json_t *doc = request_json(out, t, "POST", "/login/device", &status);
  if (!doc)
    return 1;
  if (status != 200) {
    fprintf(out, "mcgw login: the daemon refused: %s\n", str(doc, "error"));
    json_decref(doc);
    return 1;
  }
  fprintf(out, "To log this gateway in to the IdMS, open\n  %s\nand enter the code\n  %s\n",
          str(doc, "verification_uri"), str(doc, "user_code"));
  if (*str(doc, "verification_uri_complete"))
    fprintf(out, "(or open %s)\n", str(doc, "verification_uri_complete"));
  fflush(out);
  json_decref(doc);
  long last_shown = -1;
  for (;;) {
    pause_ms(500);
    if (!(doc = request_json(out, t, "GET", "/login/device", &status)))
      return 1;
    const char *s = str(doc, "status");
    if (strcmp(s, "authorized") == 0) {
      fprintf(out, "Logged in as %s.\n", str(doc, "subject"));
      print_ids(out, json_object_get(doc, "mc_service_ids"));
      json_decref(doc);
      return 0;
    }
    if (strcmp(s, "pending") != 0 && strcmp(s, "starting") != 0) {
      fprintf(out, "Login %s: %s\n", s, str(doc, "error"));
      json_decref(doc);
      return 1;
    }
    long left = (long)json_integer_value(json_object_get(doc, "expires_in_s"));
    if (last_shown < 0 || last_shown - left >= 10) {
      fprintf(out, "waiting for the login... (code expires in %ld s)\n", left);
      fflush(out);
      last_shown = left;
    }
    json_decref(doc);
  }
}

static int browser_login(FILE *out, const admin_target *t) {
  int status;
  fprintf(out,
          "To log this gateway in, open this page in a browser on the operator's machine:\n"
          "  http://%s/login\n",
          t->text);
  fflush(out);
  for (int waited = 0; waited < CLI_BROWSER_WAIT_S * 2; waited++) {
    json_t *doc = request_json(out, t, "GET", "/status", &status);
    if (!doc)
      return 1;
    json_t *idm = json_object_get(doc, "idm");
    if (strcmp(str(idm, "state"), "authorized") == 0) {
      fprintf(out, "Logged in as %s.\n", str(idm, "subject"));
      print_ids(out, json_object_get(idm, "mc_service_ids"));
      json_decref(doc);
      return 0;
    }
    if (waited % 20 == 0) {
      fprintf(out, "waiting for the login... (state %s)\n", str(idm, "state"));
      fflush(out);
    }
    json_decref(doc);
    pause_ms(500);
  }
  fprintf(out, "mcgw login: no login within %d s\n", CLI_BROWSER_WAIT_S);
  return 1;
}

int gw_login_cli(const gw_config *cfg, const char *admin, FILE *out) {
  admin_target t = {.token = cfg->admin_token};
  if (!cfg->idm.enabled) {
    fprintf(out, "mcgw login: %s has no [idm] section: this gateway does not log in\n", cfg->path);
    return 1;
  }
  if (admin) {
    if (tn_addr_parse_listen(admin, &t.addr) != 0) {
      fprintf(out, "mcgw login: --admin: expected a numeric host:port, got '%s'\n", admin);
      return 2;
    }
  } else if (cfg->admin_enabled) {
    t.addr = cfg->admin_listen;
    struct sockaddr_in *sin = (struct sockaddr_in *)&t.addr;
    if (t.addr.ss_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_ANY))
      sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else {
    fprintf(out, "mcgw login: the admin listener is off ([admin] listen = off); use --admin\n");
    return 1;
  }
  tn_addr_format((const struct sockaddr *)&t.addr, t.text, sizeof t.text);
  return cfg->idm.login == GW_IDM_LOGIN_DEVICE ? device_login(out, &t) : browser_login(out, &t);
}
