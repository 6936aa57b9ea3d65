-- Alarms: each alarm of an accepted ORU^R40 (IHE PCD-04 Report Alarm) is one row here,
-- written in its message's transaction; the message's OBX rows are not observations.
-- The patient is the message's (`messages.patient`), so a patient merge carries the
-- alarms with the messages. Text columns are kept as sent ('' when absent); `priority`,
-- `kind` and `state` are normalised (docs/storage.md, "Alarms"). Purge removes an alarm
-- with its message.
CREATE TABLE alarms (
    id INTEGER PRIMARY KEY,
    message INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    type_code TEXT NOT NULL,
    type_text TEXT NOT NULL,
    type_system TEXT NOT NULL,
    text TEXT NOT NULL,
    priority TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    inactivation TEXT NOT NULL,
    flags TEXT NOT NULL,
    measurement_code TEXT,
    measurement_text TEXT,
    measurement_value TEXT,
    measurement_numeric REAL,
    measurement_units TEXT,
    measurement_limit TEXT,
    started_at TEXT NOT NULL,
    started_ms INTEGER NOT NULL
);
CREATE INDEX alarms_message ON alarms (message);
