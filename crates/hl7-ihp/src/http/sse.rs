//! `GET /api/v1/events`: the live view's events as server-sent events (docs/api.md).
//!
//! A client with `Last-Event-ID` first gets what it missed from the event log's window (or
//! a `reset` when that is gone), then the live events from the broadcast channel. A comment
//! every [`KEEP_ALIVE`] keeps proxies and the idle timeout from closing a quiet stream. A
//! client that falls more than the channel's capacity behind gets its stream ended (it
//! reconnects and resumes): publishing never waits for a client. Every stream ends when the
//! live view closes at shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast;

use super::HttpState;
use super::api::params::Query;
use super::api::{BadParameter, NoParams};
use crate::live::Live;
use crate::live::log::LiveEvent;

/// How often a quiet stream gets a `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "live",
    params(
        ("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last event received: the events after it come first"),
        NoParams,
    ),
    responses(
        (status = 200,
            description = "Server-sent events: `observation`, `patient`, `rejected`, `status`, \
                `alarm` (an AlarmView) and `reset`, each with an `id` and JSON `data`",
            content_type = "text/event-stream", body = String),
        BadParameter,
    )
)]
pub async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(NoParams {}): Query<NoParams>,
) -> impl IntoResponse {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    // From a consistent start: what the view was filled with, then every later event.
    state.live.seeded().await;
    let stream = event_stream(Arc::clone(&state.live), last_event_id);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

struct Follow {
    live: Arc<Live>,
    pending: VecDeque<Arc<LiveEvent>>,
    receiver: broadcast::Receiver<Arc<LiveEvent>>,
    after: u64,
}

/// The reset or backlog, then the live events, until the client lags or the view closes.
fn event_stream(
    live: Arc<Live>,
    last_event_id: Option<&str>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let start = live.start_events(last_event_id);
    let mut pending: VecDeque<Arc<LiveEvent>> = start.backlog.into();
    if let Some(reset) = start.reset {
        pending.push_front(Arc::new(reset));
    }
    let follow = Follow {
        live,
        pending,
        receiver: start.receiver,
        after: start.after,
    };
    stream::unfold(follow, |mut follow| async move {
        if let Some(event) = follow.pending.pop_front() {
            let event = sse_event(&follow.live, &event);
            return Some((Ok(event), follow));
        }
        loop {
            let received = tokio::select! {
                received = follow.receiver.recv() => received,
                () = follow.live.closed() => return None,
            };
            match received {
                Ok(event) if event.seq <= follow.after => continue,
                Ok(event) => {
                    let event = sse_event(&follow.live, &event);
                    return Some((Ok(event), follow));
                }
                Err(broadcast::error::RecvError::Lagged(n_missed)) => {
                    tracing::info!(n_missed, "event stream client fell behind; disconnected");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn sse_event(live: &Live, event: &LiveEvent) -> Event {
    Event::default()
        .id(live.event_id(event.seq))
        .event(event.kind.name())
        .data(event.data.as_str())
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;
    use crate::live::log::EventKind;

    const DEADLINE: Duration = Duration::from_secs(30);

    /// The SSE text of the stream's next item, `None` when it ended.
    async fn next(
        stream: &mut (impl Stream<Item = Result<Event, Infallible>> + Unpin),
    ) -> Option<String> {
        let event = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("in time")?;
        let response = Sse::new(futures_util::stream::iter([event])).into_response();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Some(String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_client_resumes_after_its_last_id_then_follows() {
        let live = Live::for_tests(100, 16);
        live.publish_for_tests(EventKind::Observation, "{\"n\":1}");
        live.publish_for_tests(EventKind::Patient, "{\"n\":2}");
        let mut stream = Box::pin(event_stream(Arc::clone(&live), Some("TEST-1")));
        live.publish_for_tests(EventKind::Rejected, "{\"n\":3}");
        assert_eq!(
            next(&mut stream).await.unwrap(),
            "id: TEST-2\nevent: patient\ndata: {\"n\":2}\n\n"
        );
        assert_eq!(
            next(&mut stream).await.unwrap(),
            "id: TEST-3\nevent: rejected\ndata: {\"n\":3}\n\n"
        );
        live.close_for_tests();
        assert_eq!(
            next(&mut stream).await,
            None,
            "the stream ends when the view closes"
        );
    }

    #[tokio::test]
    async fn an_unknown_id_gets_a_reset_first() {
        let live = Live::for_tests(100, 16);
        live.publish_for_tests(EventKind::Observation, "{}");
        let mut stream = Box::pin(event_stream(Arc::clone(&live), Some("EARLIER-7")));
        assert_eq!(
            next(&mut stream).await.unwrap(),
            "id: TEST-1\nevent: reset\ndata: {\"reason\":\"missed\"}\n\n"
        );
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_disconnected_and_publishing_goes_on() {
        let live = Live::for_tests(100, 4);
        let mut stream = Box::pin(event_stream(Arc::clone(&live), None));
        // The client reads nothing while more events than the channel holds are published;
        // publishing never waits for it.
        for _ in 0..10 {
            live.publish_for_tests(EventKind::Observation, "{}");
        }
        assert_eq!(
            next(&mut stream).await,
            None,
            "a lagging client's stream ends"
        );
        // It reconnects with nothing: the events it missed are still in the window.
        let mut again = Box::pin(event_stream(Arc::clone(&live), Some("TEST-3")));
        assert!(next(&mut again).await.unwrap().starts_with("id: TEST-4\n"));
    }
}
