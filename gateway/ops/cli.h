/* `mcgw status` and `mcgw tunnels`: the admin API as tables in a terminal.
 *
 * The admin API client (admin_client.h) reads /status or /tunnels (or POSTs
 * /logout) from the admin listener named by the config (-c: its [admin]
 * listen and admin_token_file) or by --admin URL. Exit codes: 0 the
 * gateway answered, 1 it did not (or refused the token), 2 usage errors.
 */
#ifndef GW_CLI_H
#define GW_CLI_H

#include <stddef.h>
#include <stdint.h>

/* Runs `mcgw <cmd> [options]` for cmd "status", "tunnels" or "logout"
 * (POST /logout: exit 0 logged out and revoked, 1 not revoked or no answer). argv[0] is the
 * command; default_config is used when neither -c nor --admin is given and
 * that file exists. */
int gw_cli_main(const char *cmd, int argc, char **argv, const char *default_config);

/* 1536 -> "1.5K", 0 -> "0"; binary units, at most 5 characters. */
void gw_cli_fmt_bytes(uint64_t n, char *buf, size_t len);
/* 3725 s -> "1h 2m", 62 -> "1m 2s", 5 -> "5s", 90061 -> "1d 1h". */
void gw_cli_fmt_duration(uint64_t seconds, char *buf, size_t len);

#endif
