-- Version 3: a message's observations in SQLite's compact layout, as `json`.
--
-- Versions 1 and 2 kept them as `jsonb` objects with a name per value: 2.7 KB of text per
-- vitals message that PostgreSQL parsed into its binary form on every insert, compressed
-- (TOAST), and printed back on every read of the change feed. Measured on the 2-core bench
-- machine, that was about six times the cost of storing and reading the same values as
-- one array per observation (1.3 KB, under TOAST's threshold, stored as written): the
-- difference between the writer keeping up at 64 connections and not.
--
-- Each observation is an array of fifteen values in this order (store/sqlite/encoded.rs,
-- the same bytes SQLite stores): value_type, code, code_text, code_system, sub_id, value,
-- numeric (a number or null), units, units_text, reference_range, abnormal_flags, status,
-- observed_at, observed_ms (a number), equipment; a sixteenth, the mark's name, only when
-- the value is not a measurement (crate::marks). The `observations` view below gives them
-- as columns, for SQL users.

-- (A function, because ALTER … USING takes no subquery; dropped once used.)
CREATE FUNCTION hl7ihp_compact_observations(old jsonb) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT json_agg(
        CASE WHEN o ? 'mark' AND jsonb_typeof(o -> 'mark') = 'string' THEN
            json_build_array(o ->> 'value_type', o ->> 'code', o ->> 'code_text',
                o ->> 'code_system', o ->> 'sub_id', o ->> 'value', o -> 'numeric',
                o ->> 'units', o ->> 'units_text', o ->> 'reference_range',
                o ->> 'abnormal_flags', o ->> 'status', o ->> 'observed_at',
                o -> 'observed_ms', o ->> 'equipment', o ->> 'mark')
        ELSE
            json_build_array(o ->> 'value_type', o ->> 'code', o ->> 'code_text',
                o ->> 'code_system', o ->> 'sub_id', o ->> 'value', o -> 'numeric',
                o ->> 'units', o ->> 'units_text', o ->> 'reference_range',
                o ->> 'abnormal_flags', o ->> 'status', o ->> 'observed_at',
                o -> 'observed_ms', o ->> 'equipment')
        END
        ORDER BY n)
    FROM jsonb_array_elements(old) WITH ORDINALITY AS e (o, n)
$$;
ALTER TABLE messages ALTER COLUMN observations TYPE json
    USING hl7ihp_compact_observations(observations);
DROP FUNCTION hl7ihp_compact_observations(jsonb);

-- "Was this message replayed, and as which?" read per message of the feed: by (replay_of,
-- id), so the answer is one index probe.
DROP INDEX messages_replays;
CREATE INDEX messages_replays ON messages (replay_of, id) WHERE replay_of IS NOT NULL;

-- Every observation of every accepted message as a row, as SQLite's `observations` view.
CREATE VIEW observations AS
SELECT m.id AS message, m.patient AS patient, o.n - 1 AS position,
    o.v ->> 0 AS value_type, o.v ->> 1 AS code, o.v ->> 2 AS code_text,
    o.v ->> 3 AS code_system, o.v ->> 4 AS sub_id, o.v ->> 5 AS value,
    (o.v ->> 6)::float8 AS numeric, o.v ->> 7 AS units, o.v ->> 8 AS units_text,
    o.v ->> 9 AS reference_range, o.v ->> 10 AS abnormal_flags, o.v ->> 11 AS status,
    o.v ->> 12 AS observed_at, (o.v ->> 13)::int8 AS observed_ms, o.v ->> 14 AS equipment,
    o.v ->> 15 AS mark
FROM messages m, json_array_elements(m.observations) WITH ORDINALITY AS o (v, n)
WHERE m.observations IS NOT NULL;
