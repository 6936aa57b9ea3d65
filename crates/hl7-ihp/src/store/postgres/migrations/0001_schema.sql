-- PostgreSQL schema version 1: SQLite's tables (store/sqlite/migrations/, docs/storage.md)
-- for several receivers on one database.
--
-- Message ids are not from a sequence: a committing transaction takes the feed lock
-- (pg_advisory_xact_lock, see store/postgres/writer.rs) and then counts its ids on
-- `counters`, so ids are handed out in commit order and "every message above the last id
-- seen" never skips one that commits late. Text that is ordered or compared byte-wise
-- (patient keys, the duplicate key) is COLLATE "C", whatever the database's locale.

-- Numbers handed out under the feed lock: `message_id` is the last message id given.
CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO counters (name, value) VALUES ('message_id', 0);

-- One row per patient identity, with the latest demographics and what the patient list
-- shows (kept up to date by each commit, so listing patients reads no messages).
CREATE TABLE patients (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key                 text COLLATE "C" NOT NULL UNIQUE,
    patient_id          text NOT NULL,
    assigning_authority text NOT NULL,
    identifiers         text NOT NULL,
    name                text NOT NULL,
    birth_date          text NOT NULL,
    sex                 text NOT NULL,
    created_ms          bigint NOT NULL,
    updated_ms          bigint NOT NULL,
    n_observations      bigint NOT NULL DEFAULT 0,
    last_message        bigint,
    last_received_ms    bigint
);

-- Every frame read whole, in commit order. The observations of an accepted message are one
-- JSON array (as in SQLite), the bytes `raw` as received or zstd with hl7-ihp's dictionary
-- (`raw_encoding` 1, store/sqlite/raw.rs).
CREATE TABLE messages (
    id                  bigint PRIMARY KEY,
    received_ms         bigint NOT NULL,
    peer                text NOT NULL,
    peer_identity       text,
    sending_application text,
    sending_facility    text,
    control_id          text,
    hash                bytea NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('accepted', 'error', 'rejected')),
    reason              text,
    message_type        text,
    version             text,
    location            text,
    device              text,
    patient             bigint REFERENCES patients (id),
    n_observations      integer NOT NULL,
    observations        jsonb,
    n_received          bigint NOT NULL DEFAULT 1,
    last_received_ms    bigint,
    ack_code            text,
    replay_of           bigint,
    raw_encoding        smallint,
    raw                 bytea NOT NULL
);

-- The patient index: a patient's messages, newest first (SQLite's `patient_messages`).
CREATE INDEX messages_by_patient ON messages (patient, id) WHERE patient IS NOT NULL;
-- Refused frames: the message list's errors and rejects, and a refused frame sent again.
CREATE INDEX messages_refused ON messages (hash) WHERE outcome <> 'accepted';
CREATE INDEX messages_refused_ids ON messages (id) WHERE outcome <> 'accepted';
-- "Was this message replayed, and as which?"
CREATE INDEX messages_replays ON messages (replay_of) WHERE replay_of IS NOT NULL;

-- The duplicate index: one row per accepted message stored with duplicate recognition on.
-- Unique on the key and the bytes' hash, so a retransmission is recognised by the index
-- whichever receiver stored the first copy.
CREATE TABLE message_keys (
    sending_application text COLLATE "C" NOT NULL,
    sending_facility    text COLLATE "C" NOT NULL,
    control_id          text COLLATE "C" NOT NULL,
    hash                bytea NOT NULL,
    sent_ms             bigint,
    message             bigint NOT NULL,
    PRIMARY KEY (sending_application, sending_facility, control_id, hash)
);

-- Watermarks: `export:<name>`, every message up to it is in that output's files.
CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

-- Per output and patient: the newest message the file holds and its length then.
CREATE TABLE export_files (
    exporter    text NOT NULL,
    patient_key text COLLATE "C" NOT NULL,
    through     bigint NOT NULL,
    length      bigint NOT NULL,
    PRIMARY KEY (exporter, patient_key)
);

-- Accepted patient merges (ADT^A40, A34, A47), as in SQLite's version 7.
CREATE TABLE patient_merges (
    prior_key     text COLLATE "C" PRIMARY KEY,
    survivor_key  text COLLATE "C" NOT NULL,
    message       bigint NOT NULL,
    event         text NOT NULL,
    merged_ms     bigint NOT NULL,
    n_moved       bigint NOT NULL
);
CREATE INDEX patient_merges_by_message ON patient_merges (message);
