-- PostgreSQL schema version 2: SQLite's versions 10 and 11 (store/sqlite/migrations/
-- 0010_device_key.sql, 0011_alarms.sql; docs/storage.md).

-- The device of an accepted message without a patient: the first OBX-18.1, else MSH-3,
-- else an alarm's source (crate::unassigned::message_device_key). NULL for every other
-- row, and for the rows written before this version.
ALTER TABLE messages ADD COLUMN device_key text COLLATE "C";

-- A device's messages, newest first; partial, so it costs nothing for patients' messages.
CREATE INDEX messages_by_device_key ON messages (device_key, id)
    WHERE device_key IS NOT NULL;

-- Alarms: each alarm of an accepted ORU^R40 is one row, written in its message's
-- transaction (under the feed lock, so ids are handed out in commit order). The patient
-- is the message's (`messages.patient`). Text columns are kept as sent ('' when absent);
-- `priority`, `kind` and `state` are normalised. Purge removes an alarm with its message.
CREATE TABLE alarms (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message             bigint NOT NULL,
    idx                 integer NOT NULL,
    source              text NOT NULL,
    type_code           text NOT NULL,
    type_text           text NOT NULL,
    type_system         text NOT NULL,
    text                text NOT NULL,
    priority            text NOT NULL,
    kind                text NOT NULL,
    state               text NOT NULL,
    phase               text NOT NULL,
    inactivation        text NOT NULL,
    flags               text NOT NULL,
    measurement_code    text,
    measurement_text    text,
    measurement_value   text,
    measurement_numeric double precision,
    measurement_units   text,
    measurement_limit   text,
    started_at          text NOT NULL,
    started_ms          bigint NOT NULL
);
CREATE INDEX alarms_message ON alarms (message);
