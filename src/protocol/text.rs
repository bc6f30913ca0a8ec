//! [`Text`]: the hub's own outbound text frame payload. UTF-8 by construction, shared
//! (`bytes::Bytes`), so one serialized update is handed to every socket that sends it
//! without a copy. The hub's sockets are driven by its own WebSocket layer (`ws`), not by
//! axum's, so the frame type is the hub's too.

use bytes::Bytes;
use std::fmt;

/// A ready-made text frame payload: valid UTF-8, cheap to clone.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Bytes);

impl Text {
    /// The payload as a string slice.
    pub fn as_str(&self) -> &str {
        // Only built from `String`/`&'static str` (see the `From` impls): always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The payload's bytes, as written to the socket.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
