//! The WebSocket opening handshake (RFC 6455, 4.2) on the hub's HTTP/1.1 routes: checks
//! the upgrade request, answers `101 Switching Protocols`, and takes the raw TCP stream
//! back from hyper once the response went out.
//!
//! Refusals are plain-text 4xx answers, as axum's extractor gave them: a request that is
//! not a WebSocket upgrade, or has no `Host` (RFC 6455 4.2.1), gets 400 (405 for another
//! method), a version other than 13
//! gets 426 with `Sec-WebSocket-Version: 13`, and a connection hyper cannot upgrade 426.
//! No subprotocol and no extension (compression) is negotiated.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::socket::WsSocket;
use crate::config::Settings;

/// Why a request is not a WebSocket upgrade the hub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("Request method must be `GET`")]
    MethodNotGet,
    /// RFC 6455 4.2.1: an opening handshake carries a `Host` header field.
    #[error("`Host` header missing")]
    Host,
    #[error("Connection header did not include 'upgrade'")]
    ConnectionHeader,
    #[error("`Upgrade` header did not include 'websocket'")]
    UpgradeHeader,
    #[error("`Sec-WebSocket-Key` header missing or not a base64 16-byte nonce")]
    Key,
    #[error("`Sec-WebSocket-Version` must be 13")]
    Version,
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let status = match self {
            HandshakeError::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::Version | HandshakeError::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut resp = (status, self.to_string()).into_response();
        if self == HandshakeError::Version {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        resp
    }
}

/// Checks an upgrade request (in axum's order: method, then `Host` (RFC 6455 4.2.1, which
/// axum does not check), `Connection`, `Upgrade`, key, version, upgradability) and returns
/// the `Sec-WebSocket-Accept` value to answer with.
pub(crate) fn check<B>(req: &Request<B>) -> Result<HeaderValue, HandshakeError> {
    if req.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    let headers = req.headers();
    if headers
        .get(header::HOST)
        .is_none_or(|h| h.as_bytes().trim_ascii().is_empty())
    {
        return Err(HandshakeError::Host);
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::ConnectionHeader);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::UpgradeHeader);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| is_nonce(k.as_bytes()))
        .ok_or(HandshakeError::Key)?;
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"13");
    if !version_ok {
        return Err(HandshakeError::Version);
    }
    if req.extensions().get::<OnUpgrade>().is_none() {
        return Err(HandshakeError::NotUpgradable);
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| HandshakeError::Key)
}

/// The `101 Switching Protocols` answer.
pub(crate) fn switching_protocols(accept: HeaderValue) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// True when a comma-separated header (any of its values) lists `token`, ignoring case.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A base64-encoded 16-byte nonce: 22 base64 characters and `==`.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Waits for hyper to hand the connection over (after the 101 went out) and takes the TCP
/// stream back, with the bytes hyper had read past the request head. Only TCP is served
/// (the hub's listener is TCP); anything else is logged and closed.
pub(crate) async fn upgraded(on_upgrade: OnUpgrade, settings: &Settings) -> Option<WsSocket> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return None;
        }
    };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some(WsSocket::new(
            parts.io.into_inner(),
            &parts.read_buf,
            settings,
        )),
        Err(_) => {
            tracing::warn!("upgraded connection is not a TCP stream: closed (only TCP is served)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(Method::GET).uri("/ws/agent");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).expect("request");
        req.extensions_mut()
            .insert(hyper::upgrade::on(Request::new(())));
        req
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "hub.example:8080"),
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value() {
        let accept = check(&request(&GOOD)).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_missing_or_wrong_header_is_refused_with_its_status() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        let status = |e: HandshakeError| e.into_response().status().as_u16();
        let cases = [
            ("host", HandshakeError::Host, 400),
            ("connection", HandshakeError::ConnectionHeader, 400),
            ("upgrade", HandshakeError::UpgradeHeader, 400),
            ("sec-websocket-key", HandshakeError::Key, 400),
            ("sec-websocket-version", HandshakeError::Version, 426),
        ];
        for (name, err, code) in cases {
            assert_eq!(check(&request(&without(name))), Err(err), "{name}");
            assert_eq!(status(err), code);
        }
        let mut wrong = without("sec-websocket-version");
        wrong.push(("sec-websocket-version", "8"));
        assert_eq!(check(&request(&wrong)), Err(HandshakeError::Version));
        let mut bad_key = without("sec-websocket-key");
        bad_key.push(("sec-websocket-key", "short"));
        assert_eq!(check(&request(&bad_key)), Err(HandshakeError::Key));
        let mut post = request(&GOOD);
        *post.method_mut() = Method::POST;
        assert_eq!(check(&post), Err(HandshakeError::MethodNotGet));
        let mut plain = request(&GOOD);
        plain.extensions_mut().remove::<OnUpgrade>();
        assert_eq!(check(&plain), Err(HandshakeError::NotUpgradable));
    }
}
