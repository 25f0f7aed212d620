"""The fleet files in configs/: the alerting rules load in promtool and fire
as intended on synthetic series; the Grafana dashboard is valid JSON whose
queries use only metrics that mcgw exports and that Prometheus can parse."""

import json
import re
import subprocess

import pytest

from opsutil import SRC, base_config, gateway_factory, require_tool, upstream  # noqa: F401

RULES = SRC / "configs" / "mcgw-alerts.yml"
DASHBOARD = SRC / "configs" / "grafana-mcgw.json"

RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mcgw_idm_authorized{{instance="v1",job="mcgw"}}'
        values: '1 1 0 0 0 0 0 0 0 0'
      - series: 'mcgw_idm_state{{instance="v1",job="mcgw",state="unconfigured"}}'
        values: '0x10'
      - series: 'mcgw_idm_authorized{{instance="v2",job="mcgw"}}'
        values: '0x10'
      - series: 'mcgw_idm_state{{instance="v2",job="mcgw",state="unconfigured"}}'
        values: '1x10'
      - series: 'mcgw_tunnels_active{{instance="v1",job="mcgw",proto="h1",type="tcp"}}'
        values: '10 900 900 900 900 900'
      - series: 'mcgw_tunnels_active{{instance="v1",job="mcgw",proto="h2",type="tcp"}}'
        values: '0 10 10 10 10 10'
      - series: 'mcgw_tunnels_active{{instance="v1",job="mcgw",proto="h2",type="udp"}}'
        values: '0 50 50 50 50 50'
      - series: 'mcgw_tunnels_limit{{instance="v1",job="mcgw"}}'
        values: '1000x10'
      - series: 'mcgw_config_last_reload_successful{{instance="v1",job="mcgw"}}'
        values: '1 0 0 0'
      - series: 'mcgw_idm_clock_skew_seconds{{instance="v1",job="mcgw"}}'
        values: '-120x10'
      - series: 'mcgw_idm_clock_skew_seconds{{instance="v2",job="mcgw"}}'
        values: '2x10'
      - series: 'mcgw_clients_rate_limited{{instance="v1",job="mcgw"}}'
        values: '0 1 2 1 1 1 1 1 1 1'
      - series: 'mcgw_clients_rate_limited{{instance="v2",job="mcgw"}}'
        values: '0 1 1 1 0 1 1 1 1 0'
      - series: 'mcgw_idm_refresh_total{{instance="v1",job="mcgw",result="id_token_invalid"}}'
        values: '0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'mcgw_idm_refresh_total{{instance="v1",job="mcgw",result="invalid_grant"}}'
        values: '0x15'
      - series: 'mcgw_rate_limit_entries{{instance="v1",job="mcgw",table="clients"}}'
        values: '100 4096x10'
      - series: 'mcgw_rate_limit_entries_max{{instance="v1",job="mcgw",table="clients"}}'
        values: '4096x10'
      - series: 'mcgw_rate_limit_entries{{instance="v2",job="mcgw",table="clients"}}'
        values: '4095x10'
      - series: 'mcgw_rate_limit_entries_max{{instance="v2",job="mcgw",table="clients"}}'
        values: '4096x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: McgwRateTableFull
        exp_alerts: []
      - eval_time: 6m
        alertname: McgwRateTableFull
        exp_alerts:
          - exp_labels: {{severity: warning, instance: v1, job: mcgw, table: clients}}
            exp_annotations:
              summary: "The client rate table of v1 has been full for 5 minutes"
              description: "More distinct clients (addresses, or certificate subjects) asked for tunnels than the 4096 the per-device rate tracks: a flood from many addresses, or a device network larger than expected. Evicted clients start with a full burst again, so max_new_tunnels_per_client no longer holds for all of them; max_new_upstream_per_target and max_tunnels still do. Check `mcgw status` (rate tables) and the refusals in the access log; see docs/security.md."
      - eval_time: 5m
        alertname: McgwClientRateLimited
        exp_alerts: []
      - eval_time: 6m
        alertname: McgwClientRateLimited
        exp_alerts:
          - exp_labels: {{severity: warning, instance: v1, job: mcgw}}
            exp_annotations:
              summary: "1 device(s) on v1 rate limited for 5 minutes"
              description: "A device keeps asking for new tunnels faster than max_new_tunnels_per_client (429, result=rate_limited): broken, misconfigured or compromised. `mcgw status` or /status (clients.rate_limited) names it; see docs/operations.md (rate_exempt for a known bursty device)."
      - eval_time: 6m
        alertname: McgwClockSkew
        exp_alerts:
          - exp_labels: {{severity: warning, instance: v1, job: mcgw}}
            exp_annotations:
              summary: "Gateway v1 clock is 120 s off the IdMS's"
              description: "Past 30 s, ID tokens fail validation (issued in the future, or expired early). Check NTP/GNSS time on the vehicle."
      - eval_time: 9m
        alertname: McgwGatewayUnauthorized
        exp_alerts:
          - exp_labels: {{severity: critical, instance: v1, job: mcgw}}
            exp_annotations:
              summary: "Gateway v1 is not logged in to the IdMS"
              description: "mcgw holds no valid access token for 5 minutes: only limited service (IdMS login tunnels) is available to devices."
      - eval_time: 3m
        alertname: McgwRefreshIdTokenInvalid
        exp_alerts:
          - exp_labels: {{severity: critical, instance: v1, job: mcgw, result: id_token_invalid}}
            exp_annotations:
              summary: "Gateway v1 refused the ID token of a refresh"
              description: "The IdMS refreshed, but the new ID token failed validation (most often the gateway's clock: see McgwClockSkew and the idm_login_needed log line); the login is ended, an operator must log the gateway in again."
      - eval_time: 3m
        alertname: McgwRefreshInvalidGrant
        exp_alerts: []
      - eval_time: 14m
        alertname: McgwRefreshIdTokenInvalid
        exp_alerts: []
      - eval_time: 4m
        alertname: McgwTunnelLimitNear
        exp_alerts:
          - exp_labels: {{severity: warning, instance: v1, job: mcgw}}
            exp_annotations:
              summary: "mcgw on v1 is at 96% of max_tunnels"
              description: "New tunnels get 503 (result=limit) once max_tunnels is reached."
      - eval_time: 3m
        alertname: McgwConfigReloadFailed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: v1, job: mcgw}}
            exp_annotations:
              summary: "mcgw on v1 rejected its configuration file"
              description: "The previous configuration stays in force; run `mcgw check -c /etc/mcgw/mcgw.ini` on the vehicle."
"""


@pytest.mark.timeout(60)
def test_alert_rules_load_and_fire(tmp_path):
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    text = RULES.read_text()
    for alert in ("McgwGatewayUnauthorized", "McgwTokenExpiringWithoutRefresh", "McgwRefusalSpike",
                  "McgwTunnelLimitNear", "McgwClockSkew", "McgwClientRateLimited",
                  "McgwRefreshIdTokenInvalid", "McgwRateTableFull"):
        assert f"alert: {alert}\n" in text, alert
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    r = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def exported_metrics(gw):
    text = gw.get("/metrics")[2].decode()
    return set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))


@pytest.mark.timeout(60)
def test_dashboard_uses_exported_metrics(gateway_factory, tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    gw = gateway_factory(base_config())
    families = exported_metrics(gw)
    names = {n for n, _ in families}
    names |= {n + s for n, kind in families if kind == "histogram"
              for s in ("_bucket", "_sum", "_count")}
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\bmcgw_[a-z_]+", e))
    assert used, exprs
    assert used <= names, used - names
    for needed in ("mcgw_tunnels_active", "mcgw_tunnels_total", "mcgw_idm_authorized",
                   "mcgw_idm_access_token_expiry_timestamp_seconds"):
        assert needed in used, needed
    # Every query parses as PromQL: promtool checks rule expressions, so wrap
    # each one (with the dashboard variable substituted) into a recording rule.
    promtool = require_tool("promtool")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
