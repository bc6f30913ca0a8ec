#!/usr/bin/env bash
# Benchmark of presence-hub against the performance table of the targets.
#
#   bench/run.sh            small size: fits a 2-core machine in a few minutes (default)
#   bench/run.sh --full     the target sizes (100k agents, 500 admins, longer runs)
#   bench/run.sh --smoke    tiny size for CI (see bench/smoke.sh): completion, order, no loss
#   bench/run.sh --cluster  cluster mode (bench/cluster.sh): 1, 2, 3 nodes on one NATS, the
#                           backplane's cost per change, failover, 100k sockets on 6 nodes;
#                           `--cluster --smoke` is a < 60 s run of the same (bench/cluster.md)
#   bench/run.sh --compare  the hub against its benchmark peers (bench/competitors/): the same
#                           ack-driven fan-out (1000 agents; 500, 50 and 1 admins; 5 s; 3 rounds),
#                           idle memory per agent socket and logins/s (10,000 sockets), each on
#                           a fresh server process; writes bench/versus.json and bench/versus.md
#
# --compare options: --servers hub,hub-async,uws,tungstenite,raw (default: all five; hub-async is
#          the hub with --durability async, the A/B for its per-change store cost; uws needs node+npm,
#          `npm ci` runs in bench/competitors/uws when node_modules is missing); sizes from the
#          environment: CMP_AGENTS (1000), CMP_ADMINS ("500 50"), CMP_COST_ADMINS ("1": extra
#          one-round runs for the cost per change), CMP_SECS (5), CMP_ROUNDS (3),
#          CMP_IDLE_AGENTS (10000), CMP_RATES ("200000": CMP_ROUNDS paced runs per rate,
#          deliveries/s to the first of CMP_ADMINS, for latency at a fixed load; the table
#          gives the median p50 / p99 and the range of the p99s).
#
# Options: --no-build (use the binaries already built), --debug (debug binaries),
#          --only NAME[,NAME..] (run only these scenarios, e.g. --only fanout-50,snapshot),
#          --out FILE (results JSON; default bench/results.json, smoke: target/bench-smoke/results.json),
#          --no-chart (skip bench/latency.svg).
#          HUB_BIN=PATH (env): run the scenarios against another hub binary, e.g. an older build.
#
# Builds the hub and the load generator, then for each scenario starts a fresh hub (release
# binary, loopback, dev mode, `ulimit -n` raised) on a free port, runs `loadgen` against it,
# stops the hub, and keeps the `RESULT {json}` line. Writes the results JSON, a summary table
# against the targets (bench/summary.md) and the latency chart (bench/latency.svg).
# Exits non-zero when any scenario failed its checks (loss, disorder, failed logins, leaks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Cluster mode has its own driver (it starts NATS and several nodes): every option goes there.
for arg in "$@"; do
  if [[ "$arg" == --cluster ]]; then exec "$ROOT/bench/cluster.sh" "$@"; fi
done

SIZE=small
BUILD=1
PROFILE=release
ONLY=""
OUT=""
CHART=1
SERVERS="hub,hub-async,uws,tungstenite,raw"
usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --full) SIZE=full ;;
    --small) SIZE=small ;;
    --smoke) SIZE=smoke ;;
    --compare) SIZE=compare ;;
    --servers) SERVERS="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --debug) PROFILE=debug ;;
    --only) ONLY="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --no-chart) CHART=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ -z "$OUT" ]]; then
  case "$SIZE" in
    smoke) OUT="$ROOT/target/bench-smoke/results.json" ;;
    compare) OUT="$ROOT/bench/versus.json" ;;
    *) OUT="$ROOT/bench/results.json" ;;
  esac
fi
LOGDIR="$ROOT/target/bench-logs/$SIZE"
mkdir -p "$LOGDIR" "$(dirname "$OUT")"
JSONL="$LOGDIR/results.jsonl"
: >"$JSONL"

# File descriptors: as many as this shell may have (the hub and the loadgen inherit it).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"

# The code measured, stamped into the results before anything is built: the commit of the
# last change to the code (hub, load generator, scenarios), HEAD, and whether any of that
# code differs from HEAD (the paths, so a reader sees what). Benchmark outputs (results,
# summaries, charts) and docs are not code: rewriting them does not make a run dirty.
CODE_PATHS=(src loadgen web-demo Cargo.toml Cargo.lock bench/run.sh bench/competitors)
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  export BENCH_GIT=1
  BENCH_GIT_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)"
  BENCH_CODE_COMMIT="$(git -C "$ROOT" log -1 --format=%h -- "${CODE_PATHS[@]}")"
  BENCH_DIRTY_PATHS="$(git -C "$ROOT" status --porcelain --untracked-files=all -- "${CODE_PATHS[@]}" | cut -c4-)"
  export BENCH_GIT_COMMIT BENCH_CODE_COMMIT BENCH_DIRTY_PATHS
else
  export BENCH_GIT=0
fi

PACKAGES=(-p presence-hub -p presence-loadgen)
if [[ "$SIZE" == compare ]]; then PACKAGES+=(-p tungstenite-hub); fi
if [[ "$BUILD" == 1 ]]; then
  if [[ "$PROFILE" == release ]]; then
    cargo build --release "${PACKAGES[@]}"
  else
    cargo build "${PACKAGES[@]}"
  fi
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# HUB_BIN: another hub binary (an A/B of two builds with the same load generator).
HUB="${HUB_BIN:-$TARGET_DIR/$PROFILE/presence-hub}"
LOADGEN="$TARGET_DIR/$PROFILE/loadgen"
for bin in "$HUB" "$LOADGEN"; do
  [[ -x "$bin" ]] || { echo "missing binary $bin (build it or drop --no-build)" >&2; exit 2; }
done

HUB_PID=""
PORT=""
stop_hub() {
  if [[ -n "$HUB_PID" ]] && kill -0 "$HUB_PID" 2>/dev/null; then
    kill -TERM "$HUB_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$HUB_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$HUB_PID" 2>/dev/null || true
    wait "$HUB_PID" 2>/dev/null || true
  fi
  HUB_PID=""
}
trap stop_hub EXIT INT TERM

# Which server `scenario` starts: hub (presence-hub; hub-async: the same, flags add
# --durability async), or a benchmark peer of
# bench/competitors/: uws (uWebSockets.js), tungstenite (tokio-tungstenite hub), raw (its
# raw-write ceiling mode).
SERVER=hub
PEER="$TARGET_DIR/$PROFILE/tungstenite-hub"
UWS_DIR="$ROOT/bench/competitors/uws"

# start_hub NAME [hub flags...]: a fresh server ($SERVER) on a free loopback port; the hub on
# a fresh database file (the default durability, commit, unless the flags say otherwise).
start_hub() {
  local name="$1"; shift
  PORT="$("$LOADGEN" free-port)"
  local db="$LOGDIR/hub-$name.db"
  rm -f "$db" "$db-wal" "$db-shm"
  (
    ulimit -n "$NOFILE" 2>/dev/null || true
    case "$SERVER" in
      hub|hub-async) RUST_LOG="${HUB_LOG:-warn}" exec "$HUB" --listen "127.0.0.1:$PORT" --database "$db" "$@" ;;
      uws) exec node "$UWS_DIR/server.js" --listen "127.0.0.1:$PORT" ;;
      tungstenite) exec "$PEER" --listen "127.0.0.1:$PORT" --mode tuned ;;
      raw) exec "$PEER" --listen "127.0.0.1:$PORT" --mode raw ;;
    esac
  ) >"$LOGDIR/hub-$name.log" 2>&1 &
  HUB_PID=$!
  "$LOADGEN" --addr "127.0.0.1:$PORT" wait-ready --timeout 30 >/dev/null
}

FAILED=()
# scenario NAME "HUB FLAGS" LOADGEN ARGS...: runs one scenario on a fresh hub.
scenario() {
  local name="$1" hub_flags="$2"; shift 2
  if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then return 0; fi
  echo
  echo "######## $name: loadgen $*"
  # shellcheck disable=SC2086
  start_hub "$name" $hub_flags
  local rc
  set +e
  "$LOADGEN" --addr "127.0.0.1:$PORT" --hub-pid "$HUB_PID" "$@" 2>&1 | tee "$LOGDIR/$name.log"
  rc="${PIPESTATUS[0]}"
  set -e
  stop_hub
  local line
  line="$(grep '^RESULT ' "$LOGDIR/$name.log" | tail -n 1 | sed 's/^RESULT //' || true)"
  if [[ -z "$line" ]]; then
    line='null'
    echo "$name: no RESULT line (exit $rc); see $LOGDIR/$name.log and $LOGDIR/hub-$name.log" >&2
  fi
  printf '{"name":"%s","server":"%s","exit":%s,"args":"%s","hub_flags":"%s","result":%s}\n' \
    "$name" "$SERVER" "$rc" "$*" "$hub_flags" "$line" >>"$JSONL"
  if [[ "$rc" != 0 ]]; then FAILED+=("$name (exit $rc)"); fi
}

case "$SIZE" in
  smoke)
    CONN=100; FO_AGENTS=50; ACK_AGENTS=50; FO_TEL=10; FO_SECS=3; FO_ADMINS_A=5; FO_ADMINS_B=20
    SWEEP_ADMINS=5; SWEEP_RATES=""; SWEEP_SECS=2
    TEL_AGENTS=50; TEL_EVENTS=3000; TEL_RATE=1000; TEL_RATE_EVENTS=2000
    CHURN_AGENTS=20; CHURN_CYCLES=3; SNAP_AGENTS=200; SNAP_REPEAT=2; SETTLE=0.5
    DUR_AGENTS=20; DUR_SECS=1
    ;;
  small)
    CONN=5000; FO_AGENTS=4000; ACK_AGENTS=1000; FO_TEL=400; FO_SECS=8; FO_ADMINS_A=50; FO_ADMINS_B=500
    SWEEP_ADMINS=500; SWEEP_RATES="25000 50000 100000 200000"; SWEEP_SECS=6
    TEL_AGENTS=5000; TEL_EVENTS=100000; TEL_RATE=50000; TEL_RATE_EVENTS=250000
    CHURN_AGENTS=1000; CHURN_CYCLES=10; SNAP_AGENTS=10000; SNAP_REPEAT=5; SETTLE=2
    DUR_AGENTS=500; DUR_SECS=6
    ;;
  full)
    CONN=100000; FO_AGENTS=10000; ACK_AGENTS=1000; FO_TEL=1000; FO_SECS=30; FO_ADMINS_A=50; FO_ADMINS_B=500
    SWEEP_ADMINS=500; SWEEP_RATES="25000 50000 100000 200000 400000 600000"; SWEEP_SECS=20
    TEL_AGENTS=10000; TEL_EVENTS=1000000; TEL_RATE=50000; TEL_RATE_EVENTS=1000000
    CHURN_AGENTS=10000; CHURN_CYCLES=10; SNAP_AGENTS=10000; SNAP_REPEAT=20; SETTLE=3
    DUR_AGENTS=5000; DUR_SECS=20
    ;;
  compare)
    CMP_AGENTS="${CMP_AGENTS:-1000}"; CMP_ADMINS="${CMP_ADMINS:-500 50}"
    CMP_COST_ADMINS="${CMP_COST_ADMINS-1}"; CMP_SECS="${CMP_SECS:-5}"
    CMP_ROUNDS="${CMP_ROUNDS:-3}"; CMP_IDLE_AGENTS="${CMP_IDLE_AGENTS:-10000}"
    CMP_RATES="${CMP_RATES-200000}"
    CONN=$CMP_IDLE_AGENTS
    ;;
esac

if (( CONN + 200 > NOFILE )); then
  echo "note: RLIMIT_NOFILE is $NOFILE here: the connections scenario is capped below $CONN sockets" >&2
fi

START_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOAD_START="$(cat /proc/loadavg 2>/dev/null || true)"
SECONDS=0

if [[ "$SIZE" == compare ]]; then
  if [[ ",$SERVERS," == *",uws,"* ]]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "note: node/npm not found: the uws peer is skipped" >&2
      SERVERS="$(echo ",$SERVERS," | sed 's/,uws,/,/; s/^,//; s/,$//')"
    elif [[ ! -d "$UWS_DIR/node_modules/uwebsockets" ]]; then
      (cd "$UWS_DIR" && npm ci --no-audit --no-fund)
    fi
  fi
  [[ ",$SERVERS," != *",tungstenite,"* && ",$SERVERS," != *",raw,"* ]] || [[ -x "$PEER" ]] || {
    echo "missing binary $PEER (build it or drop --no-build)" >&2; exit 2; }
  # The hub takes the agents' changes as fast as they come (no per-socket rate limit: the
  # peers have none); everything else is its default (durable store, commit).
  CMP_HUB_FLAGS="--agent-rate 0"
  IFS=',' read -r -a SERVER_LIST <<<"$SERVERS"
  for SERVER in "${SERVER_LIST[@]}"; do
    flags=""
    [[ "$SERVER" == hub ]] && flags="$CMP_HUB_FLAGS"
    [[ "$SERVER" == hub-async ]] && flags="$CMP_HUB_FLAGS --durability async"
    for admins in $CMP_ADMINS; do
      for round in $(seq 1 "$CMP_ROUNDS"); do
        scenario "vs-$SERVER-ack$admins-r$round" "$flags" \
          ack-fanout --agents "$CMP_AGENTS" --admins "$admins" --duration "$CMP_SECS" --label "$SERVER"
      done
    done
    rate_admins="${CMP_ADMINS%% *}"
    for rate in $CMP_RATES; do
      # As many paced runs as rounds: one run's p99 moved by 5 ms between quiet runs.
      for round in $(seq 1 "$CMP_ROUNDS"); do
        scenario "vs-$SERVER-rate$rate-r$round" "$flags" \
          ack-fanout --agents "$CMP_AGENTS" --admins "$rate_admins" --duration "$CMP_SECS" \
          --rate "$rate" --label "$SERVER"
      done
    done
    for admins in $CMP_COST_ADMINS; do
      scenario "vs-$SERVER-ack$admins-r1" "$flags" \
        ack-fanout --agents "$CMP_AGENTS" --admins "$admins" --duration "$CMP_SECS" --label "$SERVER"
    done
    # Idle memory per agent socket and logins/s (the raw mode's agents are the tuned mode's).
    if [[ "$SERVER" != raw && "$SERVER" != hub-async ]]; then
      scenario "vs-$SERVER-idle" "$flags" connections --agents "$CONN" --settle 2
    fi
  done
  SERVER=hub
else

scenario connections "" \
  connections --agents "$CONN" --settle "$SETTLE"
scenario fanout-$FO_ADMINS_A "" \
  fanout --agents "$FO_AGENTS" --admins "$FO_ADMINS_A" --rate 0 --duration "$FO_SECS" --telephony-agents "$FO_TEL"
scenario fanout-$FO_ADMINS_B "" \
  fanout --agents "$FO_AGENTS" --admins "$FO_ADMINS_B" --rate 0 --duration "$FO_SECS" --telephony-agents "$FO_TEL"
# Driven from the agent sockets: each changes again once its previous change is acknowledged
# (the protocol subset `--compare` runs against the benchmark peers). 1000 agents, as in
# `--compare`: with every agent's change in flight at once, each admin holds one change per
# agent in its queue, and 4000 x 500 admins overflows the 1 MiB per-socket queue (4008) by
# design, for the hub of 8f732e8 as for this one.
scenario ack-fanout "--agent-rate 0" \
  ack-fanout --agents "$ACK_AGENTS" --admins "$FO_ADMINS_B" --duration "$FO_SECS" --label hub
for rate in $SWEEP_RATES; do
  scenario "sweep-$rate" "" \
    fanout --agents "$FO_AGENTS" --admins "$SWEEP_ADMINS" --rate "$rate" --duration "$SWEEP_SECS" --telephony-agents "$FO_TEL"
done
scenario telephony-max "" \
  telephony --adapters 1 --agents "$TEL_AGENTS" --events "$TEL_EVENTS"
scenario telephony-rate "" \
  telephony --adapters 1 --agents "$TEL_AGENTS" --events "$TEL_RATE_EVENTS" --rate "$TEL_RATE"
# A small resume history, full after the warm-up, so that its (bounded, by design) growth
# does not read as leaked memory.
scenario churn "--history-size 1000" \
  churn --agents "$CHURN_AGENTS" --cycles "$CHURN_CYCLES" --settle "$SETTLE"
scenario snapshot "--disconnect-grace-secs 86400" \
  snapshot --agents "$SNAP_AGENTS" --repeat "$SNAP_REPEAT"
# The durable store's write path: every agent loops set_status -> wait for ok, with the ack
# after the commit (fsync) and then at once. No per-socket rate limit: it measures the hub.
for mode in commit async; do
  scenario "durability-$mode" "--durability $mode --agent-rate 0" \
    durability --agents "$DUR_AGENTS" --duration "$DUR_SECS" --label "$mode"
done
fi
LOAD_END="$(cat /proc/loadavg 2>/dev/null || true)"

FAILED_LIST="$(printf '%s\n' "${FAILED[@]+"${FAILED[@]}"}")"
python3 - "$JSONL" "$OUT" "$SIZE" "$START_TIME" "$SECONDS" "$PROFILE" "$NOFILE" "$FAILED_LIST" \
  "$LOAD_START" "$LOAD_END" <<'PY'
import json, os, platform, subprocess, sys
jsonl, out, size, started, secs, profile, nofile, failed, load0, load1 = sys.argv[1:11]
runs = [json.loads(l) for l in open(jsonl) if l.strip()]
def read(path):
    try:
        return open(path).read()
    except OSError:
        return ""
cpu_model = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                  if l.startswith("model name")), platform.processor())
mem_kib = next((int(l.split()[1]) for l in read("/proc/meminfo").splitlines()
                if l.startswith("MemTotal:")), None)
# Taken by the shell before the build (see CODE_PATHS): null without git.
if os.environ.get("BENCH_GIT") == "1":
    commit = os.environ.get("BENCH_GIT_COMMIT") or None
    code_commit = os.environ.get("BENCH_CODE_COMMIT") or None
    dirty_paths = [p for p in os.environ.get("BENCH_DIRTY_PATHS", "").splitlines() if p]
    dirty = bool(dirty_paths)
else:
    commit, code_commit, dirty_paths, dirty = None, None, None, None
doc = {
    "size": size,
    "command": "bench/run.sh" + ("" if size == "small" else f" --{size}"),
    "profile": profile,
    "started_at": started,
    "duration_secs": int(secs),
    "git_commit": commit,
    "code_commit": code_commit,
    "git_dirty": dirty,
    "git_dirty_paths": dirty_paths,
    "machine": {
        "nproc": os.cpu_count(),
        "mem_total_gib": round(mem_kib / 1048576, 1) if mem_kib else None,
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "rlimit_nofile": int(nofile),
        # /proc/loadavg before and after the run: other work on a shared box shows here.
        "loadavg_start": load0 or None,
        "loadavg_end": load1 or None,
    },
    "failed": [f for f in failed.splitlines() if f],
    "runs": runs,
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"\nresults: {out}")
PY

if [[ "$SIZE" == compare ]]; then
  python3 "$ROOT/bench/versus.py" "$OUT" | tee "${OUT%.json}.md"
elif [[ "$SIZE" != smoke ]]; then
  # The summary and chart sit beside the results: bench/summary.md and bench/latency.svg
  # for the default bench/results.json, FILE.md and FILE.svg for --out FILE.json.
  if [[ "$OUT" == "$ROOT/bench/results.json" ]]; then
    SUMMARY="$ROOT/bench/summary.md"; SVG="$ROOT/bench/latency.svg"
  else
    SUMMARY="${OUT%.json}.md"; SVG="${OUT%.json}.svg"
  fi
  python3 "$ROOT/bench/report.py" "$OUT" | tee "$SUMMARY"
  if [[ "$CHART" == 1 ]]; then
    python3 "$ROOT/bench/chart.py" "$OUT" "$SVG"
  fi
fi

echo
echo "ran for ${SECONDS}s; logs in $LOGDIR"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "FAILED: ${FAILED[*]}" >&2
  exit 1
fi
echo "all scenarios passed their checks"
