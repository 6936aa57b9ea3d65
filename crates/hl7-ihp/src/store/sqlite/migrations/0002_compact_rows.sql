-- Schema version 2: fewer rows and fewer random page writes per message (DESIGN.md §6).
--
-- Measured under load (64 connections, 1,000 patients, 7 OBX per message), version 1's
-- writer spent about 27 µs per message, most of it on its eight rows per message and two
-- index entries landing on random pages:
-- - the patient index becomes a table the writer fills a patient's bunch at a time;
-- - a message's observations become one JSON column of the message (an array of arrays,
--   one per OBX in order); the `observations` view below still gives one row per OBX;
-- - the duplicate keys go to a table filed under the message's own time (MSH-7) first. A
--   retransmission has the same bytes, so the same MSH-7, and is still found however old
--   it is. `sent_ms` of the messages stored before this version is filled in by the
--   program right after this script (it parses their MSH-7).

CREATE TABLE messages_v2 (
    id                  INTEGER PRIMARY KEY,
    received_ms         INTEGER NOT NULL,
    peer                TEXT NOT NULL,
    sending_application TEXT,
    sending_facility    TEXT,
    control_id          TEXT,
    hash                BLOB NOT NULL,
    outcome             TEXT NOT NULL
                        CHECK (outcome = 'accepted' OR outcome = 'error' OR outcome = 'rejected'),
    reason              TEXT,
    message_type        TEXT,
    version             TEXT,
    location            TEXT,
    device              TEXT,
    patient             INTEGER REFERENCES patients(id),
    n_observations      INTEGER NOT NULL,
    -- Accepted messages only: MSH-7 as milliseconds since the Unix epoch (a time without
    -- an offset read as UTC; NULL when MSH-7 is empty or not a time), and the first 8 bytes
    -- of SHA-256 over the key and of `hash` as integers: the duplicate key. A match is
    -- confirmed against the full values.
    sent_ms             INTEGER,
    key_hash            INTEGER,
    hash_prefix         INTEGER,
    -- Accepted messages with OBX only: one array per OBX, in order, of value_type, code,
    -- code_text, code_system, sub_id, value, numeric, units, units_text, reference_range,
    -- abnormal_flags, status, observed_at, observed_ms, equipment.
    observations        TEXT,
    raw                 BLOB NOT NULL
);

INSERT INTO messages_v2 (id, received_ms, peer, sending_application, sending_facility,
    control_id, hash, outcome, reason, message_type, version, location, device, patient,
    n_observations, sent_ms, key_hash, hash_prefix, observations, raw)
SELECT m.id, m.received_ms, m.peer, m.sending_application, m.sending_facility,
    m.control_id, m.hash, m.outcome, m.reason, m.message_type, m.version, m.location,
    m.device, m.patient, m.n_observations, NULL, m.key_hash, m.hash_prefix,
    CASE WHEN m.n_observations > 0 THEN (
        SELECT json_group_array(json_array(o.value_type, o.code, o.code_text, o.code_system,
            o.sub_id, o.value, o.numeric, o.units, o.units_text, o.reference_range,
            o.abnormal_flags, o.status, o.observed_at, o.observed_ms, o.equipment)
            ORDER BY o.id)
        FROM observations o
        WHERE o.id BETWEEN m.first_observation
                       AND m.first_observation + m.n_observations - 1)
    END,
    m.raw
FROM messages m ORDER BY m.id;

DROP TABLE observations;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;

-- A patient's messages in arrival order, filled by the writer in bunches per patient (see
-- store/tail.rs): the messages after `patient_index_through` in `meta` may not be here
-- yet. n_observations makes counting a patient's observations an index-only scan.
CREATE TABLE patient_messages (
    patient         INTEGER NOT NULL REFERENCES patients(id),
    message         INTEGER NOT NULL REFERENCES messages(id),
    n_observations  INTEGER NOT NULL,
    PRIMARY KEY (patient, message)
) WITHOUT ROWID;

INSERT INTO patient_messages (patient, message, n_observations)
SELECT patient, id, n_observations FROM messages WHERE patient IS NOT NULL
ORDER BY patient, id;

INSERT INTO meta (name, value)
VALUES ('patient_index_through', (SELECT coalesce(max(id), 0) FROM messages));

-- The duplicate check (DESIGN.md §5): accepted messages' keys, filed by time first
-- (`sent_ms`, -2^63 when MSH-7 is not a time). The writer adds a second's keys together
-- once that second is past, in order, so they fill new pages at the end instead of one
-- random page each; the keys after `key_index_through` may not be here yet. Filled for the
-- messages stored before this version by the program, after `sent_ms`.
CREATE TABLE message_keys (
    sent_ms     INTEGER NOT NULL,
    key_hash    INTEGER NOT NULL,
    hash_prefix INTEGER NOT NULL,
    message     INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (sent_ms, key_hash, hash_prefix, message)
) WITHOUT ROWID;

INSERT INTO meta (name, value)
VALUES ('key_index_through', (SELECT coalesce(max(id), 0) FROM messages));

-- Messages without a patient, by device: their time series (IHE PCD-01 allows no PID).
CREATE INDEX messages_by_device ON messages (device)
    WHERE patient IS NULL AND device IS NOT NULL;

-- One row per OBX of an accepted message, as version 1 stored them (without their own
-- ids: a message and a position name an observation).
CREATE VIEW observations AS
SELECT m.id AS message, m.patient AS patient, o.key AS position,
    o.value ->> 0 AS value_type, o.value ->> 1 AS code, o.value ->> 2 AS code_text,
    o.value ->> 3 AS code_system, o.value ->> 4 AS sub_id, o.value ->> 5 AS value,
    o.value ->> 6 AS numeric, o.value ->> 7 AS units, o.value ->> 8 AS units_text,
    o.value ->> 9 AS reference_range, o.value ->> 10 AS abnormal_flags,
    o.value ->> 11 AS status, o.value ->> 12 AS observed_at, o.value ->> 13 AS observed_ms,
    o.value ->> 14 AS equipment
FROM messages m, json_each(m.observations) o
WHERE m.observations IS NOT NULL;
