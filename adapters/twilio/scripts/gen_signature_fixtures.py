#!/usr/bin/env python3
"""Regenerates fixtures/signatures.json with Twilio's official helper library.

    python3 -m venv /tmp/twvenv && /tmp/twvenv/bin/pip install twilio
    /tmp/twvenv/bin/python adapters/twilio/scripts/gen_signature_fixtures.py

Every vector is signed by `twilio.request_validator.RequestValidator.compute_signature`, and
every `valid` verdict (including the tampered variants) is what `RequestValidator.validate`
says. The Rust tests (tests/signature_fixtures.rs) read the JSON only: CI never runs this.
"""
import json
import os

import twilio
from twilio.request_validator import RequestValidator

TOKENS = ["12345", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "tok+/=&?ü"]

CASES = [
    ("https://mycompany.com/myapp.php?foo=1&bar=2",
     {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234",
      "From": "+14158675310", "To": "+18005551212"}),
    ("https://presence.example.com/twilio/voice",
     {"AccountSid": "AC" + "a" * 32, "ApiVersion": "2010-04-01", "CallSid": "CA" + "b" * 32,
      "CallStatus": "ringing", "Called": "+15550000000", "Caller": "+15551234567",
      "Direction": "inbound", "From": "+15551234567", "To": "+15550000000"}),
    ("https://presence.example.com/twilio/dial-action?agent=a1&group=sales-line",
     {"AccountSid": "AC" + "a" * 32, "CallSid": "CA" + "b" * 32, "CallStatus": "in-progress",
      "DialCallSid": "CA" + "c" * 32, "DialCallStatus": "no-answer", "Direction": "inbound",
      "From": "+15551234567", "To": "+15550000000"}),
    ("https://presence.example.com:8443/twilio/agent-status?agent=a%40b&group=g",
     {"AccountSid": "AC" + "a" * 32, "CallSid": "CA" + "d" * 32,
      "ParentCallSid": "CA" + "b" * 32, "CallStatus": "completed", "CallbackSource":
      "call-progress-events", "SequenceNumber": "3", "Timestamp":
      "Tue, 01 Dec 2026 12:00:00 +0000", "To": "client:a@b", "Direction": "outbound-dial"}),
    ("http://127.0.0.1:7500/twilio/call-status",
     {"CallSid": "CA" + "e" * 32, "CallStatus": "completed", "From": "client:a1",
      "To": "+15559999999", "Note": "Grüße & <tags> = \"quotes\"", "Empty": ""}),
    ("https://example.com/no-params", {}),
]


def tampered(url, params, token):
    """Variants that must be refused: (what changed, url, params, token)."""
    out = [("url path", url.replace("/twilio", "/twilio2") if "/twilio" in url
            else url + "x", params, token),
           ("url host", url.replace("://", "://evil."), params, token),
           ("token", url, params, token + "x")]
    if params:
        k = sorted(params)[0]
        out.append(("param value", url, {**params, k: params[k] + "1"}, token))
        out.append(("param added", url, {**params, "Extra": "1"}, token))
        p2 = dict(params)
        del p2[k]
        out.append(("param removed", url, p2, token))
    return out


def with_port(url):
    """The same URL with the scheme's default port written out, if it has none."""
    scheme, rest = url.split("://", 1)
    host, sep, tail = rest.partition("/")
    if ":" in host:
        return None
    port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port}{sep}{tail}"


def main():
    vectors = []
    for token in TOKENS:
        v = RequestValidator(token)
        for url, params in CASES:
            sig = v.compute_signature(url, params)
            pairs = sorted(params.items())
            vectors.append({"what": "valid", "auth_token": token, "url": url,
                            "params": pairs, "signature": sig,
                            "valid": v.validate(url, params, sig)})
            # Twilio may sign with the default port written out: still valid.
            alt = with_port(url)
            if alt:
                alt_sig = v.compute_signature(alt, params)
                vectors.append({"what": "signed with default port", "auth_token": token,
                                "url": url, "params": pairs, "signature": alt_sig,
                                "valid": v.validate(url, params, alt_sig)})
            for what, u2, p2, t2 in tampered(url, params, token):
                vectors.append({"what": what, "auth_token": t2, "url": u2,
                                "params": sorted(p2.items()), "signature": sig,
                                "valid": RequestValidator(t2).validate(u2, p2, sig)})
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "fixtures", "signatures.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"generator": f"twilio {twilio.__version__} RequestValidator",
                   "vectors": vectors}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(vectors)} vectors -> {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
