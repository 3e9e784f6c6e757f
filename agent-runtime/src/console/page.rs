//! The console's page: one static HTML document, its script and its style, compiled into
//! the binary (no build step, nothing fetched from elsewhere).
//!
//! Invariants:
//! - The page holds no data and no secret: it fetches everything from `/api/v1/` with the
//!   token the user types (kept in the tab's `sessionStorage`), and sets stored text as
//!   text (`textContent`), never as markup. The graph is the server's SVG, parsed as XML
//!   (`DOMParser`), whose text the server escaped.
//! - No inline script or style: the content-security policy allows this origin's files
//!   only.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const HTML: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

pub(super) async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], HTML).into_response()
}

pub(super) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SCRIPT)
        .into_response()
}

pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE).into_response()
}

/// No icon: an empty answer, so browsers asking for one do not log a 404.
pub(super) async fn icon() -> Response {
    axum::http::StatusCode::NO_CONTENT.into_response()
}
