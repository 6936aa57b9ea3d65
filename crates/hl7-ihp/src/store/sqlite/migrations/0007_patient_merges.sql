-- Schema version 7: patient merges (ADT^A40, A34, A47; docs/storage.md, "Patient merges").
--
-- One row per merge the receiver made: the prior patient's key (MRG-1), the surviving
-- patient's key (PID-3) and the message that asked for it. The prior patient's `patients`
-- row is gone: their messages now name the survivor (`messages.patient` and
-- `patient_messages` re-pointed in the same transaction as the message). A message that
-- later arrives under the prior key joins the survivor through this table.
CREATE TABLE patient_merges (
    id           INTEGER PRIMARY KEY,
    prior_key    TEXT NOT NULL,
    survivor_key TEXT NOT NULL,
    message      INTEGER NOT NULL REFERENCES messages(id),
    event        TEXT NOT NULL,
    merged_ms    INTEGER NOT NULL,
    -- How many messages of the prior patient moved to the survivor.
    n_messages   INTEGER NOT NULL
);

-- A prior key is merged at most once (a merge of a prior patient already merged away is
-- refused), so this is also the lookup for later messages under it.
CREATE UNIQUE INDEX patient_merges_by_prior ON patient_merges (prior_key);
-- The message list and the feed show a message's merge.
CREATE INDEX patient_merges_by_message ON patient_merges (message);
