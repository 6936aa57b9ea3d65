//! Who may use the HTTP side: with a token set (`--http-token-file` or `HL7IHP_HTTP_TOKEN`),
//! every path but `/healthz` needs `Authorization: Bearer TOKEN`. Checked in a middleware
//! that runs before routing's extractors and any handler, so a request without the token
//! costs its head and nothing more; the comparison takes the same time whatever the guess.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::HttpState;
use super::problem::ApiError;
use crate::config::HttpToken;

/// The paths that stay open with a token set: a load balancer's health check has none.
pub const OPEN_PATHS: &[&str] = &["/healthz"];

/// What the middleware checks a request against: nothing, or the token's SHA-256.
#[derive(Clone, Default)]
pub struct Access {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.digest.is_some() {
            "token"
        } else {
            "open"
        };
        f.debug_tuple("Access").field(&state).finish()
    }
}

impl Access {
    /// No token: every request passes (the HTTP side is on loopback).
    pub fn open() -> Access {
        Access { digest: None }
    }

    /// Requests need `token`, or none when `None`.
    pub fn new(token: Option<&HttpToken>) -> Access {
        Access {
            digest: token.map(|token| Sha256::digest(token.secret()).into()),
        }
    }

    /// True when a request with this `Authorization` value (if any) may pass.
    fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let Some(candidate) = authorization.and_then(bearer) else {
            return false;
        };
        // Both sides hashed first: the comparison's time depends on neither the token's
        // length nor how much of a guess is right.
        let candidate: [u8; 32] = Sha256::digest(candidate).into();
        let difference = candidate
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// The token of a `Bearer TOKEN` credential (the scheme's case does not matter).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The middleware: 401 with `WWW-Authenticate: Bearer` unless the request may pass.
pub async fn require_token(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if state.access.allows(authorization) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let token = HttpToken::new("s3cret").unwrap();
        let access = Access::new(Some(&token));
        assert!(access.allows(Some(b"Bearer s3cret")));
        assert!(access.allows(Some(b"bearer  s3cret ")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer ",
            b"Basic s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!access.allows(Some(wrong)), "{wrong:?}");
        }
        assert!(!access.allows(None));
        assert!(Access::open().allows(None));
        assert!(!format!("{access:?}").contains("s3cret"));
    }
}
