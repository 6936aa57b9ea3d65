//! From a frame to its ACKs: parse, extract, store, and decide the answer in one place.
//!
//! `ingest` is the only module that decides an ACK code ([`answer`]); `connection` only
//! writes what it gets. A positive ACK is built only from a [`Stored`] that the store
//! returned after its commit, so nothing is acknowledged before it is durable.

use crate::net::Peer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hl7::ack::{
    AckCode, AckError, AckMode, AckOptions, ErrorCode, ErrorLocation, Outcome, build_ack,
    build_reject_without_header, choose_ack,
};
use hl7::extract::{Extract, extract};
use hl7::{Message, SegmentId};
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};

use crate::audit::{Audit, AuditEvent};
use crate::config::PatientIdentity;
use crate::events::Events;
use crate::ids::base36;
use crate::marks::{PlaceholderValues, mark_of};
use crate::metrics::Metrics;
use crate::query::{PatientQuery, QueryKind};
use crate::rate_limit::{Level, RateLimit};
use crate::store::{
    Content, MergeRequest, MessageKey, NewMessage, ObservationData, PatientData, Store, Stored,
    Verdict, instant_ms,
};
use crate::waveform::{Waveforms, is_waveform_row};

/// What ingest needs to know of the settings.
#[derive(Clone, Debug)]
pub struct IngestSettings {
    /// ACK mode.
    pub ack_mode: AckMode,
    /// Our MSH-3 where the sender left MSH-5 empty.
    pub ack_application: String,
    /// Our MSH-4 where the sender left MSH-6 empty.
    pub ack_facility: String,
    /// How patients are identified.
    pub patient_identity: PatientIdentity,
    /// The site's time zone (`--timezone`): an observation time without an offset takes
    /// MSH-7's offset, else this zone's ([`hl7::timestamp::Timestamp::resolve`]). `None`
    /// keeps it as written, read as UTC for ordering.
    pub time_zone: Option<TimeZone>,
    /// Each sending application's placeholders for "no value" (`--placeholder-values`):
    /// such values are stored marked, never as numbers (`crate::marks`).
    pub placeholder_values: PlaceholderValues,
}

/// Turns frames into stored messages and ACK bytes.
pub struct Ingest {
    store: Arc<dyn Store>,
    settings: IngestSettings,
    metrics: Arc<Metrics>,
    /// Told after every commit that kept a new message (accepted or refused): the JSON
    /// exporter and the live event stream listen.
    events: Events,
    /// Per-peer limits on warning lines, shared with the connections' lines.
    log_limit: Arc<RateLimit>,
    /// The audit trail: one event per message received.
    audit: Arc<Audit>,
    /// Fresh ACK control ids: a per-process prefix and a counter.
    ack_prefix: String,
    ack_counter: AtomicU64,
}

/// What the audit trail keeps of a message: its key and its patient's key, no content.
struct Facts {
    control_id: String,
    sending_application: String,
    sending_facility: String,
    patient: Option<String>,
}

/// The longest text an audit event takes from a message (a control id or a key of a
/// megabyte would otherwise be queued and written whole).
const AUDIT_TEXT_CHARS: usize = 256;

/// `text` cut to [`AUDIT_TEXT_CHARS`] characters, `…` marking a cut.
fn audit_text(text: &str) -> String {
    match text.char_indices().nth(AUDIT_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl Facts {
    fn of(new: &NewMessage) -> Facts {
        let key = new.key.as_ref();
        let text =
            |get: fn(&MessageKey) -> &String| key.map(|k| audit_text(get(k))).unwrap_or_default();
        Facts {
            control_id: text(|k| &k.control_id),
            sending_application: text(|k| &k.sending_application),
            sending_facility: text(|k| &k.sending_facility),
            patient: new
                .content
                .as_ref()
                .and_then(|c| c.patient.as_ref())
                .map(|p| audit_text(&p.key)),
        }
    }
}

/// The audit trail's name of an outcome.
fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Accept => "accepted",
        Outcome::Error => "error",
        Outcome::Reject => "rejected",
    }
}

/// One message of a frame, ready to store, with what its answer needs.
struct Prepared {
    /// Taken out when the batch goes to the store.
    new: Option<NewMessage>,
    /// The decision before storing.
    verdict: Verdict,
    accept_ack_type: String,
    application_ack_type: String,
    error: Option<AckError>,
    /// Its waveform rows, counted when the store keeps it as new ([`crate::waveform`]).
    waveforms: Waveforms,
    /// A demographic query that can be answered ([`crate::query`]): answered with the
    /// patients found instead of an ACK once it is stored.
    query: Option<(QueryKind, PatientQuery)>,
}

impl Ingest {
    /// An ingest over a store.
    pub fn new(
        store: Arc<dyn Store>,
        settings: IngestSettings,
        metrics: Arc<Metrics>,
        events: Events,
        log_limit: Arc<RateLimit>,
    ) -> Self {
        let boot = jiff::Timestamp::now().as_millisecond().unsigned_abs();
        Self {
            store,
            settings,
            metrics,
            events,
            log_limit,
            audit: Audit::off(),
            ack_prefix: format!("A{}", base36(boot)),
            ack_counter: AtomicU64::new(0),
        }
    }

    /// Audits each message received to `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Self {
        self.audit = audit;
        self
    }

    /// The per-peer limiter of log lines, for the connections' own lines.
    pub fn log_limit(&self) -> &RateLimit {
        &self.log_limit
    }

    /// Handles one frame: its ACKs in order (none when the sender asked for none).
    pub async fn frame(&self, frame: &[u8], peer: &Peer) -> Vec<Vec<u8>> {
        Metrics::inc(&self.metrics.frames);
        let received_at = jiff::Timestamp::now();
        let batch = match hl7::parse_batch(frame) {
            Ok(batch) if !batch.messages().is_empty() => batch,
            Ok(_) => {
                let reason = "frame holds batch segments but no message".to_owned();
                return self
                    .unreadable(frame, reason, None, peer, received_at)
                    .await;
            }
            Err(error) => {
                let location = ErrorLocation::of_parse_error(&error);
                return self
                    .unreadable(frame, error.to_string(), location, peer, received_at)
                    .await;
            }
        };
        let messages = batch.messages();
        let mut prepared: Vec<Prepared> = messages
            .iter()
            .map(|message| self.prepare(message, peer, received_at))
            .collect();
        // What the audit trail says of each message, read before the store takes them.
        let facts: Vec<Option<Facts>> = if self.audit.is_on() {
            prepared
                .iter()
                .map(|p| p.new.as_ref().map(Facts::of))
                .collect()
        } else {
            Vec::new()
        };
        let batch_for_store = prepared.iter_mut().filter_map(|p| p.new.take()).collect();
        let stored = self.store.commit(batch_for_store).await;
        if stored.is_err() {
            // Counted, not logged: the store logs its own failures, once per run of them,
            // so a failing disk does not cost a log line per message.
            Metrics::inc(&self.metrics.store_failures);
        }
        if let Ok(results) = &stored {
            self.announce(results);
        }
        let mut acks = Vec::with_capacity(messages.len());
        for (index, (message, prepared)) in messages.iter().zip(&prepared).enumerate() {
            let stored = match &stored {
                Ok(results) => results.get(index).ok_or(()),
                Err(_) => Err(()),
            };
            let (outcome, error) = answer(prepared, stored);
            self.count(outcome, stored);
            if outcome == Outcome::Accept
                && matches!(stored, Ok(Stored::New { .. }))
                && prepared.waveforms.any()
            {
                Metrics::inc(&self.metrics.waveform_messages);
                Metrics::add(&self.metrics.waveform_observations, prepared.waveforms.rows);
            }
            let code = choose_ack(
                &prepared.accept_ack_type,
                &prepared.application_ack_type,
                outcome,
                self.settings.ack_mode,
            );
            if let Some(Some(facts)) = facts.get(index) {
                self.audit_message(peer, facts, stored.ok(), outcome, code);
            }
            let Some(code) = code else {
                continue;
            };
            let control_id = self.next_control_id();
            let time = ack_time();
            let options = self.ack_options(&control_id, &time);
            if let (Outcome::Accept, Some((kind, query))) = (outcome, &prepared.query) {
                acks.push(self.answer_query(message, *kind, query, &options).await);
                continue;
            }
            acks.push(build_ack(message, code, error.as_ref(), &options));
        }
        acks
    }

    /// The answer to a stored query: the patients found, or a reject when the store
    /// cannot be read now (the query itself is kept).
    async fn answer_query(
        &self,
        message: &Message<'_>,
        kind: QueryKind,
        query: &PatientQuery,
        options: &AckOptions<'_>,
    ) -> Vec<u8> {
        match crate::query::find_patients(self.store.as_ref(), query).await {
            Ok(found) => {
                Metrics::inc(&self.metrics.queries_answered);
                if found.is_empty() {
                    Metrics::inc(&self.metrics.queries_not_found);
                }
                crate::query::build_response(message, kind, &found, options)
            }
            Err(_) => {
                Metrics::inc(&self.metrics.store_failures);
                let error = AckError {
                    code: ErrorCode::ApplicationInternal,
                    location: None,
                    text: "the patients could not be searched; ask again later".into(),
                };
                build_ack(message, AckCode::AR, Some(&error), options)
            }
        }
    }

    /// One `message_received` event: who sent what about whom (the key, never the name)
    /// and how it was answered.
    fn audit_message(
        &self,
        peer: &Peer,
        facts: &Facts,
        stored: Option<&Stored>,
        outcome: Outcome,
        code: Option<AckCode>,
    ) {
        let (message_id, outcome) = match stored {
            Some(Stored::Duplicate { id, .. }) => (Some(*id), "duplicate"),
            Some(Stored::New { id } | Stored::Repeated { id } | Stored::Refused { id, .. }) => {
                (Some(*id), outcome_name(outcome))
            }
            None => (None, outcome_name(outcome)),
        };
        self.audit.record(AuditEvent::MessageReceived {
            connection: peer.connection,
            peer: peer.addr,
            identity: peer.identity.as_deref().map(str::to_owned),
            message_id,
            control_id: facts.control_id.clone(),
            sending_application: facts.sending_application.clone(),
            sending_facility: facts.sending_facility.clone(),
            patient: facts.patient.clone(),
            outcome,
            ack_code: code.map(|c| c.as_str().to_owned()),
        });
    }

    /// Tells the subscribers about a commit that kept something new, accepted or refused:
    /// the live view shows refused messages too. Duplicates and repeats add no message.
    fn announce(&self, results: &[Stored]) {
        if results
            .iter()
            .any(|s| matches!(s, Stored::New { .. } | Stored::Refused { .. }))
        {
            self.events.committed();
        }
    }

    /// Handles a frame over the size limit: its head is kept, the answer is a reject.
    pub async fn oversized(
        &self,
        len: usize,
        head: &[u8],
        limit: usize,
        peer: &Peer,
    ) -> Vec<Vec<u8>> {
        Metrics::inc(&self.metrics.frames_oversized);
        let reason = oversized_reason(len, limit);
        self.unreadable(head, reason, None, peer, jiff::Timestamp::now())
            .await
    }

    /// Keeps an unreadable frame (or an oversized frame's head) and builds its reject: with
    /// the sender's header when its first segment can be read, else our minimal one.
    async fn unreadable(
        &self,
        frame: &[u8],
        reason: String,
        location: Option<ErrorLocation>,
        peer: &Peer,
        received_at: jiff::Timestamp,
    ) -> Vec<Vec<u8>> {
        Metrics::inc(&self.metrics.messages_rejected);
        if let Some(n_suppressed) =
            self.log_limit
                .allow(peer.addr.ip(), "rejected an unreadable frame", Level::Warn)
        {
            tracing::warn!(%peer, reason = %reason, n_suppressed, "rejected an unreadable frame");
        }
        let header = salvage_header(frame);
        let key = header.as_ref().map(|message| key_of(&extract(message)));
        let ack_code = self.reject_code(header.as_ref());
        let new = NewMessage {
            received_at,
            peer: peer.to_string(),
            peer_identity: peer.identity.as_deref().map(str::to_owned),
            raw: frame.to_vec(),
            key,
            hash: Sha256::digest(frame).into(),
            verdict: Verdict::Reject {
                reason: reason.clone(),
            },
            ack_code: ack_code.map(|code| code.as_str().to_owned()),
            content: None,
            replay_of: None,
        };
        let facts = self.audit.is_on().then(|| Facts::of(&new));
        // Kept for inspection when the store is up; the answer is a reject either way.
        let stored = match self.store.commit(vec![new]).await {
            Ok(results) => {
                self.announce(&results);
                results.into_iter().next()
            }
            Err(_) => {
                Metrics::inc(&self.metrics.store_failures);
                None
            }
        };
        if let Some(facts) = &facts {
            self.audit_message(peer, facts, stored.as_ref(), Outcome::Reject, ack_code);
        }
        let error = AckError {
            code: ErrorCode::SegmentSequence,
            location,
            text: reason,
        };
        let control_id = self.next_control_id();
        let time = ack_time();
        let options = self.ack_options(&control_id, &time);
        let ack = match (&header, ack_code) {
            (Some(message), Some(code)) => build_ack(message, code, Some(&error), &options),
            (Some(_), None) => return Vec::new(),
            (None, _) => build_reject_without_header(None, &error, &options),
        };
        vec![ack]
    }

    /// The code a reject carries: the sender's MSH-15/16 decide when its header was read,
    /// and our header-less reject is always AR.
    fn reject_code(&self, header: Option<&Message<'_>>) -> Option<AckCode> {
        match header {
            Some(message) => {
                let header = extract(message).header;
                choose_ack(
                    &header.accept_ack_type,
                    &header.application_ack_type,
                    Outcome::Reject,
                    self.settings.ack_mode,
                )
            }
            None => Some(AckCode::AR),
        }
    }

    /// Runs a stored message's bytes through ingest again (`hl7-ihp replay`): the frame
    /// limit, parsing, extraction and the verdict as for a frame a device sends now, with
    /// these settings. Only what is accepted now is offered to the store, linked to
    /// `original` (`replay_of`) and carrying its peer; what is refused again is not stored
    /// again (the original holds those bytes). With `commit` false nothing is stored and an
    /// accepted message comes back as [`Replayed::WouldStore`]. One result per message of
    /// the frame, in order.
    pub async fn replay(
        &self,
        frame: &[u8],
        original: &Original,
        max_frame_bytes: usize,
        commit: bool,
    ) -> Result<Vec<Replayed>, crate::store::StoreError> {
        let refused = |reason: String| {
            let ack_code = self.reject_code(salvage_header(frame).as_ref());
            vec![Replayed::StillRefused {
                outcome: Outcome::Reject,
                reason,
                ack_code: ack_code.map(|code| code.as_str().to_owned()),
            }]
        };
        if frame.len() > max_frame_bytes {
            return Ok(refused(oversized_reason(frame.len(), max_frame_bytes)));
        }
        let batch = match hl7::parse_batch(frame) {
            Ok(batch) if !batch.messages().is_empty() => batch,
            Ok(_) => return Ok(refused("frame holds batch segments but no message".into())),
            Err(error) => return Ok(refused(error.to_string())),
        };
        // The peer only names the device in the log lines of `prepare`; the new rows carry
        // the original's peer as it was stored.
        let peer = Peer::tcp(
            0,
            original
                .peer
                .parse()
                .unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        );
        let received_at = jiff::Timestamp::now();
        let mut prepared: Vec<Prepared> = batch
            .messages()
            .iter()
            .map(|message| self.prepare(message, &peer, received_at))
            .collect();
        let mut results: Vec<Option<Replayed>> = Vec::with_capacity(prepared.len());
        let mut to_store = Vec::new();
        for p in &mut prepared {
            let Some(mut new) = p.new.take() else {
                results.push(None);
                continue;
            };
            match &p.verdict {
                Verdict::Accept if commit => {
                    new.peer.clone_from(&original.peer);
                    new.peer_identity.clone_from(&original.peer_identity);
                    new.replay_of = Some(original.id);
                    to_store.push(new);
                    results.push(None);
                }
                Verdict::Accept => results.push(Some(Replayed::WouldStore {
                    ack_code: new.ack_code,
                })),
                Verdict::Error { reason } | Verdict::Reject { reason } => {
                    results.push(Some(Replayed::StillRefused {
                        outcome: p.verdict.outcome(),
                        reason: reason.clone(),
                        ack_code: new.ack_code,
                    }));
                }
            }
        }
        if to_store.is_empty() {
            return Ok(results.into_iter().flatten().collect());
        }
        let stored = self.store.commit(to_store).await?;
        self.announce(&stored);
        let mut stored = stored.into_iter();
        let mut out = Vec::with_capacity(results.len());
        for (result, p) in results.into_iter().zip(&prepared) {
            if let Some(result) = result {
                out.push(result);
                continue;
            }
            let Some(stored) = stored.next() else {
                return Err(crate::store::StoreError::Database(
                    "the store answered fewer messages than it was given".into(),
                ));
            };
            let (outcome, _) = answer(p, Ok(&stored));
            let ack_code = choose_ack(
                &p.accept_ack_type,
                &p.application_ack_type,
                outcome,
                self.settings.ack_mode,
            )
            .map(|code| code.as_str().to_owned());
            out.push(match stored {
                Stored::New { id } => Replayed::Stored { id, ack_code },
                Stored::Duplicate { id, .. } | Stored::Repeated { id } => {
                    Replayed::Duplicate { id, ack_code }
                }
                // A patient merge the store's state contradicts: kept as an error, linked to
                // the original like any replay, so the next replay skips it.
                Stored::Refused { id, reason } => Replayed::RefusedByStore {
                    id,
                    reason,
                    ack_code,
                },
            });
        }
        Ok(out)
    }

    fn prepare(
        &self,
        message: &Message<'_>,
        peer: &Peer,
        received_at: jiff::Timestamp,
    ) -> Prepared {
        if !message.charset_known() {
            Metrics::inc(&self.metrics.charset_unknown);
        }
        let extract = extract(message);
        let waveforms = Waveforms::of(&extract);
        let raw = message.raw();
        let key = key_of(&extract);
        let missing = extract.header.missing_required();
        let (mut verdict, mut error, mut content) = match missing {
            Some(missing) => {
                let name = if missing.field == 9 {
                    "MSH-9 (message type)"
                } else {
                    "MSH-10 (message control id)"
                };
                let reason = format!("{name} is empty");
                let error = AckError {
                    code: ErrorCode::RequiredFieldMissing,
                    location: Some(ErrorLocation {
                        segment: SegmentId(*b"MSH"),
                        sequence: 1,
                        field: Some(missing.field),
                    }),
                    text: reason.clone(),
                };
                (Verdict::Error { reason }, Some(error), None)
            }
            None => (
                Verdict::Accept,
                None,
                Some(content_of(
                    &extract,
                    self.settings.patient_identity,
                    self.settings.time_zone.as_ref(),
                    &self.settings.placeholder_values,
                    received_at,
                )),
            ),
        };
        let accept_ack_type = extract.header.accept_ack_type.to_string();
        let application_ack_type = extract.header.application_ack_type.to_string();
        // An alarm report: its OBR groups are alarms (`crate::alarm`), its rows no records.
        if let Some(content) = content.as_mut() {
            content.alarms = crate::alarm::alarms_of(message, &extract, received_at);
        }
        // A demographic query is kept, but about no one and with no observations: it never
        // reaches a patient's records or files (docs/acks.md, "Queries").
        let mut query = None;
        if let Some(content) = content.as_mut()
            && let Some(kind) = crate::query::query_kind(&content.message_type, &content.trigger)
        {
            content.patient = None;
            content.observations.clear();
            content.location = None;
            match crate::query::read_query(message, kind) {
                Ok(asked) => query = Some((kind, asked)),
                Err(reason) => {
                    error = Some(AckError {
                        code: ErrorCode::RequiredFieldMissing,
                        location: None,
                        text: reason.clone(),
                    });
                    verdict = Verdict::Error { reason };
                }
            }
        }
        // A patient merge: the message alone may already be wrong (docs/acks.md, "Patient
        // merges"); what passes goes to the store, which checks the rest in its writer.
        if let Some(content) = content.as_mut()
            && crate::merges::is_merge(&content.message_type, &content.trigger)
        {
            match crate::merges::read_prior(message, self.settings.patient_identity) {
                Ok(prior) => {
                    content.merge = Some(MergeRequest {
                        prior: prior.key,
                        event: content.trigger.clone(),
                        refused_ack_code: choose_ack(
                            &accept_ack_type,
                            &application_ack_type,
                            Outcome::Error,
                            self.settings.ack_mode,
                        )
                        .map(|code| code.as_str().to_owned()),
                    });
                }
                Err(refusal) => {
                    verdict = Verdict::Error {
                        reason: refusal.text.clone(),
                    };
                    error = Some(refusal);
                }
            }
        }
        if let Some(reason) = verdict.reason()
            && let Some(n_suppressed) = self.log_limit.allow(
                peer.addr.ip(),
                "message answered with an error",
                Level::Warn,
            )
        {
            tracing::warn!(%peer, reason, n_suppressed, "message answered with an error");
        }
        // What `frame` answers when the store keeps this message as new: `answer` then
        // goes by this verdict (a duplicate or a failure is answered otherwise, and then
        // this row is not written).
        let ack_code = choose_ack(
            &accept_ack_type,
            &application_ack_type,
            verdict.outcome(),
            self.settings.ack_mode,
        )
        .map(|code| code.as_str().to_owned());
        Prepared {
            accept_ack_type,
            application_ack_type,
            new: Some(NewMessage {
                received_at,
                peer: peer.to_string(),
                peer_identity: peer.identity.as_deref().map(str::to_owned),
                raw: raw.to_vec(),
                key: (missing.is_none()).then_some(key),
                hash: Sha256::digest(raw).into(),
                verdict: verdict.clone(),
                ack_code,
                content,
                replay_of: None,
            }),
            verdict,
            error,
            waveforms,
            query,
        }
    }

    fn count(&self, outcome: Outcome, stored: Result<&Stored, ()>) {
        let metrics = &self.metrics;
        if let Ok(Stored::Duplicate { .. }) = stored {
            Metrics::inc(&metrics.messages_duplicate);
        }
        Metrics::inc(match outcome {
            Outcome::Accept => &metrics.messages_accepted,
            Outcome::Error => &metrics.messages_error,
            Outcome::Reject => &metrics.messages_rejected,
        });
    }

    fn next_control_id(&self) -> String {
        let n = self.ack_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}", self.ack_prefix, base36(n))
    }

    fn ack_options<'x>(&'x self, control_id: &'x str, time: &'x str) -> AckOptions<'x> {
        AckOptions {
            application: &self.settings.ack_application,
            facility: &self.settings.ack_facility,
            control_id,
            time,
        }
    }
}

/// The reason an oversized frame is refused with.
fn oversized_reason(len: usize, limit: usize) -> String {
    format!("frame of {len} bytes is over the limit of {limit} bytes")
}

/// The length an oversized frame had, read back from its stored reason: only its first
/// bytes were kept when the stored bytes are fewer (such a frame cannot be replayed).
pub fn oversized_length(reason: &str) -> Option<usize> {
    reason
        .strip_prefix("frame of ")?
        .split_once(" bytes is over the limit of ")?
        .0
        .parse()
        .ok()
}

/// The stored message a replay starts from ([`Ingest::replay`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Original {
    /// Its id: the new rows' `replay_of`.
    pub id: i64,
    /// The peer it came from, as stored; the new rows carry it too.
    pub peer: String,
    /// The TLS identity it came with, as stored.
    pub peer_identity: Option<String>,
}

/// What replaying one message of a stored frame came to ([`Ingest::replay`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Accepted now and stored as a new message, linked to the original.
    Stored {
        /// The new message's id.
        id: i64,
        /// The code a device would have been answered with.
        ack_code: Option<String>,
    },
    /// Accepted now, but the same key and bytes as an accepted message already stored
    /// (the original itself when it was accepted): nothing stored.
    Duplicate {
        /// The stored message's id.
        id: i64,
        /// The code a device would have been answered with.
        ack_code: Option<String>,
    },
    /// Refused again: nothing stored.
    StillRefused {
        /// Error or reject.
        outcome: Outcome,
        /// Why, without patient data.
        reason: String,
        /// The code a device would have been answered with.
        ack_code: Option<String>,
    },
    /// Stored, but refused by what the store holds (a patient merge it contradicts): kept
    /// as an error linked to the original.
    RefusedByStore {
        /// The new message's id.
        id: i64,
        /// Why, without patient data.
        reason: String,
        /// The code a device would have been answered with.
        ack_code: Option<String>,
    },
    /// Not committed (a dry run): accepted now, so it would be offered to the store, which
    /// stores it as new unless it is a duplicate.
    WouldStore {
        /// The code a device would be answered with.
        ack_code: Option<String>,
    },
}

/// The one place that turns what happened into the answer's family and its ERR.
fn answer(prepared: &Prepared, stored: Result<&Stored, ()>) -> (Outcome, Option<AckError>) {
    let store_failed = || AckError {
        code: ErrorCode::ApplicationInternal,
        location: None,
        text: "the message could not be stored; send it again later".into(),
    };
    let verdict = match stored {
        Err(()) => return (Outcome::Reject, Some(store_failed())),
        Ok(Stored::New { .. } | Stored::Repeated { .. }) => &prepared.verdict,
        Ok(Stored::Duplicate { verdict, .. }) => verdict,
        // The store refused what the message asks (a patient merge its state contradicts).
        Ok(Stored::Refused { reason, .. }) => {
            return (
                Outcome::Error,
                Some(AckError {
                    code: ErrorCode::UnknownKeyIdentifier,
                    location: Some(crate::merges::mrg1()),
                    text: reason.clone(),
                }),
            );
        }
    };
    match verdict {
        Verdict::Accept => (Outcome::Accept, None),
        Verdict::Error { reason } => (
            Outcome::Error,
            prepared.error.clone().or_else(|| Some(plain_error(reason))),
        ),
        Verdict::Reject { reason } => (Outcome::Reject, Some(plain_error(reason))),
    }
}

fn plain_error(reason: &str) -> AckError {
    AckError {
        code: ErrorCode::SegmentSequence,
        location: None,
        text: reason.to_owned(),
    }
}

/// The header of a frame that did not parse whole: its first non-blank line, when that is
/// a readable MSH, so the reject can name the sender's control id.
fn salvage_header(frame: &[u8]) -> Option<Message<'_>> {
    let frame = frame.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(frame);
    let start = frame.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &frame[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    hl7::parse(&rest[..end]).ok()
}

fn key_of(extract: &Extract<'_>) -> MessageKey {
    MessageKey {
        sending_application: extract.header.sending_application.to_string(),
        sending_facility: extract.header.sending_facility.to_string(),
        control_id: extract.header.control_id.to_string(),
        sent_ms: extract.header.time.as_ref().and_then(instant_ms),
    }
}

fn content_of(
    extract: &Extract<'_>,
    identity: PatientIdentity,
    time_zone: Option<&TimeZone>,
    placeholders: &PlaceholderValues,
    received_at: jiff::Timestamp,
) -> Content {
    let patient = extract.patient.as_ref().and_then(|patient| {
        let primary = patient.primary_id()?;
        let key = match identity {
            PatientIdentity::Id => primary.id.to_string(),
            PatientIdentity::AuthorityAndId => {
                format!("{}/{}", primary.assigning_authority, primary.id)
            }
        };
        let identifiers = patient
            .identifiers
            .iter()
            .map(|id| format!("{}^^^{}^{}", id.id, id.assigning_authority, id.id_type))
            .collect::<Vec<_>>()
            .join("~");
        Some(PatientData {
            key,
            id: primary.id.to_string(),
            assigning_authority: primary.assigning_authority.to_string(),
            identifiers,
            name: patient.name.display(),
            birth_date: patient
                .birth_date
                .clone()
                .unwrap_or_else(|| patient.birth_date_raw.to_string()),
            sex: patient.sex.to_string(),
            is_update: extract.header.message_type == "ADT",
        })
    });
    let received_text = format_utc(received_at);
    // Only observation times are resolved: the duplicate key files MSH-7 as written
    // (`key_of`), so a retransmission is found whatever the zone was when it first came.
    let message_offset = extract.header.time.and_then(|time| time.offset());
    // Waveform rows (a W01's, NA/MA anywhere) stay in the raw message only: no observation,
    // so no record, plot point or latest vital (`crate::waveform`). The others are numbered
    // among themselves, as the store reads an observation's index back from its position.
    // An alarm report's rows (`ORU^R40`) are its alarms, never observations
    // (`crate::alarm`): `prepare` reads them into `Content::alarms`.
    let waveform_message =
        crate::waveform::is_waveform_message(&extract.header.message_type, &extract.header.trigger);
    let alarm_message =
        crate::alarm::is_alarm_message(&extract.header.message_type, &extract.header.trigger);
    // MSH-3.1: the placeholders are configured by the application's name.
    let application = extract
        .header
        .sending_application
        .split('^')
        .next()
        .unwrap_or_default();
    let observations = extract
        .observations
        .iter()
        .filter(|obx| !alarm_message && !is_waveform_row(waveform_message, obx))
        .enumerate()
        .map(|(index, obx)| {
            let time = match (obx.time, time_zone) {
                (Some(time), Some(zone)) => Some(time.resolve(message_offset, zone)),
                (time, _) => time,
            };
            let (observed_at, observed_ms) = match time {
                Some(time) => (
                    time.to_iso_string(),
                    instant_ms(&time).unwrap_or(received_at.as_millisecond()),
                ),
                None => (received_text.clone(), received_at.as_millisecond()),
            };
            // A value that is not a measurement is kept as sent, marked, and is no number.
            let mark = mark_of(
                crate::marks::Row {
                    value_type: &obx.value_type,
                    value: &obx.value,
                    numeric: obx.numeric,
                    abnormal_flags: &obx.abnormal_flags,
                    status: &obx.status,
                },
                application,
                placeholders,
            );
            ObservationData {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                value_type: obx.value_type.to_string(),
                code: obx.code.to_string(),
                code_text: obx.code_text.to_string(),
                code_system: obx.code_system.to_string(),
                sub_id: obx.sub_id.to_string(),
                value: obx.value.to_string(),
                numeric: obx.numeric.filter(|_| mark.is_none()),
                units: obx.units.to_string(),
                units_text: obx.units_text.to_string(),
                reference_range: obx.reference_range.to_string(),
                abnormal_flags: obx.abnormal_flags.to_string(),
                status: obx.status.to_string(),
                observed_at,
                observed_ms,
                equipment: obx.equipment.to_string(),
                mark,
            }
        })
        .collect();
    Content {
        message_type: extract.header.message_type.to_string(),
        trigger: extract.header.trigger.to_string(),
        version: extract.header.version.to_string(),
        patient,
        device: extract.header.sending_application.to_string(),
        location: extract.location.as_ref().map(|l| l.to_string()),
        observations,
        merge: None,
        alarms: Vec::new(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the received time when a message gives no observation time.
fn format_utc(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// MSH-7 of our ACKs: now, in UTC with an explicit offset.
fn ack_time() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%d%H%M%S+0000")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::{MessageFilter, SQLITE_FILE_NAME};

    fn message(control_id: &str, message_type: &str, ack_types: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|DEV|FAC|||20240101120000||{message_type}|{control_id}|P|2.5|||{ack_types}\r\
             PID|||P1\rOBX|1|NM|8867-4^HR||72|/min|||||F\r"
        )
        .into_bytes()
    }

    /// The observation times of `bytes` as the store gets them: (`observed_at`, `observed_ms`).
    fn observed(bytes: &[u8], time_zone: Option<&TimeZone>) -> Vec<(String, i64)> {
        let message = hl7::parse(bytes).unwrap();
        let received_at: jiff::Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
        content_of(
            &extract(&message),
            PatientIdentity::Id,
            time_zone,
            &PlaceholderValues::default(),
            received_at,
        )
        .observations
        .into_iter()
        .map(|o| (o.observed_at, o.observed_ms))
        .collect()
    }

    fn at(iso: &str, instant: &str) -> (String, i64) {
        let instant: jiff::Timestamp = instant.parse().unwrap();
        (iso.to_owned(), instant.as_millisecond())
    }

    fn zurich() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    #[test]
    fn a_site_zone_gives_observation_times_an_offset() {
        let bytes = b"MSH|^~\\&|DEV|FAC|||20260701120000||ORU^R01|1|P|2.5\r\
            PID|||P1\r\
            OBX|1|NM|8867-4^HR||72|/min|||||F|||20260101083000\r\
            OBX|2|NM|8867-4^HR||72|/min|||||F|||20260701083000\r\
            OBX|3|NM|8867-4^HR||72|/min|||||F|||20260701083000-0500\r\
            OBX|4|NM|8867-4^HR||72|/min|||||F|||20260701\r\
            OBX|5|NM|8867-4^HR||72|/min|||||F\r";
        assert_eq!(
            observed(bytes, Some(&zurich())),
            [
                at("2026-01-01T08:30:00+01:00", "2026-01-01T07:30:00Z"),
                at("2026-07-01T08:30:00+02:00", "2026-07-01T06:30:00Z"),
                at("2026-07-01T08:30:00-05:00", "2026-07-01T13:30:00Z"),
                at("2026-07-01T00:00:00", "2026-07-01T00:00:00Z"),
                at("2026-07-01T12:00:00+02:00", "2026-07-01T10:00:00Z"),
            ]
        );
        // Without a zone: as written, read as UTC for ordering, as before.
        assert_eq!(
            observed(bytes, None),
            [
                at("2026-01-01T08:30:00", "2026-01-01T08:30:00Z"),
                at("2026-07-01T08:30:00", "2026-07-01T08:30:00Z"),
                at("2026-07-01T08:30:00-05:00", "2026-07-01T13:30:00Z"),
                at("2026-07-01T00:00:00", "2026-07-01T00:00:00Z"),
                at("2026-07-01T12:00:00", "2026-07-01T12:00:00Z"),
            ]
        );
    }

    #[test]
    fn an_oversized_frames_length_is_read_back_from_its_reason() {
        assert_eq!(
            oversized_length(&oversized_reason(70_000, 1_024)),
            Some(70_000)
        );
        assert_eq!(
            oversized_length("MSH-10 (message control id) is empty"),
            None
        );
    }

    #[test]
    fn msh7s_offset_comes_before_the_site_zone() {
        let bytes = b"MSH|^~\\&|DEV|FAC|||20260701120000+0530||ORU^R01|1|P|2.5\r\
            PID|||P1\r\
            OBX|1|NM|8867-4^HR||72|/min|||||F|||20260701083000\r";
        assert_eq!(
            observed(bytes, Some(&zurich())),
            [at("2026-07-01T08:30:00+05:30", "2026-07-01T03:00:00Z")]
        );
        // Without a zone MSH-7's offset is not borrowed.
        assert_eq!(
            observed(bytes, None),
            [at("2026-07-01T08:30:00", "2026-07-01T08:30:00Z")]
        );
    }

    fn content(bytes: &[u8]) -> Content {
        let message = hl7::parse(bytes).unwrap();
        let received_at: jiff::Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
        content_of(
            &extract(&message),
            PatientIdentity::Id,
            None,
            &PlaceholderValues::default(),
            received_at,
        )
    }

    const WAVEFORM_W01: &[u8] = b"MSH|^~\\&|DEV|FAC|||20260701120000||ORU^W01|W1|P|2.4\r\
        PID|||P1\r\
        OBX|1|CD|131330^MDC_ECG_ELEC_POTL_II^MDC|1|1^II\r\
        OBX|2|NM|SRATE^Sampling rate^L|1|250|Hz\r\
        OBX|3|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1|10^12^-3^900|uV\r";

    const NUMERICS_WITH_ARRAY: &[u8] = b"MSH|^~\\&|DEV|FAC|||20260701120000||ORU^R01|W2|P|2.6\r\
        PID|||P1\r\
        OBX|1|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.2.1.2|10^12^-3^900|uV\r\
        OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|72|/min|||||R\r";

    #[test]
    fn a_w01_is_kept_without_observations() {
        let content = content(WAVEFORM_W01);
        assert_eq!(
            (content.message_type.as_str(), content.trigger.as_str()),
            ("ORU", "W01")
        );
        assert_eq!(content.patient.map(|p| p.key), Some("P1".into()));
        assert!(
            content.observations.is_empty(),
            "{:?}",
            content.observations
        );
    }

    #[test]
    fn an_array_row_is_skipped_and_the_numerics_beside_it_kept() {
        let observations = content(NUMERICS_WITH_ARRAY).observations;
        assert_eq!(observations.len(), 1, "{observations:?}");
        let heart_rate = &observations[0];
        assert_eq!(heart_rate.index, 0, "numbered as the store reads it back");
        assert_eq!(heart_rate.code, "147842");
        assert_eq!(heart_rate.numeric, Some(72.0));
    }

    /// The settings the tests over a real store ingest with.
    fn test_settings() -> IngestSettings {
        IngestSettings {
            ack_mode: AckMode::Auto,
            ack_application: "IHP".into(),
            ack_facility: "HOSP".into(),
            patient_identity: PatientIdentity::Id,
            time_zone: None,
            placeholder_values: PlaceholderValues::default(),
        }
    }

    /// Waveform rows are counted once per new accepted message: a retransmission adds
    /// nothing, and the raw message keeps every sample.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waveform_rows_are_counted_once_and_kept_raw() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default())
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::default());
        let ingest = Ingest::new(
            Arc::clone(&store),
            test_settings(),
            Arc::clone(&metrics),
            Events::new(),
            Arc::new(RateLimit::default()),
        );
        let peer = &Peer::tcp(0, "127.0.0.1:4000".parse().unwrap());
        for frame in [WAVEFORM_W01, NUMERICS_WITH_ARRAY, WAVEFORM_W01] {
            let acks = ingest.frame(frame, peer).await;
            let ack = hl7::parse(&acks[0]).unwrap();
            assert_eq!(ack.get("MSA-1"), Some(&b"AA"[..]));
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&metrics.waveform_messages), 2);
        assert_eq!(get(&metrics.waveform_observations), 3 + 1);
        assert_eq!(get(&metrics.messages_duplicate), 1);
        let messages = store
            .messages(MessageFilter {
                with_raw: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert!(
            messages
                .iter()
                .any(|m| m.raw.as_deref() == WAVEFORM_W01.strip_suffix(b"\r")),
            "the W01 is kept byte for byte (its last segment terminator is the frame's)"
        );
    }

    /// Each new message is kept with the code it was answered with, and every commit that
    /// kept one (refused too) is announced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_are_kept_with_their_ack_code_and_every_new_one_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default())
                .unwrap(),
        );
        let events = Events::new();
        let subscription = events.subscribe();
        let ingest = Ingest::new(
            Arc::clone(&store),
            test_settings(),
            Arc::new(Metrics::default()),
            events,
            Arc::new(RateLimit::default()),
        );
        let peer = &Peer::tcp(0, "127.0.0.1:4000".parse().unwrap());
        let mut expected = Vec::new();
        for (frame, code) in [
            (message("C1", "ORU^R01", ""), Some("AA")),
            (message("C2", "ORU^R01", "AL|NE"), Some("CA")),
            (message("C3", "ORU^R01", "NE|NE"), None),
            (message("", "ORU^R01", ""), Some("AE")),
            (message("C5", "", "AL|NE"), Some("CE")),
            (b"not hl7 at all".to_vec(), Some("AR")),
        ] {
            let before = subscription.n_commits();
            let acks = ingest.frame(&frame, peer).await;
            assert_eq!(acks.len(), usize::from(code.is_some()));
            assert_eq!(subscription.n_commits(), before + 1, "announced");
            expected.push(code.map(str::to_owned));
        }
        // A retransmission adds no message, and is not announced.
        let before = subscription.n_commits();
        assert_eq!(
            ingest
                .frame(&message("C1", "ORU^R01", ""), peer)
                .await
                .len(),
            1
        );
        assert_eq!(subscription.n_commits(), before);
        let oversized = ingest
            .oversized(10_000, b"MSH|^~\\&|DEV|FAC", 100, peer)
            .await;
        assert_eq!(oversized.len(), 1);
        expected.push(Some("AR".into()));

        let mut messages = store.messages(MessageFilter::default()).await.unwrap();
        messages.reverse();
        let codes: Vec<Option<String>> = messages.into_iter().map(|m| m.ack_code).collect();
        assert_eq!(codes, expected);
    }
}
