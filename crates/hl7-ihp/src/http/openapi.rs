//! The OpenAPI 3.1 document at `GET /api/v1/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` attributes and the response types' `ToSchema`, so that it cannot drift
//! from the code: the API's endpoints, the live view's (merged in), `/healthz` and
//! `/metrics`, the bearer scheme and the 401 every path but `/healthz` answers without it.

use std::sync::LazyLock;

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{self, RefOr, ResponseBuilder};

use super::access::OPEN_PATHS;
use super::api::{alarms, messages, observations};

/// The name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// The paths and types of this module's endpoints and of `/healthz` and `/metrics`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hl7-ihp",
        description = "The HTTP side of the hl7-ihp HL7 v2 receiver: health, metrics, and the \
                       JSON API under /api/v1 (docs/api.md). Errors are RFC 9457 problem \
                       details; times are RFC 3339 in UTC with milliseconds.",
    ),
    paths(
        super::healthz,
        super::metrics,
        super::api::openapi_document,
        observations::observations,
        observations::trends,
        messages::messages,
        messages::message,
        alarms::alarms,
    ),
    components(schemas(
        super::problem::Problem,
        alarms::AlarmsPage,
        crate::live::alarms::AlarmView,
        crate::live::alarms::AlarmMeasurementView
    )),
    tags(
        (name = "operations", description = "Health and metrics"),
        (name = "patients", description = "Patients and their observations"),
        (name = "messages", description = "The message browser"),
        (name = "meta", description = "This document"),
        (name = "alarms", description = "Alarm reports (ORU^R40, IHE PCD-04)"),
    ),
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`], the live view's, and the access rules.
pub fn document() -> openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(super::live_api::LiveApi::openapi());
    add_access(&mut document);
    document
}

/// [`document`] as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    &JSON
}

/// The bearer scheme, required by every operation but those of [`OPEN_PATHS`], each of which
/// answers 401 without it (the middleware that checks it runs before any handler).
fn add_access(document: &mut openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "Needed when the receiver has a token (--http-token-file or \
                     HL7IHP_HTTP_TOKEN), always so when --http is not a loopback address.",
                ))
                .build(),
        ),
    );
    let unauthorized: RefOr<openapi::Response> = ResponseBuilder::new()
        .description("No valid bearer token")
        .header(
            "WWW-Authenticate",
            openapi::HeaderBuilder::new()
                .schema(openapi::ObjectBuilder::new().schema_type(openapi::Type::String))
                .description(Some("`Bearer`"))
                .build(),
        )
        .content(
            "application/problem+json",
            openapi::ContentBuilder::new()
                .schema(Some(openapi::Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into();
    document.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    for (path, item) in document.paths.paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            if open {
                operation.security = Some(Vec::new());
            } else {
                operation
                    .responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| unauthorized.clone());
            }
        }
    }
}
