-- Schema version 6: the TLS client certificate's identity (subject and SANs) of the
-- connection each message came on, NULL for plain TCP and for messages stored before.
ALTER TABLE messages ADD COLUMN peer_identity TEXT;
