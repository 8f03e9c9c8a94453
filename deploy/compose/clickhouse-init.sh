#!/bin/bash
# First start of the trial's ClickHouse (run by the image from /docker-entrypoint-initdb.d/):
# the read-only users of the dashboards and of the alerter's SQL rules (docs/schema.md, "Users").
# The schema itself is applied by the `migrate` service.
set -euo pipefail
# A password as a SQL string literal: backslashes and quotes escaped.
literal() { local v=${1//\\/\\\\}; printf "'%s'" "${v//\'/\\\'}"; }
dashboard=$(literal "$CITYOPS_DASHBOARD_PASSWORD")
alert_query=$(literal "$CITYOPS_ALERT_QUERY_PASSWORD")
clickhouse client --user default --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE DATABASE IF NOT EXISTS cityops;
CREATE SETTINGS PROFILE IF NOT EXISTS cityops_dashboard_limits SETTINGS
    readonly = 1, max_execution_time = 30, max_memory_usage = 1000000000,
    max_rows_to_read = 500000000, max_result_rows = 100000, result_overflow_mode = 'throw',
    distributed_product_mode = 'global';
CREATE USER IF NOT EXISTS cityops_dashboard IDENTIFIED WITH sha256_password BY $dashboard
    SETTINGS PROFILE cityops_dashboard_limits;
GRANT SELECT ON cityops.* TO cityops_dashboard;
CREATE SETTINGS PROFILE IF NOT EXISTS cityops_alert_query_limits SETTINGS
    readonly = 2, max_execution_time = 60, max_memory_usage = 1000000000,
    max_rows_to_read = 1000000000, max_result_rows = 100000, result_overflow_mode = 'throw';
CREATE USER IF NOT EXISTS cityops_alert_query IDENTIFIED WITH sha256_password BY $alert_query
    SETTINGS PROFILE cityops_alert_query_limits;
GRANT SELECT ON cityops.* TO cityops_alert_query;
SQL
