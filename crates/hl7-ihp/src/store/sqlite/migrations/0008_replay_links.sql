-- Replay links: a message stored by `hl7-ihp replay` names the stored message whose bytes
-- it replayed (NULL for everything a device sent). The partial index holds only replays,
-- so that "was this message replayed, and as which?" is one probe and costs a device's
-- messages nothing.
ALTER TABLE messages ADD COLUMN replay_of INTEGER;
CREATE INDEX messages_replays ON messages (replay_of) WHERE replay_of IS NOT NULL;
