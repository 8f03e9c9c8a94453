-- One row per alert episode (from the moment an alert fired to its resolve), for response-time
-- and noise analysis: when it fired, was acknowledged (by whom) and resolved, the highest
-- escalation level, the comments, and which replicas wrote its history.
--
-- Written without window functions or joins so that it runs on 18.16 and on current servers:
-- each alert's rows are gathered into sorted arrays and every firing is matched to the first
-- acknowledgement and resolve after it. Two replicas write their own rows of the same episode,
-- a few milliseconds apart for wall-clock rules: an episode is identified by its first resolve,
-- so both replicas' firings of it become one row (with the earliest firing time).
-- resolved_ms and acknowledged_ms are 0 when it has not happened (yet).
CREATE VIEW IF NOT EXISTS {{database}}.alert_episodes AS
SELECT
    rule,
    fingerprint,
    any(severity_of) AS severity,
    any(domain_of) AS domain,
    any(district_of) AS district,
    any(entity_of) AS entity_id,
    toDateTime(intDiv(min(fired), 1000), 'UTC') AS fired_at,
    min(fired) AS fired_ms,
    resolved AS resolved_ms,
    minIf(acknowledged, acknowledged > 0) AS acknowledged_ms,
    argMinIf(acknowledged_by_of, acknowledged, acknowledged > 0) AS acknowledged_by,
    if(acknowledged_ms > 0, toNullable((acknowledged_ms - min(fired)) / 1000), NULL) AS seconds_to_acknowledge,
    if(resolved > 0, toNullable((resolved - min(fired)) / 1000), NULL) AS seconds_to_resolve,
    max(escalation_of) AS escalation,
    max(comments_of) AS comments,
    groupUniqArrayArray(replicas_of) AS replicas
FROM
(
    SELECT
        rule,
        fingerprint,
        severity_of,
        domain_of,
        district_of,
        entity_of,
        replicas_of,
        fired,
        arrayFirst(m -> m >= fired, resolves) AS resolved,
        arrayFirstIndex(m -> m >= fired AND (resolved = 0 OR m <= resolved), acks) AS ack_index,
        if(ack_index > 0, acks[ack_index], toUInt64(0)) AS acknowledged,
        if(ack_index > 0, ack_actors[ack_index], '') AS acknowledged_by_of,
        arrayReduce('max', arrayFilter((level, m) -> m >= fired AND (resolved = 0 OR m <= resolved), escalation_levels, escalations)) AS escalation_of,
        length(arrayFilter(m -> m >= fired AND (resolved = 0 OR m <= resolved), comment_times)) AS comments_of
    FROM
    (
        SELECT
            toString(rule) AS rule,
            fingerprint,
            toString(any(severity)) AS severity_of,
            toString(any(domain)) AS domain_of,
            toString(any(district)) AS district_of,
            any(entity_id) AS entity_of,
            groupUniqArray(toString(replica)) AS replicas_of,
            arraySort(groupUniqArrayIf(toUInt64(ts) * 1000 + ts_ms, state = 'firing' AND previous_state != 'firing')) AS firings,
            arraySort(groupArrayIf(toUInt64(ts) * 1000 + ts_ms, state = 'resolved')) AS resolves,
            arraySort(groupArrayIf(toUInt64(ts) * 1000 + ts_ms, state = 'acknowledged')) AS acks,
            arrayMap(p -> p.2, arraySort(groupArrayIf((toUInt64(ts) * 1000 + ts_ms, actor), state = 'acknowledged'))) AS ack_actors,
            groupArrayIf(toUInt64(ts) * 1000 + ts_ms, state = 'escalated') AS escalations,
            groupArrayIf(escalation, state = 'escalated') AS escalation_levels,
            groupArrayIf(toUInt64(ts) * 1000 + ts_ms, state = 'commented') AS comment_times
        FROM {{database}}.alert_events
        GROUP BY rule, fingerprint
    )
    ARRAY JOIN firings AS fired
)
GROUP BY rule, fingerprint, resolved;
