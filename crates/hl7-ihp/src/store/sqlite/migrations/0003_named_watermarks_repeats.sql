-- Schema version 3.
-- Exporters' watermarks are named, so that several outputs (the JSON files, later NDJSON
-- streams) each keep their own progress in `meta`.
UPDATE meta SET name = 'export:json' WHERE name = 'export_watermark';
-- A rejected frame that arrives again byte for byte (junk, a device stuck resending the
-- same bad message) is kept once: its row counts the copies and the time of the last one,
-- instead of one row per copy.
ALTER TABLE messages ADD COLUMN n_received INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN last_received_ms INTEGER;
