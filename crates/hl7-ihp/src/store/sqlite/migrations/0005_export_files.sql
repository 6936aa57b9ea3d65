-- Schema version 5: each patient file's progress, per exporter (docs/patient-files.md).
--
-- `through` is the newest message whose records the file holds; `length` is the file's
-- size in bytes when the exporter last recorded it (the NDJSON stream appends, so after a
-- crash the bytes beyond it are checked against the records they should be, and a torn
-- last line is cut). Written in the same transaction as the exporter's watermark in
-- `meta`, so the two always agree. Keyed by the patient's identity key, as the files are.
CREATE TABLE export_files (
    exporter TEXT NOT NULL,
    patient TEXT NOT NULL,
    through INTEGER NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (exporter, patient)
) WITHOUT ROWID;
