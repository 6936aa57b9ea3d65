-- PostgreSQL schema version 4: leases (docs/storage.md, "Leases"), PostgreSQL only.
--
-- A lease is held by the receiver that holds its session-level advisory lock (on a
-- connection of its own); this table keeps each lease's fencing number, incremented by the
-- holder right after it took the lock, so a write that carries an older number (from a
-- receiver that lost the lease without noticing yet) is refused in its own transaction.
-- `holder` (host and pid) and `acquired_ms` are for people: who took it last, and when.
CREATE TABLE leases (
    name        text COLLATE "C" PRIMARY KEY,
    fence       bigint NOT NULL,
    holder      text NOT NULL,
    acquired_ms bigint NOT NULL
);
