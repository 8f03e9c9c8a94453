-- The normalized events: one row per measured quantity (see docs/events.md and docs/schema.md).
-- Portable: runs unchanged on ClickHouse 18.16 and 24.x-26.x.
CREATE DATABASE IF NOT EXISTS {{database}};

CREATE TABLE IF NOT EXISTS {{database}}.events
(
    event_id UUID,
    ts DateTime('UTC'),
    ts_ms UInt16,
    ingested_at DateTime('UTC'),
    feed LowCardinality(String),
    domain LowCardinality(String),
    entity_id String,
    entity_type LowCardinality(String),
    metric LowCardinality(String),
    value Nullable(Float64),
    text Nullable(String),
    unit LowCardinality(String),
    district LowCardinality(String),
    ward LowCardinality(String),
    lat Nullable(Float64),
    lon Nullable(Float64),
    attr_keys Array(String),
    attr_values Array(String),
    quality LowCardinality(String),
    source_kind LowCardinality(String),
    source_topic String,
    source_partition Int32,
    source_offset Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (domain, metric, entity_id, ts)
SETTINGS index_granularity = 8192;
