//! The web demo (`web-demo/`), built into the binary so `cargo run` serves it with no
//! files beside it; `--web-dir` serves a directory from disk instead (for editing).

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};
use std::sync::Arc;

use crate::hub::Hub;

static WEB_DEMO: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web-demo");

/// Serves one file of the web demo; `/` is `index.html`.
pub(super) async fn asset(State(hub): State<Arc<Hub>>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    if path
        .split('/')
        .any(|seg| seg == ".." || seg.starts_with('.'))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body: Option<Vec<u8>> = match &hub.settings().web_dir {
        Some(dir) => tokio::fs::read(dir.join(&path)).await.ok(),
        None => WEB_DEMO.get_file(&path).map(|f| f.contents().to_vec()),
    };
    match body {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}
