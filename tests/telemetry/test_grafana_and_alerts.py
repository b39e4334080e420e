"""The shipped Grafana dashboard and Prometheus alert rules against the metrics the server really exports.

Several robots scraped by one Prometheus must never be summed together, so every panel query is filtered
by the `$job` and `$instance` variables and keeps `instance` in every aggregation. Every metric name either
file uses must be one `SafetyMetrics` exports: renaming a metric fails here, not silently in Grafana.
The rules are checked and unit-tested with Prometheus's own `promtool` where it is installed (CI installs
Debian's `prometheus` and sets SPAARS_REQUIRE_PROMTOOL=1, so there a missing promtool fails, never skips).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from spaars_robot.telemetry.metrics import SafetyMetrics
from tests.telemetry.telemetry_helpers import make_record

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "spaars-robot.json"
RULES = DEPLOY / "prometheus" / "spaars-robot-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "spaars-robot-rules.test.yml"
PROMISED_ALERTS = {"SpaarsDeadlineMisses", "SpaarsFallbackRateHigh", "SpaarsWatchdogNotRunning",
                   "SpaarsLimitHitRateHigh"}
METRIC = re.compile(r"(spaars_\w+)(\{[^}]*\})?")
AGGREGATION = re.compile(r"\b(sum|max|min|avg|count)\s*(by\s*\(([^)]*)\))?\s*\(")


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def exported_metric_names() -> set[str]:
    """Every sample name a serving SafetyMetrics exposes (with _total, _bucket, _info suffixes)."""
    metrics = SafetyMetrics()
    metrics.observe(make_record(1, "fallback", limits=["rate"]))
    metrics.deadline_miss()
    metrics.watchdog_transition("hold")
    metrics.set_build_info(bundle="b", bundle_sha256="0" * 64, task="hopper", protocol_version="1.1")
    text = generate_latest(metrics.registry).decode()
    return set(re.findall(r"^(spaars_\w+?)(?:\{| )", text, re.MULTILINE))


def test_dashboard_has_job_and_instance_variables() -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert {"job", "instance"} <= set(variables)
    assert "$job" in variables["instance"]["query"]["query"]  # instances listed are the chosen job's


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs())
def test_every_panel_query_filters_by_job_and_instance(title: str, expr: str) -> None:
    selectors = METRIC.findall(expr)
    assert selectors, f"{title}: no spaars metric in {expr}"
    for name, labels in selectors:
        assert 'job=~"$job"' in labels and 'instance=~"$instance"' in labels, f"{title}: {name}{labels} unfiltered"
    for op, by, grouping in AGGREGATION.findall(expr):
        assert by and "instance" in [g.strip() for g in grouping.split(",")], (
            f"{title}: `{op}` without `by (..., instance)` sums several robots together: {expr}")


def test_alert_rules_are_the_promised_ones_and_keep_robots_apart() -> None:
    rules = rule_exprs()
    assert set(rules) == PROMISED_ALERTS
    for alert, expr in rules.items():
        for op, by, grouping in AGGREGATION.findall(expr):
            kept = {g.strip() for g in grouping.split(",")}
            assert by and {"job", "instance"} <= kept, f"{alert}: `{op}` drops job/instance: {expr}"


def test_dashboard_and_rules_use_only_exported_metric_names() -> None:
    exported = exported_metric_names()
    used = {name for _, expr in dashboard_exprs() for name, _ in METRIC.findall(expr)}
    used |= {name for expr in rule_exprs().values() for name, _ in METRIC.findall(expr)}
    assert {"spaars_build_info", "spaars_watchdog_state", "spaars_deadline_misses_total"} <= used
    assert used <= exported, f"not exported by SafetyMetrics: {sorted(used - exported)}"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("SPAARS_REQUIRE_PROMTOOL"):
            pytest.fail("promtool not found but SPAARS_REQUIRE_PROMTOOL is set (apt-get install prometheus)")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); CI requires it")
    return found


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    """`promtool test rules` fires each alert on the misbehaving robot only (deploy/prometheus/*.test.yml)."""
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(PROMISED_ALERTS)} rules found" in check.stdout
    unit = subprocess.run([tool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr
