/* Unit tests for gateway/ops/metrics.c: histograms, per-protocol counters and the
 * text exposition. The exposition is also checked end to end by promtool and
 * a real Prometheus (tests/integration/test_ops_metrics.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "gateway/ops/metrics.h"

static void test_histogram_buckets(void **state) {
  static const double bounds[] = {0.1, 1, 10};
  gw_histogram h = {.bounds = bounds, .n_bounds = 3};
  gw_histogram_observe(&h, 0.1); /* le is inclusive */
  gw_histogram_observe(&h, 0.5);
  gw_histogram_observe(&h, 10);
  gw_histogram_observe(&h, 99);
  assert_int_equal(h.buckets[0], 1);
  assert_int_equal(h.buckets[1], 1);
  assert_int_equal(h.buckets[2], 1);
  assert_int_equal(h.count, 4);
  assert_true(h.sum > 109.59 && h.sum < 109.61);
}

static void test_protos_seeded_and_grown(void **state) {
  gw_metrics m;
  gw_metrics_init(&m);
  assert_int_equal(m.n_protos, 2);
  assert_string_equal(m.protos[0].name, "h1");
  assert_string_equal(m.protos[1].name, "h2");
  assert_ptr_equal(gw_metrics_proto(&m, "h2"), &m.protos[1]);
  gw_proto_stats *h3 = gw_metrics_proto(&m, "h3");
  assert_string_equal(h3->name, "h3");
  assert_string_equal(gw_metrics_proto(&m, NULL)->name, "unknown");
  char name[16];
  for (int i = 0; i < 20; i++) { /* more names than slots fold into the last */
    snprintf(name, sizeof(name), "p%d", i);
    assert_non_null(gw_metrics_proto(&m, name));
  }
  assert_int_equal(m.n_protos, GW_METRICS_PROTO_MAX);
}

static void test_observe_close(void **state) {
  gw_metrics m;
  gw_metrics_init(&m);
  struct sockaddr_in up = {.sin_family = AF_INET};
  tn_tunnel_info ok = {.proto = "h2",
                       .result = TN_RESULT_OK,
                       .established = true,
                       .age_ms = 2500,
                       .connect_ms = 3,
                       .connected = (struct sockaddr *)&up};
  tn_tunnel_info denied = {.proto = "h1", .result = TN_RESULT_DENIED, .age_ms = 1};
  gw_metrics_observe_close(&m, &ok);
  tn_tunnel_info udp = {.proto = "h2", .udp = true, .result = TN_RESULT_OK, .age_ms = 1};
  gw_metrics_observe_close(&m, &denied);
  gw_metrics_observe_close(&m, &denied);
  gw_metrics_observe_close(&m, &udp);
  assert_int_equal(m.protos[1].closed[GW_TYPE_TCP][TN_RESULT_OK], 1);
  assert_int_equal(m.protos[1].closed[GW_TYPE_UDP][TN_RESULT_OK], 1);
  assert_int_equal(m.protos[0].closed[GW_TYPE_TCP][TN_RESULT_DENIED], 2);
  assert_int_equal(m.protos[0].closed[GW_TYPE_UDP][TN_RESULT_DENIED], 0);
  assert_int_equal(m.duration.count, 1); /* refused tunnels have no duration */
  assert_int_equal(m.connect.count, 1);  /* nor a connect time */
  assert_true(m.duration.sum > 2.49 && m.duration.sum < 2.51);
  assert_int_equal(m.connect.buckets[2], 1); /* 3 ms: the le="0.005" bucket */
}

static char *render(const gw_metrics *m, const gw_idm_view *idm) {
  gw_metrics_listener ls[] = {{"127.0.0.1:3128", 4}, {"[::1]:3128", 0}};
  gw_metrics_snapshot s = {.version = "1.2.3",
                           .listeners = ls,
                           .n_listeners = 2,
                           .idm = idm,
                           .max_tunnels = 100,
                           .max_tunnels_per_client = 10,
                           .reloads_ok = 2,
                           .reloads_failed = 1,
                           .last_reload_ok = false,
                           .last_reload_success_time = 1700000000.5,
                           .start_time = 1700000000};
  s.stats.bytes_up = 11;
  s.stats.bytes_down = 22;
  s.stats.udp_datagrams_up = 33;
  s.stats.udp_datagrams_down = 44;
  s.stats.udp_dropped[TN_UDP_DROP_DEVICE_BUSY] = 5;
  s.stats.udp_icmp_unreachable = 6;
  s.stats.rate_clients_tracked = 4096;
  s.stats.rate_clients_max = 4096;
  s.stats.rate_targets_tracked = 7;
  s.stats.rate_targets_max = 4096;
  size_t len = 0;
  char *text = gw_metrics_render(m, &s, &len);
  assert_non_null(text);
  assert_int_equal(strlen(text), len);
  return text;
}

static void assert_line(const char *text, const char *line) {
  char *want = malloc(strlen(line) + 3);
  sprintf(want, "\n%s\n", line);
  if (!strstr(text, want))
    print_error("missing line: %s\n", line);
  assert_non_null(strstr(text, want));
  free(want);
}

static void test_render(void **state) {
  gw_metrics m;
  gw_metrics_init(&m);
  m.protos[0].active[GW_TYPE_TCP] = 5;
  m.protos[1].active[GW_TYPE_UDP] = 2;
  tn_tunnel_info ok = {.proto = "h1", .result = TN_RESULT_OK, .established = true, .age_ms = 700};
  gw_metrics_observe_close(&m, &ok);
  tn_tunnel_info udp = {.proto = "h2", .udp = true, .result = TN_RESULT_DENIED};
  gw_metrics_observe_close(&m, &udp);
  gw_idm_view idm = {.state = GW_IDM_REFRESHING,
                     .access_token_expiry = 1800000000,
                     .refresh_ok = 7,
                     .refresh_failed = 1,
                     .refresh_invalid_grant = 0,
                     .refresh_id_token_invalid = 3,
                     .refresh_not_for_mc_service = 4,
                     .logout_revoked = 2,
                     .logout_not_revoked = 1,
                     .clock_skew_known = true,
                     .clock_skew_ms = -120500};
  char *t = render(&m, &idm);
  assert_line(t, "# TYPE mcgw_tunnels_active gauge");
  assert_line(t, "mcgw_tunnels_active{proto=\"h1\",type=\"tcp\"} 5");
  assert_line(t, "mcgw_tunnels_active{proto=\"h1\",type=\"udp\"} 0");
  assert_line(t, "mcgw_tunnels_active{proto=\"h2\",type=\"tcp\"} 0");
  assert_line(t, "mcgw_tunnels_active{proto=\"h2\",type=\"udp\"} 2");
  assert_line(t, "mcgw_tunnels_total{proto=\"h1\",type=\"tcp\",result=\"ok\"} 1");
  assert_line(t, "mcgw_tunnels_total{proto=\"h2\",type=\"tcp\",result=\"refused_not_tls\"} 0");
  assert_line(t, "mcgw_tunnels_total{proto=\"h2\",type=\"udp\",result=\"denied\"} 1");
  assert_line(t, "mcgw_tunnels_total{proto=\"h2\",type=\"tcp\",result=\"denied\"} 0");
  assert_line(t, "# TYPE mcgw_udp_datagrams_total counter");
  assert_line(t, "mcgw_udp_datagrams_total{direction=\"upstream\"} 33");
  assert_line(t, "mcgw_udp_datagrams_total{direction=\"downstream\"} 44");
  assert_line(t, "# TYPE mcgw_udp_datagrams_dropped_total counter");
  assert_line(t, "mcgw_udp_datagrams_dropped_total{reason=\"device_busy\"} 5");
  assert_line(t, "mcgw_udp_datagrams_dropped_total{reason=\"too_large\"} 0");
  assert_line(t, "# TYPE mcgw_udp_icmp_unreachable_total counter");
  assert_line(t, "mcgw_udp_icmp_unreachable_total 6");
  assert_line(t, "mcgw_tunnel_bytes_total{direction=\"upstream\"} 11");
  assert_line(t, "mcgw_tunnel_bytes_total{direction=\"downstream\"} 22");
  assert_line(t, "mcgw_tunnel_duration_seconds_bucket{le=\"0.5\"} 0");
  assert_line(t, "mcgw_tunnel_duration_seconds_bucket{le=\"1\"} 1");
  assert_line(t, "mcgw_tunnel_duration_seconds_bucket{le=\"86400\"} 1");
  assert_line(t, "mcgw_tunnel_duration_seconds_bucket{le=\"+Inf\"} 1");
  assert_line(t, "mcgw_tunnel_duration_seconds_count 1");
  assert_line(t, "mcgw_tunnel_connect_seconds_bucket{le=\"0.001\"} 0");
  assert_line(t, "mcgw_tunnel_connect_seconds_bucket{le=\"10\"} 0");
  assert_line(t, "mcgw_downstream_connections_active{listener=\"127.0.0.1:3128\"} 4");
  assert_line(t, "mcgw_downstream_connections_active{listener=\"[::1]:3128\"} 0");
  assert_line(t, "mcgw_idm_authorized 1");
  assert_line(t, "mcgw_idm_state{state=\"refreshing\"} 1");
  assert_line(t, "mcgw_idm_state{state=\"authorized\"} 0");
  assert_line(t, "mcgw_idm_access_token_expiry_timestamp_seconds 1800000000");
  assert_line(t, "mcgw_idm_refresh_total{result=\"ok\"} 7");
  assert_line(t, "mcgw_idm_refresh_total{result=\"failed\"} 1");
  assert_line(t, "mcgw_idm_refresh_total{result=\"invalid_grant\"} 0");
  assert_line(t, "mcgw_idm_refresh_total{result=\"id_token_invalid\"} 3");
  assert_line(t, "mcgw_idm_refresh_total{result=\"not_for_mc_service\"} 4");
  assert_line(t, "# TYPE mcgw_idm_logout_total counter");
  assert_line(t, "mcgw_idm_logout_total{result=\"revoked\"} 2");
  assert_line(t, "mcgw_idm_logout_total{result=\"not_revoked\"} 1");
  assert_line(t, "mcgw_idm_logout_total{result=\"nothing_held\"} 0");
  assert_line(t, "# TYPE mcgw_idm_clock_skew_seconds gauge");
  assert_line(t, "mcgw_idm_clock_skew_seconds -120.500");
  assert_line(t, "mcgw_config_reloads_total{result=\"ok\"} 2");
  assert_line(t, "mcgw_config_reloads_total{result=\"failed\"} 1");
  assert_line(t, "mcgw_config_last_reload_successful 0");
  assert_line(t, "mcgw_config_last_reload_success_timestamp_seconds 1700000000.5");
  assert_line(t, "# TYPE mcgw_rate_limit_entries gauge");
  assert_line(t, "mcgw_rate_limit_entries{table=\"clients\"} 4096");
  assert_line(t, "mcgw_rate_limit_entries{table=\"targets\"} 7");
  assert_line(t, "# TYPE mcgw_rate_limit_entries_max gauge");
  assert_line(t, "mcgw_rate_limit_entries_max{table=\"clients\"} 4096");
  assert_line(t, "mcgw_rate_limit_entries_max{table=\"targets\"} 4096");
  assert_line(t, "mcgw_tunnels_limit 100");
  assert_line(t, "mcgw_tunnels_per_client_limit 10");
  assert_line(t, "mcgw_build_info{version=\"1.2.3\"} 1");
  /* Every family: exactly one HELP right before its TYPE. */
  size_t helps = 0, types = 0;
  for (const char *p = t; (p = strstr(p, "# HELP ")); p++)
    helps++;
  for (const char *p = t; (p = strstr(p, "# TYPE ")); p++)
    types++;
  assert_int_equal(helps, types);
  assert_true(helps >= 20);
  assert_int_equal(t[strlen(t) - 1], '\n');
  free(t);
}

static void test_render_unconfigured_and_escaping(void **state) {
  gw_metrics m;
  gw_metrics_init(&m);
  gw_metrics_proto(&m, "we\"ird\\\n");
  char *t = render(&m, NULL);
  assert_line(t, "mcgw_idm_authorized 0");
  assert_line(t, "mcgw_idm_state{state=\"unconfigured\"} 1");
  assert_line(t, "mcgw_idm_access_token_expiry_timestamp_seconds 0");
  /* Not measured: the family, but no sample (0 would claim "in step"). */
  assert_line(t, "# TYPE mcgw_idm_clock_skew_seconds gauge");
  assert_null(strstr(t, "\nmcgw_idm_clock_skew_seconds "));
  assert_line(t, "mcgw_tunnels_active{proto=\"we\\\"ird\\\\\\n\",type=\"tcp\"} 0");
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_histogram_buckets),
      cmocka_unit_test(test_protos_seeded_and_grown),
      cmocka_unit_test(test_observe_close),
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_render_unconfigured_and_escaping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
