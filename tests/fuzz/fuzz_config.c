/* Fuzzes the configuration parser (gw_config_load_string: our line reader,
 * inih, every setter, the cross checks). Oracles beyond the sanitizers:
 * - a refused file has at least one message, each "NAME:LINE: ..." or
 *   "NAME: ...";
 * - an accepted file has no message, and its policy has no bare-* rule. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config.h"

static void fail(const char *why, const char *detail) {
  fprintf(stderr, "fuzz_config: %s: %s\n", why, detail ? detail : "");
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  gw_config cfg;
  gw_config_errors errs = {0};
  int err = gw_config_load_string("fuzz.ini", text, &cfg, &errs);
  if (err != 0 && errs.n == 0)
    fail("refused without a message", NULL);
  if (err == 0 && errs.n != 0)
    fail("accepted with messages", errs.msgs[0]);
  for (size_t i = 0; i < errs.n; i++)
    if (strncmp(errs.msgs[i], "fuzz.ini:", 9) != 0)
      fail("message without FILE[:LINE]: prefix", errs.msgs[i]);
  for (size_t i = 0; err == 0 && i < cfg.tunnel.policy.n_rules; i++) {
    const tn_rule *r = &cfg.tunnel.policy.rules[i];
    if ((r->kind == TN_RULE_HOST && strcmp(r->host, "*") == 0) ||
        (r->kind == TN_RULE_CIDR && r->cidr.prefix == 0))
      fail("accepted an open-proxy rule", r->host);
  }
  gw_config_free(&cfg);
  gw_config_errors_free(&errs);
  free(text);
  return 0;
}
