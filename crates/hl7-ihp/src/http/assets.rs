//! The dashboard: its files built into the binary (`crates/hl7-ihp/assets/`), served with
//! their content type, an ETag and `Cache-Control: no-cache`, and the single-page shell
//! (`index.html`) at each of the dashboard's own addresses, so that they can be bookmarked.
//!
//! The files are public: they hold no patient data, and a browser cannot send a bearer
//! token when it loads a page. The data comes from `/api/v1`, which the page asks for with
//! the token. Nothing is loaded from elsewhere (the Content-Security-Policy says so too).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One file of the dashboard.
struct Asset {
    /// Its name under `/assets/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `assets/` (a test checks that none is left out).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("sse.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("plot.js", JS),
    asset!("tile.js", JS),
    asset!("ward.js", JS),
    asset!("patient.js", JS),
    asset!("operations.js", JS),
    asset!("messages.js", JS),
    asset!("alarm.js", JS),
];

/// The shell's name in [`ASSETS`].
const SHELL: &str = "index.html";

/// Only this origin's scripts, styles, images and API; no frames, no plugins, no forms
/// sent elsewhere. Styles set from scripts (`element.style`) are not inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: the shell at its addresses and the files under `/assets/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(shell))
        .route("/patients/{key}", get(shell))
        .route("/operations", get(shell))
        .route("/messages", get(shell))
        .route("/messages/{id}", get(shell))
        .route("/favicon.ico", get(favicon))
        .route("/assets/{name}", get(file))
}

async fn shell(headers: HeaderMap) -> Response {
    serve(find(SHELL).expect("the shell is built in"), &headers)
}

async fn favicon(headers: HeaderMap) -> Response {
    serve(find("favicon.svg").expect("the icon is built in"), &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match find(&name) {
        Some(index) => serve(index, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    }
}

fn find(name: &str) -> Option<usize> {
    ASSETS.iter().position(|asset| asset.name == name)
}

/// Each file's ETag: a quoted prefix of its SHA-256, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body);
                let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The file, or 304 when the browser holds this version (`If-None-Match`). `no-cache`
/// makes the browser ask each time, so a new binary's files are used at once; the answer
/// is then a few bytes.
fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex is a valid header"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if asset.name == SHELL {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
    }

    #[test]
    fn every_file_in_the_assets_folder_is_built_in() {
        let mut on_disk: Vec<String> = std::fs::read_dir(assets_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in);
    }

    #[test]
    fn every_module_the_scripts_import_is_built_in() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit_once("from \"./")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("{}: unexpected import {line}", asset.name));
                assert!(find(target).is_some(), "{}: {target}", asset.name);
            }
        }
    }

    #[test]
    fn the_shell_names_only_built_in_files() {
        let shell = std::str::from_utf8(ASSETS[find(SHELL).unwrap()].body).unwrap();
        let mut n_names = 0;
        for piece in shell.split("\"/assets/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(find(name).is_some(), "{name}");
            n_names += 1;
        }
        assert!(n_names >= 3, "{n_names}");
    }

    /// No CDN, no network, no HTML built from strings: device text goes in with
    /// `textContent` only.
    #[test]
    fn assets_load_nothing_from_elsewhere_and_build_no_html_from_text() {
        const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            let without_namespace = text.replace(SVG_NAMESPACE, "");
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !without_namespace.contains(needle),
                    "{} contains {needle}",
                    asset.name
                );
            }
            for needle in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(needle), "{} contains {needle}", asset.name);
            }
        }
    }

    #[test]
    fn a_known_version_is_not_sent_again() {
        let index = find("app.js").unwrap();
        let first = serve(index, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        let again = serve(index, &headers);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag);
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"0000\", W/\"1111\""),
        );
        assert_eq!(serve(index, &headers).status(), StatusCode::OK);
    }

    #[test]
    fn the_shell_forbids_other_origins() {
        let shell = serve(find(SHELL).unwrap(), &HeaderMap::new());
        let policy = shell.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }
}
