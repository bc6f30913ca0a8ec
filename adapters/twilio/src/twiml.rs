//! TwiML answers: dialing an agent's Twilio Client identity, dialing out for an agent, the
//! fallback, hang-up. Built as text with every attribute and text escaped.

use crate::routing::Fallback;

/// `<Dial>` an agent's Twilio Client identity for an inbound call.
pub struct DialAgent<'a> {
    /// The agent's Twilio Client identity (the hub's agent id).
    pub agent: &'a str,
    /// `<Dial timeout>`, seconds.
    pub timeout_secs: u32,
    /// Where Twilio reports how the dial ended (`DialCallStatus`).
    pub action_url: &'a str,
    /// Where Twilio reports the agent leg's progress.
    pub status_url: &'a str,
}

/// The answer that rings an agent. `answerOnBridge` keeps the caller hearing ringing (and
/// unbilled) until an agent picks up, across every agent tried.
pub fn dial_agent(d: &DialAgent<'_>) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
            r#"<Dial timeout="{}" action="{}" method="POST" answerOnBridge="true">"#,
            r#"<Client statusCallbackEvent="ringing answered completed" statusCallback="{}" statusCallbackMethod="POST">{}</Client>"#,
            "</Dial></Response>"
        ),
        d.timeout_secs,
        escape(d.action_url),
        escape(d.status_url),
        escape(d.agent),
    )
}

/// The answer for a call an agent places from the softphone: dial the number (or another
/// client identity, for `client:` targets).
pub fn dial_out(to: &str, caller_id: Option<&str>) -> String {
    let caller = caller_id
        .map(|c| format!(r#" callerId="{}""#, escape(c)))
        .unwrap_or_default();
    let noun = match to.strip_prefix("client:") {
        Some(id) => format!("<Client>{}</Client>", escape(id)),
        None => format!("<Number>{}</Number>", escape(to)),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial{caller}>{noun}</Dial></Response>"#
    )
}

/// What the caller hears when no agent takes the call.
pub fn fallback(f: &Fallback) -> String {
    match f {
        Fallback::Say(text) => say_and_hang_up(text),
        Fallback::Redirect(url) => format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Redirect method="POST">{}</Redirect></Response>"#,
            escape(url)
        ),
    }
}

/// `<Say>` a sentence, then hang up.
pub fn say_and_hang_up(text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
        escape(text)
    )
}

/// End the call.
pub fn hang_up() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#.to_string()
}

/// Nothing to do (a request whose call has moved on).
pub fn empty() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#.to_string()
}

/// Escapes text for an XML attribute or element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let x = say_and_hang_up("Tom & Jerry <busy>");
        assert!(x.contains("<Say>Tom &amp; Jerry &lt;busy&gt;</Say>"), "{x}");
        let x = dial_out("+1\"5", Some("a'b"));
        assert!(x.contains(r#"callerId="a&apos;b""#), "{x}");
        assert!(x.contains("<Number>+1&quot;5</Number>"), "{x}");
    }
}
