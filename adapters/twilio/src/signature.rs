//! Twilio's webhook signature (`X-Twilio-Signature`): base64 of HMAC-SHA1, keyed with the
//! account's auth token, over the URL Twilio requested followed by every POST parameter as
//! `name + value`, names sorted (and, like the official helper libraries, each name's
//! distinct values sorted). Like Twilio's `RequestValidator`, a signature is accepted for the
//! URL with or without its default port, since Twilio signs either form.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

type HmacSha1 = Hmac<Sha1>;

/// The signature Twilio would send for a request to `url` with these form parameters.
pub fn compute(auth_token: &Secret, url: &str, params: &[(String, String)]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha1::new_from_slice(auth_token.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(url.as_bytes());
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request (the URL with or without its port).
pub fn is_valid(
    auth_token: &Secret,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let (with_port, without_port) = port_variants(url);
    [without_port, with_port].iter().any(|u| {
        let want = compute(auth_token, u, params);
        bool::from(want.as_bytes().ct_eq(signature.as_bytes()))
    })
}

/// The URL with its port written out (443 for https, 80 otherwise) and without any port.
fn port_variants(url: &str) -> (String, String) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), url.to_string());
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    // The port follows the last ':' that is not inside an IPv6 literal's brackets.
    let port_at = authority
        .rfind(':')
        .filter(|&i| !authority[i..].contains(']'))
        .filter(|&i| authority[i + 1..].bytes().all(|b| b.is_ascii_digit()));
    let head = &url[..authority_start];
    let tail = &url[authority_end..];
    match port_at {
        Some(i) if i + 1 < authority.len() => {
            let host = &authority[..i];
            (url.to_string(), format!("{head}{host}{tail}"))
        }
        _ => {
            let host = authority.trim_end_matches(':');
            let port = if url[..scheme_end].eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            (
                format!("{head}{host}:{port}{tail}"),
                format!("{head}{host}{tail}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_added_and_removed() {
        assert_eq!(
            port_variants("https://ex.com/a?b=1"),
            (
                "https://ex.com:443/a?b=1".into(),
                "https://ex.com/a?b=1".into()
            )
        );
        assert_eq!(
            port_variants("http://127.0.0.1:8080/x"),
            (
                "http://127.0.0.1:8080/x".into(),
                "http://127.0.0.1/x".into()
            )
        );
        assert_eq!(
            port_variants("http://ex.com"),
            ("http://ex.com:80".into(), "http://ex.com".into())
        );
    }

    #[test]
    fn a_changed_parameter_changes_the_signature() {
        let token = Secret::new("12345");
        let p = |v: &str| vec![("CallSid".to_string(), v.to_string())];
        let sig = compute(&token, "https://ex.com/v", &p("CA1"));
        assert!(is_valid(&token, "https://ex.com/v", &p("CA1"), &sig));
        assert!(!is_valid(&token, "https://ex.com/v", &p("CA2"), &sig));
        assert!(!is_valid(
            &Secret::new("12346"),
            "https://ex.com/v",
            &p("CA1"),
            &sig
        ));
    }
}
