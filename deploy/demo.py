#!/usr/bin/env python3
"""`make demo`: the whole city, live, on the local stack.

Checks the example config and the shipped rules, starts the local stack (mosquitto, ClickHouse,
Tansu, Prometheus, Alertmanager), recreates the `cityops` database, backfills a day of history,
then runs the live city: `cityops sim` paced to the clock publishing every feed to mosquitto and
Kafka, `cityops ingest` (both sources) and `cityops alert` with the shipped rules, all three
scraped by Prometheus, alerts going to Alertmanager. A scenario (SCENARIO, default flood) starts
about a minute in. A status screen refreshes every few seconds until Ctrl-C, which stops
everything the demo started.

Environment (all optional):
  SCENARIO            flood, pollution, outage, complaint-spike, overdue, pipeline-stall
  SCENARIO_AT         when the incident starts after the live feeds do (default 30s)
  SCENARIO_DURATION   how long it lasts (default 20m)
  DEMO_SECONDS        run this long, non-interactively, then stop and print a summary
  DEMO_BACKFILL       history to backfill before going live (default 1d)
  DEMO_SEED           the simulator's seed (default 2026)
  DEMO_VERIFY         1: once the scenario's alert fires, verify every dashboard panel and the
                      queries of docs/engineers.md against the running city
                      (dashboards/verify.py, on ClickHouse and chDB and Prometheus)
  CITYOPS_BIN         the cityops binary (default target/release/cityops)
  CITYOPS_STATE_DIR and CITYOPS_*_PORT as for `make up` (deploy/local/lib.sh)

Only the standard library: this runs before anything else is installed but Python itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "deploy" / "config" / "cityops.toml"
DATABASE = "cityops"
# Real feeds send some broken payloads: the demo's do too, so that the rejects table, its
# dashboard panels and the ingest's reject metrics have something to show.
FAULTY_FRACTION = "0.02"

# The rules each scenario is meant to trip (deploy/rules/); the demo's summary says whether
# they fired and resolved.
SCENARIO_ALERTS = {
    "flood": ["WaterRisingFast", "FloodGaugeHigh"],
    "pollution": ["PM25StationSevere", "PM25DistrictEarlyWarning"],
    "outage": ["SensorSilent"],
    "complaint-spike": ["FloodReportsSpike"],
    "overdue": [],
    "pipeline-stall": ["SensorSilent"],
}


def env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


STATE_DIR = Path(os.environ.get("CITYOPS_STATE_DIR", REPO / ".cityops"))
PORTS = {
    "mqtt": env_port("CITYOPS_MQTT_PORT", 11883),
    "kafka": env_port("CITYOPS_KAFKA_PORT", 19092),
    "ch_http": env_port("CITYOPS_CLICKHOUSE_HTTP_PORT", 18123),
    "ch_tcp": env_port("CITYOPS_CLICKHOUSE_TCP_PORT", 19000),
    "prometheus": env_port("CITYOPS_PROMETHEUS_PORT", 19090),
    "alertmanager": env_port("CITYOPS_ALERTMANAGER_PORT", 19093),
}
STACK = ["mosquitto", "clickhouse", "tansu", "prometheus", "alertmanager"]


class DemoError(Exception):
    """A step failed; the message says which and where its log is."""


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `2h`, `1d`, or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise DemoError(f"not a duration: {text!r} (use e.g. 90s, 10m, 1d)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(preferred: int, taken: set[int] = frozenset()) -> int:
    if preferred not in taken and port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def clickhouse(sql: str, database: str | None = DATABASE, timeout: float = 10.0) -> list[list]:
    """Runs `sql` over HTTP and returns its rows (JSONCompact)."""
    params = {"database": database} if database else {}
    url = f"http://127.0.0.1:{PORTS['ch_http']}/?" + urllib.parse.urlencode(params)
    body = http(url, (sql + " FORMAT JSONCompact").encode(), timeout)
    return json.loads(body)["data"]


def clickhouse_exec(sql: str) -> None:
    http(f"http://127.0.0.1:{PORTS['ch_http']}/", sql.encode(), 30)


def scrape(port: int) -> dict[str, float]:
    """A /metrics page as {"name{labels}": value}."""
    samples: dict[str, float] = {}
    text = http(f"http://127.0.0.1:{port}/metrics", timeout=3).decode()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@dataclass
class Service:
    """One process the demo started, in its own process group."""

    name: str
    process: subprocess.Popen
    log: Path
    metrics_port: int | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            print(f"demo: {self.name} did not stop within {grace_s:.0f} s; killing it", flush=True)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class AlertSeen:
    """When the demo first saw an alert firing in Alertmanager, and its resolution."""

    labels: dict
    summary: str
    fired_at: float
    resolved_at: float | None = None


@dataclass
class Demo:
    binary: Path
    scenario: str
    scenario_at_s: float
    scenario_duration_s: float
    demo_seconds: float | None
    backfill: str
    seed: int
    run_dir: Path = field(init=False)
    services: list[Service] = field(default_factory=list)
    stack_started: list[str] = field(default_factory=list)
    services_up_at: float | None = None
    stamp: str = ""
    verify: bool = False
    verify_result: dict | None = None
    verify_failed: bool = False
    alerts: dict[str, AlertSeen] = field(default_factory=dict)
    interactive: bool = False
    # More `cityops sim` arguments for the live city (the soak's --speed).
    sim_extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = STATE_DIR / "demo"
        self.interactive = sys.stdout.isatty() and self.demo_seconds is None

    # ---------------------------------------------------------------- steps

    def run_cityops(self, *args: str, quiet: bool = False) -> None:
        result = subprocess.run(
            [str(self.binary), *args],
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            text=True,
        )
        if result.returncode != 0:
            output = result.stdout if quiet else ""
            raise DemoError(f"cityops {' '.join(args)} failed (exit {result.returncode})\n{output}")

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CITYOPS_STATE_DIR": str(STATE_DIR),
                "CITYOPS_CLICKHOUSE_URL": f"http://127.0.0.1:{PORTS['ch_http']}",
                "CITYOPS_CLICKHOUSE_DATABASE": DATABASE,
                "CITYOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{PORTS['kafka']}",
                "CITYOPS_MQTT_PORT": str(PORTS["mqtt"]),
                "CITYOPS_ALERTMANAGER_URL": f"http://127.0.0.1:{PORTS['alertmanager']}",
                "CITYOPS_BIN": str(self.binary),
            }
        )
        env.update(extra)
        return env

    def check(self) -> None:
        print("== Checking the example config and the shipped alert rules", flush=True)
        self.run_cityops("check", "--config", str(CONFIG), quiet=True)
        rule_files = sorted(str(p) for p in (REPO / "deploy" / "rules").glob("*.yaml"))
        self.run_cityops("rules", "check", *rule_files, quiet=True)
        tests = sorted(str(p) for p in (REPO / "deploy" / "rules" / "tests").glob("*.test.yaml"))
        self.run_cityops("rules", "test", *tests, quiet=True)
        print(f"   config ok; {len(rule_files)} rule files ok, their tests pass", flush=True)

    def start_stack(self) -> None:
        print("== The local stack (deploy/local/up.sh)", flush=True)
        before = self.stack_running()
        result = subprocess.run([str(REPO / "deploy" / "local" / "up.sh")], env=self.env())
        if result.returncode != 0:
            raise DemoError("the local stack did not start (see above)")
        self.stack_started = [name for name in STACK if name not in before]
        if before:
            print(f"   already running, left running at the end: {', '.join(sorted(before))}")

    def stack_running(self) -> set[str]:
        out = subprocess.run(
            [str(REPO / "deploy" / "local" / "status.sh")],
            env=self.env(),
            capture_output=True,
            text=True,
        ).stdout
        return {line.split()[0] for line in out.splitlines() if " stopped" not in line and line.strip()}

    def fresh_data(self) -> None:
        """A new database, empty topics, and no spool or alert state from an earlier run."""
        print(f"== A fresh `{DATABASE}` database and Kafka topics", flush=True)
        clickhouse_exec(f"DROP DATABASE IF EXISTS {DATABASE}")
        self.run_cityops("migrate", "--config", str(CONFIG), "--quiet", quiet=True)
        tansu = Path(
            os.environ.get("CITYOPS_CACHE_DIR", Path.home() / ".cache" / "cityops")
        ) / "tansu-0.1.2" / "tansu"
        broker = f"tcp://127.0.0.1:{PORTS['kafka']}"
        for line in (REPO / "deploy" / "local" / "kafka-topics.txt").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            topic, partitions = line.split()
            subprocess.run([str(tansu), "topic", "delete", topic, "--broker", broker], capture_output=True)
            created = subprocess.run(
                [str(tansu), "topic", "create", topic, "--partitions", partitions, "--broker", broker],
                capture_output=True,
                text=True,
            )
            if created.returncode != 0:
                raise DemoError(f"cannot create Kafka topic {topic}: {created.stderr.strip()}")
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        (self.run_dir / "log").mkdir(parents=True)

    def backfill_history(self) -> None:
        print(f"== Backfilling {self.backfill} of Da Nang into ClickHouse (cityops sim --backfill)", flush=True)
        started = time.monotonic()
        self.run_cityops(
            "sim", "--seed", str(self.seed), "--backfill", self.backfill,
            "--faulty-fraction", FAULTY_FRACTION,
            "--to-clickhouse", "--config", str(CONFIG),
        )
        rows = clickhouse("SELECT count() FROM events")[0][0]
        print(f"   {int(rows):,} events in {time.monotonic() - started:.0f} s", flush=True)

    def spawn(self, name: str, args: list[str], env: dict[str, str], metrics_port: int | None) -> Service:
        log = self.run_dir / "log" / f"{name}.log"
        handle = open(log, "ab")
        process = subprocess.Popen(
            [str(self.binary), *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        service = Service(name, process, log, metrics_port)
        self.services.append(service)
        return service

    def wait_ready(self, service: Service, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if not service.alive():
                raise DemoError(f"{service.name} exited (code {service.process.returncode}):\n{service.log_tail()}")
            try:
                http(f"http://127.0.0.1:{service.metrics_port}/readyz", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise DemoError(f"{service.name} not ready after {deadline_s:.0f} s:\n{service.log_tail()}")

    def start_ingest(self) -> None:
        """The ingest first: it needs no history, and it is ready when the backfill ends."""
        print("== cityops ingest (Kafka and MQTT into ClickHouse)", flush=True)
        self.stamp = str(int(time.time()))
        stamp = self.stamp
        ingest_port = pick_port(9464)
        ingest = self.spawn(
            "ingest",
            ["ingest", "--config", str(CONFIG)],
            self.env(
                CITYOPS_METRICS_PORT=str(ingest_port),
                CITYOPS_SPOOL_DIR=str(self.run_dir / "ingest-spool"),
                CITYOPS_KAFKA_GROUP=f"cityops-ingest-demo-{stamp}",
                CITYOPS_MQTT_CLIENT_ID=f"cityops-ingest-demo-{stamp}",
            ),
            ingest_port,
        )
        self.wait_ready(ingest, 120)

    def start_live(self) -> None:
        """The alerter (warm from the history just written), then the live city."""
        print("== The live city: cityops alert, then cityops sim paced to the clock", flush=True)
        stamp = self.stamp
        taken = {s.metrics_port for s in self.services}
        alert_port = pick_port(9465, taken)
        sim_port = pick_port(9466, taken | {alert_port})
        alert = self.spawn(
            "alert",
            ["alert", "--config", str(CONFIG)],
            self.env(
                CITYOPS_ALERT_PORT=str(alert_port),
                CITYOPS_ALERT_EXTERNAL_URL=f"http://127.0.0.1:{alert_port}",
                CITYOPS_ALERT_STATE_DIR=str(self.run_dir / "alert-state"),
                CITYOPS_ALERT_KAFKA_GROUP=f"cityops-alert-demo-{stamp}",
                CITYOPS_ALERT_MQTT_CLIENT_ID=f"cityops-alert-demo-{stamp}",
            ),
            alert_port,
        )
        self.wait_ready(alert, 120)
        live_seconds = self.demo_seconds if self.demo_seconds is not None else 7 * 86400
        sim_args = [
            "sim", "--seed", str(self.seed),
            "--to-mqtt", f"127.0.0.1:{PORTS['mqtt']}",
            "--to-kafka", f"127.0.0.1:{PORTS['kafka']}",
            "--duration", f"{int(live_seconds) + 60}s",
            "--faulty-fraction", FAULTY_FRACTION,
            "--listen-addr", f"127.0.0.1:{sim_port}",
            "--ground-truth", str(self.run_dir / "ground-truth.json"),
            *self.sim_extra,
        ]
        if self.scenario != "none":
            sim_args += [
                "--scenario", self.scenario,
                "--scenario-at", f"{int(self.scenario_at_s)}s",
                "--scenario-duration", f"{int(self.scenario_duration_s)}s",
            ]
        sim = self.spawn("sim", sim_args, self.env(), sim_port)
        self.wait_ready(sim, 60)
        self.services_up_at = time.monotonic()
        self.register_targets()

    def register_targets(self) -> None:
        """Tells the stack's Prometheus where the three services serve /metrics."""
        targets = STATE_DIR / "prometheus" / "conf" / "targets"
        targets.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            spec = [{"targets": [f"127.0.0.1:{service.metrics_port}"], "labels": {"service": service.name}}]
            tmp = targets / f".cityops-{service.name}.json.tmp"
            tmp.write_text(json.dumps(spec))
            tmp.rename(targets / f"cityops-{service.name}.json")

    def unregister_targets(self) -> None:
        for service in self.services:
            (STATE_DIR / "prometheus" / "conf" / "targets" / f"cityops-{service.name}.json").unlink(missing_ok=True)

    # ---------------------------------------------------------------- watching

    def firing_alerts(self) -> list[dict]:
        body = http(f"http://127.0.0.1:{PORTS['alertmanager']}/api/v2/alerts?active=true&silenced=false&inhibited=false")
        return json.loads(body)

    def observe_alerts(self) -> list[dict]:
        """Records first firing and resolution per alert (by alertname and its labels)."""
        now = time.monotonic()
        firing = [a for a in self.firing_alerts() if a.get("status", {}).get("state") == "active"]
        keys = set()
        for alert in firing:
            labels = alert.get("labels", {})
            key = json.dumps(labels, sort_keys=True, ensure_ascii=False)
            keys.add(key)
            seen = self.alerts.get(key)
            if seen is None or seen.resolved_at is not None:
                self.alerts[key] = AlertSeen(labels, alert.get("annotations", {}).get("summary", ""), now)
        for key, seen in self.alerts.items():
            if key not in keys and seen.resolved_at is None:
                seen.resolved_at = now
        return firing

    def status(self) -> str:
        up = self.services_up_at or time.monotonic()
        lines = [f"cityops demo — scenario {self.scenario}, {time.monotonic() - up:5.0f} s live"
                 + ("   (Ctrl-C stops everything)" if self.interactive else "")]
        try:
            per_domain = clickhouse(
                "SELECT domain, count() / 60 FROM events WHERE ts >= now() - 60 GROUP BY domain ORDER BY domain"
            )
            total = clickhouse("SELECT count() FROM events")[0][0]
            rejects = clickhouse("SELECT count() FROM rejects")[0][0]
            rates = "  ".join(f"{d} {float(r):.1f}" for d, r in per_domain)
            lines.append(f"events/s by domain (last minute): {rates}")
            lines.append(f"ClickHouse: {int(total):,} events, {int(rejects):,} rejects")
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            lines.append(f"ClickHouse: not answering ({error})")
        ingest = next(s for s in self.services if s.name == "ingest")
        try:
            m = scrape(ingest.metrics_port)
            lines.append(
                "ingest: Kafka lag {:.0f} messages, MQTT spool backlog {:.0f} messages, {:.0f} insert failures".format(
                    metric_sum(m, "cityops_ingest_kafka_lag_messages"),
                    metric_sum(m, "cityops_ingest_spool_backlog_messages"),
                    metric_sum(m, "cityops_ingest_insert_failures_total"),
                )
            )
        except (urllib.error.URLError, OSError) as error:
            lines.append(f"ingest: metrics not answering ({error})")
        try:
            firing = self.observe_alerts()
            lines.append(f"firing in Alertmanager: {len(firing)}")
            for alert in sorted(firing, key=lambda a: a.get("startsAt", "")):
                labels = alert.get("labels", {})
                lines.append(
                    f"  [{labels.get('severity', '?')}] {labels.get('alertname', '?')}: "
                    f"{alert.get('annotations', {}).get('summary', '')}"
                )
        except (urllib.error.URLError, OSError, ValueError) as error:
            lines.append(f"Alertmanager: not answering ({error})")
        for service in self.services:
            if not service.alive():
                lines.append(f"!! {service.name} exited (code {service.process.returncode}); log {service.log}")
        return "\n".join(lines)

    def where_to_look(self) -> None:
        ch = PORTS["ch_http"]
        print(
            f"""
== Where to look
  ClickHouse    http://127.0.0.1:{ch}/play?database={DATABASE}  (SQL over HTTP)
                clickhouse-client --port {PORTS['ch_tcp']} --database {DATABASE} --query 'SELECT domain, count() FROM events GROUP BY domain'
  Prometheus    http://127.0.0.1:{PORTS['prometheus']}  (targets, and cityops's own alerts: deploy/prometheus/)
  Alertmanager  http://127.0.0.1:{PORTS['alertmanager']}
                amtool --alertmanager.url=http://127.0.0.1:{PORTS['alertmanager']} alert query
  the alerter   http://127.0.0.1:{self.service('alert').metrics_port}/api/v1/alerts
  Grafana       not started here: point a Grafana 11+ with the grafana-clickhouse-datasource plugin at
                dashboards/provisioning (docs/operators.md, "Loading the dashboards")
  logs          {self.run_dir / 'log'}
""",
            flush=True,
        )

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def watch(self) -> None:
        interval = 3.0 if self.interactive else 10.0
        deadline = None if self.demo_seconds is None else self.services_up_at + self.demo_seconds
        next_print = 0.0
        while deadline is None or time.monotonic() < deadline:
            for service in self.services:
                if not service.alive():
                    raise DemoError(f"{service.name} exited (code {service.process.returncode}):\n{service.log_tail()}")
            now = time.monotonic()
            if now >= next_print:
                text = self.status()
                if self.interactive:
                    sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                else:
                    sys.stdout.write(text + "\n\n")
                sys.stdout.flush()
                next_print = now + interval
            else:
                # Between screens, still note when alerts fire and resolve (to the second).
                try:
                    self.observe_alerts()
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            if self.verify and self.verify_result is None and self.ready_to_verify():
                self.verify_dashboards()
            time.sleep(1.0)

    def ready_to_verify(self) -> bool:
        """Every panel can have data once the scenario's alert fires (in Alertmanager and in the
        alert history) and some of the broken payloads the simulator sends have been counted by
        Prometheus."""
        expected = SCENARIO_ALERTS.get(self.scenario, [])
        firing = any(s.resolved_at is None and s.labels.get("alertname") in expected for s in self.alerts.values())
        if not firing:
            return False
        names = ", ".join(f"'{n}'" for n in expected)
        try:
            # The alert history is written after the notification: wait until it holds the firing.
            stored = clickhouse(f"SELECT count() FROM alert_events WHERE state = 'firing' AND rule IN ({names})")[0][0]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return False
        if int(stored) == 0:
            return False
        try:
            body = json.loads(http(f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/query?query=cityops_ingest_rejects_total"))
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return bool(body.get("data", {}).get("result"))

    def verify_dashboards(self) -> None:
        print("== Verifying every dashboard panel against the running city (dashboards/verify.py)", flush=True)
        dirs = subprocess.run(
            ["bash", "-c", 'source deploy/local/lib.sh && echo "$GRAFANA_SDK_DIR:$CHDB_DIR"'],
            cwd=REPO, env=self.env(), capture_output=True, text=True, check=True,
        ).stdout.strip()
        report = self.run_dir / "verify.json"
        result = subprocess.run(
            [sys.executable, str(REPO / "dashboards" / "verify.py"),
             "--clickhouse", f"http://127.0.0.1:{PORTS['ch_http']}", "--database", DATABASE,
             "--prometheus", f"http://127.0.0.1:{PORTS['prometheus']}",
             "--chdb", "--chdb-days", "1", "--docs", str(REPO / "docs" / "engineers.md"),
             "--report", str(report)],
            cwd=REPO, env={**self.env(), "PYTHONPATH": dirs}, capture_output=True, text=True,
        )
        sys.stdout.write(result.stdout + result.stderr)
        self.verify_failed = result.returncode != 0
        try:
            self.verify_result = json.loads(report.read_text())
        except (OSError, ValueError):
            self.verify_result = {"failures": "verify.py wrote no report"}
            self.verify_failed = True

    # ---------------------------------------------------------------- the end

    def stop_services(self) -> None:
        """The simulator first, then the readers (each drains and commits on SIGTERM)."""
        for name, grace in (("sim", 15), ("ingest", 40), ("alert", 40)):
            for service in self.services:
                if service.name == name:
                    service.stop(grace)
        self.unregister_targets()

    def stop_stack(self) -> list[str]:
        """Stops the parts of the stack the demo started; returns the names of the processes
        still alive afterwards (none, unless something is wrong)."""
        if self.stack_started:
            subprocess.run([str(REPO / "deploy" / "local" / "down.sh"), *self.stack_started], env=self.env())
        left = [s.name for s in self.services if s.alive()]
        still = self.stack_running() & set(self.stack_started)
        return left + sorted(still)

    def summary(self) -> None:
        print("\n== Summary", flush=True)
        up = self.services_up_at
        truth_file = self.run_dir / "ground-truth.json"
        if truth_file.exists():
            truth = json.loads(truth_file.read_text())
            print(f"scenario: {truth['scenario']} in {truth['district'] or 'the whole city'}, "
                  f"{truth['start']} to {truth['end']} ({truth['expect']})")
        print("alerts seen in Alertmanager (seconds after the services were up):")
        for seen in sorted(self.alerts.values(), key=lambda s: s.fired_at):
            labels = seen.labels
            resolved = "still firing" if seen.resolved_at is None else f"resolved at +{seen.resolved_at - up:.1f} s"
            where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
            print(f"  {labels.get('alertname')} {{{where}}}: firing at +{seen.fired_at - up:.1f} s, {resolved} — {seen.summary}")
        if self.verify:
            r = self.verify_result
            if r is None:
                print("dashboards: not verified (the scenario's alert never fired)")
            else:
                slowest = r.get("slowest_sql") or {}
                print(f"dashboards: {r.get('panels')} panels of {r.get('dashboards')} dashboards verified, "
                      f"{r.get('sql_queries')} SQL queries on {' and '.join(r.get('sql_engines', []))}, "
                      f"{r.get('promql_queries')} PromQL, {r.get('doc_queries')} docs queries; "
                      f"failures: {r.get('failures')}; slowest panel query {slowest.get('ms')} ms ({slowest.get('panel')})")
        expected = SCENARIO_ALERTS.get(self.scenario, [])
        fired = [s for s in self.alerts.values() if s.labels.get("alertname") in expected]
        if fired:
            first = min(s.fired_at for s in fired)
            print(f"time to first scenario alert: {first - up:.1f} s after the services were up")
        try:
            rows = clickhouse("SELECT count() FROM events")[0][0]
            rejects = clickhouse("SELECT count() FROM rejects")[0][0]
            history = clickhouse("SELECT state, count() FROM alert_events GROUP BY state ORDER BY state")
            print(f"ClickHouse: {int(rows):,} events, {int(rejects):,} rejects; alert_events "
                  + ", ".join(f"{s} {int(n)}" for s, n in history))
        except (urllib.error.URLError, OSError, KeyError):
            print("ClickHouse: stopped")


def main() -> int:
    binary = Path(os.environ.get("CITYOPS_BIN", REPO / "target" / "release" / "cityops")).resolve()
    if not binary.is_file():
        print(f"demo: {binary} not found; run `make demo` (it builds it)", file=sys.stderr)
        return 1
    seconds = os.environ.get("DEMO_SECONDS")
    scenario = os.environ.get("SCENARIO", "flood") or "flood"
    if scenario not in SCENARIO_ALERTS and scenario != "none":
        print(f"demo: SCENARIO={scenario}: one of {', '.join(SCENARIO_ALERTS)} or none", file=sys.stderr)
        return 2
    demo = Demo(
        binary=binary,
        scenario=scenario,
        scenario_at_s=parse_duration(os.environ.get("SCENARIO_AT", "30s")),
        scenario_duration_s=parse_duration(os.environ.get("SCENARIO_DURATION", "20m")),
        demo_seconds=parse_duration(seconds) if seconds else None,
        backfill=os.environ.get("DEMO_BACKFILL", "1d"),
        seed=int(os.environ.get("DEMO_SEED", "2026")),
    )
    demo.verify = os.environ.get("DEMO_VERIFY", "") not in ("", "0")
    stopping = {"asked": False}

    def ask_stop(signum, _frame):
        if stopping["asked"]:
            return
        stopping["asked"] = True
        raise KeyboardInterrupt

    # Installed explicitly: a process started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)
    status = 0
    try:
        demo.check()
        demo.start_stack()
        demo.fresh_data()
        demo.start_ingest()
        demo.backfill_history()
        demo.start_live()
        demo.where_to_look()
        demo.watch()
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
    except DemoError as error:
        print(f"\ndemo: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop_services()
        if demo.services_up_at is not None:
            demo.summary()
        left = demo.stop_stack()
        print(f"processes left behind: {len(left)}" + (f" ({', '.join(left)})" if left else ""), flush=True)
        if left or (demo.verify and (demo.verify_result is None or demo.verify_failed)):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
