/* mcgw: command line entry point. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "gateway/ops/cli.h"
#include "gateway/gateway.h"
#include "gateway/ops/login_cli.h"

#define DEFAULT_CONFIG "/etc/mcgw/mcgw.ini"

static void usage(FILE *out) {
  fprintf(out,
          "mcgw %s - MC gateway UE relay: CONNECT tunnels for MC devices (TS 33.180 5.1)\n"
          "\n"
          "Usage:\n"
          "  mcgw run   [-c FILE]   run in the foreground; logs go to stderr\n"
          "  mcgw check [-c FILE]   validate the configuration; prints every error as\n"
          "                         FILE:LINE: message and exits 1, or exits 0\n"
          "  mcgw login [-c FILE] [--admin HOST:PORT]\n"
          "                         log the running gateway in to the IdMS ([idm] login =\n"
          "                         device: prints the URI and code, waits until done)\n"
          "  mcgw logout [-c FILE | --admin URL [--token-file FILE]] [--json]\n"
          "                         log the running gateway out: its login dropped and\n"
          "                         the refresh token revoked at the IdMS; exit 1 when\n"
          "                         the revocation failed (logged out locally all the same)\n"
          "  mcgw status  [-c FILE | --admin URL] [--json] [--watch]\n"
          "                         the running gateway: login state, tunnels by protocol\n"
          "                         and result, clients; exit 1 if it does not answer\n"
          "  mcgw tunnels [-c FILE | --admin URL] [--json] [--watch]\n"
          "                         the open tunnels as a table\n"
          "  mcgw --version | --help\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE      configuration file (default %s)\n"
          "\n"
          "Signals (run): SIGTERM/SIGINT stop accepting and drain open tunnels for up to\n"
          "drain_timeout, then exit 0; SIGHUP reloads the configuration (a bad file is\n"
          "rejected whole and the running configuration stays in force).\n"
          "\n"
          "Admin endpoints (default http://127.0.0.1:9090): /healthz, /status, /tunnels,\n"
          "/metrics (Prometheus), / (live status page), POST /logout.\n",
          MCGW_VERSION, DEFAULT_CONFIG);
}

static int load(const char *path, gw_config *cfg) {
  gw_config_errors errs = {0};
  int err = gw_config_load(path, cfg, &errs);
  for (size_t i = 0; i < errs.n; i++)
    fprintf(stderr, "%s\n", errs.msgs[i]);
  if (err)
    fprintf(stderr, "%s: %zu error%s\n", path, errs.n, errs.n == 1 ? "" : "s");
  gw_config_errors_free(&errs);
  return err;
}

static int cmd_check(const char *path) {
  gw_config cfg;
  int err = load(path, &cfg);
  for (size_t i = 0; i < cfg.warnings.n; i++)
    fprintf(stderr, "%s\n", cfg.warnings.msgs[i]);
  if (!err && !cfg.idm.enabled)
    fprintf(stderr, "%s: warning: %s\n", path, GW_NO_IDM_WARNING);
  if (!err)
    printf("%s: ok%s\n", path, cfg.warnings.n ? " (with warnings)" : "");
  gw_config_free(&cfg);
  return err ? 1 : 0;
}

static int cmd_login(const char *path, const char *admin) {
  gw_config cfg;
  int err = load(path, &cfg);
  int rc = err ? 1 : gw_login_cli(&cfg, admin, stdout);
  gw_config_free(&cfg);
  return rc;
}

static int cmd_run(const char *path) {
  gw_config cfg;
  if (load(path, &cfg) != 0) {
    gw_config_free(&cfg);
    return 1;
  }
  return gw_daemon_run(&cfg);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  const char *config = DEFAULT_CONFIG;
  const char *admin = NULL;
  int opt;
  while ((opt = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c': config = optarg; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("mcgw %s\n", MCGW_VERSION); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[optind++];
  if (strcmp(cmd, "status") == 0 || strcmp(cmd, "tunnels") == 0 || strcmp(cmd, "logout") == 0)
    return gw_cli_main(cmd, argc - optind + 1, argv + optind - 1, config);
  /* Options may also follow the command: mcgw run -c FILE. */
  for (int i = optind; i < argc; i++) {
    if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
      config = argv[++i];
    } else if (strncmp(argv[i], "--config=", 9) == 0) {
      config = argv[i] + 9;
    } else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc && strcmp(cmd, "login") == 0) {
      admin = argv[++i];
    } else {
      fprintf(stderr, "mcgw: unexpected argument '%s' (try mcgw --help)\n", argv[i]);
      return 2;
    }
  }
  if (strcmp(cmd, "run") == 0)
    return cmd_run(config);
  if (strcmp(cmd, "check") == 0)
    return cmd_check(config);
  if (strcmp(cmd, "login") == 0)
    return cmd_login(config, admin);
  fprintf(stderr, "mcgw: unknown command '%s' (try mcgw --help)\n", cmd);
  return 2;
}
