//! The duplicate index: keys of new messages wait in the writer until their MSH-7 second
//! is past, then go into `message_keys` in order; lookups see both (docs/acks.md).

use super::*;

/// Duplicate keys of stored messages not yet in `message_keys`: (sent_ms or [`NO_TIME`],
/// key hash, hash prefix, message id), in the table's order. Only the writer looks keys up.
#[derive(Default)]
pub(super) struct PendingKeys {
    pub(super) keys: BTreeSet<(i64, i64, i64, i64)>,
    /// The same keys in the order they were added (message ids grow), with when, and keys
    /// already moved until they reach the front: the lowest waiting id without a walk of
    /// `keys`, and the keys that waited too long.
    pub(super) order: VecDeque<((i64, i64, i64, i64), Instant)>,
    /// The latest `sent_ms` seen.
    pub(super) latest: i64,
    /// The highest message id this writer loaded or stored.
    pub(super) known: i64,
}

impl PendingKeys {
    /// The keys after `key_index_through`: stored, but perhaps not yet in the table.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<PendingKeys> {
        let through = meta_value(conn, KEY_INDEX_THROUGH)?;
        let mut pending = PendingKeys {
            keys: BTreeSet::new(),
            order: VecDeque::new(),
            latest: NO_TIME,
            known: conn.query_row(SELECT_NEXT_ID, [], |row| row.get::<_, i64>(0))? - 1,
        };
        let mut statement = conn.prepare(
            "SELECT id, sent_ms, key_hash, hash_prefix FROM messages \
             WHERE id > ?1 AND key_hash IS NOT NULL ORDER BY id",
        )?;
        let mut rows = statement.query([through])?;
        while let Some(row) = rows.next()? {
            let sent = row.get::<_, Option<i64>>(1)?.unwrap_or(NO_TIME);
            pending.add(
                (sent, row.get(2)?, row.get(3)?, row.get(0)?),
                Instant::now(),
            );
        }
        Ok(pending)
    }

    /// Adds a stored message's key; ids only grow.
    pub(super) fn add(
        &mut self,
        (sent, key_hash, hash_prefix, message): (i64, i64, i64, i64),
        now: Instant,
    ) {
        let key = (sent, key_hash, hash_prefix, message);
        self.keys.insert(key);
        self.order.push_back((key, now));
        self.latest = self.latest.max(sent);
        self.known = self.known.max(message);
    }

    /// Ids of the waiting messages with this key.
    pub(super) fn candidates(&self, sent: i64, key_hash: i64, hash_prefix: i64) -> Vec<i64> {
        self.keys
            .range(
                (sent, key_hash, hash_prefix, i64::MIN)..=(sent, key_hash, hash_prefix, i64::MAX),
            )
            .map(|key| key.3)
            .collect()
    }

    /// Takes the keys that are due to move (all of them when `all`), in the table's order:
    /// those without a time, those whose second is [`KEY_SETTLE_MS`] older than the newest,
    /// the earliest beyond [`MAX_PENDING_KEYS`], and those that waited [`KEY_MAX_WAIT`].
    pub(super) fn take_settled(&mut self, all: bool, now: Instant) -> Vec<(i64, i64, i64, i64)> {
        let before = self.latest.saturating_sub(KEY_SETTLE_MS);
        let mut settled = Vec::new();
        while let Some(&first) = self.keys.first() {
            let due =
                all || first.0 == NO_TIME || first.0 < before || self.keys.len() > MAX_PENDING_KEYS;
            if !due {
                break;
            }
            settled.push(first);
            self.keys.pop_first();
        }
        while let Some(&(key, added)) = self.order.front() {
            if now.duration_since(added) < KEY_MAX_WAIT {
                break;
            }
            self.order.pop_front();
            if self.keys.remove(&key) {
                settled.push(key);
            }
        }
        settled.sort_unstable();
        settled
    }

    /// The lowest message id waiting.
    pub(super) fn first_message(&mut self) -> Option<i64> {
        while let Some((key, _)) = self.order.front() {
            if self.keys.contains(key) {
                return Some(key.3);
            }
            self.order.pop_front();
        }
        None
    }
}

/// The key hashes of the last [`RECENT_KEYS`] accepted messages stored, with how often
/// each occurs among them.
#[derive(Default)]
pub(super) struct RecentKeys {
    pub(super) counts: HashMap<i64, u32>,
    pub(super) order: VecDeque<i64>,
}

impl RecentKeys {
    /// Notes a stored message's key; true when a recent message had the same key (the
    /// 64-bit hash: two different keys agree on it about once in 10^14 pairs).
    pub(super) fn note(&mut self, key_hash: i64) -> bool {
        let count = self.counts.entry(key_hash).or_insert(0);
        let known = *count > 0;
        *count += 1;
        self.order.push_back(key_hash);
        if self.order.len() > RECENT_KEYS
            && let Some(old) = self.order.pop_front()
            && let Some(count) = self.counts.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&old);
            }
        }
        known
    }
}

/// The first accepted message with this key and these bytes, among the keys waiting in
/// memory and those in `message_keys`. Its MSH-7 is this one's (the bytes are), so the
/// lookup is filed there.
pub(super) fn find_duplicate(
    statements: &mut Statements<'_>,
    pending: Option<&PendingKeys>,
    (sent, key_hash, hash_prefix): (i64, i64, i64),
    key: &MessageKey,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<i64>> {
    let mut candidates =
        pending.map_or_else(Vec::new, |p| p.candidates(sent, key_hash, hash_prefix));
    let mut rows = statements
        .find_key
        .query(params![sent, key_hash, hash_prefix])?;
    while let Some(row) = rows.next()? {
        candidates.push(row.get(0)?);
    }
    candidates.sort_unstable();
    candidates.dedup();
    for id in candidates {
        let mut rows = statements.message_key.query([id])?;
        let Some(row) = rows.next()? else {
            continue;
        };
        // Anything else is another message with the same 64-bit hashes.
        if row.get_ref(0)?.as_blob()? == hash
            && row.get_ref(1)?.as_str()? == key.sending_application
            && row.get_ref(2)?.as_str()? == key.sending_facility
            && row.get_ref(3)?.as_str()? == key.control_id
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Moves the keys that settled into `message_keys`, in order, and now and then records
/// how far the table is complete (for the next start's load).
pub(super) fn move_keys(
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    record: bool,
    all: bool,
) -> rusqlite::Result<()> {
    let Some(keys) = state.keys.as_mut() else {
        return Ok(());
    };
    for (sent, key_hash, hash_prefix, message) in keys.take_settled(all, Instant::now()) {
        statements
            .insert_key
            .execute(params![sent, key_hash, hash_prefix, message])?;
    }
    if record {
        let through = keys.first_message().map_or(keys.known, |first| first - 1);
        statements
            .set_meta
            .execute(params![KEY_INDEX_THROUGH, through])?;
    }
    Ok(())
}

pub(super) fn key_hash(key: &MessageKey) -> i64 {
    let mut hasher = Sha256::new();
    for part in [
        &key.sending_application,
        &key.sending_facility,
        &key.control_id,
    ] {
        // Length-prefixed, so that no two keys feed the hash the same bytes.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hash_prefix(&hasher.finalize().into())
}

pub(super) fn hash_prefix(hash: &[u8; 32]) -> i64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash;
    i64::from_be_bytes([a, b, c, d, e, f, g, h])
}
