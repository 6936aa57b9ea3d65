//! Errors as RFC 9457 problem details: `application/problem+json` with the status, a title,
//! a detail and, for a bad parameter, its name. Every handler returns [`ApiError`] for what
//! went wrong, so no bad input becomes a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem details document (RFC 9457).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong with this request, without patient data.
    pub detail: String,
    /// The query or path parameter at fault, for a 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// What a handler returns when it cannot answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    /// 400: `parameter` is wrong, `detail` says how.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            "Bad parameter",
            detail,
            Some(parameter.to_owned()),
        )
    }

    /// 404: no such `what` (`patient`, `message`, …).
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no such {what}"),
            None,
        )
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path answers GET only",
            None,
        )
    }

    /// 401: no token, or not the right one.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "this receiver needs a bearer token: Authorization: Bearer TOKEN",
            None,
        )
    }

    /// 503: the store failed to answer (its message names no values).
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            detail,
            None,
        )
    }

    fn new(
        status: StatusCode,
        slug: &str,
        title: &str,
        detail: impl Into<String>,
        parameter: Option<String>,
    ) -> ApiError {
        ApiError(Box::new(Problem {
            kind: format!("https://hl7-ihp.invalid/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            parameter,
        }))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        ApiError::unavailable(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
