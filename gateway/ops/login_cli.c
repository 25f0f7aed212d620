/* mcgw login. See login_cli.h. */
#include "gateway/ops/login_cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/ops/admin_client.h"
#include "tunnel/addr.h"

#define CLI_TIMEOUT_MS 15000
#define CLI_BROWSER_WAIT_S 600

typedef struct admin_target {
  gw_admin_target where;
  const char *text;  /* host:port, for messages */
  const char *token; /* the admin token from the config, or NULL */
} admin_target;

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static json_t *request_json(FILE *out, const admin_target *t, const char *method, const char *path,
                            int *status) {
  gw_admin_response r;
  char why[256] = "";
  if (gw_admin_request(&t->where, t->token, method, path, CLI_TIMEOUT_MS, &r, why, sizeof why) !=
      0) {
    fprintf(out,
            "mcgw login: cannot reach the daemon's admin listener at %s: %s\n"
            "  (is `mcgw run` running with this configuration?)\n",
            t->text, why);
    return NULL;
  }
  *status = r.status;
  json_t *doc = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
  gw_admin_response_free(&r);
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
  struct sockaddr_storage addr;
  if (!cfg->idm.enabled) {
    fprintf(out, "mcgw login: %s has no [idm] section: this gateway does not log in\n", cfg->path);
    return 1;
  }
  if (admin) {
    if (tn_addr_parse_listen(admin, &addr) != 0) {
      fprintf(out, "mcgw login: --admin: expected a numeric host:port, got '%s'\n", admin);
      return 2;
    }
  } else if (cfg->admin_enabled) {
    addr = cfg->admin_listen;
  } else {
    fprintf(out, "mcgw login: the admin listener is off ([admin] listen = off); use --admin\n");
    return 1;
  }
  gw_admin_target_from_listen(&addr, &t.where);
  t.text = t.where.url + strlen("http://");
  return cfg->idm.login == GW_IDM_LOGIN_DEVICE ? device_login(out, &t) : browser_login(out, &t);
}
