-- Schema version 1: messages, patients, observations and the exporter's progress.
--
-- Written for a cheap ACK path (DESIGN.md §6): `messages` and `observations` are append-only
-- tables keyed by INTEGER PRIMARY KEY, so a batch fills a few new pages at their ends. Only
-- two secondary indexes are maintained per message, each with one small entry: a message's
-- patient (the time series) and its duplicate key. Observations have no index of their own:
-- a message records the range of observation ids it owns.
-- Foreign keys are declared for the reader but not enforced: enforcing them costs a lookup
-- per row on the ACK path and the single writer keeps them true.

-- One row per patient identity (PatientData.key).
CREATE TABLE patients (
    id                  INTEGER PRIMARY KEY,
    key                 TEXT NOT NULL UNIQUE,
    patient_id          TEXT NOT NULL,
    assigning_authority TEXT NOT NULL,
    identifiers         TEXT NOT NULL,
    name                TEXT NOT NULL,
    birth_date          TEXT NOT NULL,
    sex                 TEXT NOT NULL,
    created_ms          INTEGER NOT NULL,
    updated_ms          INTEGER NOT NULL
);

-- Every frame read whole, in commit order; `raw` last so that reading the other columns
-- never walks a long message's overflow pages.
CREATE TABLE messages (
    id                  INTEGER PRIMARY KEY,
    received_ms         INTEGER NOT NULL,
    peer                TEXT NOT NULL,
    -- MSH-3, MSH-4 and MSH-10 as sent; NULL when MSH could not be read.
    sending_application TEXT,
    sending_facility    TEXT,
    control_id          TEXT,
    -- SHA-256 of raw.
    hash                BLOB NOT NULL,
    -- Spelled with OR: an IN list here would build a temporary table on every insert.
    outcome             TEXT NOT NULL
                        CHECK (outcome = 'accepted' OR outcome = 'error' OR outcome = 'rejected'),
    reason              TEXT,
    -- MSH-9.1^MSH-9.2, MSH-12 and PV1-3, when the content was extracted.
    message_type        TEXT,
    version             TEXT,
    location            TEXT,
    -- The sending device (MSH-3) of an accepted message: the owner of its observations
    -- when it names no patient.
    device              TEXT,
    patient             INTEGER REFERENCES patients(id),
    -- The message's observations are rows first_observation .. first_observation +
    -- n_observations - 1 of `observations`.
    first_observation   INTEGER NOT NULL,
    n_observations      INTEGER NOT NULL,
    -- Accepted messages only: the first 8 bytes of SHA-256 over the key, and of `hash`, as
    -- integers. A compact duplicate key; a match is confirmed against the full values.
    key_hash            INTEGER,
    hash_prefix         INTEGER,
    raw                 BLOB NOT NULL
);

-- A patient's messages in arrival order; n_observations makes counting a patient's
-- observations an index-only scan.
CREATE INDEX messages_by_patient ON messages (patient, id, n_observations)
    WHERE patient IS NOT NULL;

-- The duplicate check (DESIGN.md §5).
CREATE INDEX messages_by_key ON messages (key_hash, hash_prefix)
    WHERE key_hash IS NOT NULL;

-- Messages without a patient, by device: their time series (IHE PCD-01 allows no PID).
CREATE INDEX messages_by_device ON messages (device)
    WHERE patient IS NULL AND device IS NOT NULL;

-- One row per OBX of an accepted message.
CREATE TABLE observations (
    id              INTEGER PRIMARY KEY,
    message         INTEGER NOT NULL REFERENCES messages(id),
    patient         INTEGER REFERENCES patients(id),
    position        INTEGER NOT NULL,
    value_type      TEXT NOT NULL,
    code            TEXT NOT NULL,
    code_text       TEXT NOT NULL,
    code_system     TEXT NOT NULL,
    sub_id          TEXT NOT NULL,
    value           TEXT NOT NULL,
    numeric         REAL,
    units           TEXT NOT NULL,
    units_text      TEXT NOT NULL,
    reference_range TEXT NOT NULL,
    abnormal_flags  TEXT NOT NULL,
    status          TEXT NOT NULL,
    observed_at     TEXT NOT NULL,
    observed_ms     INTEGER NOT NULL,
    equipment       TEXT NOT NULL
);

-- Small named values: the exporter's watermark.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
