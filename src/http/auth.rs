//! Who is calling: JWT (HS256) verification with roles per path, the Origin allowlist, and
//! dev mode. Everything here runs before a WebSocket upgrade, so a refused client costs no
//! per-connection state. Tokens are never logged.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;

use crate::hub::Hub;
use crate::metrics::Rejected;
use crate::model::{AgentId, TeamId};
use crate::protocol::{Identity, Role, TOKEN_LEEWAY_SECS};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            AuthError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        };
        let body =
            serde_json::json!({ "type": "error", "code": code, "message": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    name: Option<String>,
    #[serde(default)]
    teams: Vec<TeamId>,
}

/// Checks the `Origin` header (when present) against the allowlist: exact match, or, with
/// no list configured, the hub's own origin (same `Host`).
pub(crate) fn check_origin(core: &Hub, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| AuthError::Forbidden("origin not allowed"))?;
    let allowed = &core.settings().allowed_origins;
    let ok = if allowed.is_empty() {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                origin == format!("http://{host}") || origin == format!("https://{host}")
            })
    } else {
        allowed.iter().any(|a| a == origin)
    };
    if ok {
        Ok(())
    } else {
        core.metrics().rejected(Rejected::Origin);
        Err(AuthError::Forbidden("origin not allowed"))
    }
}

/// Authenticates a request for a path open to `roles`.
///
/// With a secret: a JWT from `?token=` or `Authorization: Bearer`; no or bad token is 401,
/// a token of another role 403. In dev mode (no secret, loopback only): `?agent_id=`,
/// `?admin_id=` or `?adapter=` is trusted as the identity, and HTTP API calls need nothing.
pub(crate) fn authenticate(
    core: &Hub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    roles: &[Role],
) -> Result<Identity, AuthError> {
    check_origin(core, headers)?;
    let result = match &core.settings().jwt_secret {
        Some(secret) => from_token(
            secret,
            core.settings().jwt_secret_previous.as_deref(),
            headers,
            query,
            roles,
        ),
        None => dev_identity(query, roles),
    };
    if let Err(e) = &result {
        core.metrics().rejected(match e {
            AuthError::Unauthorized(_) => Rejected::Unauthorized,
            AuthError::Forbidden(_) => Rejected::WrongRole,
        });
    }
    result
}

fn from_token(
    secret: &str,
    previous: Option<&str>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    roles: &[Role],
) -> Result<Identity, AuthError> {
    // The auth scheme is case-insensitive (RFC 7235): adapters send "bearer" too.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let token = query
        .get("token")
        .map(String::as_str)
        .or(bearer)
        .ok_or(AuthError::Unauthorized("missing token"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = TOKEN_LEEWAY_SECS;
    // `nbf` (not before), when present, with the same leeway: a token minted for later is
    // refused until then.
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let verify = |secret: &str| {
        decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
    };
    // During a rotation, tokens signed with the previous secret stay valid until they
    // expire. Only a bad signature falls through to it: an expired or malformed token
    // signed with the current secret is refused as it is.
    let decoded = match (verify(secret), previous) {
        (Err(e), Some(previous))
            if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) =>
        {
            verify(previous)
        }
        (result, _) => result,
    };
    let claims = decoded
        .map_err(|_| AuthError::Unauthorized("invalid or expired token"))?
        .claims;
    let role = match claims.role.as_str() {
        "agent" => Role::Agent,
        "admin" => Role::Admin,
        "telephony" => Role::Telephony,
        _ => return Err(AuthError::Unauthorized("token has an unknown role")),
    };
    if !roles.contains(&role) {
        return Err(AuthError::Forbidden("token role not allowed here"));
    }
    if role == Role::Agent && AgentId::parse(&claims.sub).is_err() {
        return Err(AuthError::Unauthorized("token sub is not a valid agent id"));
    }
    Ok(Identity {
        role,
        subject: claims.sub,
        name: claims.name,
        teams: claims.teams,
        expires_at: Some(claims.exp),
    })
}

fn dev_identity(query: &HashMap<String, String>, roles: &[Role]) -> Result<Identity, AuthError> {
    for &role in roles {
        let param = match role {
            Role::Agent => "agent_id",
            Role::Admin => "admin_id",
            Role::Telephony => "adapter",
        };
        if let Some(subject) = query.get(param) {
            if role == Role::Agent && AgentId::parse(subject).is_err() {
                return Err(AuthError::Unauthorized("agent_id is not a valid agent id"));
            }
            if subject.is_empty() || subject.len() > 128 {
                return Err(AuthError::Unauthorized(
                    "identity must be 1..=128 characters",
                ));
            }
            let teams = query
                .get("teams")
                .map(|t| {
                    t.split(',')
                        .filter_map(|t| TeamId::parse(t.trim()).ok())
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Identity {
                role,
                subject: subject.clone(),
                name: query.get("name").cloned(),
                teams,
                expires_at: None,
            });
        }
    }
    Err(AuthError::Unauthorized(
        "dev mode: pass ?agent_id=, ?admin_id= or ?adapter= (no JWT secret is configured)",
    ))
}

/// Authenticates an HTTP API call open to `roles`; in dev mode it is open to all.
pub(crate) fn authenticate_api(
    core: &Hub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    roles: &[Role],
) -> Result<(), AuthError> {
    if core.settings().jwt_secret.is_none() {
        return check_origin(core, headers);
    }
    authenticate(core, headers, query, roles).map(|_| ())
}
