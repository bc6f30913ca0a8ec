//! `presence-twilio record-rest`: a local stand-in for Twilio's REST API, for watching the
//! console-Decline flow without Twilio. It answers every request 200 with a small call JSON
//! (as Twilio does for a call update) and prints each request's method, path and decoded
//! form fields (the `Twiml` the adapter sends) on stdout. The `Authorization` header is never
//! printed: it carries the auth token.

use axum::body::Bytes;
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use std::io::Write as _;
use tokio::net::TcpListener;

/// Serves the recorder on `listener` until the process ends; prints its address first.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    println!(
        "recording Twilio REST requests on http://{} (point serve --rest-base here)",
        listener.local_addr()?
    );
    let app = axum::Router::new().fallback(record);
    axum::serve(listener, app).await
}

async fn record(method: Method, uri: Uri, body: Bytes) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{method} {}", uri.path());
    for (name, value) in &fields {
        let _ = writeln!(out, "  {name}={value}");
    }
    let _ = out.flush();
    // `.../Calls/CA123.json` -> the call's sid, as Twilio echoes it.
    let sid = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json");
    let body = serde_json::json!({"sid": sid, "status": "in-progress"}).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
