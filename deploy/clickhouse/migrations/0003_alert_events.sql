-- Every alert state change (pending, firing, resolved, ...), kept as history for on-call staff
-- and for scoring alert quality. Written by the alerting service.
CREATE TABLE IF NOT EXISTS {{database}}.alert_events
(
    alert_event_id UUID,
    ts DateTime('UTC'),
    ts_ms UInt16,
    rule LowCardinality(String),
    fingerprint String,
    state LowCardinality(String),
    previous_state LowCardinality(String),
    severity LowCardinality(String),
    domain LowCardinality(String),
    entity_id String,
    district LowCardinality(String),
    value Nullable(Float64),
    summary String,
    label_keys Array(String),
    label_values Array(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule, fingerprint, ts)
SETTINGS index_granularity = 8192;
