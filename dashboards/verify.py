#!/usr/bin/env python3
"""Verifies every dashboard of dashboards/ the way Grafana would run it, against real services.

For each dashboard:
  1. schema: parsed into Grafana's own dashboard models (grafana-foundation-sdk, the version in
     deploy/local/lib.sh) and written back; every key we wrote must survive with its value (a key
     the schema does not know, or a panel option misspelled, is dropped by the models and
     reported); every panel type must be one the SDK knows.
  2. references: every datasource uid is one provisioned in dashboards/provisioning, every
     `$variable` is defined on the dashboard, a Grafana built-in or a ClickHouse plugin macro.
  3. queries: Grafana's variable interpolation (All = the variable's allValue, or one chosen
     value), then the ClickHouse plugin's macro expansion as its backend does
     (pkg/macros/macros.go of grafana/clickhouse-datasource); each SQL query runs on the
     ClickHouse server given (18.16 here) and, with --chdb, on the current engine through chDB
     with the same data copied in; each PromQL expression runs on the Prometheus given. Each
     must succeed; with every variable at All each must also return data.

Prints one line per failure and a summary with the number of panels and queries verified and
the slowest panel query; --report FILE writes the details as JSON. Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

GRAFANA_BUILTINS = {
    "__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__user", "__org", "__timezone", "__all",
}
# The macros of the ClickHouse plugin (pkg/macros/macros.go) that these dashboards may use.
PLUGIN_MACROS = {
    "__timeFilter", "__timeFilter_ms", "__dateFilter", "__dateTimeFilter", "__dt", "__timeInterval",
    "__timeInterval_ms", "__interval_s", "__fromTime", "__toTime", "__fromTime_ms", "__toTime_ms",
    "__timeFrom", "__timeTo", "__timeGroup",
}
PANEL_WIDTH_PX = 1000  # maxDataPoints Grafana uses for a panel about a wall screen wide
SCRAPE_INTERVAL_S = 5  # the Prometheus datasource's timeInterval (provisioning)


# ------------------------------------------------------------------------------ schema

def schema_problems(board: dict) -> list[str]:
    from grafana_foundation_sdk.cog import plugins, runtime
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    known_panels = set(runtime.Runtime().panelcfg_variants) | {"row"}
    problems = []
    for p in board.get("panels", []):
        if p.get("type") not in known_panels:
            problems.append(f"panel {p.get('title')!r}: type {p.get('type')!r} is not a Grafana panel the schema knows")
    try:
        round_trip = json.loads(json.dumps(Dashboard.from_json(board).to_json(), default=encode))
    except Exception as error:  # the models raise plain exceptions on wrong types or enum values
        return problems + [f"the dashboard models refused it: {error!r}"]
    problems += [f"{path}: {what}" for path, what in lost(board, round_trip, "")]
    return problems


def encode(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot encode {type(value)}")


def lost(ours, theirs, path):
    """Keys or values of `ours` that the schema's round trip did not keep."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            yield path, f"became {type(theirs).__name__}"
            return
        for key, value in ours.items():
            if key not in theirs:
                yield f"{path}.{key}", "not in Grafana's schema (dropped by the models)"
            else:
                yield from lost(value, theirs[key], f"{path}.{key}")
    elif isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            yield path, "list changed"
            return
        for i, (a, b) in enumerate(zip(ours, theirs)):
            yield from lost(a, b, f"{path}[{i}]")
    elif ours != theirs and not (isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and ours == theirs):
        yield path, f"{ours!r} became {theirs!r}"


# ------------------------------------------------------------------------------ interpolation

def round_interval(seconds: float) -> float:
    """Grafana's interval rounding (rangeutil.roundInterval), to the nice steps it uses."""
    steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800,
             3600, 7200, 10800, 21600, 43200, 86400, 604800, 2592000, 31536000]
    for step in steps:
        if seconds <= step * 1.5:
            return step
    return steps[-1]


def parse_grafana_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[m.group(2)]


def time_range(board: dict, now: float) -> tuple[float, float]:
    start = board["time"]["from"]
    m = re.fullmatch(r"now-(\d+[smhdwy])", start)
    if not m or board["time"]["to"] != "now":
        raise ValueError(f"time range {board['time']} is not now-N to now")
    return now - parse_grafana_duration(m.group(1)), now


def panel_interval(panel: dict, frm: float, to: float, min_interval_s: float = 0) -> float:
    lower = parse_grafana_duration(panel["interval"]) if panel.get("interval") else min_interval_s
    return max(lower, round_interval((to - frm) / panel.get("maxDataPoints", PANEL_WIDTH_PX)))


def sql_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def interpolate_variables(text: str, values: dict[str, list[str] | str]) -> str:
    """Grafana's template interpolation for ${name}, ${name:format} and $name.

    `values[name]` is a list of chosen values, or a str: the variable's custom All value, which
    Grafana inserts as it is, whatever the format."""

    def render(name: str, fmt: str | None) -> str:
        value = values[name]
        if isinstance(value, str):
            return value
        if fmt == "singlequote":
            return ",".join(sql_quote(v) for v in value)
        if fmt in ("csv", None):
            return ",".join(value)
        if fmt == "pipe":
            return "|".join(value)
        raise ValueError(f"format {fmt!r} of ${{{name}}} is not handled here")

    def braced(m):
        name, fmt = m.group(1), m.group(2)
        return render(name, fmt) if name in values else m.group(0)

    text = re.sub(r"\$\{(\w+)(?::(\w+))?\}", braced, text)
    return re.sub(r"\$(\w+)", lambda m: render(m.group(1), None) if m.group(1) in values else m.group(0), text)


def builtins(frm: float, to: float, interval_s: float) -> dict[str, str]:
    rate = max(interval_s + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)
    return {
        "__interval": f"{int(interval_s)}s" if interval_s >= 1 else f"{int(interval_s * 1000)}ms",
        "__interval_ms": str(int(interval_s * 1000)),
        "__rate_interval": f"{int(rate)}s",
        "__range": f"{int(to - frm)}s",
        "__range_s": str(int(to - frm)),
        "__range_ms": str(int((to - frm) * 1000)),
        "__from": str(int(frm * 1000)),
        "__to": str(int(to * 1000)),
    }


def macro_args(text: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of a macro call whose '(' is at `start`; returns them and
    the index after ')'."""
    depth, i, current, args = 0, start, [], []
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
            if depth > 1:
                current.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return [a for a in args if a != ""] if args != [""] else [], i + 1
            current.append(c)
        elif c == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    raise ValueError(f"unclosed macro call at {start}")


def expand_plugin_macros(sql: str, frm: float, to: float, interval_s: float) -> str:
    """The ClickHouse plugin's backend macros, as pkg/macros/macros.go expands them."""
    f, t = int(frm), int(to)
    fms, tms = int(frm * 1000), int(to * 1000)
    secs = max(int(interval_s), 1)
    ms = max(int(interval_s * 1000), 1)

    def day(x):
        return time.strftime("%Y-%m-%d", time.gmtime(x))

    def call(name: str, args: list[str]) -> str:
        def need(n):
            if len(args) != n:
                raise ValueError(f"$__{name} expects {n} argument(s), got {len(args)}")
        if name == "timeFilter":
            need(1); c = args[0]
            return f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})"
        if name == "timeFilter_ms":
            need(1); c = args[0]
            return f"{c} >= fromUnixTimestamp64Milli({fms}) AND {c} <= fromUnixTimestamp64Milli({tms})"
        if name == "dateFilter":
            need(1); c = args[0]
            return f"{c} >= toDate('{day(frm)}') AND {c} <= toDate('{day(to)}')"
        if name in ("dateTimeFilter", "dt"):
            need(2); d, c = args
            return (f"({d} >= toDate('{day(frm)}') AND {d} <= toDate('{day(to)}')) AND "
                    f"({c} >= toDateTime({f}) AND {c} <= toDateTime({t}))")
        if name == "timeInterval":
            need(1)
            return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {secs} second)"
        if name == "timeInterval_ms":
            need(1)
            return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {ms} millisecond)"
        if name == "timeFrom":
            need(1)
            return f"{args[0]} >= toDateTime({f})"
        if name == "timeTo":
            need(1)
            return f"{args[0]} <= toDateTime({t})"
        if name == "timeGroup":
            need(2)
            period = parse_grafana_duration(args[1].strip("'\""))
            return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {int(round(period))} second)"
        raise ValueError(f"$__{name}(...) is not a macro of the ClickHouse plugin")

    simple = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({fms})",
        "toTime_ms": f"fromUnixTimestamp64Milli({tms})",
        "fromTime": f"toDateTime({f})",
        "toTime": f"toDateTime({t})",
        "interval_s": str(secs),
        "interval_ms": str(ms),
    }
    out, i = [], 0
    pattern = re.compile(r"\$__(\w+)")
    while True:
        m = pattern.search(sql, i)
        if not m:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i:m.start()])
        name = m.group(1)
        if m.end() < len(sql) and sql[m.end()] == "(":
            args, end = macro_args(sql, m.end())
            out.append(call(name, args))
            i = end
        elif name in simple:
            out.append(simple[name])
            i = m.end()
        else:
            raise ValueError(f"$__{name} is not a macro of the ClickHouse plugin")


# ------------------------------------------------------------------------------ services

class ClickHouse:
    def __init__(self, url: str, database: str):
        self.url, self.database = url.rstrip("/"), database

    def rows(self, sql: str) -> tuple[list, float]:
        params = urllib.parse.urlencode({"database": self.database})
        started = time.perf_counter()
        request = urllib.request.Request(f"{self.url}/?{params}", data=(sql + "\nFORMAT JSONCompact").encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(error.read().decode(errors="replace").strip()[:600]) from None
        elapsed = time.perf_counter() - started
        return json.loads(body)["data"], elapsed


class Chdb:
    """The current ClickHouse engine in-process, with the cityops schema and a copy of the data."""

    def __init__(self, source: ClickHouse, migrations: Path, days: int):
        from chdb import session

        self.dir = tempfile.TemporaryDirectory()
        self.session = session.Session(self.dir.name)
        self.database = source.database
        for path in sorted(migrations.glob("*.sql")):
            for statement in split_sql(path.read_text().replace("{{database}}", self.database)):
                self.session.query(statement)
        self.session.query(f"USE {self.database}")
        base = urllib.parse.urlparse(source.url)
        for table, time_col in (("events", "ts"), ("rejects", "received_at"), ("alert_events", "ts")):
            query = (f"SELECT * FROM {source.database}.{table} WHERE {time_col} >= now() - INTERVAL {days} DAY "
                     "FORMAT TabSeparatedWithNamesAndTypes")
            url = f"{base.scheme}://{base.netloc}/?" + urllib.parse.urlencode({"query": query})
            self.session.query(
                f"INSERT INTO {self.database}.{table} SELECT * FROM url('{url}', 'TabSeparatedWithNamesAndTypes')"
            )
        self.version = str(self.session.query("SELECT version()", "CSV")).strip().strip('"')

    def rows(self, sql: str) -> tuple[list, float]:
        started = time.perf_counter()
        result = self.session.query(sql, "JSONCompact")
        elapsed = time.perf_counter() - started
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return json.loads(text)["data"] if text.strip() else [], elapsed


def split_sql(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Prometheus:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def series(self, expr: str, frm: float, to: float, step_s: float, instant: bool) -> tuple[int, float]:
        if instant:
            params = {"query": expr, "time": f"{to:.3f}"}
            path = "query"
        else:
            params = {"query": expr, "start": f"{frm:.3f}", "end": f"{to:.3f}", "step": f"{max(step_s, 1):g}"}
            path = "query_range"
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params), timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(error.read().decode(errors="replace").strip()[:600]) from None
        elapsed = time.perf_counter() - started
        if body.get("status") != "success":
            raise RuntimeError(str(body)[:600])
        return len(body["data"]["result"]), elapsed


# ------------------------------------------------------------------------------ checks

def provisioned_datasources() -> dict[str, str]:
    text = (HERE / "provisioning" / "datasources" / "cityops.yaml").read_text()
    uids = re.findall(r"^\s+uid:\s*(\S+)", text, re.M)
    types = re.findall(r"^\s+type:\s*(\S+)", text, re.M)
    return dict(zip(uids, types))


def variables_used(text: str) -> set[str]:
    return set(re.findall(r"\$\{(\w+)(?::\w+)?\}", text)) | set(re.findall(r"\$(\w+)", text))


def panels_of(board: dict) -> list[dict]:
    out = []
    for p in board.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


class Verifier:
    def __init__(self, clickhouse: ClickHouse, chdb: Chdb | None, prometheus: Prometheus | None, now: float):
        self.clickhouse, self.chdb, self.prometheus, self.now = clickhouse, chdb, prometheus, now
        self.failures: list[str] = []
        self.timings: list[dict] = []
        self.panels = self.sql_queries = self.promql_queries = 0
        self.datasources = provisioned_datasources()

    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"{where}: {what}")

    def check_board(self, name: str, board: dict) -> None:
        for problem in schema_problems(board):
            self.fail(name, f"schema: {problem}")
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        ids = [p.get("id") for p in board.get("panels", [])]
        if len(ids) != len(set(ids)):
            self.fail(name, f"panel ids repeat: {ids}")
        frm, to = time_range(board, self.now)
        # Variable values: all at All first (must return data), then the first option of each.
        settings = [("all", {n: v["allValue"] for n, v in variables.items()})]
        chosen = {}
        for var_name, var in variables.items():
            resolved = interpolate_variables(var["query"], {**settings[0][1], **chosen})
            resolved = expand_plugin_macros(resolved, frm, to, 60)
            try:
                rows, _ = self.clickhouse.rows(resolved)
            except RuntimeError as error:
                self.fail(f"{name} variable {var_name}", f"query failed on ClickHouse: {error}")
                continue
            if not rows:
                self.fail(f"{name} variable {var_name}", "query returned no values")
                continue
            chosen[var_name] = [rows[0][0]]
        if chosen:
            settings.append(("one", chosen))
        for panel in panels_of(board):
            self.panels += 1
            self.check_panel(name, board, panel, variables, frm, to, settings)

    def check_panel(self, name, board, panel, variables, frm, to, settings) -> None:
        where = f"{name} / {panel.get('title')!r}"
        ds = panel.get("datasource", {})
        if self.datasources.get(ds.get("uid")) != ds.get("type"):
            self.fail(where, f"datasource {ds} is not one provisioned in dashboards/provisioning")
        for field in ("title", "description"):
            if not panel.get(field):
                self.fail(where, f"no {field}")
        for target in panel.get("targets", []):
            tds = target.get("datasource", ds)
            if self.datasources.get(tds.get("uid")) != tds.get("type"):
                self.fail(where, f"target datasource {tds} is not provisioned")
            text = target.get("rawSql") or target.get("expr") or ""
            unknown = variables_used(text) - set(variables) - GRAFANA_BUILTINS - PLUGIN_MACROS
            if unknown:
                self.fail(where, f"undefined variables {sorted(unknown)}")
                continue
            if tds.get("type") == "grafana-clickhouse-datasource":
                self.run_sql(where, panel, target, frm, to, settings)
            elif tds.get("type") == "prometheus":
                self.run_promql(where, panel, target, frm, to)

    def run_sql(self, where, panel, target, frm, to, settings) -> None:
        if target.get("editorType") != "sql" or target.get("format") not in (0, 1):
            self.fail(where, "a ClickHouse target must be a SQL query (editorType sql) formatted as table (1) or time series (0)")
        interval = panel_interval(panel, frm, to)
        for label, values in settings:
            text = interpolate_variables(target["rawSql"], {**values, **builtins(frm, to, interval)})
            try:
                sql = expand_plugin_macros(text, frm, to, interval)
            except ValueError as error:
                self.fail(where, str(error))
                return
            self.sql_queries += 1
            for engine_name, engine in (("ClickHouse", self.clickhouse), ("chDB", self.chdb)):
                if engine is None:
                    continue
                try:
                    rows, elapsed = engine.rows(sql)
                except Exception as error:  # chDB raises RuntimeError, the server an HTTP error
                    self.fail(f"{where} [{label}]", f"failed on {engine_name}: {error}\n    {sql}")
                    continue
                if engine is self.clickhouse:
                    self.timings.append({"panel": where, "variables": label, "ms": round(elapsed * 1000, 1), "rows": len(rows)})
                if label == "all" and not rows:
                    self.fail(f"{where} [{label}]", f"returned no rows on {engine_name}\n    {sql}")
                elif target.get("format") == 0 and rows and not is_time(rows[0][0]):
                    self.fail(where, f"a time-series query must start with the time column, got {rows[0][0]!r}")

    def check_doc_query(self, where: str, sql: str) -> None:
        for engine_name, engine in (("ClickHouse", self.clickhouse), ("chDB", self.chdb)):
            if engine is None:
                continue
            try:
                rows, elapsed = engine.rows(sql)
            except Exception as error:  # chDB raises RuntimeError, the server an HTTP error
                self.fail(where, f"failed on {engine_name}: {error}")
                continue
            if engine is self.clickhouse:
                self.timings.append({"panel": where, "variables": "doc", "ms": round(elapsed * 1000, 1), "rows": len(rows)})
            if not rows:
                self.fail(where, f"returned no rows on {engine_name}")

    def run_promql(self, where, panel, target, frm, to) -> None:
        if self.prometheus is None:
            return
        interval = panel_interval(panel, frm, to, SCRAPE_INTERVAL_S)
        expr = interpolate_variables(target["expr"], builtins(frm, to, interval))
        self.promql_queries += 1
        try:
            count, elapsed = self.prometheus.series(expr, frm, to, interval, bool(target.get("instant")))
        except Exception as error:
            self.fail(where, f"PromQL failed: {error}\n    {expr}")
            return
        self.timings.append({"panel": where, "variables": "promql", "ms": round(elapsed * 1000, 1), "rows": count})
        if count == 0:
            self.fail(where, f"PromQL returned no series\n    {expr}")


def sql_blocks(path: Path) -> list[tuple[str, str]]:
    """(heading, sql) of every ```sql block of a Markdown file."""
    blocks, title, current = [], "", None
    for line in path.read_text().splitlines():
        if current is not None:
            if line.strip() == "```":
                blocks.append((title, "\n".join(current)))
                current = None
            else:
                current.append(line)
        elif line.startswith("#"):
            title = line.lstrip("#").strip()
        elif line.strip() == "```sql":
            current = []
    return blocks


def is_time(value) -> bool:
    return isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", value) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clickhouse", required=True, help="ClickHouse HTTP URL, e.g. http://127.0.0.1:18123")
    parser.add_argument("--database", default="cityops")
    parser.add_argument("--prometheus", help="Prometheus URL scraping the running services")
    parser.add_argument("--chdb", action="store_true", help="also run every SQL query on the current engine (chDB)")
    parser.add_argument("--chdb-days", type=int, default=2, help="days of data to copy into chDB")
    parser.add_argument("--report", type=Path, help="write timings and failures here (JSON)")
    parser.add_argument("--schema-only", action="store_true", help="only the schema and reference checks")
    parser.add_argument("--docs", type=Path, action="append", default=[],
                        help="also run every ```sql block of this Markdown file (each must return rows)")
    parser.add_argument("dashboards", nargs="*", type=Path)
    args = parser.parse_args()

    files = args.dashboards or sorted(HERE.glob("*.json"))
    clickhouse = ClickHouse(args.clickhouse, args.database)
    chdb = None
    if args.chdb and not args.schema_only:
        started = time.monotonic()
        chdb = Chdb(clickhouse, HERE.parent / "deploy" / "clickhouse" / "migrations", args.chdb_days)
        print(f"verify: chDB {chdb.version} loaded with the last {args.chdb_days} days in {time.monotonic() - started:.1f} s", flush=True)
    prometheus = Prometheus(args.prometheus) if args.prometheus and not args.schema_only else None
    verifier = Verifier(clickhouse, chdb, prometheus, time.time())
    for path in files:
        board = json.loads(path.read_text())
        if args.schema_only:
            for problem in schema_problems(board):
                verifier.fail(path.name, f"schema: {problem}")
            continue
        verifier.check_board(path.name, board)
    doc_queries = 0
    for doc in args.docs:
        for title, query in sql_blocks(doc):
            doc_queries += 1
            verifier.check_doc_query(f"{doc.name} / {title!r}", query)
    for failure in verifier.failures:
        print(f"FAIL {failure}", flush=True)
    slowest = max((t for t in verifier.timings if t["variables"] in ("all", "one")), key=lambda t: t["ms"], default=None)
    summary = {
        "dashboards": len(files),
        "panels": verifier.panels,
        "sql_queries": verifier.sql_queries,
        "sql_engines": ["ClickHouse"] + ([f"chDB {chdb.version}"] if chdb else []),
        "promql_queries": verifier.promql_queries,
        "doc_queries": doc_queries,
        "failures": len(verifier.failures),
        "slowest_sql": slowest,
    }
    print("verify: " + json.dumps(summary, ensure_ascii=False), flush=True)
    if args.report:
        args.report.write_text(json.dumps({**summary, "timings": verifier.timings, "failure_list": verifier.failures},
                                          ensure_ascii=False, indent=2))
    return 1 if verifier.failures else 0


if __name__ == "__main__":
    sys.exit(main())
