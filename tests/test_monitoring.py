"""The monitoring/ assets: alert rules (promtool check and unit tests), the Prometheus config,
the Grafana dashboard and provisioning, the compose stack, the metric catalogue in
docs/monitoring.md, and an integration test in which every dashboard query returns data from a
real Prometheus fed by the example pipeline and two served models."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.conftest import (
    BIN,
    ROOT,
    CliResult,
    clean_env,
    free_port,
    run_cli,
    save_iris_model,
    service_unavailable,
    stop,
    wait_http,
)

if TYPE_CHECKING:
    from tests.prom_services import Prometheus, Pushgateway

# The pushgateway and prometheus_factory fixtures.
pytest_plugins = ["tests.prom_services"]

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


def test_compose_file_follows_the_compose_specification() -> None:
    """Docker Hub is out of reach here, so the stack cannot run; the Compose Specification's
    JSON Schema (bundled with check-jsonschema, no download) checks the file instead."""
    checker = BIN / "check-jsonschema"
    if not checker.exists():
        service_unavailable("check-jsonschema (install the dev dependencies, Python 3.11+)")
    checked = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


# ----------------------------------------------------------------------------- integration

# A regressor: numeric predictions with fractions (the prediction-value histogram); a negative
# input makes predict() raise.
SCALED_MODEL = """
import mlflow.pyfunc


class Scaled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["x"] < 0).any():
            raise ValueError("x must not be negative")
        return [float(x) * 1.5 + 0.25 for x in model_input["x"]]


mlflow.models.set_model(Scaled())
"""
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]


@dataclass
class ModelServer:
    """The serving image's server (`python -m mlops_actions.serving`) as a local process."""

    url: str
    process: subprocess.Popen[bytes]

    def post(self, body: object, content_type: str = "application/json") -> int:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/invocations", data=data, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code


def start_model_server(
    model: Path, port: int, name: str, version: str, workdir: Path
) -> ModelServer:
    server = launch_model_server(model, port, name, version, workdir)
    wait_model_server(server, workdir, name)
    return server


def launch_model_server(
    model: Path, port: int, name: str, version: str, workdir: Path
) -> ModelServer:
    """The server's process, started; wait_model_server() waits for it to answer /ping."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "scripts"),
        "MLSERVING_MODEL_DIR": str(model),
        "MLSERVING_HOST": "127.0.0.1",
        "MLSERVING_PORT": str(port),
        "MLSERVING_MODEL_NAME": name,
        "MLSERVING_MODEL_VERSION": version,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = workdir / f"serving-{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlops_actions.serving"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return ModelServer(f"http://127.0.0.1:{port}", process)


def wait_model_server(server: ModelServer, workdir: Path, name: str) -> None:
    try:
        wait_http(f"{server.url}/ping", server.process, 120, workdir / f"serving-{name}.log")
    except RuntimeError:
        server.process.kill()
        raise


def shipped_scrape_jobs(pushgateway: str, served: list[str]) -> list[dict[str, Any]]:
    """monitoring/prometheus/prometheus.yml's scrape jobs, pointed at the loopback services."""
    jobs = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    for job in jobs:
        address = urllib.parse.urlsplit(pushgateway).netloc
        job["static_configs"] = [{"targets": [address] if job.get("honor_labels") else served}]
    return jobs


def send_traffic(iris: ModelServer, scaled: ModelServer) -> None:
    """Predictions, malformed requests, a model that raises: what a served model sees."""
    split = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}}
    records = {"dataframe_records": [dict(zip(IRIS_COLUMNS, IRIS_ROWS[0], strict=True))]}
    answers = [
        iris.post(split),
        iris.post(records),
        iris.post({"bogus": 1}),
        iris.post(b"a,b", "application/xml"),
        scaled.post({"dataframe_split": {"columns": ["x"], "data": [[1], [2.5], [40]]}}),
        scaled.post({"dataframe_split": {"columns": ["x"], "data": [[0.1]]}}),
    ]
    assert answers == [200, 200, 400, 415, 200, 200], answers
    # predict() raises: MLflow's scoring code answers 400, a server error would be 500.
    raised = scaled.post({"dataframe_split": {"columns": ["x"], "data": [[-1]]}})
    assert raised in (400, 500), raised


def variables_in(text: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(3) for m in VARIABLE.finditer(text)} - set(MACROS)


def resolve_variables(dashboard: Mapping[str, Any], prometheus: Prometheus) -> dict[str, list[str]]:
    """Each query variable's values from Prometheus, as Grafana finds them (in order, a
    variable's own query filled with the ones before it). A variable without values, or one
    whose query needs such a variable, is left out."""
    resolved: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
        assert match is not None, variable["name"]
        selector, label = match.groups()
        if not variables_in(selector) <= set(resolved):
            continue
        selector = substitute(selector, {k: regex_value(v) for k, v in resolved.items()})
        values = prometheus.api(f"/api/v1/label/{label}/values", **{"match[]": selector})
        if values:
            resolved[variable["name"]] = sorted(values)
    return resolved


def panel_queries(
    dashboard: Mapping[str, Any], resolved: Mapping[str, list[str]]
) -> list[tuple[str, str]]:
    """(panel title and refId, query) for every target of every panel, variables filled in
    with all their values; a repeated panel once per value of its variable, as Grafana draws
    it."""
    every = {name: regex_value(values) for name, values in resolved.items()}
    found = []
    for panel in query_panels(dashboard):
        copies = [(panel["title"], every)]
        if "repeat" in panel:
            name = panel["repeat"]
            copies = [
                (panel["title"].replace(f"${name}", value), {**every, name: regex_value([value])})
                for value in resolved[name]
            ]
        for title, values in copies:
            for target in panel["targets"]:
                found.append((f"{title} {target['refId']}", substitute(target["expr"], values)))
    return found


def has_data(result: Any) -> bool:
    """An instant vector with at least one number (NaN is what an empty rate() gives)."""
    assert isinstance(result, list), result
    return any(math.isfinite(float(series["value"][1])) for series in result)


def by_label(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
        for series in result
    }


@pytest.mark.e2e
def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    example: Path,
    tmp_path: Path,
    pushgateway: Pushgateway,
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    """The example pipeline pushes through the real verbs; two served models get traffic;
    Prometheus scrapes both with the shipped scrape jobs and alert rules; then every query of
    every panel, variables resolved as Grafana resolves them, must return numbers."""
    from mlflow import MlflowClient

    from mlops_actions import monitor

    dashboard = load_dashboard()
    ports = {"iris": free_port(), "scaled": free_port()}
    served = [f"127.0.0.1:{port}" for port in ports.values()]
    prometheus = prometheus_factory(
        scrape_configs=shipped_scrape_jobs(pushgateway.url, served), rule_files=[RULES]
    )

    # The pipeline, twice (the second gate compares with a champion), then a rollback. It runs
    # in the background (its own processes) while this process saves the two served models and
    # starts the regressor's server, which need nothing from it.
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)

    def pipeline() -> list[CliResult]:
        done = []
        for args in (["run"], ["run"], ["rollback"]):
            done.append(run_cli(args, example, env))
            if done[-1].returncode != 0:
                break
        return done

    servers: list[ModelServer] = []
    try:
        with ThreadPoolExecutor(max_workers=1) as background:
            running = background.submit(pipeline)
            # Two served models: the champion (labelled with its version once the pipeline has
            # made it), and a regressor.
            scaled_model = tmp_path / "scaled"
            scaled_model.mkdir()
            (scaled_model / "scaled.py").write_text(SCALED_MODEL)
            import mlflow.pyfunc

            mlflow.pyfunc.save_model(
                str(scaled_model / "model"), python_model=str(scaled_model / "scaled.py")
            )
            scaled = launch_model_server(
                scaled_model / "model", ports["scaled"], "iris-scaled", "3", tmp_path
            )
            servers.append(scaled)
            iris_model = save_iris_model(tmp_path / "iris-model")
            ran = running.result()
        for result in ran:
            assert result.returncode == 0, result.output
            assert "not pushed" not in result.output, result.output
        assert len(ran) == 3
        # build-push's gauges, through the same push code (building the image is test_image's
        # job).
        pushed = monitor.push(
            monitor.Target(url=pushgateway.url, job="mlops-actions", pipeline="iris-classifier"),
            "build-push",
            [
                *monitor.stage_samples(0, 95.0, time.time()),
                *monitor.image_samples(538_000_000, "1"),
            ],
        )
        assert pushed.pushed, pushed.error
        registry = MlflowClient(f"sqlite:///{example / 'mlflow.db'}")
        champion = str(registry.get_registered_model("iris-classifier").aliases["champion"])
        iris = launch_model_server(iris_model, ports["iris"], "iris-classifier", champion, tmp_path)
        servers.append(iris)
        wait_model_server(scaled, tmp_path, "iris-scaled")
        wait_model_server(iris, tmp_path, "iris-classifier")

        # Traffic every second until every panel has had data (rate() needs two scrapes). A
        # scrape that overruns its 1 s timeout on a busy machine makes the target's series
        # stale for a moment, so a panel's latest answer with data is kept.
        wanted = [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        results: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + 90
        while True:
            send_traffic(iris, scaled)
            resolved = resolve_variables(dashboard, prometheus)
            missing = [name for name in wanted if name not in resolved]
            queries = panel_queries(dashboard, resolved) if not missing else []
            for where, expr in queries:
                answer = prometheus.query(expr)
                if has_data(answer):
                    results[where] = answer
            empty = [where for where, _expr in queries if where not in results]
            # The error panel has (primed) zero series from the start, so wait until rate()
            # has seen the bad requests as well.
            errors_seen = all(
                by_label(results.get("Errors by type A", []), "error_type").get((kind,), 0) > 0
                for kind in ("bad_request", "unsupported_media_type")
            )
            if (queries and not empty and errors_seen) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not missing, f"dashboard variables without values: {missing}"
        assert not empty, "panels without data:\n" + "\n".join(
            f"{where}: {expr}" for where, expr in queries if where in empty
        )

        # The data is the right data.
        stages = by_label(results["Stage status A"], "stage")
        assert stages == {
            (s,): 1.0
            for s in ("dvc-pull", "train", "evaluate", "promote", "rollback", "build-push")
        }
        assert pushgateway.value("mlops_model_version", stage="promote", alias="champion") == 2
        versions = by_label(results["Version by alias A"], "pipeline", "alias")
        assert versions == {("iris-classifier", "champion"): float(champion)}, "after rollback"
        gate = by_label(results["Gate metric: accuracy A"], "model")
        assert set(gate) == {("candidate",), ("champion",)}
        in_service = by_label(results["Model version in service A"], "model_name", "model_version")
        assert in_service == {("iris-classifier", champion): 1.0, ("iris-scaled", "3"): 1.0}
        errors = by_label(results["Errors by type A"], "error_type")
        assert errors[("bad_request",)] > 0
        assert errors[("unsupported_media_type",)] > 0
        assert errors[("timeout",)] == 0
        for series in prometheus.query("mlops_stage_success"):
            assert series["metric"]["job"] == "mlops-actions", series  # honor_labels
            assert "exported_job" not in series["metric"], series

        # The alert rules run on this data without errors; 3 failures in 7 requests is over 5 %.
        rules = [
            rule
            for group in prometheus.api("/api/v1/rules")["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        ]
        assert {rule["name"] for rule in rules} == ALERTS
        for rule in rules:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        deadline = time.monotonic() + 30
        while True:
            alerts = {
                a["labels"]["alertname"]: a for a in prometheus.api("/api/v1/alerts")["alerts"]
            }
            if "MLServingHighErrorRate" in alerts or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert alerts["MLServingHighErrorRate"]["labels"]["job"] == "mlserving"
        assert alerts["MLServingHighErrorRate"]["state"] == "pending"  # for: 5m
        # Nothing else is wrong with the pipeline or the versions in service. (Latency is left
        # out: the first predictions on a busy machine may well take over a second.)
        assert not set(alerts) & (ALERTS - {"MLServingHighErrorRate", "MLServingHighLatency"})
    finally:
        for server in servers:
            stop(server.process)
