-- Schema version 10: the device of a message without a patient (docs/storage.md).
--
-- An accepted message whose PID-3 is empty or absent belongs to no patient; it is kept
-- under its device: the first OBX-18.1 (the equipment id, an EUI-64 in IHE PCD-01), else
-- MSH-3 (crate::unassigned::device_key). NULL for every other row, and for the rows
-- written before this version (their device files start with the messages after it). A
-- column at the end of the row, as raw_encoding: existing rows are not rewritten.
ALTER TABLE messages ADD COLUMN device_key TEXT;

-- A device's messages, newest first: what `device_<id>.json` is rebuilt from. Partial, so
-- it costs nothing for the messages of patients.
CREATE INDEX messages_by_device_key ON messages (device_key, id)
    WHERE device_key IS NOT NULL;
