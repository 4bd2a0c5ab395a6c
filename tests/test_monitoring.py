"""The monitoring/ assets: alert rules (promtool check and unit tests), the Prometheus config,
the Grafana dashboard and provisioning, the compose stack, the metric catalogue in
docs/monitoring.md, and an integration test in which every dashboard query returns data from a
real Prometheus fed by the example pipeline and two served models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, service_unavailable

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "mlops-actions.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
COMPOSE = MONITORING / "compose.yaml"
DOCS = ROOT / "docs" / "monitoring.md"

DASHBOARD_UID = "mlops-actions"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALERTS = {
    "MLOpsPipelineFailing",
    "MLOpsTrainingStale",
    "MLOpsGateRejectingRepeatedly",
    "MLServingHighErrorRate",
    "MLServingHighLatency",
    "MLServingModelVersionChanged",
}
SEVERITIES = {"critical", "warning", "info"}
# Grafana's built-in variables, as Grafana would fill them for a 1-hour range on a 1 s scrape.
MACROS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
METRIC_NAME = re.compile(r"\b(?:mlops|mlserving)_[a-z0-9_]+\b")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        service_unavailable("promtool (apt-get install prometheus)")
    assert binary is not None
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=300
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Fill Grafana's macros and the dashboard's variables into a query, as Grafana does."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in MACROS:
            return MACROS[name]
        assert name in values, f"${name} in {expr!r} is not a variable of the dashboard"
        return values[name]

    return VARIABLE.sub(one, expr)


def regex_value(values: list[str]) -> str:
    """A multi-value variable in a `=~` matcher: Grafana escapes regex characters (doubled
    backslash inside a PromQL string) and joins the values as (a|b)."""
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


# ----------------------------------------------------------------------------- alert rules


def test_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_alert_rules_have_severity_for_and_a_runbook() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    docs = DOCS.read_text(encoding="utf-8")
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) >= {"summary", "description"}, name
        assert f"docs/monitoring.md#{name.lower()}" in rule["annotations"]["description"], name
        assert f"#### {name}\n" in docs, f"no runbook section for {name} in {DOCS.name}"
        assert f"| `{name}` |" in docs, f"{name} missing from the alert table in {DOCS.name}"
        if rule["labels"]["severity"] != "info":
            assert re.fullmatch(r"\d+[mh]", rule.get("for", "")), f"{name}: no for:"


def test_alert_unit_tests_pass_and_cover_every_alert() -> None:
    document = load_yaml(RULE_TESTS)
    assert document["rule_files"] == [RULES.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == ALERTS, f"alerts without a firing case: {ALERTS - firing}"
    assert silent == ALERTS, f"alerts without a non-firing case: {ALERTS - silent}"
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: a rule that ignores gate rejections breaks them."""
    rules = RULES.read_text(encoding="utf-8")
    broken = rules.replace('stage=~"evaluate|promote"', 'stage="no-such-stage"')
    assert broken != rules
    (tmp_path / RULES.name).write_text(broken)
    document = load_yaml(RULE_TESTS)
    document["tests"] = [  # only that alert's cases: the whole file takes a while
        case
        for case in document["tests"]
        if any(c["alertname"] == "MLOpsPipelineFailing" for c in case["alert_rule_test"])
    ]
    (tmp_path / RULE_TESTS.name).write_text(json.dumps(document))
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "MLOpsPipelineFailing" in tested.stdout + tested.stderr


# ----------------------------------------------------------------------------- Prometheus config


def test_prometheus_config_is_valid_and_scrapes_both_sources() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = load_yaml(PROMETHEUS_CONFIG)
    assert (PROMETHEUS_CONFIG.parent / config["rule_files"][0]).resolve() == RULES
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"pushgateway", "mlserving"}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert not jobs["mlserving"].get("honor_labels")
    assert jobs["mlserving"].get("metrics_path", "/metrics") == "/metrics"


# ----------------------------------------------------------------------------- dashboard


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == DASHBOARD_UID
    assert dashboard["id"] is None
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"pipeline", "model", "instance"} <= set(variables)
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
            assert variable["definition"] == variable["query"]["query"], variable["name"]

    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    occupied: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                other = occupied.setdefault((row, column), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"

    for panel in query_panels(dashboard):
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], f"{title}: no query"
        assert panel.get("description"), f"{title}: no description"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title
        if "repeat" in panel:
            assert panel["repeat"] in variables, title
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("builtIn"):
            assert annotation["datasource"] == DATASOURCE, annotation["name"]
    assert 'uid": "prometheus"' not in DASHBOARD.read_text(), "a hard-coded data source uid"


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target, annotation and query variable."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in query_panels(dashboard)
        for target in panel["targets"]
    ]
    found += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if a.get("expr")
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert selector, f"variable {variable['name']}: not label_values(selector, label)"
            found.append((f"variable {variable['name']}", selector.group(1)))
    return found


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query, macros and variables filled in, as a recording rule."""
    dashboard = load_dashboard()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    values = dict.fromkeys(names, "x")
    queries = dashboard_queries(dashboard)
    rules = [
        {"record": f"dashboard:query_{index}", "expr": substitute(expr, values)}
        for index, (_where, expr) in enumerate(queries)
    ]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(rule_file))
    where = {f"dashboard:query_{i}": w for i, (w, _e) in enumerate(queries)}
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{where}"
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout

    # And promtool does reject a broken one, so the check above means something.
    rule_file.write_text(
        json.dumps({"groups": [{"name": "d", "rules": [{"record": "r", "expr": "sum by (("}]}]})
    )
    assert promtool("check", "rules", str(rule_file)).returncode != 0


def test_dashboard_panels_cover_the_issue() -> None:
    """Pipeline health, gate history, promoted versions and the serving signals each have a
    panel that queries the metric behind them."""
    exprs = " ".join(expr for _where, expr in dashboard_queries(load_dashboard()))
    for metric in (
        "mlops_stage_success",
        "mlops_stage_last_success_timestamp_seconds",
        "mlops_stage_duration_seconds",
        "mlops_gate_passed",
        "mlops_gate_metric_value",
        "mlops_gate_threshold",
        "mlops_model_version",
        "mlops_promotion_timestamp_seconds",
        "mlops_image_model_version",
        "mlserving_requests_total",
        "mlserving_request_duration_seconds_bucket",
        "mlserving_prediction_errors_total",
        "mlserving_predictions_total",
        "mlserving_prediction_value_bucket",
        "mlserving_model_info",
    ):
        assert metric in exprs, f"no panel queries {metric}"
    assert "histogram_quantile(0.99" in exprs


# ----------------------------------------------------------------------------- catalogue


def catalogue() -> dict[str, dict[str, str]]:
    """The metric tables of docs/monitoring.md: name -> {type, labels, meaning}."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Metric catalogue", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|([^|]+)\|([^|]*)\|([^|]+)\|$", section, re.M)
    table = {
        name: {"type": kind.strip(), "labels": labels.strip(), "meaning": meaning.strip()}
        for name, kind, labels, meaning in rows
    }
    assert len(table) == len(rows), "a metric appears twice in the catalogue"
    return table


def served_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The serving image's metrics as the code defines them: exposed name -> (type, labels)."""
    from prometheus_client.metrics import MetricWrapperBase

    from mlops_actions.serving import metrics

    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind = value._type
            name = value._name + ("_total" if kind == "counter" else "")
            found[name] = (kind, tuple(value._labelnames))
    return found


def test_catalogue_matches_the_code() -> None:
    from mlops_actions import monitor

    table = catalogue()
    pushed = {name: ("gauge", labels) for name, (_help, labels) in monitor.CATALOGUE.items()}
    defined = {**pushed, **served_metrics()}
    assert set(table) == set(defined), (
        f"missing from docs: {set(defined) - set(table)}; not in code: {set(table) - set(defined)}"
    )
    for name, (kind, labels) in defined.items():
        assert table[name]["type"].startswith(kind), f"{name}: {table[name]['type']} != {kind}"
        for label in labels:
            assert f"`{label}`" in table[name]["labels"], f"{name}: label {label} not documented"
        if not labels:
            assert "`" not in table[name]["labels"], f"{name} has no labels"
        if kind == "counter":
            assert name.endswith("_total"), name
        assert not name.endswith("_total") or kind == "counter", name


def test_dashboard_and_alerts_use_catalogue_metrics_only() -> None:
    table = catalogue()
    known = set(table)
    known |= {
        f"{name}{suffix}"
        for name, row in table.items()
        if row["type"] == "histogram"
        for suffix in ("_bucket", "_sum", "_count")
    }
    used = [("dashboard", expr) for _where, expr in dashboard_queries(load_dashboard())]
    used += [(rule["alert"], rule["expr"]) for rule in alert_rules()]
    for where, expr in used:
        for name in METRIC_NAME.findall(expr):
            assert name in known, f"{where}: {name} is not in the catalogue of {DOCS.name}"


def test_readme_links_to_the_catalogue_instead_of_copying_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/monitoring.md#metric-catalogue" in readme
    assert "| `mlserving_requests_total` |" not in readme


# ----------------------------------------------------------------------------- Grafana, compose


def test_grafana_provisioning() -> None:
    (datasources,) = PROVISIONING.joinpath("datasources").glob("*.yaml")
    (source,) = load_yaml(datasources)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (dashboards,) = PROVISIONING.joinpath("dashboards").glob("*.yaml")
    (provider,) = load_yaml(dashboards)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_compose_stack() -> None:
    """The compose file's structure: `docker compose config` where the plugin exists, and a
    check of images, mounts and wiring against the files in monitoring/ everywhere."""
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if plugin.returncode == 0:
            checked = subprocess.run(
                [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stderr

    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"prometheus", "pushgateway", "grafana"}
    official = {
        "prometheus": "prom/prometheus:v",
        "pushgateway": "prom/pushgateway:v",
        "grafana": "grafana/grafana:",
    }
    for name, repository in official.items():
        image = services[name]["image"]
        pinned = re.escape(repository) + r"\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?"
        assert re.fullmatch(pinned, image), f"{name}: {image} is not pinned to a release"
    assert "@sha256:" in COMPOSE.read_text(), "the comment on pinning by digest is missing"

    def mounts(service: str) -> dict[str, str]:
        """container path -> host path, for bind mounts relative to monitoring/."""
        found = {}
        for volume in services[service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (COMPOSE.parent / source).exists(), f"{service}: {source} does not exist"
                found[target] = source
        return found

    prometheus = mounts("prometheus")
    assert prometheus == {"/etc/prometheus": "./prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert grafana["/etc/grafana/dashboards"] == "./grafana/dashboards"
    for service in services.values():
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), f"{port} listens on every interface"

    # The Prometheus config and the Grafana data source address the compose services.
    config = load_yaml(PROMETHEUS_CONFIG)
    (pushgateway_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "pushgateway"]
    assert pushgateway_job["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert "--persistence.file=/pushgateway/pushgateway.data" in services["pushgateway"]["command"]
    assert "pushgateway-data:/pushgateway" in services["pushgateway"]["volumes"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"/etc/grafana/dashboards/{DASHBOARD.name}"
