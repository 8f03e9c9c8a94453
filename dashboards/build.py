#!/usr/bin/env python3
"""Writes the Grafana dashboards of dashboards/*.json from the definitions below.

The JSON files are what Grafana loads (dashboards/provisioning); this script is where they are
edited: `python3 dashboards/build.py` rewrites them, `--check` fails if one is out of date (a
test runs it). Queries are written once for both ClickHouse 18.16 and current servers:
time buckets use `$__interval_s` arithmetic rather than `$__timeInterval`, whose
`toStartOfInterval` 18.16 lacks. Long ranges read the minute rollups (docs/schema.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39

CH = {"type": "grafana-clickhouse-datasource", "uid": "cityops-clickhouse"}
PROM = {"type": "prometheus", "uid": "cityops-prometheus"}
CH_PLUGIN_VERSION = "4.10.0"

# Template variable filters. The variables' "All" is the literal '__all', so that rows whose
# ward or district is unknown stay in when everything is selected.
DISTRICT = "('__all' IN (${district:singlequote}) OR district IN (${district:singlequote}))"
WARD = "('__all' IN (${ward:singlequote}) OR ward IN (${ward:singlequote}))"
BUCKET = "toDateTime(intDiv(toUInt32({col}), $__interval_s) * $__interval_s)"

LINK_BOARDS = [
    {"title": "Các bảng", "type": "dashboards", "tags": ["cityops"], "asDropdown": True, "includeVars": True, "keepTime": True}
]


def bucket(col: str) -> str:
    return BUCKET.format(col=col)


def sql(query: str, kind: str = "table", ref: str = "A") -> dict:
    """A ClickHouse plugin SQL query; kind is table or timeseries."""
    return {
        "refId": ref,
        "datasource": CH,
        "editorType": "sql",
        "format": 1 if kind == "table" else 0,
        "queryType": kind,
        "pluginVersion": CH_PLUGIN_VERSION,
        "rawSql": " ".join(query.split()),
    }


def promql(expr: str, legend: str, ref: str = "A", instant: bool = False) -> dict:
    target = {
        "refId": ref,
        "datasource": PROM,
        "editorMode": "code",
        "expr": " ".join(expr.split()),
        "legendFormat": legend,
        "range": not instant,
    }
    if instant:
        target["instant"] = True
    return target


def thresholds(*steps: tuple) -> dict:
    """steps: (value or None, colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN_ORANGE_RED = lambda orange, red: thresholds((None, "green"), (orange, "orange"), (red, "red"))  # noqa: E731


def colour_column(name: str, steps: dict) -> list[dict]:
    """A table override: the column's cells coloured by the thresholds."""
    return [{"matcher": {"id": "byName", "options": name}, "properties": [
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        {"id": "thresholds", "value": steps}]}]


def threshold_line(steps: dict, mode: str) -> dict:
    """Time-series defaults that draw the thresholds (an alert's bounds) across the graph."""
    return {"thresholds": steps, "custom": {"thresholdsStyle": {"mode": mode}, "drawStyle": "line", "lineWidth": 2,
                                            "showPoints": "never", "spanNulls": True}}


class Board:
    """Lays panels out left to right in rows 24 units wide."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str], variables: list[dict], time_from: str = "now-6h", refresh: str = "30s"):
        self.uid, self.title, self.description = uid, title, description
        self.tags, self.variables = ["cityops", *tags], variables
        self.time_from, self.refresh = time_from, refresh
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0

    def json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "timezone": "Asia/Ho_Chi_Minh",
            "editable": True,
            "graphTooltip": 1,
            "time": {"from": self.time_from, "to": "now"},
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "links": LINK_BOARDS,
            "templating": {"list": self.variables},
            "annotations": {"list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]},
            "panels": self.panels,
        }


def panel(kind: str, title: str, description: str, targets: list[dict], unit: str | None = None, options: dict | None = None,
          defaults: dict | None = None, interval: str | None = None, overrides: list | None = None) -> dict:
    field_defaults = dict(defaults or {})
    if unit:
        field_defaults["unit"] = unit
    result = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if interval:
        result["interval"] = interval
    return result


def timeseries(title, description, targets, unit=None, interval="1m", stack=False, defaults=None, overrides=None):
    custom = {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 10, "showPoints": "never", "spanNulls": True}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
        custom["fillOpacity"] = 60
    d = {"custom": custom, **(defaults or {})}
    return panel("timeseries", title, description, targets, unit,
                 {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                  "tooltip": {"mode": "multi", "sort": "desc"}},
                 d, interval, overrides)


def stat(title, description, targets, unit=None, steps=None, decimals=None, color_mode="background"):
    d = {"color": {"mode": "thresholds"}, "thresholds": steps or thresholds((None, "blue"))}
    if decimals is not None:
        d["decimals"] = decimals
    return panel("stat", title, description, targets, unit,
                 {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                  "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto", "textMode": "auto",
                  "orientation": "auto"},
                 d)


def table(title, description, targets, overrides=None, defaults=None):
    return panel("table", title, description, targets, None,
                 {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "countRows": False}},
                 defaults or {}, None, overrides)


def bars(title, description, targets, unit=None, steps=None, orientation="horizontal", min_value=None, max_value=None):
    d = {"color": {"mode": "thresholds"}, "thresholds": steps or thresholds((None, "blue"))}
    if min_value is not None:
        d["min"] = min_value
    if max_value is not None:
        d["max"] = max_value
    return panel("bargauge", title, description, targets, unit,
                 {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                  "orientation": orientation, "displayMode": "gradient", "showUnfilled": True, "valueMode": "color",
                  "namePlacement": "auto", "sizing": "auto", "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300},
                 d)


def barchart(title, description, targets, unit=None, stacked=True):
    return panel("barchart", title, description, targets, unit,
                 {"orientation": "horizontal", "stacking": "normal" if stacked else "none", "showValue": "auto",
                  "groupWidth": 0.7, "barWidth": 0.9, "xTickLabelRotation": 0, "xTickLabelSpacing": 0,
                  "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                  "tooltip": {"mode": "multi", "sort": "none"}},
                 {"color": {"mode": "palette-classic"}})


def gauges(title, description, targets, unit, steps, min_value, max_value):
    return panel("gauge", title, description, targets, unit,
                 {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                  "showThresholdLabels": False, "showThresholdMarkers": True, "orientation": "auto",
                  "sizing": "auto", "minVizHeight": 75, "minVizWidth": 75},
                 {"thresholds": steps, "min": min_value, "max": max_value, "color": {"mode": "thresholds"}})


def geomap(title, description, targets, color_field, steps, zoom=11.5):
    layer = {
        "type": "markers",
        "name": "sensors",
        "config": {
            "showLegend": True,
            "style": {
                "color": {"field": color_field, "fixed": "dark-green"},
                "opacity": 0.8,
                "size": {"fixed": 6, "min": 4, "max": 12},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                "symbolAlign": {"horizontal": "center", "vertical": "center"},
            },
        },
        "location": {"mode": "coords", "latitude": "latitude", "longitude": "longitude"},
        "tooltip": True,
    }
    return panel("geomap", title, description, targets, None,
                 {"view": {"id": "coords", "lat": 16.047, "lon": 108.206, "zoom": zoom, "allLayers": True},
                  "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
                  "basemap": {"type": "default", "name": "Basemap", "config": {}},
                  "layers": [layer], "tooltip": {"mode": "details"}},
                 {"color": {"mode": "thresholds"}, "thresholds": steps})


def filter_variable(name: str, label: str, description: str, query: str) -> dict:
    """A multi-value ClickHouse query variable whose All is the literal '__all' (see DISTRICT)."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": CH,
        "query": query,
        "refresh": 1,
        "multi": True,
        "includeAll": True,
        "allValue": "'__all'",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "options": [],
        "hide": 0,
    }


def district_variables(with_ward: bool = False) -> list[dict]:
    variables = [filter_variable(
        "district", "Quận/huyện", "District (the rollups' district column)",
        "SELECT DISTINCT district FROM events_1m_district WHERE district != '' AND minute >= now() - INTERVAL 7 DAY ORDER BY district",
    )]
    if with_ward:
        variables.append(filter_variable(
            "ward", "Phường/xã", "Ward, of the districts chosen (citizen reports and street lights carry it)",
            "SELECT DISTINCT ward FROM events WHERE ward != '' AND ts >= now() - INTERVAL 1 DAY AND " + DISTRICT + " ORDER BY ward",
        ))
    return variables


# ------------------------------------------------------------------------------------- queries

def latest_per_entity(domain: str, metric: str, extra: str = "", window: str = "INTERVAL 1 HOUR") -> str:
    return f"""SELECT entity_id AS gauge, argMax(value, ts) AS value FROM events
        WHERE domain = '{domain}' AND metric = '{metric}' AND ts >= now() - {window} AND {DISTRICT} {extra}
        GROUP BY entity_id ORDER BY entity_id"""


def district_mean_series(domain: str, metric: str) -> str:
    return f"""SELECT {bucket('minute')} AS time, district, sumMerge(value_sum) / countMerge(samples) AS value
        FROM events_1m_district WHERE domain = '{domain}' AND metric = '{metric}' AND $__timeFilter(minute) AND {DISTRICT}
        GROUP BY time, district ORDER BY time"""


def district_sum_series(domain: str, metrics: list[str], per: str = "district") -> str:
    names = ", ".join(f"'{m}'" for m in metrics)
    return f"""SELECT {bucket('minute')} AS time, {per}, sumMerge(value_sum) AS value
        FROM events_1m_district WHERE domain = '{domain}' AND metric IN ({names}) AND $__timeFilter(minute) AND {DISTRICT}
        GROUP BY time, {per} ORDER BY time"""


def events_by_domain_series() -> str:
    return f"""SELECT time, domain, sum(n) / $__interval_s AS events_per_second FROM (
          SELECT {bucket('minute')} AS time, domain, countMerge(samples) AS n FROM events_1m_district
            WHERE $__timeFilter(minute) AND {DISTRICT} GROUP BY time, domain
          UNION ALL
          SELECT {bucket('minute')} AS time, domain, countMerge(samples) AS n FROM events_1m_status
            WHERE $__timeFilter(minute) AND {DISTRICT} GROUP BY time, domain)
        GROUP BY time, domain ORDER BY time"""


SENSOR_MAP = f"""SELECT entity_id, any(feed) AS feed, argMax(lat, ts) AS latitude, argMax(lon, ts) AS longitude,
      max(ts) AS last_seen, argMaxIf(text, ts, metric = 'status') AS status,
      multiIf(toUInt32(now()) - toUInt32(max(ts)) > 900, 2,
              argMaxIf(text, ts, metric = 'status') IN ('defectiveLamp', 'full', 'fault'), 1, 0) AS state
    FROM events
    WHERE ts >= now() - INTERVAL 1 HOUR AND lat IS NOT NULL AND domain IN ('water', 'lighting', 'waste', 'parking') AND {DISTRICT}
    GROUP BY entity_id"""

STATE_STEPS = thresholds((None, "green"), (1, "orange"), (2, "red"))

REPORTS_BY_WARD = f"""SELECT ward_name AS ward, countIf(status = 'received') AS received, countIf(status = 'assigned') AS assigned,
      countIf(status = 'in_progress') AS in_progress, countIf(status = 'resolved') AS resolved
    FROM (SELECT entity_id, any(ward) AS ward_name, argMax(text, ts) AS status FROM events
          WHERE domain = 'citizen_report' AND metric = 'status' AND $__timeFilter(ts) AND {DISTRICT} AND {WARD}
          GROUP BY entity_id)
    GROUP BY ward_name ORDER BY received + assigned + in_progress + resolved DESC LIMIT 20"""

# A dossier's latest status and days to its due date, over the dossiers seen in the range.
DOSSIER_STATE = f"""SELECT entity_id, any(district) AS district_name,
      argMaxIf(text, ts, metric = 'status') AS status, argMaxIf(value, ts, metric = 'days_to_due') AS days_to_due,
      anyIf(attr_values[indexOf(attr_keys, 'agency')], has(attr_keys, 'agency')) AS agency
    FROM events WHERE domain = 'public_service' AND $__timeFilter(ts) AND {DISTRICT}
    GROUP BY entity_id"""

# The order of an alert's transitions: pending and firing can share one millisecond (a rule
# without `for`), so the state breaks the tie.
TRANSITION_ORDER = "toUInt64(ts) * 10000 + ts_ms * 10 + multiIf(state = 'resolved', 2, state = 'firing', 1, 0)"

FIRING_ALERTS = f"""SELECT max(ts) AS since, rule, argMax(severity, {TRANSITION_ORDER}) AS severity,
      argMax(district, {TRANSITION_ORDER}) AS alert_district, argMax(entity_id, {TRANSITION_ORDER}) AS entity,
      argMax(value, {TRANSITION_ORDER}) AS value, argMax(summary, {TRANSITION_ORDER}) AS summary
    FROM alert_events WHERE ts >= now() - INTERVAL 30 DAY AND {DISTRICT}
    GROUP BY fingerprint, rule HAVING argMax(state, {TRANSITION_ORDER}) = 'firing' ORDER BY since DESC LIMIT 50"""

SEVERITY_COLOURS = [{
    "matcher": {"id": "byName", "options": "severity"},
    "properties": [
        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
        {"id": "mappings", "value": [{"type": "value", "options": {
            "critical": {"color": "red", "index": 0},
            "warning": {"color": "orange", "index": 1},
            "info": {"color": "blue", "index": 2},
        }}]},
    ],
}]


# ------------------------------------------------------------------------------------- boards

def city_overview() -> Board:
    b = Board("cityops-city-overview", "Toàn cảnh thành phố Đà Nẵng",
              "The operations wall: the whole city at a glance. Every panel follows the district filter, the citizen reports also the ward filter.",
              ["wall", "overview"], district_variables(with_ward=True), "now-6h", "30s")
    b.add(stat("Sự kiện mỗi giây", "Events stored per second over the last 5 minutes, every feed.",
               [sql(f"SELECT count() / 300 AS events_per_second FROM events WHERE ts >= now() - INTERVAL 5 MINUTE AND {DISTRICT}")],
               "short", decimals=1), 4, 4)
    b.add(stat("Cảnh báo đang kích hoạt", "Alerts firing now (alert history, latest state per alert).",
               [sql(f"SELECT count() AS firing FROM ({FIRING_ALERTS})")],
               None, thresholds((None, "green"), (1, "red"))), 4, 4)
    b.add(stat("Mực nước cao nhất", "Highest latest water level of any gauge (metres); FloodGaugeHigh fires above 2.5 m.",
               [sql(f"SELECT max(value) AS level_m FROM ({latest_per_entity('water', 'water_level')})")],
               "lengthm", GREEN_ORANGE_RED(2.3, 2.5), 2), 4, 4)
    b.add(stat("PM2.5 trung bình", "City mean PM2.5 over the last hour (µg/m³); the 24-hour limit is 50.",
               [sql(f"""SELECT sumMerge(value_sum) / countMerge(samples) AS pm25 FROM events_1m_district
                        WHERE domain = 'environment' AND metric = 'pm25' AND minute >= now() - INTERVAL 1 HOUR AND {DISTRICT}""")],
               "conμgm3", GREEN_ORANGE_RED(25, 50), 1), 4, 4)
    b.add(stat("Phản ánh mới (24 giờ)", "Citizen reports received in the last 24 hours (app and hotline).",
               [sql(f"""SELECT uniqMerge(entities) AS reports FROM events_1m_status
                        WHERE domain = 'citizen_report' AND metric = 'status' AND status = 'received' AND minute >= now() - INTERVAL 1 DAY AND {DISTRICT}""")],
               None), 4, 4)
    b.add(stat("Hồ sơ quá hạn", "Open public-service dossiers past their due date.",
               [sql(f"SELECT countIf(days_to_due < 0 AND status != 'done') AS overdue FROM ({DOSSIER_STATE.replace('$__timeFilter(ts)', 'ts >= now() - INTERVAL 30 DAY')})")],
               None, thresholds((None, "green"), (1, "orange"), (20, "red"))), 4, 4)
    b.add(timeseries("Sự kiện theo lĩnh vực", "Events per second by domain (minute rollups).",
                     [sql(events_by_domain_series(), "timeseries")], "short", stack=True), 12, 8)
    b.add(geomap("Bản đồ cảm biến", "Located sensors (gauges, street lights, bins, car parks) by state: green reporting, orange fault or full, red silent for 15 minutes.",
                 [sql(SENSOR_MAP)], "state", STATE_STEPS), 12, 12)
    b.add(gauges("Mực nước các trạm (m)", "Latest level of each gauge against the flood rule's bounds: clears under 2.3 m, fires over 2.5 m.",
                 [sql(latest_per_entity("water", "water_level"))], "lengthm", GREEN_ORANGE_RED(2.3, 2.5), 0, 4), 12, 4)
    b.add(bars("PM2.5 theo quận (1 giờ)", "Mean PM2.5 per district over the last hour (µg/m³).",
               [sql(f"""SELECT district, sumMerge(value_sum) / countMerge(samples) AS pm25 FROM events_1m_district
                        WHERE domain = 'environment' AND metric = 'pm25' AND minute >= now() - INTERVAL 1 HOUR AND {DISTRICT}
                        GROUP BY district ORDER BY pm25 DESC""")],
               "conμgm3", GREEN_ORANGE_RED(25, 50), min_value=0), 8, 8)
    b.add(timeseries("Lưu lượng giao thông", "Vehicles counted per interval by district (traffic counters).",
                     [sql(district_sum_series("traffic", ["motorbikes", "cars", "trucks", "buses"]), "timeseries")], "short"), 8, 8)
    b.add(barchart("Phản ánh theo phường", "Citizen reports in the range by ward and latest status (top 20 wards).",
                   [sql(REPORTS_BY_WARD)]), 8, 8)
    b.add(table("Cảnh báo đang kích hoạt", "Firing alerts, newest first, with their Vietnamese summary.",
                [sql(FIRING_ALERTS)], SEVERITY_COLOURS), 24, 7)
    return b


def environment() -> Board:
    b = Board("cityops-environment", "Môi trường", "Air quality by district and station, waste bins.",
              ["domain", "environment"], district_variables(), "now-24h")
    b.add(timeseries("PM2.5 theo quận", "Mean PM2.5 per district (µg/m³), minute rollups.",
                     [sql(district_mean_series("environment", "pm25"), "timeseries")], "conμgm3",
                     defaults=threshold_line(GREEN_ORANGE_RED(25, 50), "line")), 12, 9)
    b.add(timeseries("PM10 theo quận", "Mean PM10 per district (µg/m³).",
                     [sql(district_mean_series("environment", "pm10"), "timeseries")], "conμgm3"), 12, 9)
    b.add(timeseries("NO₂ và O₃", "City mean NO₂ and O₃ (µg/m³).",
                     [sql(f"""SELECT {bucket('minute')} AS time, metric, sumMerge(value_sum) / countMerge(samples) AS value
                              FROM events_1m_district WHERE domain = 'environment' AND metric IN ('no2', 'o3') AND $__timeFilter(minute) AND {DISTRICT}
                              GROUP BY time, metric ORDER BY time""", "timeseries")], "conμgm3"), 12, 8)
    b.add(table("Trạm quan trắc", "Each station's latest readings and when it last reported.",
                [sql(f"""SELECT entity_id AS station, any(district) AS district_name,
                          argMaxIf(value, ts, metric = 'pm25') AS pm25, argMaxIf(value, ts, metric = 'pm10') AS pm10,
                          argMaxIf(value, ts, metric = 'temperature') AS temperature_c, argMaxIf(value, ts, metric = 'humidity') AS humidity_pct,
                          max(ts) AS last_seen
                        FROM events WHERE domain = 'environment' AND ts >= now() - INTERVAL 1 HOUR AND {DISTRICT}
                        GROUP BY entity_id ORDER BY pm25 DESC""")],
                colour_column("pm25", GREEN_ORANGE_RED(25, 50))), 12, 8)
    b.add(bars("Thùng rác đầy", "Share of each district's waste bins reporting full in the last hour.",
               [sql(f"""SELECT district_name AS district, 100 * countIf(status = 'full') / count() AS full_pct FROM
                          (SELECT entity_id, any(district) AS district_name, argMax(text, ts) AS status FROM events
                           WHERE domain = 'waste' AND metric = 'status' AND ts >= now() - INTERVAL 1 HOUR AND {DISTRICT} GROUP BY entity_id)
                        GROUP BY district_name ORDER BY full_pct DESC""")],
               "percent", GREEN_ORANGE_RED(20, 40), min_value=0, max_value=100), 12, 8)
    b.add(timeseries("Mức đầy thùng rác", "Mean filling level of the bins per district (0 to 1).",
                     [sql(district_mean_series("waste", "fillingLevel"), "timeseries")], "percentunit"), 12, 8)
    return b


def water() -> Board:
    b = Board("cityops-water", "Nước và ngập lụt", "Flood watch: gauges, rain, and the flood alerts.",
              ["domain", "water"], district_variables(), "now-6h", "30s")
    b.add(gauges("Mực nước hiện tại (m)", "Latest level of each gauge: orange from 2.3 m, red from 2.5 m (FloodGaugeHigh).",
                 [sql(latest_per_entity("water", "water_level"))], "lengthm", GREEN_ORANGE_RED(2.3, 2.5), 0, 4), 24, 5)
    b.add(timeseries("Mực nước theo trạm", "Each gauge's level (m), minute rollups, with the alert bound at 2.5 m.",
                     [sql(f"""SELECT {bucket('minute')} AS time, entity_id, argMaxMerge(value_last) AS level_m
                              FROM events_1m_entity WHERE domain = 'water' AND metric = 'water_level' AND $__timeFilter(minute) AND {DISTRICT}
                              GROUP BY time, entity_id ORDER BY time""", "timeseries")], "lengthm",
                     defaults=threshold_line(GREEN_ORANGE_RED(2.3, 2.5), "dashed")), 16, 9)
    b.add(table("Trạm đo", "Each gauge: level, change over 10 minutes, rain, battery.",
                [sql(f"""SELECT entity_id AS gauge, any(district) AS district_name,
                          argMaxIf(value, ts, metric = 'water_level') AS level_m,
                          argMaxIf(value, ts, metric = 'water_level') - argMinIf(value, ts, metric = 'water_level' AND ts >= now() - INTERVAL 10 MINUTE) AS change_10m,
                          argMaxIf(value, ts, metric = 'rainfall_1h') AS rain_mm_h, argMaxIf(value, ts, metric = 'battery') AS battery_v,
                          max(ts) AS last_seen
                        FROM events WHERE domain = 'water' AND ts >= now() - INTERVAL 1 HOUR AND {DISTRICT}
                        GROUP BY entity_id ORDER BY level_m DESC""")],
                colour_column("level_m", GREEN_ORANGE_RED(2.3, 2.5))), 8, 9)
    b.add(timeseries("Lượng mưa theo quận", "Mean 1-hour rainfall reported by the gauges of each district (mm).",
                     [sql(district_mean_series("water", "rainfall_1h"), "timeseries")], "lengthmm"), 12, 8)
    b.add(geomap("Bản đồ trạm đo", "Gauges coloured by level: orange from 2.3 m, red from 2.5 m.",
                 [sql(f"""SELECT entity_id, argMax(lat, ts) AS latitude, argMax(lon, ts) AS longitude, argMax(value, ts) AS level_m
                          FROM events WHERE domain = 'water' AND metric = 'water_level' AND ts >= now() - INTERVAL 1 HOUR AND lat IS NOT NULL AND {DISTRICT}
                          GROUP BY entity_id""")], "level_m", GREEN_ORANGE_RED(2.3, 2.5)), 12, 8)
    b.add(table("Cảnh báo ngập", "Flood alerts of the range: every state change.",
                [sql(f"""SELECT ts, rule, state, severity, district, entity_id, value, summary FROM alert_events
                         WHERE domain = 'water' AND $__timeFilter(ts) AND {DISTRICT} ORDER BY ts DESC LIMIT 200""")],
                SEVERITY_COLOURS), 24, 7)
    return b


def traffic() -> Board:
    b = Board("cityops-traffic", "Giao thông và vận tải", "Traffic counters, buses on the map, parking, camera events.",
              ["domain", "traffic"], district_variables(), "now-6h", "30s")
    b.add(geomap("Vị trí xe buýt", "Each bus's last position in the last 5 minutes, coloured by speed (km/h).",
                 [sql("""SELECT entity_id AS bus, anyLast(attr_values[indexOf(attr_keys, 'route')]) AS route,
                           argMax(lat, ts) AS latitude, argMax(lon, ts) AS longitude, argMaxIf(value, ts, metric = 'speed') AS speed_kmh,
                           argMaxIf(value, ts, metric = 'passengers') AS passengers
                         FROM events WHERE domain = 'transport' AND ts >= now() - INTERVAL 5 MINUTE AND lat IS NOT NULL
                         GROUP BY entity_id""")], "speed_kmh",
                 thresholds((None, "red"), (10, "orange"), (20, "green")), 12), 12, 12)
    b.add(timeseries("Tốc độ trung bình", "Mean speed measured by the traffic counters per district (km/h).",
                     [sql(district_mean_series("traffic", "mean_speed"), "timeseries")], "velocitykmh"), 12, 6)
    b.add(timeseries("Lưu lượng theo loại xe", "Vehicles counted per interval, city-wide, by kind.",
                     [sql(district_sum_series("traffic", ["motorbikes", "cars", "trucks", "buses"], "metric"), "timeseries")], "short", stack=True), 12, 6)
    b.add(bars("Bãi đỗ xe: chỗ trống", "Free spaces per car park (latest).",
               [sql(f"""SELECT anyLast(attr_values[indexOf(attr_keys, 'name')]) AS car_park, argMax(value, ts) AS free
                        FROM events WHERE domain = 'parking' AND metric = 'availableSpotNumber' AND ts >= now() - INTERVAL 1 HOUR AND {DISTRICT}
                        GROUP BY entity_id ORDER BY free""")],
               None, thresholds((None, "red"), (10, "orange"), (30, "green")), min_value=0), 8, 9)
    b.add(timeseries("Xe buýt: hành khách", "Passengers on board all buses (sum of each bus's latest count per interval).",
                     [sql("""SELECT time, sum(passengers) AS passengers FROM (
                               SELECT toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s) AS time, entity_id, argMax(value, ts) AS passengers
                               FROM events WHERE domain = 'transport' AND metric = 'passengers' AND $__timeFilter(ts)
                               GROUP BY time, entity_id)
                             GROUP BY time ORDER BY time""", "timeseries")], "short", interval="1m"), 8, 9)
    b.add(barchart("Sự kiện camera AI", "Camera AI detections in the range by kind and district.",
                   [sql(f"""SELECT district, countIf(text = 'congestion') AS congestion, countIf(text = 'accident') AS accident,
                              countIf(text = 'wrong_way') AS wrong_way, countIf(text = 'crowd') AS crowd
                            FROM events WHERE domain = 'safety' AND metric = 'detection' AND $__timeFilter(ts) AND {DISTRICT}
                            GROUP BY district ORDER BY district""")]), 8, 9)
    return b


def public_services() -> Board:
    b = Board("cityops-public-services", "Dịch vụ công và phản ánh", "Online public-service dossiers and citizen reports.",
              ["domain", "public-service"], district_variables(with_ward=True), "now-7d", "1m")
    b.add(stat("Hồ sơ đang xử lý", "Dossiers seen in the range whose latest status is not done.",
               [sql(f"SELECT countIf(status != 'done') AS open FROM ({DOSSIER_STATE})")], None), 6, 4)
    b.add(stat("Hồ sơ quá hạn", "Open dossiers past their due date.",
               [sql(f"SELECT countIf(days_to_due < 0 AND status != 'done') AS overdue FROM ({DOSSIER_STATE})")],
               None, thresholds((None, "green"), (1, "orange"), (20, "red"))), 6, 4)
    b.add(stat("Phản ánh chưa xử lý", "Citizen reports seen in the range not yet resolved.",
               [sql(f"""SELECT countIf(status != 'resolved') AS open FROM
                        (SELECT entity_id, argMax(text, ts) AS status FROM events
                         WHERE domain = 'citizen_report' AND metric = 'status' AND $__timeFilter(ts) AND {DISTRICT} AND {WARD} GROUP BY entity_id)""")],
               None), 6, 4)
    b.add(stat("Đúng hạn", "Share of dossiers done in the range that were done before their due date.",
               [sql(f"SELECT 100 * countIf(days_to_due >= 0) / greatest(count(), 1) AS on_time_pct FROM ({DOSSIER_STATE}) WHERE status = 'done'")],
               "percent", thresholds((None, "red"), (80, "orange"), (95, "green")), 1), 6, 4)
    b.add(barchart("Hồ sơ theo cơ quan", "Open and overdue dossiers by agency.",
                   [sql(f"""SELECT agency, countIf(status != 'done' AND days_to_due >= 0) AS open_on_time,
                              countIf(status != 'done' AND days_to_due < 0) AS overdue
                            FROM ({DOSSIER_STATE}) GROUP BY agency ORDER BY open_on_time + overdue DESC""")]), 12, 9)
    b.add(timeseries("Hồ sơ tiếp nhận", "Dossiers received per interval by district (status rollup).",
                     [sql(f"""SELECT {bucket('minute')} AS time, district, uniqMerge(entities) AS received
                              FROM events_1m_status WHERE domain = 'public_service' AND metric = 'status' AND status = 'received'
                                AND $__timeFilter(minute) AND {DISTRICT} GROUP BY time, district ORDER BY time""", "timeseries")],
                     "short", stack=True, interval="1h"), 12, 9)
    b.add(barchart("Phản ánh theo phường và trạng thái", "Citizen reports in the range by ward and latest status (top 20 wards).",
                   [sql(REPORTS_BY_WARD)]), 12, 10)
    b.add(table("Phản ánh mới nhất", "The latest citizen reports: category, channel, ward, status and what was said.",
                [sql(f"""SELECT max(ts) AS updated, entity_id AS report, any(ward) AS ward_name,
                          anyIf(attr_values[indexOf(attr_keys, 'category')], has(attr_keys, 'category')) AS category,
                          anyIf(attr_values[indexOf(attr_keys, 'channel')], has(attr_keys, 'channel')) AS channel,
                          argMaxIf(text, ts, metric = 'status') AS status, anyIf(text, metric = 'report_text') AS report_text
                        FROM events WHERE domain = 'citizen_report' AND $__timeFilter(ts) AND {DISTRICT} AND {WARD}
                        GROUP BY entity_id ORDER BY updated DESC LIMIT 100""")]), 12, 10)
    return b


def health() -> Board:
    b = Board("cityops-health", "Y tế", "Hospital beds, intensive care and emergency waiting.",
              ["domain", "health"], district_variables(), "now-24h", "1m")
    hospitals = f"""SELECT anyLast(attr_values[indexOf(attr_keys, 'hospital_name')]) AS hospital,
          argMaxIf(value, ts, metric = 'beds_occupied') AS beds_occupied, argMaxIf(value, ts, metric = 'beds_total') AS beds_total,
          100 * beds_occupied / beds_total AS occupancy_pct, argMaxIf(value, ts, metric = 'icu_occupied') AS icu_occupied,
          argMaxIf(value, ts, metric = 'er_waiting') AS er_waiting, max(ts) AS last_seen
        FROM events WHERE domain = 'health' AND ts >= now() - INTERVAL 1 HOUR AND {DISTRICT}
        GROUP BY entity_id ORDER BY occupancy_pct DESC"""
    b.add(stat("Giường bệnh đang dùng", "Occupied beds over all hospitals, share of the total (latest reports).",
               [sql(f"SELECT 100 * sum(beds_occupied) / sum(beds_total) AS occupancy_pct FROM ({hospitals})")],
               "percent", GREEN_ORANGE_RED(85, 95), 1), 8, 4)
    b.add(stat("Chờ cấp cứu", "Patients waiting in emergency rooms, all hospitals (EmergencyWaitingHigh fires over 30 at one).",
               [sql(f"SELECT sum(er_waiting) AS waiting FROM ({hospitals})")], None, GREEN_ORANGE_RED(60, 120)), 8, 4)
    b.add(stat("Hồi sức tích cực", "Intensive-care beds in use, all hospitals.",
               [sql(f"SELECT sum(icu_occupied) AS icu FROM ({hospitals})")], None), 8, 4)
    b.add(bars("Công suất giường theo bệnh viện", "Bed occupancy per hospital (latest).",
               [sql(f"SELECT hospital, occupancy_pct FROM ({hospitals})")], "percent", GREEN_ORANGE_RED(85, 95), min_value=0, max_value=100), 12, 9)
    b.add(timeseries("Chờ cấp cứu theo bệnh viện", "Patients waiting in each emergency room, with the alert bound at 30.",
                     [sql(f"""SELECT {bucket('minute')} AS time, entity_id, argMaxMerge(value_last) AS waiting
                              FROM events_1m_entity WHERE domain = 'health' AND metric = 'er_waiting' AND $__timeFilter(minute) AND {DISTRICT}
                              GROUP BY time, entity_id ORDER BY time""", "timeseries")], "short",
                     defaults=threshold_line(GREEN_ORANGE_RED(25, 30), "dashed")), 12, 9)
    b.add(table("Bệnh viện", "Each hospital's latest report.", [sql(hospitals)]), 24, 8)
    return b


def alerts() -> Board:
    b = Board("cityops-alerts", "Cảnh báo", "Active alerts and the alert history (alert_events), by rule, district and severity.",
              ["alerts"], district_variables(), "now-7d", "30s")
    b.add(table("Đang kích hoạt", "Alerts firing now, newest first.", [sql(FIRING_ALERTS)], SEVERITY_COLOURS), 24, 7)
    b.add(timeseries("Chuyển trạng thái", "Alert state changes per interval by new state.",
                     [sql(f"""SELECT {bucket('ts')} AS time, state, count() AS changes FROM alert_events
                              WHERE $__timeFilter(ts) AND {DISTRICT} GROUP BY time, state ORDER BY time""", "timeseries")],
                     "short", stack=True, interval="5m", defaults={"custom": {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal", "group": "A"}, "lineWidth": 1, "showPoints": "never"}}), 24, 7)
    b.add(bars("Theo quy tắc", "Alerts that fired in the range, per rule.",
               [sql(f"""SELECT rule, uniqExact(fingerprint) AS fired FROM alert_events
                        WHERE state = 'firing' AND $__timeFilter(ts) AND {DISTRICT} GROUP BY rule ORDER BY fired DESC""")]), 8, 8)
    b.add(bars("Theo quận", "Alerts that fired in the range, per district.",
               [sql(f"""SELECT if(district = '', '(toàn thành phố)', district) AS alert_district, uniqExact(fingerprint) AS fired FROM alert_events
                        WHERE state = 'firing' AND $__timeFilter(ts) AND {DISTRICT} GROUP BY alert_district ORDER BY fired DESC""")]), 8, 8)
    b.add(panel("piechart", "Theo mức độ", "Alerts that fired in the range, per severity.",
                [sql(f"""SELECT severity, uniqExact(fingerprint) AS fired FROM alert_events
                         WHERE state = 'firing' AND $__timeFilter(ts) AND {DISTRICT} GROUP BY severity ORDER BY severity""")],
                None, {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True}, "pieType": "donut",
                       "displayLabels": ["name", "value"], "legend": {"displayMode": "list", "placement": "right", "showLegend": True},
                       "tooltip": {"mode": "single", "sort": "none"}},
                {"color": {"mode": "palette-classic"}}), 8, 8)
    b.add(table("Lịch sử", "Every alert state change in the range, newest first.",
                [sql(f"""SELECT ts, rule, previous_state, state, severity, district, entity_id, value, summary FROM alert_events
                         WHERE $__timeFilter(ts) AND {DISTRICT} ORDER BY ts DESC LIMIT 500""")], SEVERITY_COLOURS), 24, 10)
    b.add(table("Thời gian xử lý", "Per rule, alerts that fired in the range: how many resolved, how many still fire, and how long the resolved ones fired (median and longest, minutes).",
                [sql(f"""SELECT rule, count() AS fired, countIf(is_resolved) AS resolved, countIf(NOT is_resolved) AS still_firing,
                           quantileIf(0.5)(minutes, is_resolved) AS median_minutes, maxIf(minutes, is_resolved) AS longest_minutes FROM
                           (SELECT rule, fingerprint, argMax(state, {TRANSITION_ORDER}) = 'resolved' AS is_resolved,
                              (toUInt32(max(ts)) - toUInt32(minIf(ts, state = 'firing'))) / 60 AS minutes
                            FROM alert_events WHERE $__timeFilter(ts) AND {DISTRICT} GROUP BY rule, fingerprint
                            HAVING countIf(state = 'firing') > 0)
                         GROUP BY rule ORDER BY fired DESC""")]), 24, 6)
    return b


def pipeline() -> Board:
    rate = "$__rate_interval"
    b = Board("cityops-pipeline", "Sức khỏe hệ thống",
              "cityops watching itself (Prometheus): ingest throughput, lag, spool, rejects, inserts, the alerter. Rules in deploy/prometheus/.",
              ["pipeline", "prometheus"], [], "now-1h", "10s")
    b.add(stat("Dịch vụ", "Services Prometheus reaches (up = 1).",
               [promql('sum by (service) (up{service=~"ingest|alert|sim"})', "{{service}}", instant=True)],
               None, thresholds((None, "red"), (1, "green"))), 6, 4)
    b.add(stat("Sự kiện/giây", "Events decoded per second, all feeds.",
               [promql(f"sum(rate(cityops_ingest_events_total[{rate}]))", "events/s", instant=True)], "short", decimals=1), 6, 4)
    b.add(stat("Độ trễ Kafka", "Messages behind, all topics.",
               [promql("sum(cityops_ingest_kafka_lag_messages)", "lag", instant=True)], "short", GREEN_ORANGE_RED(1000, 10000)), 6, 4)
    b.add(stat("Cảnh báo hệ thống", "cityops's own alerts firing in Prometheus (deploy/prometheus/).",
               [promql('count(ALERTS{alertstate="firing", team="platform"}) or vector(0)', "firing", instant=True)],
               None, thresholds((None, "green"), (1, "red"))), 6, 4)
    b.add(timeseries("Sự kiện theo nguồn", "Events decoded per second by feed.",
                     [promql(f"sum by (feed) (rate(cityops_ingest_events_total[{rate}]))", "{{feed}}")], "short", interval=None, stack=True), 12, 8)
    b.add(timeseries("Hàng ghi vào ClickHouse", "Rows stored per second by table.",
                     [promql(f"sum by (table) (rate(cityops_ingest_rows_inserted_total[{rate}]))", "{{table}}")], "short", interval=None), 12, 8)
    b.add(timeseries("Độ trễ consumer Kafka", "Consumer lag per topic (messages).",
                     [promql("sum by (topic) (cityops_ingest_kafka_lag_messages)", "{{topic}}")], "short", interval=None), 8, 8)
    b.add(timeseries("Spool MQTT", "Messages in the spool not yet stored, and the spool's size.",
                     [promql("sum(cityops_ingest_spool_backlog_messages)", "backlog (messages)"),
                      promql("sum(cityops_ingest_spool_bytes)", "spool bytes", ref="B")], "short", interval=None,
                     overrides=[{"matcher": {"id": "byName", "options": "spool bytes"}, "properties": [
                         {"id": "unit", "value": "bytes"}, {"id": "custom.axisPlacement", "value": "right"}]}]), 8, 8)
    b.add(timeseries("Bản tin bị từ chối", "Rejected messages per second by reason (payloads in the rejects table).",
                     [promql(f"sum by (reason) (rate(cityops_ingest_rejects_total[{rate}]))", "{{reason}}")], "short", interval=None), 8, 8)
    b.add(timeseries("Thời gian ghi (p50, p99)", "INSERT duration quantiles by table.",
                     [promql(f"histogram_quantile(0.99, sum by (le, table) (rate(cityops_ingest_insert_duration_seconds_bucket[{rate}])))", "p99 {{table}}"),
                      promql(f"histogram_quantile(0.5, sum by (le, table) (rate(cityops_ingest_insert_duration_seconds_bucket[{rate}])))", "p50 {{table}}", ref="B")],
                     "s", interval=None), 12, 8)
    b.add(timeseries("Lỗi ghi", "Failed INSERTs per second by table and what followed (retry or split).",
                     [promql(f"sum by (table, action) (rate(cityops_ingest_insert_failures_total[{rate}]))", "{{table}} {{action}}")], "short", interval=None), 12, 8)
    b.row("Bộ cảnh báo")
    b.add(timeseries("Đánh giá quy tắc", "Events the alerter evaluated per second by rule.",
                     [promql(f"sum by (rule) (rate(cityops_alert_events_evaluated_total[{rate}]))", "{{rule}}")], "short", interval=None), 8, 8)
    b.add(timeseries("Thời gian đánh giá (p99)", "Time to evaluate one batch of events or one tick.",
                     [promql(f"histogram_quantile(0.99, sum by (le) (rate(cityops_alert_evaluation_duration_seconds_bucket[{rate}])))", "p99")], "s", interval=None), 8, 8)
    b.add(timeseries("Cảnh báo đang có", "Pending and firing alerts by severity.",
                     [promql("sum by (state, severity) (cityops_alert_active_alerts)", "{{state}} {{severity}}")], "short", interval=None), 8, 8)
    b.add(timeseries("Thông báo", "Notifications sent and failed per second by receiver.",
                     [promql(f"sum by (receiver) (rate(cityops_alert_notifications_sent_total[{rate}]))", "sent {{receiver}}"),
                      promql(f"sum by (receiver) (rate(cityops_alert_notifications_failed_total[{rate}]))", "failed {{receiver}}", ref="B")],
                     "short", interval=None), 12, 8)
    b.add(timeseries("Lịch sử chờ ghi", "Alert transitions waiting for alert_events, and the alerter's sources.",
                     [promql("sum(cityops_alert_history_backlog_events)", "history backlog"),
                      promql(f"sum by (source) (rate(cityops_alert_source_messages_total[{rate}]))", "read/s {{source}}", ref="B")],
                     "short", interval=None), 12, 8)
    return b


BOARDS = {
    "city-overview.json": city_overview,
    "environment.json": environment,
    "water.json": water,
    "traffic.json": traffic,
    "public-services.json": public_services,
    "health.json": health,
    "alerts.json": alerts,
    "pipeline.json": pipeline,
}


def render() -> dict[str, str]:
    return {name: json.dumps(make().json(), ensure_ascii=False, indent=2) + "\n" for name, make in BOARDS.items()}


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"dashboards out of date: {', '.join(stale)}; run python3 dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
