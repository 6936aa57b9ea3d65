-- Schema version 4: what the message browser and the live view read.
--
-- The ACK code each message was answered with when stored (AA, AE, AR, CA, CE, CR; NULL
-- when the sender asked for none, and for the messages stored before this version). Added
-- at the end of the row like n_received: rewriting the table to put it before `raw` would
-- cost a large database's whole size at start, and a vitals message's row fits its page.
ALTER TABLE messages ADD COLUMN ack_code TEXT;

-- The refused frames (errors and rejects), newest first: listing them reads these entries
-- however many accepted messages there are. Partial, so an accepted message adds nothing to
-- it and the ACK path writes no page of it.
CREATE INDEX messages_refused ON messages (id) WHERE outcome <> 'accepted';
