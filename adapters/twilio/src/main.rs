//! `presence-twilio`: the Twilio Programmable Voice adapter for presence-hub.
//!
//! `presence-twilio serve ...` runs it; `presence-twilio sign ...` prints the
//! `X-Twilio-Signature` of a webhook (and a ready curl line) for local testing;
//! `presence-twilio record-rest` stands in for Twilio's REST API locally and prints what
//! the adapter sends it.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use presence_twilio::{signature, Routing, Secret, Settings};

#[derive(Parser)]
#[command(version, about = "Twilio Programmable Voice adapter for presence-hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the adapter: webhook server plus the hub connection.
    Serve(Serve),
    /// Print the X-Twilio-Signature of a webhook, and a curl command that sends it.
    Sign(Sign),
    /// Stand in for Twilio's REST API locally: answer 200 and print each request (method,
    /// path, form fields; never the Authorization header). Point `serve --rest-base` here.
    RecordRest(RecordRest),
}

#[derive(Args)]
struct RecordRest {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7599")]
    listen: String,
}

#[derive(Args)]
struct Serve {
    /// Address the webhook server listens on.
    #[arg(long, env = "PRESENCE_TWILIO_LISTEN", default_value = "127.0.0.1:7500")]
    listen: String,
    /// Scheme, host, port (and any path prefix a proxy strips) Twilio uses to reach this
    /// adapter; signatures are checked against it, and callback URLs built from it.
    #[arg(long, env = "PRESENCE_TWILIO_PUBLIC_URL")]
    public_url: String,
    /// The hub's HTTP address.
    #[arg(
        long,
        env = "PRESENCE_TWILIO_HUB_URL",
        default_value = "http://127.0.0.1:7400"
    )]
    hub_url: String,
    /// A JWT of role `telephony` for the hub; without it the hub must be in dev mode.
    #[arg(long, env = "PRESENCE_TWILIO_HUB_TOKEN", hide_env_values = true)]
    hub_token: Option<String>,
    /// The adapter's name in the hub's dev mode (`?adapter=`).
    #[arg(long, default_value = "twilio")]
    adapter_id: String,
    /// Twilio account SID (AC...).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    account_sid: String,
    /// Twilio auth token (verifies webhooks, authenticates REST calls).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
    /// Routing file (TOML): numbers to ring groups, ring timeout, attempts, fallback.
    #[arg(long, env = "PRESENCE_TWILIO_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Twilio's REST API base URL.
    #[arg(
        long,
        env = "PRESENCE_TWILIO_REST_BASE",
        default_value = "https://api.twilio.com"
    )]
    rest_base: String,
    /// Longest a webhook may take before the fallback TwiML is answered (Twilio waits 15 s).
    #[arg(long, default_value_t = 5000)]
    webhook_deadline_ms: u64,
    /// Added to the ring timeout in offers to the hub, so Twilio's own no-answer ends a
    /// ring first and the hub's timer is a backstop.
    #[arg(long, default_value_t = 5)]
    hub_ring_margin_secs: u64,
}

#[derive(Args)]
struct Sign {
    /// The full URL the webhook is sent to, as Twilio would call it.
    #[arg(long)]
    url: String,
    /// Twilio auth token.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
    /// Form parameters, `Name=value` (as many as needed).
    params: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(s) => serve(s).await,
        Command::Sign(s) => sign(s),
        Command::RecordRest(r) => {
            let listener = tokio::net::TcpListener::bind(&r.listen)
                .await
                .with_context(|| format!("cannot listen on {}", r.listen))?;
            Ok(presence_twilio::record_rest::serve(listener).await?)
        }
    }
}

async fn serve(s: Serve) -> anyhow::Result<()> {
    if !(1..=14_000).contains(&s.webhook_deadline_ms) {
        anyhow::bail!("--webhook-deadline-ms must be between 1 and 14000 (Twilio waits 15 s)");
    }
    let routing = match &s.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Routing::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Routing::default(),
    };
    let mut settings = Settings::new(
        &s.hub_url,
        &s.public_url,
        &s.account_sid,
        Secret::new(s.auth_token),
    );
    settings.hub.token = s.hub_token.map(Secret::new);
    settings.hub.adapter_id = s.adapter_id;
    settings.rest_base = s.rest_base;
    settings.behaviour.routing = routing;
    settings.behaviour.deadline = Duration::from_millis(s.webhook_deadline_ms);
    settings.behaviour.hub_ring_margin = Duration::from_secs(s.hub_ring_margin_secs);
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    tracing::info!(
        "presence-twilio on {} (public URL {}), hub {}",
        listener.local_addr()?,
        settings.behaviour.public_url,
        settings.hub.url
    );
    let adapter = presence_twilio::spawn(listener, settings);
    tokio::select! {
        r = adapter.server => { r??; }
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}

fn sign(s: Sign) -> anyhow::Result<()> {
    let mut params = Vec::new();
    for p in &s.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("parameter {p:?} is not Name=value"))?;
        params.push((k.to_string(), v.to_string()));
    }
    let sig = signature::compute(&Secret::new(s.auth_token), &s.url, &params);
    println!("{sig}");
    let mut curl = format!("curl -sS -X POST -H 'X-Twilio-Signature: {sig}'");
    for (k, v) in &params {
        curl.push_str(&format!(" --data-urlencode '{k}={v}'"));
    }
    // The status on its own line: status callbacks answer an empty 204 (success).
    curl.push_str(&format!(" -w '\\nHTTP %{{http_code}}\\n' '{}'", s.url));
    eprintln!("{curl}");
    Ok(())
}
