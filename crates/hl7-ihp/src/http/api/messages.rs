//! The message browser: stored frames newest first with their outcome and the ACK code
//! sent, filtered and paged by an opaque cursor; one message with its raw text and its
//! parsed tree.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::{self, Query};
use super::{BadParameter, NotFound, Unavailable};
use crate::http::HttpState;
use crate::http::problem::ApiError;
use crate::store::{MessageDetail, MessageFilter, MessageSummary, Outcome, utc_text};

/// An answer's family, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    /// Stored and answered AA/CA.
    Accepted,
    /// The message was wrong: AE/CE.
    Error,
    /// Not taken: AR/CR.
    Rejected,
}

impl From<Outcome> for OutcomeName {
    fn from(outcome: Outcome) -> OutcomeName {
        match outcome {
            Outcome::Accept => OutcomeName::Accepted,
            Outcome::Error => OutcomeName::Error,
            Outcome::Reject => OutcomeName::Rejected,
        }
    }
}

/// The query of `GET /api/v1/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesParams {
    /// Only this outcome: `accepted`, `error`, `rejected`, or `refused` (error or rejected).
    #[param(pattern = "^(accepted|error|rejected|refused)$")]
    outcome: Option<String>,
    /// Only this message type, `MSH-9.1^MSH-9.2` (`ORU^R01`; `^` percent-encoded as `%5E`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    message_type: Option<String>,
    /// Only this sending facility (MSH-4 as sent).
    facility: Option<String>,
    /// Only messages about this patient (identity key).
    patient: Option<String>,
    /// Only messages received at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only messages received before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// At most this many messages.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// A stored frame as the browser lists it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MessageItem {
    /// The message id, increasing in commit order.
    pub id: i64,
    /// When it arrived (the first time, for a frame received more than once).
    #[schema(format = DateTime)]
    pub received_at: String,
    /// The peer's address, `ip:port`: the device's, also when a trusted load balancer's
    /// PROXY header named it.
    pub peer: String,
    /// The TLS client certificate's subject and subject alternative names
    /// (`CN=monitor-7,O=St Example; DNS:monitor-7.example`); `null` for plain TCP or a TLS
    /// client without a certificate.
    #[schema(required = true)]
    pub peer_identity: Option<String>,
    /// MSH-3 as sent; `null` when MSH could not be read.
    #[schema(required = true)]
    pub sending_application: Option<String>,
    /// MSH-4 as sent; `null` when MSH could not be read.
    #[schema(required = true)]
    pub sending_facility: Option<String>,
    /// MSH-10 as sent (empty when MSH could not be read).
    pub control_id: String,
    /// `MSH-9.1^MSH-9.2` of an accepted message.
    #[schema(required = true)]
    pub message_type: Option<String>,
    /// What the message is: `query` for a demographic query (QRY^A19, QBP^Q22: answered
    /// with the patients found, never data), else `data`.
    pub kind: String,
    /// The answer's family.
    pub outcome: OutcomeName,
    /// Why, for errors and rejects.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The ACK code sent (`AA`, `AE`, `AR`, `CA`, `CE`, `CR`); `null` when the sender asked
    /// for none.
    #[schema(required = true)]
    pub ack_code: Option<String>,
    /// The patient's identity key, when the message named one.
    #[schema(required = true)]
    pub patient: Option<String>,
    /// How many times these bytes arrived (more than 1 for a refused frame sent again).
    pub n_received: u64,
    /// The patient merge this message made (an accepted ADT^A40, A34 or A47); `null` for
    /// every other message, refused merges included (their reason says why).
    #[schema(required = true)]
    pub merge: Option<MergeItem>,
    /// The stored message whose bytes this one replays (`hl7-ihp replay`); `null` for what
    /// a device sent.
    #[schema(required = true)]
    pub replay_of: Option<i64>,
    /// The first message stored as a replay of this one; `null` when none is.
    #[schema(required = true)]
    pub replayed_as: Option<i64>,
}

/// A patient merge a message made: the prior patient's history joined the survivor's, and
/// the prior is no longer listed (docs/acks.md, "Patient merges").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct MergeItem {
    /// The prior patient's identity key (MRG-1).
    pub prior: String,
    /// The surviving patient's identity key (PID-3).
    pub survivor: String,
    /// The trigger event: `A40`, `A34` or `A47`.
    pub event: String,
}

/// `query` or `data`: what [`MessageItem::kind`] says of a stored type.
pub fn message_kind(message_type: Option<&str>) -> &'static str {
    if message_type.is_some_and(crate::query::is_query) {
        "query"
    } else {
        "data"
    }
}

impl MessageItem {
    fn new(summary: MessageSummary, application: Option<String>, facility: Option<String>) -> Self {
        MessageItem {
            id: summary.id,
            received_at: utc_text(summary.received_at),
            peer: summary.peer,
            peer_identity: summary.peer_identity,
            sending_application: application,
            sending_facility: facility,
            control_id: summary.control_id,
            kind: message_kind(summary.message_type.as_deref()).to_owned(),
            message_type: summary.message_type,
            outcome: summary.outcome.into(),
            reason: summary.reason,
            ack_code: summary.ack_code,
            patient: summary.patient,
            n_received: summary.n_received,
            merge: summary.merge.map(|merge| MergeItem {
                prior: merge.prior,
                survivor: merge.survivor,
                event: merge.event,
            }),
            replay_of: summary.replay_of,
            replayed_as: summary.replayed_as,
        }
    }

    fn from_summary(summary: MessageSummary) -> Self {
        // The store gives `MSH-3|MSH-4`, or nothing when MSH could not be read. MSH-3 holds
        // no `|` unless the message chose another field separator, which devices don't.
        let (application, facility) = match summary.sender.split_once('|') {
            Some((application, facility)) => {
                (Some(application.to_owned()), Some(facility.to_owned()))
            }
            None => (None, None),
        };
        MessageItem::new(summary, application, facility)
    }
}

/// A page of messages, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MessagesPage {
    /// The messages.
    pub messages: Vec<MessageItem>,
    /// Pass it as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Stored frames, accepted and refused, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(MessagesParams),
    responses(
        (status = 200, description = "A page of messages, newest first", body = MessagesPage),
        BadParameter,
        Unavailable,
    ),
)]
pub async fn messages(
    State(state): State<HttpState>,
    Query(query): Query<MessagesParams>,
) -> Result<Json<MessagesPage>, ApiError> {
    let (outcome, rejected_only) = match query.outcome.as_deref() {
        None => (None, false),
        Some("accepted") => (Some(Outcome::Accept), false),
        Some("error") => (Some(Outcome::Error), false),
        Some("rejected") => (Some(Outcome::Reject), false),
        Some("refused") => (None, true),
        Some(_) => {
            return Err(ApiError::bad_parameter(
                "outcome",
                "expected `accepted`, `error`, `rejected` or `refused`",
            ));
        }
    };
    let since = params::time("since", query.since.as_deref())?;
    let until = params::time("until", query.until.as_deref())?;
    params::range(since, until)?;
    let limit = params::limit(query.limit.as_deref())?;
    let before_id = params::parse_message_cursor(query.cursor.as_deref())?;
    let summaries = state
        .store
        .messages(MessageFilter {
            rejected_only,
            outcome,
            message_type: query.message_type,
            facility: query.facility,
            patient: query.patient,
            since_ms: since.map(|t| t.as_millisecond()),
            until_ms: until.map(|t| t.as_millisecond()),
            before_id,
            with_raw: false,
            // One more than asked: whether there is a next page, without an empty one.
            limit: Some(limit + 1),
        })
        .await?;
    let more = summaries.len() > limit;
    let messages: Vec<MessageItem> = summaries
        .into_iter()
        .take(limit)
        .map(MessageItem::from_summary)
        .collect();
    let next_cursor = match messages.last() {
        Some(last) if more => Some(params::message_cursor(last.id)),
        _ => None,
    };
    Ok(Json(MessagesPage {
        messages,
        next_cursor,
    }))
}

/// One stored frame with everything the browser shows.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MessageBody {
    /// What the list shows.
    #[serde(flatten)]
    pub item: MessageItem,
    /// MSH-12.1 of an accepted message.
    #[schema(required = true)]
    pub version: Option<String>,
    /// PV1-3 as sent.
    #[schema(required = true)]
    pub location: Option<String>,
    /// The sending device (MSH-3) of an accepted message.
    #[schema(required = true)]
    pub device: Option<String>,
    /// When these bytes last arrived, for a refused frame received more than once.
    #[schema(required = true, format = DateTime)]
    pub last_received_at: Option<String>,
    /// The message as text, segments separated by `\r`; bytes that are not UTF-8 replaced.
    pub raw: String,
    /// The message's structure; `null` when the bytes cannot be read as HL7 (`reason` says
    /// why).
    #[schema(required = true)]
    pub parsed: Option<Parsed>,
}

/// A message's structure: its segments in order.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Parsed {
    /// The segments.
    pub segments: Vec<ParsedSegment>,
}

/// One segment: its id and the fields that hold something.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ParsedSegment {
    /// The segment id as sent (`MSH`, `PID`, `OBX`, …).
    pub id: String,
    /// Its non-empty fields, in order.
    pub fields: Vec<ParsedField>,
}

/// One field.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ParsedField {
    /// The HL7 field number (MSH-1 is the field separator).
    pub position: u32,
    /// The field as sent (decoded by MSH-18, escape sequences kept).
    pub value: String,
    /// Its repetitions.
    pub repetitions: Vec<ParsedRepetition>,
}

/// One repetition of a field.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ParsedRepetition {
    /// Its components' text, escape sequences decoded.
    pub components: Vec<String>,
    /// Only when a component has subcomponents: each component's subcomponents' text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subcomponents: Option<Vec<Vec<String>>>,
}

impl Parsed {
    /// The structure of a message's bytes, or `None` when they are not one HL7 message.
    pub fn of(raw: &[u8]) -> Option<Parsed> {
        let message = hl7::parse(raw).ok()?;
        let segments = message
            .segments()
            .map(|segment| ParsedSegment {
                id: segment.id().to_string(),
                fields: (1..=segment.field_count())
                    .filter_map(|n| {
                        let field = segment.field(n);
                        (!field.is_empty()).then(|| ParsedField {
                            position: u32::try_from(n).unwrap_or(u32::MAX),
                            value: field.raw_text().into_owned(),
                            repetitions: field.repetitions().map(repetition).collect(),
                        })
                    })
                    .collect(),
            })
            .collect();
        Some(Parsed { segments })
    }
}

fn repetition(repetition: hl7::Repetition<'_>) -> ParsedRepetition {
    let components: Vec<hl7::Component<'_>> = repetition.components().collect();
    let subcomponents = components
        .iter()
        .any(|component| component.subcomponents().nth(1).is_some())
        .then(|| {
            components
                .iter()
                .map(|component| {
                    component
                        .subcomponents()
                        .map(|sub| sub.text().into_owned())
                        .collect()
                })
                .collect()
        });
    ParsedRepetition {
        components: components
            .iter()
            .map(|component| component.text().into_owned())
            .collect(),
        subcomponents,
    }
}

impl From<MessageDetail> for MessageBody {
    fn from(mut detail: MessageDetail) -> MessageBody {
        let raw = detail.summary.raw.take().unwrap_or_default();
        let parsed = Parsed::of(&raw);
        MessageBody {
            item: MessageItem::new(
                detail.summary,
                detail.sending_application,
                detail.sending_facility,
            ),
            version: detail.version,
            location: detail.location,
            device: detail.device,
            last_received_at: detail.last_received_at.map(utc_text),
            raw: String::from_utf8_lossy(&raw).into_owned(),
            parsed,
        }
    }
}

/// One stored frame: its metadata, outcome, ACK code, raw text and parsed tree.
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = i64, Path, minimum = 1, description = "The message id")),
    responses(
        (status = 200, description = "The message", body = MessageBody),
        BadParameter,
        NotFound,
        Unavailable,
    ),
)]
pub async fn message(
    State(state): State<HttpState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageBody>, ApiError> {
    let id = params::message_id("id", &params::path_text(id, "id")?)?;
    let detail = state
        .store
        .message(id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(detail.into()))
}
