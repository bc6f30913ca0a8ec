//! The `presence-twilio` binary: `sign` prints Twilio's signature (checked against a vector
//! of the official library), `serve` never writes its secrets to its output, and
//! `record-rest` answers a call update and prints it without the credentials.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_presence-twilio");

#[test]
fn sign_prints_the_official_signature() {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/signatures.json")).expect("fixture");
    let v = doc["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| {
            v["what"] == "valid"
                && v["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/twilio/voice"))
        })
        .expect("a voice vector")
        .clone();
    let mut cmd = Command::new(BIN);
    cmd.arg("sign")
        .arg("--url")
        .arg(v["url"].as_str().expect("url"))
        .env(
            "TWILIO_AUTH_TOKEN",
            v["auth_token"].as_str().expect("token"),
        );
    for p in v["params"].as_array().expect("params") {
        cmd.arg(format!(
            "{}={}",
            p[0].as_str().expect("k"),
            p[1].as_str().expect("v")
        ));
    }
    let out = cmd.output().expect("run sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(stdout.trim(), v["signature"].as_str().expect("signature"));
    let curl = String::from_utf8(out.stderr).expect("utf8");
    assert!(curl.contains("X-Twilio-Signature: "), "{curl}");
    assert!(
        curl.contains(r"-w '\nHTTP %{http_code}\n'"),
        "the status is printed: {curl}"
    );
}

#[test]
fn serve_never_logs_its_secrets() {
    let auth = "auth-token-SECRET-4242";
    let hub_token = "hub-jwt-SECRET-4343";
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "https://voice.example.com",
        ])
        // A hub address that refuses connections: the adapter logs its reconnect attempts.
        .args(["--hub-url", "http://127.0.0.1:9", "--account-sid", "AC123"])
        .env("TWILIO_AUTH_TOKEN", auth)
        .env("PRESENCE_TWILIO_HUB_TOKEN", hub_token)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut addr = None;
    for _ in 0..50 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("presence-twilio on ").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no listen line in: {seen}"));
    // A webhook with a bad signature is logged as refused.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    use std::io::Write as _;
    let body = "CallSid=CA1&From=%2B1";
    write!(
        s,
        "POST /twilio/voice HTTP/1.1\r\nHost: {addr}\r\nX-Twilio-Signature: bad\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    // Read on until both the refusal and a reconnect attempt are logged (the reconnect
    // warning repeats, so this never waits long).
    for _ in 0..200 {
        if seen.contains("bad signature") && seen.contains("cannot reach the hub") {
            break;
        }
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
    }
    child.kill().expect("kill");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    let _ = child.wait();
    let all = format!("{seen}{err}");
    assert!(
        all.contains("bad signature"),
        "the refusal is logged: {all}"
    );
    assert!(all.contains("cannot reach the hub"), "{all}");
    assert!(
        !all.contains(auth) && !all.contains(hub_token),
        "a secret leaked: {all}"
    );
}

#[test]
fn record_rest_answers_and_prints_the_update_without_credentials() {
    let mut child = Command::new(BIN)
        .args(["record-rest", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn record-rest");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in: {first}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    use std::io::Write as _;
    let body = "Twiml=%3CResponse%3E%3CHangup%2F%3E%3C%2FResponse%3E";
    // Basic AC1:secret-token-777
    write!(
        s,
        "POST /2010-04-01/Accounts/AC1/Calls/CA9.json HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic QUMxOnNlY3JldC10b2tlbi03Nzc=\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""sid":"CA9""#), "{resp}");
    let mut seen = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut seen).expect("line");
    }
    child.kill().expect("kill");
    let _ = child.wait();
    assert_eq!(
        seen,
        "POST /2010-04-01/Accounts/AC1/Calls/CA9.json\n  Twiml=<Response><Hangup/></Response>\n"
    );
    assert!(!seen.contains("QUMx") && !seen.contains("secret-token"));
}
