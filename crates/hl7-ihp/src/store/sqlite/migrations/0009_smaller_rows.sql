-- Schema version 9: smaller rows (docs/storage.md "Why it looks like this").
--
-- How each row's `raw` is stored: NULL, the bytes as received (every row written before
-- this version, and frames that compression does not shrink); 1, zstd with the dictionary
-- embedded in hl7-ihp (store/sqlite/raw.rs). A column at the end of the row, as ack_code:
-- existing rows are not rewritten, they read as they are.
ALTER TABLE messages ADD COLUMN raw_encoding INTEGER;
