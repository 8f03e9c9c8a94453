-- What people and replicas do with alerts, in the same history as the state changes:
-- acknowledged, unacknowledged, commented and escalated rows carry who (actor), what they
-- wrote (comment) and the escalation level; every row says which alerter replica wrote it.
-- One ALTER: 18.16 has no ADD COLUMN IF NOT EXISTS, and schema_migrations runs this once.
ALTER TABLE {{database}}.alert_events
    ADD COLUMN actor String DEFAULT '',
    ADD COLUMN comment String DEFAULT '',
    ADD COLUMN escalation UInt8 DEFAULT 0,
    ADD COLUMN replica LowCardinality(String) DEFAULT '';
