-- Payloads that did not become events, with their raw bytes, reason and source coordinates.
-- Nothing is dropped without a row here.
CREATE TABLE IF NOT EXISTS {{database}}.rejects
(
    reject_id UUID,
    received_at DateTime('UTC'),
    received_ms UInt16,
    feed LowCardinality(String),
    reason LowCardinality(String),
    message String,
    raw String,
    raw_len UInt32,
    raw_truncated UInt8,
    source_kind LowCardinality(String),
    source_topic String,
    source_partition Int32,
    source_offset Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (feed, reason, received_at)
SETTINGS index_granularity = 8192;
