-- requires: 21.8
-- Modern-only storage features: column codecs and a skip index for one-entity lookups. Applied
-- only on servers that support them (not on 18.16); `cityops migrate` applies it as soon as the
-- server is upgraded.
ALTER TABLE {{database}}.events MODIFY COLUMN ts DateTime('UTC') CODEC(DoubleDelta, LZ4);
ALTER TABLE {{database}}.events MODIFY COLUMN ingested_at DateTime('UTC') CODEC(DoubleDelta, LZ4);
ALTER TABLE {{database}}.events MODIFY COLUMN value Nullable(Float64) CODEC(Gorilla, LZ4);
ALTER TABLE {{database}}.events MODIFY COLUMN source_offset Int64 CODEC(Delta, LZ4);
ALTER TABLE {{database}}.events ADD INDEX IF NOT EXISTS idx_entity_id entity_id TYPE bloom_filter(0.01) GRANULARITY 4;
ALTER TABLE {{database}}.rejects MODIFY COLUMN raw String CODEC(ZSTD(3));
