-- Schema version 3: exporters' watermarks are named, so that several outputs (the JSON
-- files, later NDJSON streams) each keep their own progress in `meta`.
UPDATE meta SET name = 'export:json' WHERE name = 'export_watermark';
