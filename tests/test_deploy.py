"""The deployment files under deploy/: Prometheus rules (promtool), every metric they and the
Grafana dashboard use exists in the product's registry, the systemd unit and the container file
carry what operations rely on, and a real Prometheus scrapes a running daemon with the rules loaded."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
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

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus'; CI installs it)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (Debian package 'prometheus'; CI installs it)")

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
