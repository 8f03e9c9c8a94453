-- Per-minute rollups for the wall dashboards, fed by materialized views. Each view's SELECT
-- produces exactly its target's column types: on 18.16 a mismatch makes every insert into
-- events fail.

-- One entity's numeric series per minute (alert queries, entity drill-down panels).
CREATE TABLE IF NOT EXISTS {{database}}.events_1m_entity
(
    minute DateTime('UTC'),
    domain LowCardinality(String),
    metric LowCardinality(String),
    entity_id String,
    district LowCardinality(String),
    samples AggregateFunction(count),
    value_sum AggregateFunction(sum, Float64),
    value_min AggregateFunction(min, Float64),
    value_max AggregateFunction(max, Float64),
    value_last AggregateFunction(argMax, Float64, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (domain, metric, entity_id, minute, district);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{database}}.events_1m_entity_mv
TO {{database}}.events_1m_entity
AS SELECT
    toStartOfMinute(ts) AS minute,
    domain,
    metric,
    entity_id,
    district,
    countState() AS samples,
    sumState(assumeNotNull(value)) AS value_sum,
    minState(assumeNotNull(value)) AS value_min,
    maxState(assumeNotNull(value)) AS value_max,
    argMaxState(assumeNotNull(value), ts) AS value_last
FROM {{database}}.events
WHERE isNotNull(value)
GROUP BY minute, domain, metric, entity_id, district;

-- Each district's numeric metrics per minute (wall panels by domain and district).
CREATE TABLE IF NOT EXISTS {{database}}.events_1m_district
(
    minute DateTime('UTC'),
    domain LowCardinality(String),
    district LowCardinality(String),
    metric LowCardinality(String),
    samples AggregateFunction(count),
    entities AggregateFunction(uniq, String),
    value_sum AggregateFunction(sum, Float64),
    value_min AggregateFunction(min, Float64),
    value_max AggregateFunction(max, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (domain, district, metric, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{database}}.events_1m_district_mv
TO {{database}}.events_1m_district
AS SELECT
    toStartOfMinute(ts) AS minute,
    domain,
    district,
    metric,
    countState() AS samples,
    uniqState(entity_id) AS entities,
    sumState(assumeNotNull(value)) AS value_sum,
    minState(assumeNotNull(value)) AS value_min,
    maxState(assumeNotNull(value)) AS value_max
FROM {{database}}.events
WHERE isNotNull(value)
GROUP BY minute, domain, district, metric;

-- Counts of short text values (statuses, categories) per district and minute: citizen reports
-- by status, dossiers overdue, lights with a fault.
CREATE TABLE IF NOT EXISTS {{database}}.events_1m_status
(
    minute DateTime('UTC'),
    domain LowCardinality(String),
    district LowCardinality(String),
    metric LowCardinality(String),
    status String,
    samples AggregateFunction(count),
    entities AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (domain, district, metric, status, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {{database}}.events_1m_status_mv
TO {{database}}.events_1m_status
AS SELECT
    toStartOfMinute(ts) AS minute,
    domain,
    district,
    metric,
    assumeNotNull(text) AS status,
    countState() AS samples,
    uniqState(entity_id) AS entities
FROM {{database}}.events
WHERE isNotNull(text) AND length(assumeNotNull(text)) <= 64
GROUP BY minute, domain, district, metric, status;
