//! Tokens for a hub with a JWT secret, and reading agent lists from replies.

use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use presence_hub::Settings;
use serde_json::{json, Value};

/// `claims` signed with `secret` by `alg`.
pub fn sign(secret: &str, alg: Algorithm, claims: &Value) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// An HS256 token with `sub`, `role` and the absolute `exp` (seconds since the epoch).
pub fn jwt(secret: &str, sub: &str, role: &str, exp: u64) -> String {
    sign(
        secret,
        Algorithm::HS256,
        &json!({"sub": sub, "role": role, "exp": exp}),
    )
}

/// A token with `sub`, `role`, `exp` = now + `exp_in` seconds, plus `extra` claims.
pub fn token_with(
    secret: &str,
    alg: Algorithm,
    sub: &str,
    role: &str,
    exp_in: i64,
    extra: Value,
) -> String {
    let exp = get_current_timestamp() as i64 + exp_in;
    let mut claims = json!({"sub": sub, "role": role, "exp": exp});
    for (k, v) in extra.as_object().expect("extra claims object") {
        claims[k] = v.clone();
    }
    sign(secret, alg, &claims)
}

/// `base` with `secret` as the JWT secret: every socket and API call needs a token.
pub fn secured(secret: &str, base: Settings) -> Settings {
    Settings {
        jwt_secret: Some(secret.to_string()),
        ..base
    }
}

/// The `agent_id`s of a list of agents, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|a| a["agent_id"].as_str().expect("agent_id").to_string())
        .collect()
}
