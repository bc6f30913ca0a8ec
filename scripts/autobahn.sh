#!/usr/bin/env bash
# Conformance of the hub's own WebSocket layer with Autobahn|Testsuite (the field's standard
# RFC 6455 suite): runs its fuzzingclient against examples/ws_echo.rs (an echo server on
# the hub's handshake, frame codec, socket and closing path) and summarizes the results.
#
#   scripts/autobahn.sh            # all 517 cases (2-3 minutes on 2 cores)
#   CASES='["1.*","5.*"]' scripts/autobahn.sh   # a subset
#
# Needs Python 2.7 (Autobahn|Testsuite does not run on Python 3): PYTHON27, or pyenv's
# 2.7.18, or python2.7 on the PATH. It makes a virtualenv once (AUTOBAHN_VENV, default
# ~/.cache/presence-hub/autobahn-venv) with the pinned versions of
# scripts/autobahn-requirements.txt. The report goes to target/autobahn/ (index.html per
# case, summary.md); the published summary is docs/autobahn.md. Exit status: 0 when no case
# FAILED. Not run in CI (too slow); everything stays on 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${AUTOBAHN_PORT:-9001}
VENV=${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/presence-hub/autobahn-venv}
OUT=$ROOT/target/autobahn
CASES=${CASES:-'["*"]'}

find_python27() {
    if [ -n "${PYTHON27:-}" ]; then echo "$PYTHON27"; return; fi
    local pyenv_root
    pyenv_root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
    if [ -x "$pyenv_root/versions/2.7.18/bin/python" ]; then
        echo "$pyenv_root/versions/2.7.18/bin/python"; return
    fi
    if command -v python2.7 >/dev/null; then command -v python2.7; return; fi
    echo "Python 2.7 not found: set PYTHON27 (pyenv install 2.7.18 provides it)" >&2
    exit 2
}

if [ ! -x "$VENV/bin/wstest" ]; then
    PY=$(find_python27)
    echo "== making the Autobahn|Testsuite virtualenv in $VENV (Python: $PY)"
    # Python 2.7 has no venv module; the last virtualenv releases that support it.
    "$PY" -m pip install --user --quiet 'virtualenv<20.22'
    "$PY" -m virtualenv --quiet "$VENV"
    "$VENV/bin/pip" install --quiet -r scripts/autobahn-requirements.txt
fi

echo "== building the echo example"
cargo build --release --quiet --example ws_echo

mkdir -p "$OUT"
rm -rf "$OUT/report"
./target/release/examples/ws_echo "127.0.0.1:$PORT" >"$OUT/ws_echo.log" 2>&1 &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    grep -q listening "$OUT/ws_echo.log" && break
    kill -0 "$ECHO_PID" 2>/dev/null || { cat "$OUT/ws_echo.log"; exit 1; }
    sleep 0.1
done

cat >"$OUT/fuzzingclient.json" <<EOF
{
  "outdir": "$OUT/report",
  "servers": [{ "agent": "presence-hub", "url": "ws://127.0.0.1:$PORT" }],
  "cases": $CASES,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF

echo "== running the fuzzingclient (cases: $CASES)"
(cd "$OUT" && timeout 3600 "$VENV/bin/wstest" -m fuzzingclient -s fuzzingclient.json \
    >"$OUT/wstest.log" 2>&1) || { tail -20 "$OUT/wstest.log"; exit 1; }

python3 scripts/autobahn_summary.py "$OUT/report/index.json" | tee "$OUT/summary.md"
