//! The API's parameters, read one way everywhere: the query string checked against the names
//! an endpoint documents (so the OpenAPI document and the parser cannot disagree), RFC 3339
//! times, durations (`500ms`, `60s`, `5m`, `1h`), page sizes and opaque cursors. Every bad
//! value becomes a 400 problem naming its parameter, axum's own rejections included.

use axum::extract::{FromRequestParts, Path};
use axum::http::Uri;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

use crate::http::problem::ApiError;
use crate::store::RecordPosition;

/// A page's default size.
pub const DEFAULT_LIMIT: usize = 100;
/// A page's largest size.
pub const MAX_LIMIT: usize = 1000;

/// The query string as `T`, whose fields are the parameters' texts (`Option<String>`) and
/// whose [`IntoParams`] documents them. A parameter `T` does not name, or one given twice, is
/// a 400; an empty value counts as absent.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + IntoParams,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        query(&parts.uri).map(Query)
    }
}

/// Reads a request's query string into `T` (see [`Query`]). Its pairs are decoded as forms
/// are (`+` a space, `%XX` a byte); bytes that are not UTF-8 are replaced, so a value that
/// needed them matches nothing.
pub fn query<T: DeserializeOwned + IntoParams>(uri: &Uri) -> Result<T, ApiError> {
    let unreadable = || ApiError::bad_parameter("query", "the query string cannot be read");
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| unreadable())?;
    let known: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .filter(|parameter| parameter.parameter_in == ParameterIn::Query)
        .map(|parameter| parameter.name)
        .collect();
    let mut values = serde_json::Map::new();
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if !known.contains(&name) {
            let detail = if known.is_empty() {
                "this endpoint takes no parameters".to_owned()
            } else {
                format!("unknown parameter; expected {}", known.join(", "))
            };
            return Err(ApiError::bad_parameter(&name, detail));
        }
        if seen.contains(&name) {
            return Err(ApiError::bad_parameter(&name, "given more than once"));
        }
        seen.push(name.clone());
        if !value.is_empty() {
            values.insert(name, serde_json::Value::String(value));
        }
    }
    serde_json::from_value(serde_json::Value::Object(values)).map_err(|_| unreadable())
}

/// One path parameter as text, percent-decoded; a path that is not UTF-8 after decoding is
/// a 400 naming `name`.
pub fn path_text(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    name: &str,
) -> Result<String, ApiError> {
    path.map(|Path(text)| text)
        .map_err(|_| ApiError::bad_parameter(name, "expected percent-encoded UTF-8 text"))
}

/// A message id: a whole number above 0.
pub fn message_id(name: &str, text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_parameter(
            name,
            "expected a message id, a whole number above 0",
        )),
    }
}

/// An RFC 3339 time with an offset (`2026-12-01T12:00:00Z`, `…+01:00`).
pub fn time(name: &str, text: Option<&str>) -> Result<Option<jiff::Timestamp>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(Some)
        .map_err(|_| {
            let hint = if text.contains(' ') {
                " (a `+` in a query string is a space: write %2B)"
            } else {
                ""
            };
            ApiError::bad_parameter(
                name,
                format!("expected an RFC 3339 time such as 2026-12-01T12:00:00Z{hint}"),
            )
        })
}

/// `since` before `until`, when both are given.
pub fn range(
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> Result<(), ApiError> {
    match (since, until) {
        (Some(since), Some(until)) if since >= until => Err(ApiError::bad_parameter(
            "since",
            "expected a time before `until`",
        )),
        _ => Ok(()),
    }
}

/// A duration of whole milliseconds: a number and a unit, `500ms`, `60s`, `5m`, `1h`, between
/// `least_ms` and a day.
pub fn duration_ms(name: &str, text: &str, least_ms: i64) -> Result<i64, ApiError> {
    const MOST_MS: i64 = 24 * 3600 * 1000;
    let error = || {
        ApiError::bad_parameter(
            name,
            format!(
                "expected a duration from {} to 24h such as 60s, 5m or 1h",
                human_ms(least_ms)
            ),
        )
    };
    let text = text.trim();
    // A unit is required: a bare number could be read as seconds or as milliseconds.
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(error());
    }
    let duration = crate::config::parse_duration(text).ok_or_else(error)?;
    let ms = i64::try_from(duration.as_millis()).map_err(|_| error())?;
    if !(least_ms..=MOST_MS).contains(&ms) {
        return Err(error());
    }
    Ok(ms)
}

fn human_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A page size, 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when not given.
pub fn limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_parameter(
            "limit",
            format!("expected a whole number from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// The cursor of a page of records: the last record of the page before, `r<message>.<index>`.
pub fn record_cursor(position: RecordPosition) -> String {
    format!("r{}.{}", position.message_id, position.index)
}

/// Reads [`record_cursor`]'s text back.
pub fn parse_record_cursor(text: Option<&str>) -> Result<Option<RecordPosition>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let position = text.strip_prefix('r').and_then(|rest| {
        let (message, index) = rest.split_once('.')?;
        Some(RecordPosition {
            message_id: message.parse().ok().filter(|&id: &i64| id > 0)?,
            index: index.parse().ok()?,
        })
    });
    position.map(Some).ok_or_else(bad_cursor)
}

/// The cursor of a page of messages: the last message of the page before, `m<id>`.
pub fn message_cursor(id: i64) -> String {
    format!("m{id}")
}

/// Reads [`message_cursor`]'s text back.
pub fn parse_message_cursor(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    text.strip_prefix('m')
        .and_then(|id| id.parse().ok())
        .filter(|&id: &i64| id > 0)
        .map(Some)
        .ok_or_else(bad_cursor)
}

fn bad_cursor() -> ApiError {
    ApiError::bad_parameter(
        "cursor",
        "expected the next_cursor of an earlier page of this list, unchanged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(dead_code)]
    struct Params {
        code: Option<String>,
        #[serde(rename = "type")]
        message_type: Option<String>,
    }

    fn parameter(error: ApiError) -> String {
        error.0.parameter.unwrap_or_default()
    }

    fn query<T: DeserializeOwned + IntoParams>(text: &str) -> Result<T, ApiError> {
        super::query(&format!("/?{text}").parse().unwrap())
    }

    #[test]
    fn a_query_names_its_bad_parameter() {
        let params: Params = query("code=a%2Fb+c&type=ORU%5ER01").unwrap();
        assert_eq!(params.code.as_deref(), Some("a/b c"));
        assert_eq!(params.message_type.as_deref(), Some("ORU^R01"));
        let params: Params = query("code=&").unwrap();
        assert_eq!(params.code, None);
        assert_eq!(parameter(query::<Params>("cod=1").err().unwrap()), "cod");
        assert_eq!(
            parameter(query::<Params>("code=1&code=2").err().unwrap()),
            "code"
        );
        // Broken escapes and bytes that are not UTF-8 are kept or replaced, never a failure.
        let params: Params = query("code=%zz%4").unwrap();
        assert_eq!(params.code.as_deref(), Some("%zz%4"));
        let params: Params = query("code=%FF").unwrap();
        assert_eq!(params.code.as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn values_are_checked_with_their_names() {
        assert!(
            time("since", Some("2026-12-01T12:00:00Z"))
                .unwrap()
                .is_some()
        );
        assert!(
            time("since", Some("2026-12-01T13:00:00+01:00"))
                .unwrap()
                .is_some()
        );
        for bad in [
            "2026-12-01",
            "2026-12-01T12:00:00",
            "yesterday",
            "2026-12-01T12:00:00 01:00",
        ] {
            assert_eq!(
                parameter(time("until", Some(bad)).unwrap_err()),
                "until",
                "{bad}"
            );
        }
        assert_eq!(duration_ms("bucket", "60s", 1000).unwrap(), 60_000);
        assert_eq!(duration_ms("bucket", "1500ms", 1000).unwrap(), 1500);
        assert_eq!(duration_ms("bucket", "1h", 1000).unwrap(), 3_600_000);
        for bad in ["60", "999ms", "0s", "25h", "1d", "-5s", "1.5s", "s"] {
            assert_eq!(
                parameter(duration_ms("bucket", bad, 1000).unwrap_err()),
                "bucket",
                "{bad}"
            );
        }
        assert_eq!(limit(None).unwrap(), 100);
        assert_eq!(limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", "1e3"] {
            assert_eq!(parameter(limit(Some(bad)).unwrap_err()), "limit", "{bad}");
        }
    }

    #[test]
    fn cursors_read_back_what_they_wrote() {
        let position = RecordPosition {
            message_id: 48213,
            index: 7,
        };
        assert_eq!(record_cursor(position), "r48213.7");
        assert_eq!(
            parse_record_cursor(Some("r48213.7")).unwrap(),
            Some(position)
        );
        assert_eq!(
            parse_message_cursor(Some(&message_cursor(9))).unwrap(),
            Some(9)
        );
        for bad in ["48213.7", "r48213", "r.7", "r0.1", "r1.-1", "m5"] {
            assert_eq!(
                parameter(parse_record_cursor(Some(bad)).unwrap_err()),
                "cursor",
                "{bad}"
            );
        }
        for bad in ["5", "m0", "m-1", "mx", "r1.0"] {
            assert_eq!(
                parameter(parse_message_cursor(Some(bad)).unwrap_err()),
                "cursor",
                "{bad}"
            );
        }
    }
}
