//! Twilio's REST API, the one call the adapter makes: update a live call with new TwiML
//! (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, form `Twiml=...`), to
//! move a ringing call on when the agent declines in the hub's console or the hub's ring
//! timer fires. The base URL is configurable so tests use a local recording server.

use std::time::Duration;

use crate::secret::Secret;

/// Longest wait for Twilio's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call update failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Twilio REST request failed: {0}")]
    Transport(String),
    #[error("Twilio answered status {0}")]
    Status(u16),
}

/// A client of Twilio's REST API.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    /// `https://api.twilio.com` in production.
    base: String,
    /// The account the calls belong to (basic-auth user).
    account_sid: String,
    /// The account's auth token (basic-auth password).
    auth_token: Secret,
}

impl Rest {
    /// A client for `base` (no trailing slash needed).
    pub fn new(base: &str, account_sid: &str, auth_token: Secret) -> Rest {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Rest {
            http,
            base: base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token,
        }
    }

    /// Replaces what a live call is doing with `twiml`.
    pub async fn update_call(&self, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.base, self.account_sid, call_sid
        );
        let resp = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&[("Twiml", twiml)])
            .send()
            .await
            // `without_url`: the error text never carries credentials or the full URL.
            .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(RestError::Status(resp.status().as_u16()))
        }
    }
}
